"""``LiveRunner.unix_get``: the few lines of HTTP that replace http.client, against a real HTTP
server on a unix socket (and the Docker Engine's /info when one is reachable)."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
from pathlib import Path
from typing import Any

import pytest

from gpuops.doctor.runner import MAX_OUTPUT, LiveRunner
from tests.conftest import require

BIG = ("x" * 1000 + "\n") * 300  # longer than MAX_OUTPUT


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        return None

    def do_GET(self) -> None:
        body = {"/len": '{"a": 1}', "/big": BIG}.get(self.path, "")
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in ("hello, ", "chunked ", "wörld"):
                data = part.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/close":
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"until the close")
        elif body:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())
        else:
            self.send_response(404)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not found")
        self.close_connection = True


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture()
def sock(tmp_path: Path):
    path = str(tmp_path / "api.sock")
    srv = _Server(path, _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield path
    srv.shutdown()
    srv.server_close()


def test_content_length_chunked_close_and_status(sock: str) -> None:
    r = LiveRunner()
    assert r.unix_get(sock, "/len") == (200, '{"a": 1}', None)
    assert r.unix_get(sock, "/chunked") == (200, "hello, chunked wörld", None)
    assert r.unix_get(sock, "/close") == (200, "until the close", None)
    assert r.unix_get(sock, "/nope") == (404, "not found", None)
    status, body, err = r.unix_get(sock, "/big")
    assert (status, err, body) == (200, None, BIG[:MAX_OUTPUT])


def test_errors_are_values(tmp_path: Path) -> None:
    r = LiveRunner()
    assert r.unix_get(str(tmp_path / "absent.sock"), "/info") == (None, "", "not_found")
    plain = tmp_path / "plain"
    plain.write_text("x", encoding="utf-8")
    status, body, err = r.unix_get(str(plain), "/info")
    assert (status, body) == (None, "") and err  # connection refused / not a socket


def test_docker_engine_info_matches_the_docker_sdk(docker_client: Any) -> None:
    base = str(docker_client.api.base_url)
    sock = "/var/run/docker.sock"
    require(base.startswith("http+docker://") and os.path.exists(sock), f"engine not on {sock} ({base})")
    status, body, err = LiveRunner().unix_get(sock, "/info")
    assert (status, err) == (200, None)
    mine, sdk = json.loads(body), docker_client.info()
    for key in ("ServerVersion", "Driver", "OperatingSystem", "KernelVersion", "Runtimes"):
        assert mine.get(key) == sdk.get(key), key
