"""The one seam between doctor and the host: run a command, read a file, expand a glob.

Every probe goes through a ``Runner``. ``LiveRunner`` touches the real host with a time-out on
every command (a hung ``nvidia-smi`` is a real failure mode); a missing binary, a time-out or a
permission error come back as values in the record, never as exceptions. Tests use the same
``LiveRunner`` against real programs (a script that hangs, a binary that is absent) and a
``root`` prefix, so that file probes can be pointed at a throwaway tree.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from gpuops.doctor.capture import CommandRecord, FileRecord

DEFAULT_TIMEOUT = 5.0
MAX_OUTPUT = 200_000
MAX_FILE = 200_000


class Runner(Protocol):
    def run(
        self, argv: list[str], timeout: float = DEFAULT_TIMEOUT, env: dict[str, str] | None = None
    ) -> CommandRecord: ...

    def read(self, path: str, limit: int = MAX_FILE) -> FileRecord: ...

    def read_bytes(self, path: str, limit: int = MAX_FILE) -> bytes | None: ...

    def glob(self, pattern: str) -> list[str]: ...

    def readlink(self, path: str) -> str | None: ...

    def unix_get(
        self, sock: str, path: str, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[int | None, str, str | None]: ...


def _cut(text: str, limit: int = MAX_OUTPUT) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[... truncated by gpuops]\n"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the tool's whole session: a hung tool may have children holding the pipes."""
    try:
        os.killpg(proc.pid, 9)
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()


