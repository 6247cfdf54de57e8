"""Connecting to Ray: addresses, a local instance bound to 127.0.0.1, token pass-through."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from gpuops.cluster.ray_cluster import (
    check_auth,
    dashboard_open_warning,
    redact_token,
    resolve_address,
    trainer_env,
)
from gpuops.errors import UsageError
from tests.conftest import REPO


def test_address_order() -> None:
    assert resolve_address("10.0.0.5:6379", {"RAY_ADDRESS": "10.0.0.9:6379"}) == "10.0.0.5:6379"
    assert resolve_address(None, {"RAY_ADDRESS": "ray://head:10001"}) == "ray://head:10001"
    assert resolve_address(None, {}) is None
    assert resolve_address("  ", {"RAY_ADDRESS": ""}) is None


def test_connected_session(ray_conn: Any, ray_cluster: dict[str, Any]) -> None:
    info = ray_conn.info()
    assert not info.started_here and info.address == ray_cluster["address"]
    assert sorted(n.node_id for n in info.nodes) == sorted(ray_cluster["nodes"])
    assert info.total_gpus == 2.0 and sum(n.gpus for n in info.nodes) == 2.0
    assert {n.address for n in info.nodes} == {"127.0.0.1"}
    assert [n.is_head for n in info.nodes].count(True) == 1
    assert info.warnings == []  # the dashboard is on 127.0.0.1


LOCAL_SCRIPT = r"""
import json, os, psutil
from gpuops.cluster.ray_cluster import ray_session
me = psutil.Process()
with ray_session(None, num_gpus=1, num_cpus=1, dashboard=True) as s:
    import ray
    info = s.info()
    @ray.remote(num_gpus=1)
    def where():
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    cvd = ray.get(where.remote())
    procs = me.children(recursive=True)
    listening = set()
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    listening.add(c.laddr.ip)
        except psutil.Error:
            pass
    pids = [p.pid for p in procs]
print(json.dumps({"started_here": info.started_here, "gpus": info.total_gpus, "cvd": cvd,
                  "nodes": [n.address for n in info.nodes], "listening": sorted(listening),
                  "dashboard": info.dashboard_url, "pids": pids}))
"""


def test_local_instance_on_loopback_and_stopped_after() -> None:
    import psutil

    drop = {"RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    r = subprocess.run([sys.executable, "-c", LOCAL_SCRIPT], capture_output=True, text=True, timeout=180,
                       env=env, cwd=REPO, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["started_here"] and got["gpus"] == 1.0 and got["cvd"] == "0"
    assert got["nodes"] == ["127.0.0.1"]
    assert got["listening"], "no listening socket seen"
    assert all(ip in {"127.0.0.1", "::ffff:127.0.0.1", "::1"} for ip in got["listening"]), got["listening"]
    assert got["dashboard"] and "127.0.0.1" in got["dashboard"]
    # ray.shutdown() at the end of the block stopped the instance's processes.
    left = [p for p in got["pids"]
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    if left:
        _gone, alive = psutil.wait_procs([psutil.Process(p) for p in left], timeout=15)
        assert not [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_token_passthrough_rules() -> None:
    assert check_auth({}) == "disabled"
    assert check_auth({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "tok-abc-123"}) == "token"
    with pytest.raises(UsageError) as e:
        check_auth({"RAY_AUTH_MODE": "token", "HOME": "/nonexistent-home"})
    assert "RAY_AUTH_TOKEN" in str(e.value)
    env = {"RAY_AUTH_TOKEN": "tok-abc-123", "PATH": "/usr/bin"}
    said = redact_token("connect failed: Bearer tok-abc-123 refused", env)
    assert said == "connect failed: Bearer *** refused"
    assert trainer_env(env) == {"PATH": "/usr/bin"}


def _host_ip() -> str | None:
    """This machine's address on its default route (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_dashboard_warning(ray_cluster: dict[str, Any]) -> None:
    # The session's real dashboard is on 127.0.0.1: no warning, whatever the auth mode.
    assert dashboard_open_warning(ray_cluster["dashboard"], "disabled") is None
    ip = _host_ip()
    assert ip is not None, "this machine has no non-loopback address"
    port = int(ray_cluster["dashboard"].rsplit(":", 1)[1])
    # Nothing listens on the host address (our dashboard is bound to loopback): no warning.
    assert dashboard_open_warning(f"http://{ip}:{port}", "disabled", timeout=2) is None

    # A stand-in that answers /api/version without asking for a token, on the host address.
    class Open(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"ray_version": "2.60.0"}' if self.path == "/api/version" else b"{}"
            self.send_response(200 if self.path == "/api/version" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer((ip, 0), Open)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://{ip}:{server.server_address[1]}"
        warning = dashboard_open_warning(url, "disabled")
        assert warning and url in warning and "RAY_AUTH_MODE=token" in warning
        assert "answered without a token" in (dashboard_open_warning(url, "token") or "")
    finally:
        server.shutdown()
        server.server_close()
