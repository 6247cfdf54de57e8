"""``gpuops doctor --replay`` on hostile captures: one line, exit 2, in seconds, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gpuops.doctor.capture import MAX_GPU_COUNT, MAX_LIST, load_capture
from gpuops.errors import UsageError
from tests.conftest import REPO

REAL = REPO / "tests" / "doctor" / "fixtures" / "real_01.capture.yaml"


def replay(path: Path, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "gpuops", "doctor", "--replay", str(path)],
                       capture_output=True, text=True, timeout=timeout, check=False,
                       env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    return r, time.monotonic() - t0


def _real() -> dict:
    return yaml.safe_load(REAL.read_text())


def alias_bomb(size: int = 1_000_000) -> str:
    """A billion-laughs document of about ``size`` bytes: 9 levels of 9 aliases, then padding aliases."""
    lines = ["format: gpuops-capture", "format_version: 1",
             "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    text = "\n".join(lines) + "\nnote:\n"
    row = "- [" + ", ".join(["*l8"] * 1000) + "]\n"  # lists of 1,000: each under the list bound
    return text + row * ((size - len(text)) // len(row) + 1)


def test_a_1_mb_alias_bomb_is_refused_in_seconds(tmp_path: Path) -> None:
    p = tmp_path / "bomb.yaml"
    p.write_text(alias_bomb())
    assert p.stat().st_size >= 990_000
    r, took = replay(p)
    assert took < 5 + 5, took  # the refusal itself is milliseconds; the rest is Python start-up
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "expands to more than" in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    t0 = time.monotonic()
    with pytest.raises(UsageError):
        load_capture(p)
    assert time.monotonic() - t0 < 5


def test_a_huge_gpu_count_is_refused(tmp_path: Path) -> None:
    doc = _real()
    doc["stated"] = {"gpus": [{"name": "NVIDIA A100", "count": 1_000_000_000}]}
    p = tmp_path / "count.yaml"
    p.write_text(yaml.safe_dump(doc))
    r, _ = replay(p)
    assert r.returncode == 2
    assert f"stated.gpus.0.count: expected a number of GPUs from 0 to {MAX_GPU_COUNT}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_count_written_as_1e9_is_refused(tmp_path: Path) -> None:
    doc = _real()
    p = tmp_path / "count.yaml"
    p.write_text(yaml.safe_dump(doc) + "stated:\n  gpus:\n  - count: 1e9\n")
    r, _ = replay(p)
    assert r.returncode == 2 and "stated.gpus.0.count" in r.stderr, r.stderr


def test_a_5000_digit_integer_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "bigint.yaml"
    p.write_text(yaml.safe_dump(_real()) + "stated:\n  gpus:\n  - count: " + "7" * 5000 + "\n")
    r, _ = replay(p)
    assert r.returncode == 2, r.stderr
    assert "an integer of 5000 characters" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_list_longer_than_the_bound_is_refused(tmp_path: Path) -> None:
    doc = _real()
    doc["globs"] = {"/dev/nvidia*": [f"/dev/nvidia{i}" for i in range(MAX_LIST + 1)]}
    p = tmp_path / "long.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(UsageError, match="items"):
        load_capture(p)


@pytest.mark.parametrize("name, data, words", [
    ("utf16", "format: gpuops-capture\nformat_version: 1\n".encode("utf-16"), "UTF-16"),
    ("binary", bytes(range(256)) * 8, "NUL"),
    ("latin1", "format: gpuops-capture\nnote: caf\xe9\n".encode("latin-1"), "UTF-8"),
    ("deep", b"format: gpuops-capture\nx: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "YAML"),
    ("not-a-mapping", b"- 1\n- 2\n", "expected a mapping"),
])
def test_undecodable_captures_are_one_line(tmp_path: Path, name: str, data: bytes, words: str) -> None:
    p = tmp_path / f"{name}.yaml"
    p.write_bytes(data)
    r, _ = replay(p)
    assert r.returncode == 2, (name, r.stderr[-500:])
    assert words in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr[-500:]


def test_the_real_capture_still_loads() -> None:
    cap = load_capture(REAL)
    assert cap.commands  # nothing in a real capture comes near the bounds
