"""End to end: `gpuops ui` serves the store, headless Chromium renders the MLflow UI, the run and
its val/psnr are on the page. The screenshot stays in tests/artifacts/ui_run_page.png."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.compare.store import Store
from tests.conftest import REPO, require

ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1500",
]


class _Text(HTMLParser):
    """The text nodes of a document, in order, without scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "noscript"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.nodes.append(data.strip())


def _text_nodes(html: str) -> list[str]:
    p = _Text()
    p.feed(html)
    return p.nodes


def _chromium(chromium: str, profile: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def _read_json_doc(proc: subprocess.Popen, timeout: float) -> dict:
    """The one JSON document `gpuops ui --json` prints once its server is up."""
    lines: list[str] = []
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.rstrip() == "}":
                done.set()
                return
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    if not done.wait(timeout):
        raise AssertionError(f"`gpuops ui` printed no URL within {timeout:.0f} s")
    assert lines, f"`gpuops ui` exited with {proc.poll()} before printing its URL"
    return json.loads("".join(lines))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.browser
def test_gpuops_ui_shows_the_run_and_its_val_psnr(sr_store: Store, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    require(chromium is not None, "Debian's chromium is not installed (bash scripts/apt-install.sh chromium)")
    assert chromium is not None
    store = sr_store
    run = store.runs["srcnn-955-adam"]
    final_step, final_psnr = max(run.metrics["val/psnr"], key=lambda p: p[0])

    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "gpuops", "ui", "--tracking-uri", store.uri, "--port", "0",
                             "--json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    server_pid = None
    try:
        info = _read_json_doc(proc, timeout=180)
        server_pid = info["pid"]
        assert info["url"].startswith("http://127.0.0.1:")
        url = f"{info['url']}/#/experiments/{store.experiment_ids[run.experiment]}/runs/{run.run_id}"

        # The UI is a React app: let Chromium run it (virtual time), then read the rendered DOM and
        # keep a screenshot of the same page (one browser launch does both).
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "ui_run_page.png"
        nodes: list[str] = []
        for budget in (20_000, 60_000):
            shot.unlink(missing_ok=True)
            res = _chromium(chromium, tmp_path / "profile", f"--virtual-time-budget={budget}",
                            f"--screenshot={shot}", "--dump-dom", url)
            nodes = _text_nodes(res.stdout)
            if "val/psnr" in nodes and run.name in nodes:
                break
        assert run.name in nodes, f"run name not rendered; page text: {nodes[:80]}"
        assert run.run_id in nodes
        assert run.experiment in nodes
        # The run's metric table: "val/psnr" followed by its latest value.
        i = nodes.index("val/psnr")
        shown = float(nodes[i + 1])
        assert shown == pytest.approx(final_psnr, abs=1e-3), (final_step, nodes[i:i + 4])
        # Its params and environment tags are there too.
        assert "64x9x9_32x5x5_1x5x5" in nodes and "env.torch" in nodes
        assert shot.is_file(), res.stderr[-2000:]
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a rendered page, not a blank one
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if server_pid is not None and _alive(server_pid):
            os.killpg(server_pid, signal.SIGKILL)  # only if `gpuops ui` failed to stop it
            pytest.fail("`gpuops ui` left its MLflow server running after Ctrl-C")
    stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, stderr
    assert "stopping the MLflow UI" in stderr
    deadline = time.monotonic() + 10
    while server_pid is not None and _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server_pid is not None and not _alive(server_pid)


def test_ui_refuses_a_tracking_server_uri() -> None:
    from typer.testing import CliRunner

    from gpuops.cli.main import app

    res = CliRunner().invoke(app, ["ui", "--tracking-uri", "http://user:secret@127.0.0.1:1"])
    assert res.exit_code == 2
    assert "already a tracking server" in res.stderr
    assert "secret" not in res.stderr  # credentials are not echoed


def test_start_server_refuses_an_http_uri_without_starting_anything() -> None:
    from gpuops.errors import UsageError
    from gpuops.tracking.server import start_server

    with pytest.raises(UsageError, match="already a server"):
        start_server("http://127.0.0.1:5000")
