"""doctor's runner against real misbehaving programs: endless output, a crash, a hang."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from gpuops.doctor.runner import MAX_OUTPUT, LiveRunner
from tests.safety.conftest import make_tool


def test_endless_stdout_is_cut_at_the_limit_and_the_tool_killed(tmp_path: Path) -> None:
    make_tool(tmp_path, "nvidia-smi", "exec yes 'GPU 0: NVIDIA H100 80GB HBM3'")
    t0 = time.monotonic()
    rec = LiveRunner(path=str(tmp_path)).run(["nvidia-smi"], timeout=30)
    took = time.monotonic() - t0
    assert took < 5, took
    assert rec.error == "too_much_output"
    assert len(rec.stdout) <= MAX_OUTPUT
    assert rec.stdout.startswith("GPU 0: NVIDIA H100 80GB HBM3\n")  # what was read is kept
    assert rec.rc == -signal.SIGKILL


def test_endless_stderr_with_a_child_holding_the_pipe(tmp_path: Path) -> None:
    # The tool backgrounds a writer and exits: the pipe stays open after the tool itself is gone.
    make_tool(tmp_path, "dkms", "(while :; do echo 'Error! Bad return status' >&2; done) &\nexit 0")
    t0 = time.monotonic()
    rec = LiveRunner(path=str(tmp_path), max_output=10_000).run(["dkms", "status"], timeout=30)
    assert time.monotonic() - t0 < 5
    assert rec.error == "too_much_output"
    assert 0 < len(rec.stderr) <= 10_000
    assert "Bad return status" in rec.stderr


def test_a_tool_killed_by_a_signal_is_crashed_with_its_negative_code(tmp_path: Path) -> None:
    make_tool(tmp_path, "nvidia-smi", "echo 'partial line'\nkill -SEGV $$")
    rec = LiveRunner(path=str(tmp_path)).run(["nvidia-smi"])
    assert rec.error == "crashed"
    assert rec.rc == -signal.SIGSEGV
    assert rec.stdout == "partial line\n"


def test_an_abort_is_crashed_too(tmp_path: Path) -> None:
    make_tool(tmp_path, "nvcc", "kill -ABRT $$")
    rec = LiveRunner(path=str(tmp_path)).run(["nvcc", "--version"])
    assert (rec.error, rec.rc) == ("crashed", -signal.SIGABRT)


def test_every_tool_keeps_its_time_out(tmp_path: Path) -> None:
    runner = LiveRunner(path=str(tmp_path))
    for tool in ("dkms", "modinfo", "nvcc", "ldconfig", "docker"):
        make_tool(tmp_path, tool, "echo started\nsleep 60")
        t0 = time.monotonic()
        rec = runner.run([tool], timeout=0.5)
        assert time.monotonic() - t0 < 4, tool
        assert rec.error == "timeout", (tool, rec)
        assert rec.rc is None
        assert rec.stdout == "started\n"


def test_a_hung_child_is_killed_with_its_session(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    make_tool(tmp_path, "ldconfig", f"sleep 60 &\necho $! > {pidfile}\nwait")
    rec = LiveRunner(path=str(tmp_path)).run(["ldconfig", "-p"], timeout=0.5)
    assert rec.error == "timeout"
    pid = int(pidfile.read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"


def test_a_normal_tool_is_unchanged(tmp_path: Path) -> None:
    make_tool(tmp_path, "modinfo", "echo 'version:        550.54.14'\necho warn >&2\nexit 3")
    rec = LiveRunner(path=str(tmp_path)).run(["modinfo", "nvidia"])
    assert (rec.rc, rec.error, rec.stdout, rec.stderr) == (3, None, "version:        550.54.14\n", "warn\n")
