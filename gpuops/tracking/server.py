"""Start a real MLflow tracking server (REST API + UI) as a child process, and stop it.

Used by ``gpuops ui``, by the docker target (a host-side server the container logs to) and by
the tests. Signature::

    start_server(backend_uri: str, artifacts_dir: Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, timeout: float = 60) -> MlflowServer

- ``backend_uri``: the store the server reads and writes (``sqlite:///abs/path/mlflow.db``, a
  ``file:`` URI or a database URL).
- ``artifacts_dir``: where artifacts uploaded *through* the server land (``--serve-artifacts
  --artifacts-destination``). ``None`` means ``mlartifacts/`` beside a sqlite database file,
  else ``./mlartifacts``. Runs logged straight into the store keep their own artifact location.
- ``host``: ``127.0.0.1`` keeps the server local. For a container that logs to it, bind the
  Docker bridge address (or ``0.0.0.0``) and give the container ``http://<bridge ip>:<port>``;
  MLflow's default allowed hosts include the private address ranges. ``.url`` always names an
  address this machine can reach (127.0.0.1 for ``0.0.0.0``).
- ``port=None`` picks a free port (retried if another process takes it first).
- Blocks until ``GET /health`` answers, at most ``timeout`` seconds; on failure raises
  ``ExternalError`` with the tail of the server's log and leaves no process behind.

The handle::

    with start_server("sqlite:////tmp/x/mlflow.db") as srv:
        srv.url        # "http://127.0.0.1:43121"
        srv.alive()    # True while the process runs
        srv.log_path   # the server's combined stdout/stderr
    # leaving the block (or srv.stop()) ends the server and its worker processes

The server runs with one worker and without MLflow's GenAI job runner (fast to start; set
``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true`` to have it) in its own process group, so that ``stop()``
ends uvicorn's children too. Nothing here imports mlflow: the child process does.
The child is ``gpuops.tracking.supervise``, which runs ``mlflow server`` and ends its whole group
when this process dies, however it dies (SIGKILL included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from gpuops.errors import ExternalError, UsageError

__all__ = ["MlflowServer", "default_artifacts_dir", "free_port", "sqlite_path", "start_server"]


@dataclass
class MlflowServer:
    """A running ``mlflow server`` child process. Stop it with ``stop()`` or a ``with`` block."""

    url: str
    host: str
    port: int
    backend_uri: str
    artifacts_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_file: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server exits (or ``timeout`` passes); its exit code, or None if still up."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    def stop(self, timeout: float = 15) -> None:
        """End the server and every process of its group: SIGTERM, then SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout=10)
        else:
            # The leader is gone; workers it left in the group (if any) go too.
            _signal_group(self.process, signal.SIGKILL)
        log = self._log_file
        if log is not None and hasattr(log, "close"):
            log.close()
            self._log_file = None

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # The child was started with start_new_session=True: its pid is its process-group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def sqlite_path(backend_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    prefix = "sqlite:///"
    if not backend_uri.startswith(prefix):
        return None
    rest = backend_uri[len(prefix):].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    # sqlite:////abs/path -> "/abs/path"; sqlite:///rel/path -> "rel/path" (relative to cwd)
    return Path(rest).resolve()


def default_artifacts_dir(backend_uri: str) -> Path:
    db = sqlite_path(backend_uri)
    return (db.parent if db is not None else Path.cwd()) / "mlartifacts"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _launch(backend_uri: str, artifacts_dir: Path, host: str, port: int,
            log_path: Path) -> tuple[subprocess.Popen[bytes], object]:
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts_dir),
        "--host", host, "--port", str(port),
        "--workers", "1",
    ]
    env = dict(os.environ)
    # The server is told its store on the command line; a tracking URI in the environment
    # must not redirect anything it does.
    env.pop("MLFLOW_TRACKING_URI", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # MLflow 3 starts a job runner and several huey consumer processes for its GenAI jobs
    # (scorers, prompt optimisation); gpuops uses none of them, and on a small machine they
    # double the start-up time. A caller who wants them sets the variable to true.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # Through gpuops' supervisor: the server and its workers end when this process does, even
    # when it is killed with SIGKILL (gpuops.tracking.supervise).
    env["GPUOPS_SUPERVISOR_PARENT"] = str(os.getpid())
    cmd = [sys.executable, "-m", "gpuops.tracking.supervise", "--", *cmd]
    log = open(log_path, "ab")  # noqa: SIM115 (closed by MlflowServer.stop)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    except OSError as e:
        log.close()
        raise ExternalError(f"could not start the MLflow server: {e}") from None
    return proc, log


def start_server(backend_uri: str, artifacts_dir: Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, timeout: float = 60) -> MlflowServer:
    """Start ``mlflow server`` on ``host:port`` over ``backend_uri`` and wait until it is healthy."""
    if not backend_uri or backend_uri.startswith(("http://", "https://")):
        raise UsageError(f"{backend_uri!r} is not a store a server can be started on",
                         hint="give a sqlite:///, file: or database URI; an http URI is already a server")
    db = sqlite_path(backend_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        backend_uri = f"sqlite:///{db}"
    artifacts = (artifacts_dir or default_artifacts_dir(backend_uri)).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)

    fd, name = tempfile.mkstemp(prefix="gpuops-mlflow-server-", suffix=".log")
    os.close(fd)
    log_path = Path(name)

    attempts = 1 if port is not None else 3
    last_tail = ""
    for _ in range(attempts):
        chosen = port if port is not None else free_port(host)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{chosen}"
        proc, log = _launch(backend_uri, artifacts, host, chosen, log_path)
        server = MlflowServer(url=url, host=host, port=chosen, backend_uri=backend_uri,
                              artifacts_dir=artifacts, process=proc, log_path=log_path, _log_file=log)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not server.alive():
                    break
                if _healthy(url):
                    return server
                time.sleep(0.25)
        except BaseException:  # Ctrl-C while waiting: leave no server behind
            server.stop()
            raise
        timed_out = server.alive()
        server.stop()
        last_tail = server.log_tail()
        if timed_out:
            raise ExternalError(
                f"the MLflow server on {url} did not become healthy within {timeout:.0f} s",
                hint=f"its log is {log_path}:\n{last_tail}",
            )
        # It exited: most often the port was taken meanwhile. Try another one (if we chose it).
    raise ExternalError(
        f"the MLflow server for {backend_uri} exited during start-up",
        hint=f"its log is {log_path}:\n{last_tail}",
    )