def _collect(proc: subprocess.Popen[bytes], timeout: float, limit: int) -> tuple[bytes, bytes, str | None]:
    """Read both pipes as the tool writes them, never more than ``limit`` bytes each.

    Returns (stdout, stderr, why): ``why`` is None, ``"timeout"`` (the tool ran past ``timeout``) or
    ``"too_much_output"`` (a pipe passed ``limit``); in both cases the tool's session is killed.
    Output is never read whole first: a tool that prints without end costs ``limit`` bytes."""
    import selectors

    assert proc.stdout is not None and proc.stderr is not None
    fd_out, fd_err = proc.stdout.fileno(), proc.stderr.fileno()
    bufs: dict[int, bytearray] = {fd_out: bytearray(), fd_err: bytearray()}
    sel = selectors.DefaultSelector()
    for pipe in (proc.stdout, proc.stderr):
        sel.register(pipe.fileno(), selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    why: str | None = None
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                why = "timeout"
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                fd = key.fd
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                    continue
                buf = bufs[fd]
                room = limit + 1 - len(buf)
                buf += chunk[:room]
                if len(buf) > limit:
                    why = "too_much_output"
            if why:
                break
    finally:
        sel.close()
    if why:
        _kill_group(proc)
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0) + (2 if why else 0.5))
    except subprocess.TimeoutExpired:  # the pipes closed but the tool lives on
        why = why or "timeout"
        _kill_group(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
    for pipe in (proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            pipe.close()
    return bytes(bufs[fd_out][:limit]), bytes(bufs[fd_err][:limit]), why


class LiveRunner:
    """Runs on this host. ``root`` re-bases file paths (``/proc/x`` -> ``root/proc/x``)."""

    def __init__(
        self,
        *,
        root: str | Path | None = None,
        path: str | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        max_output: int = MAX_OUTPUT,
    ) -> None:
        self.root = str(root) if root else ""
        self.path = path  # PATH used to find binaries; None = the process's PATH
        self.default_timeout = default_timeout
        self.max_output = max_output  # bytes kept per pipe; past it the tool is killed

    def _p(self, path: str) -> str:
        return self.root + path if self.root else path

    def run(
        self, argv: list[str], timeout: float | None = None, env: dict[str, str] | None = None
    ) -> CommandRecord:
        timeout = self.default_timeout if timeout is None else timeout
        exe = shutil.which(argv[0], path=self.path) if "/" not in argv[0] else argv[0]
        if exe is None or not os.path.exists(exe):
            return CommandRecord(argv=argv, error="not_found")
        full_env = dict(os.environ)
        full_env.update({"LC_ALL": "C", "LANG": "C"})
        if env:
            full_env.update(env)
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(
                [exe, *argv[1:]],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,
            )
        except PermissionError:
            return CommandRecord(argv=argv, error="permission")
        except OSError as e:
            return CommandRecord(argv=argv, error="failed_to_start", stderr=str(e))
        out, err, why = _collect(proc, timeout, self.max_output)
        seconds = round(time.perf_counter() - t0, 3)
        rc = proc.returncode
        error: Any = why
        if why is None and rc is not None and rc < 0:
            error = "crashed"  # killed by a signal (SIGSEGV: rc -11); not by us
        return CommandRecord(
            argv=argv,
            rc=None if why == "timeout" else rc,
            error=error,
            stdout=_cut(out.decode("utf-8", "replace"), self.max_output),
            stderr=_cut(err.decode("utf-8", "replace"), self.max_output),
            seconds=seconds,
        )

    def read(self, path: str, limit: int = MAX_FILE) -> FileRecord:
        try:
            with open(self._p(path), "rb") as fh:
                data = fh.read(limit + 1)
        except FileNotFoundError:
            return FileRecord(error="missing")
        except NotADirectoryError:
            return FileRecord(error="missing")
        except PermissionError:
            return FileRecord(error="permission")
        except OSError:
            return FileRecord(error="other")
        truncated = len(data) > limit
        data = data[:limit]
        if path.endswith(".gz"):
            import gzip
            import zlib

            try:
                data = gzip.decompress(data)[:limit]
            except (OSError, EOFError, zlib.error):
                return FileRecord(error="not_text")
        if b"\x00" in data[:4096]:
            return FileRecord(error="not_text")
        return FileRecord(content=data.decode("utf-8", "replace"), truncated=truncated)

    def read_bytes(self, path: str, limit: int = MAX_FILE) -> bytes | None:
        try:
            with open(self._p(path), "rb") as fh:
                return fh.read(limit)
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        try:
            hits = _glob.glob(self._p(pattern))
        except OSError:
            return []
        n = len(self.root)
        return sorted(h[n:] if n else h for h in hits)

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self._p(path))
        except OSError:
            return None

    def unix_get(
        self, sock: str, path: str, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[int | None, str, str | None]:
        """HTTP GET over a unix socket (the Docker Engine API): (status, body, error).

        A plain socket and a few lines of HTTP/1.1 (``Connection: close``; a body by length,
        chunked, or up to the close): ``http.client`` would import ``ssl`` and cost start-up."""
        import socket

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.connect(self._p(sock))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            status, body = _read_http_response(s)
            return status, body[:MAX_OUTPUT].decode("utf-8", "replace"), None
        except PermissionError:
            return None, "", "permission"
        except (FileNotFoundError, ConnectionRefusedError):
            return None, "", "not_found"
        except TimeoutError:
            return None, "", "timeout"
        except OSError as e:
            return None, "", str(e)
        except ValueError as e:  # not an HTTP answer
            return None, "", f"bad HTTP response ({e})"
        finally:
            s.close()


def _read_http_response(s: Any, limit: int = MAX_OUTPUT + 65536) -> tuple[int, bytes]:
    """Read one HTTP/1.x response from socket ``s`` (the server closes after it): (status, body).
    At most ``limit`` bytes of body are kept. Raises ValueError when it is not HTTP."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ValueError("connection closed before the headers ended")
        buf += chunk
        if len(buf) > 65536 and b"\r\n\r\n" not in buf:
            raise ValueError("headers too long")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"status line {lines[0][:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            headers[k.strip().lower()] = v.strip()

    def more() -> bytes:
        return s.recv(65536)

    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        data = rest
        while True:
            while b"\r\n" not in data:
                c = more()
                if not c:
                    return status, body  # cut short: keep what came
                data += c
            size_line, _, data = data.partition(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                raise ValueError("bad chunk size") from None
            if size == 0:
                return status, body
            while len(data) < size + 2:
                c = more()
                if not c:
                    return status, body + data[:size]
                data += c
            body += data[:size]
            data = data[size + 2 :]
            if len(body) >= limit:
                return status, body
    length = headers.get("content-length")
    want = int(length) if length is not None and length.isdigit() else None
    body = rest
    while (want is None or len(body) < want) and len(body) < limit:
        c = more()
        if not c:
            break
        body += c
    return status, body if want is None else body[:want]
