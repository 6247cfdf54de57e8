"""The benchmark scripts run (shrunk to seconds), so that they cannot rot: the GPU check's CPU dry
run, its one-line refusal without a GPU, the time-to-quality bench and the CPU-levers bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import REPO

RUN_SH = REPO / "bench" / "gpu" / "run.sh"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **extra}


def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    # CUDA_VISIBLE_DEVICES="" hides any GPU from torch, so this holds on every machine
    r = subprocess.run(["bash", str(RUN_SH), str(tmp_path / "out")], capture_output=True, text=True,
                       env=_env(CUDA_VISIBLE_DEVICES=""), timeout=120)
    assert r.returncode == 2
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "no NVIDIA GPU" in lines[0] and "--cpu-dry-run" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written


def test_gpu_check_cpu_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(RUN_SH), "--cpu-dry-run", str(out)], capture_output=True, text=True,
                       env=_env(CUDA_VISIBLE_DEVICES=""), timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (out / "SUMMARY.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in summary.splitlines()
            if line.startswith("| ") and not line.startswith(("| step", "| ---"))}
    assert set(rows) == {"doctor", "doctor_deep", "train_step", "sr_fast", "selfcheck"}
    assert "FAILED" not in summary and "overall: ok" in summary
    capture = (out / "doctor" / "capture.yaml").read_text()
    assert capture.strip()
    for name in ("doctor.json", "deep.json"):
        doc = json.loads((out / "doctor" / name).read_text())
        assert doc["verdict_line"] and "findings" in doc
    assert "Ratio gpuops / hand-written" in (out / "train_step_cpu.md").read_text()
    result = json.loads((out / "sr_fast_cpu.json").read_text())
    [sr] = result["results"]
    assert sr["name"] == "sr_fast" and sr["exit_code"] == 0 and len(sr["points"]) == 2
    assert sr["run_id"] and isinstance(sr["system_metrics"], list)  # a tracked run; no GPU metrics here
    with Image.open(out / "sr_fast_cpu.png") as im:
        assert "Set5 x3" in im.text["Title"]
    check = json.loads((out / "selfcheck_pytorch.json").read_text())
    import torch

    x = torch.arange(6.0).reshape(2, 3)  # the probe's CPU op, computed here
    assert check["ok"] is True and check["framework"] == "pytorch"
    assert check["cpu_op"] == float((x @ x.T).sum()) and check["version"] == torch.__version__


def test_time_to_quality_smoke_writes_table_curve_and_points(tmp_path: Path) -> None:
    out = tmp_path / "ttq"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "sr_time_to_quality.py"), "--smoke",
                        "--threads", "1", "--out", str(out)], capture_output=True, text=True,
                       env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.with_suffix(".json").read_text())
    assert [x["name"] for x in doc["results"]] == ["sr_fast", "srcnn_y"]
    for x in doc["results"]:
        assert [p[1] for p in x["points"]] == [10, 20]  # iterations of the two evaluations
        times = [p[0] for p in x["points"]]
        assert 0 < times[0] < times[1]
        assert x["bicubic"] is not None and abs(x["bicubic"] - 30.39) < 0.02
    md = out.with_suffix(".md").read_text()
    assert "Machine:" in md and "Load average" in md and "sr_fast.yaml" in md and "srcnn_y.yaml" in md
    with Image.open(out.with_suffix(".png")) as im:
        text = dict(im.text)
    assert "Set5 x3" in text["Title"]
    assert "bicubic baseline 30.39 dB" in text["Description"]
    assert "SRCNN 9-1-5 (T91) 32.39 dB" in text["Description"]
    assert "curves: sr_fast, srcnn_y" in text["Description"]


def test_cpu_levers_quick_lists_every_lever() -> None:
    cmd = [sys.executable, str(REPO / "bench" / "sr_cpu_levers.py"), "--quick", "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    for lever in ("fp32", "channels_last", "bf16 autocast", "channels_last + bf16", "fp32, 1 thread"):
        assert f"\n{lever} " in r.stdout
