"""Child processes that must not outlive gpuops: the trainer and the MLflow server.

- ``die_with_parent(sig)``: ask Linux to send ``sig`` to this process when its parent ends
  (``prctl(PR_SET_PDEATHSIG)``, see prctl(2): https://man7.org/linux/man-pages/man2/prctl.2.html).
  It survives ``execve``, so it can be set between fork and exec (``preexec_fn``). Elsewhere it is
  a no-op that returns False.
- ``process_identity(pid)`` / ``same_process_alive``: a pid plus its start time (field 22 of
  ``/proc/PID/stat``, see proc_pid_stat(5): https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html),
  so that a reused pid is not taken for the trainer that once had it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent exits. True when set."""
    prctl = _prctl()
    return prctl is not None and int(prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0


def child_dies_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process ends.

    libc is looked up here, in the parent; between fork and exec the child only makes the one
    system call (no imports, no allocation worth the name)."""
    prctl = _prctl()
    if prctl is None:
        return None

    signo = int(sig)

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, signo, 0, 0, 0)

    return setup


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot, as text (None: no such process)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ")".
    rest = stat.rpartition(")")[2].split()
    return rest[19] if len(rest) > 19 else None  # field 22 overall


def process_identity(pid: int) -> dict[str, str]:
    return {"pid": str(pid), "host": socket.gethostname(), "start": start_time(pid) or "unknown"}


def same_process_alive(ident: dict[str, str]) -> bool | None:
    """True: that very process still runs here; False: it does not; None: another host (unknown)."""
    if ident.get("host") != socket.gethostname():
        return None
    try:
        pid = int(ident.get("pid", ""))
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    now = start_time(pid)
    want = ident.get("start")
    if now is None:
        return False
    if want and want != "unknown" and now != want:
        return False  # the pid was reused
    try:  # a zombie has ended
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
        if state in ("Z", "X"):
            return False
    except (OSError, IndexError):
        pass
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
