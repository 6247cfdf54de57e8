"""A real two-node Ray cluster on 127.0.0.1 for the tests of this folder, and real sqlite MLflow stores.

The cluster runs in its own process (``ray_cluster_proc.py``): a head node with 2 CPUs and 2
declared GPUs (Ray schedules against them and sets ``CUDA_VISIBLE_DEVICES``; the trainers use the
CPU), and a second node with 1 CPU and no GPU. Its temp dir (sockets, logs, Ray's address file) is a
fresh short folder under /tmp, so nothing is shared with another Ray on this machine. Token
authentication is on (``RAY_AUTH_MODE=token``, a fresh random ``RAY_AUTH_TOKEN`` set for this folder's
tests in this process's environment, so that CLI subprocesses get it too; both are taken out again
when they are done, with the cluster: the fixtures are package-scoped). At the end
only that process and its descendants are stopped (never ``ray stop``, which stops every Ray
instance of the machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require
from tests.run.conftest import DATA, store, store_template  # noqa: F401 (fixtures: a fresh sqlite store)

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[dict[str, Any]]:
    import psutil

    require((DATA / "T91").is_dir() and (DATA / "Set5").is_dir(), f"{DATA}/T91 and Set5")
    tmp = Path(tempfile.mkdtemp(prefix="gpr-", dir="/tmp"))  # short: Ray's unix sockets live under it
    (tmp / "ray").mkdir()
    import secrets

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    token = secrets.token_hex(32)
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    # Ray reads the token once, when it is first imported: set it before that.
    require(_has_ray(), "Ray (pip install -e '.[ray]')")
    env = {**os.environ, "TMPDIR": str(tmp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp / "cluster.log", "w+b")  # noqa: SIM115 (closed at the end of the session)
    proc = subprocess.Popen([sys.executable, str(HERE / "ray_cluster_proc.py"), str(tmp / "ray")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, text=True,
                            start_new_session=True)
    info: dict[str, Any] = {"temp_dir": str(tmp / "ray"), "token": token}
    try:
        deadline = time.monotonic() + 150
        assert proc.stdout is not None
        while "nodes" not in info:
            line = proc.stdout.readline()
            if not line:
                log.seek(0)
                raise AssertionError(f"the Ray cluster did not start (rc {proc.poll()}):\n"
                                     f"{log.read().decode(errors='replace')[-4000:]}")
            key, _, value = line.strip().partition(" ")
            if key == "ADDRESS":
                info["address"] = value
            elif key == "DASHBOARD":
                info["dashboard"] = value
            elif key == "NODES":
                info["nodes"] = value.split()
            if time.monotonic() > deadline:
                raise AssertionError("the Ray cluster took more than 150 s to start")
        yield info
    finally:
        family = []
        with contextlib.suppress(psutil.Error):
            family = psutil.Process(proc.pid).children(recursive=True)
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()  # the helper shuts its nodes down
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        _gone, alive = psutil.wait_procs([p for p in family if p.is_running()], timeout=10)
        for p in alive:  # what Ray's own shutdown left of this cluster (workers it had started)
            with contextlib.suppress(psutil.Error):
                p.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="package")
def ray_conn(ray_cluster: dict[str, Any]) -> Iterator[Any]:
    """This test process connected to the session's cluster (through gpuops's own ``ray_session``)."""
    from gpuops.cluster.ray_cluster import ray_session

    with ray_session(ray_cluster["address"]) as session:
        yield session


