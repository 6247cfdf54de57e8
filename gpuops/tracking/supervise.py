"""``python -m gpuops.tracking.supervise -- CMD...``: run CMD so that it ends when gpuops does.

The MLflow server is started through this small supervisor, the leader of its own process group:

- the kernel sends it SIGTERM when its parent (``gpuops ui``, a test, the docker target) dies, even
  by SIGKILL (``PR_SET_PDEATHSIG``, see ``gpuops.tracking.procs``);
- on SIGTERM, SIGINT or SIGHUP it ends the whole group: the ``mlflow server`` command and the
  uvicorn processes it starts (they stay in the group), SIGTERM first, SIGKILL after a grace time;
- it exits with the command's exit code when the command ends by itself.

It imports nothing heavy: the server's start-up time is the command's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

GRACE = 10.0


def _end_group(child: subprocess.Popen[bytes]) -> None:
    pgid = os.getpgrp()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the group signal below reaches this process too
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGTERM)
    end = time.monotonic() + GRACE
    while child.poll() is None and time.monotonic() < end:
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)  # whatever is left, this process last


def main(argv: list[str]) -> int:
    from gpuops.tracking.procs import die_with_parent, pid_alive

    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.stderr.write("usage: python -m gpuops.tracking.supervise -- CMD...\n")
        return 2
    die_with_parent(signal.SIGTERM)
    parent = int(os.environ.get("GPUOPS_SUPERVISOR_PARENT", "0") or 0)
    if parent and (os.getppid() != parent or not pid_alive(parent)):
        return 1  # the parent died before the death signal was armed
    stop: list[int] = []

    def handler(signo: int, _frame: Any) -> None:
        stop.append(signo)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)
    child = subprocess.Popen(argv)
    while True:
        if stop:
            _end_group(child)
            return 128 + stop[0]
        code = child.poll()
        if code is not None:
            return code if code >= 0 else 128 - code
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
