"""An MLflow tracking server that is down or hangs is one line and exit 2, within seconds, before
any run exists, and the URI's password is in no output."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import REPO

SPEC = REPO / "experiments" / "quickstart.yaml"


def _gpuops(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "gpuops", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=60)
    return r, time.monotonic() - t


def test_a_refused_connection(tmp_path: Path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r, took = _gpuops("run", str(SPEC), "--smoke", "--tracking-uri", f"http://ann:hunter2@127.0.0.1:{port}",
                      cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert took < 10
    assert "is not reachable" in r.stderr and "ann:***@" in r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "mlflow.db").exists()  # no local store was made instead


def test_a_server_that_never_answers(tmp_path: Path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        srv.settimeout(20)
        try:
            while True:
                conn, _ = srv.accept()
                held.append(conn)  # read nothing, answer nothing
        except OSError:
            return

    threading.Thread(target=accept, daemon=True).start()
    try:
        r, took = _gpuops("run", str(SPEC), "--smoke", "--tracking-uri",
                          f"http://127.0.0.1:{srv.getsockname()[1]}", cwd=tmp_path)
    finally:
        srv.close()
        for c in held:
            c.close()
    assert r.returncode == 2, r.stderr
    assert took < 10, took
    assert "is not reachable" in r.stderr and "timed out" in r.stderr
