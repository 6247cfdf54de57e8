"""The runner, live collection on this machine, capture/replay and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuops.cli.main import app
from gpuops.doctor import collect, diagnose, load_capture, save_capture
from gpuops.doctor.capture import parse_capture
from gpuops.doctor.runner import LiveRunner
from gpuops.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
cli = CliRunner()


def _exe(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_missing_binary_is_a_value():
    rec = LiveRunner().run(["gpuops-no-such-tool-xyz", "--version"])
    assert rec.error == "not_found" and rec.rc is None


def test_hung_command_times_out(tmp_path):
    hang = _exe(tmp_path / "hang", "sleep 30")
    t0 = time.perf_counter()
    rec = LiveRunner().run([str(hang)], timeout=0.5)
    assert rec.error == "timeout"
    assert time.perf_counter() - t0 < 5


def test_hung_nvidia_smi_does_not_hang_doctor(tmp_path):
    # a real program named nvidia-smi that never answers, first on PATH
    _exe(tmp_path / "nvidia-smi", "exec sleep 60")
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    cap = collect(runner=LiveRunner(default_timeout=1.0), env=env)
    cap.commands["nvidia-smi"]  # recorded
    assert cap.commands["nvidia-smi"].error == "timeout"
    assert time.perf_counter() - t0 < 20  # nvidia-smi's own limit is 10 s
    report = diagnose(cap)
    assert "nvidia_smi_hung" in report.codes("error")


def test_live_capture_replays_to_the_same_findings(tmp_path):
    cap = collect()
    live = diagnose(cap, env_dir=REPO / "environments")
    path = save_capture(cap, tmp_path / "here.yaml")
    replay = diagnose(load_capture(path), env_dir=REPO / "environments")
    assert [dataclasses.asdict(f) for f in replay.findings] == [dataclasses.asdict(f) for f in live.findings]
    assert replay.summary == live.summary
    # this machine: no GPU, CUDA 13.0 toolkit, torch CPU -> no error, no_nvidia_gpu as info
    assert live.exit_code == 0
    assert "no_nvidia_gpu" in live.codes("info")


def test_doctor_never_imports_a_framework():
    code = (
        "import sys; from gpuops.doctor import collect, diagnose; diagnose(collect()); "
        "bad=[m for m in ('torch','tensorflow','cupy','jax') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_capture_format_errors_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="unknown capture format_version 99"):
        parse_capture({"format": "gpuops-capture", "format_version": 99})
    with pytest.raises(UsageError, match="not a gpuops capture"):
        parse_capture({"format": "something"})
    with pytest.raises(UsageError, match="malformed capture at commands"):
        parse_capture({"format": "gpuops-capture", "format_version": 1, "commands": {"x": {"rc": 1}}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_capture(bad)


def test_cli_exit_codes(tmp_path, fixtures):
    r = cli.invoke(app, ["doctor", "--replay", str(fixtures / "devbox.capture.yaml"), "--no-color"])
    assert r.exit_code == 0, r.output
    assert "no_nvidia_gpu" in r.output
    r = cli.invoke(app, ["doctor", "--replay", str(fixtures / "real_04.capture.yaml"), "--no-color"])
    assert r.exit_code == 1
    assert "driver_library_mismatch_needs_reboot" in r.output
    r = cli.invoke(app, ["doctor", "--replay", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2
    assert "no such capture file" in " ".join(r.output.split())
    v2 = tmp_path / "v2.yaml"
    v2.write_text("format: gpuops-capture\nformat_version: 2\n")
    r = cli.invoke(app, ["doctor", "--replay", str(v2)])
    assert r.exit_code == 2 and "unknown capture format_version 2" in " ".join(r.output.split())
    assert "Traceback" not in r.output


def test_cli_json_and_fix_plan(fixtures):
    r = cli.invoke(app, ["doctor", "--replay", str(fixtures / "real_17.capture.yaml"), "--fix", "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert [f["code"] for f in doc["findings"] if f["severity"] == "error"] == ["nouveau_conflict"]
    plan = doc["plan"]
    assert "blacklist nouveau" in plan[0]["command"]
    assert any(s["command"] == "dracut --force" for s in plan)  # Fedora: rpm-based initramfs tool
    assert plan[-1]["needs_reboot"] is True
    r = cli.invoke(app, ["doctor", "--replay", str(fixtures / "real_17.capture.yaml"), "--fix", "--yes"])
    assert r.exit_code == 2  # a replayed capture's plan is never applied


def test_cli_capture_and_log(tmp_path):
    log = tmp_path / "err.txt"
    log.write_text(
        'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].\n'
    )
    out = tmp_path / "cap.yaml"
    r = cli.invoke(
        app,
        [
            "doctor",
            "--capture",
            str(out),
            "--log",
            str(log),
            "--json",
            "--env-dir",
            str(REPO / "environments"),
        ],
    )
    assert out.is_file(), (r.exit_code, r.output[-3000:], r.exception)
    doc = json.loads(r.stdout)
    # the attached docker error is diagnosed even here (Docker without the NVIDIA toolkit)
    assert "container_toolkit_missing" in [f["code"] for f in doc["findings"]]
    assert load_capture(out).logs[0].origin == str(log)
    assert {e["name"] for e in doc["environments"]} >= {"pytorch", "pytorch-cpu"}


def test_help_teaches():
    r = cli.invoke(app, ["doctor", "--help"])
    assert r.exit_code == 0
    assert "--replay" in r.output and "Examples" in r.output and "--fix --yes" in r.output
