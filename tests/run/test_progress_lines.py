"""With stderr going to a file or a pipe (nohup, tmux logs, CI), training shows one plain progress
line per logged step instead of a bar that is only drawn at the end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_plain_progress_lines_when_not_on_a_terminal(tmp_path: Path):
    log = tmp_path / "run.log"
    with log.open("w") as err:
        spec = REPO / "experiments" / "quickstart.yaml"
        r = subprocess.run([sys.executable, "-m", "gpuops", "run", str(spec),
                            "--smoke", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                           stdout=subprocess.PIPE, stderr=err, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("training ")]
    assert len(lines) >= 2, log.read_text()
    assert re.fullmatch(r"training \d+/\d+ \(\d+%\) · loss [\d.e+-]+ · \d+ samples/s · ETA \w+", lines[0])
    assert "\x1b[" not in log.read_text()  # no terminal control codes in a log file


def test_a_long_cpu_run_is_announced_with_its_eta(tmp_path: Path):
    import signal
    import time

    spec = REPO / "experiments" / "quickstart.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "gpuops", "run", str(spec),
                             "--set", "train.iterations=500000", "--set", "train.log_every=20",
                             "--set", "resources.device=cpu",
                             "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    warned = None
    deadline = time.monotonic() + 240
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "training on the CPU: about" in line:
                warned = line
                break
            if time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert warned is not None
    assert re.search(r"about \d+\.\d h to go", warned)
