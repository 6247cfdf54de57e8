"""``gpuops predict`` checks its input image and output name before it fetches a model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import SHARED


def _predict(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuops", "predict", "0123abcd", *args, "--tracking-uri",
                           f"sqlite:///{tmp_path / 'm.db'}"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


def test_a_non_image_input(tmp_path: Path):
    txt = tmp_path / "notes.txt"
    txt.write_text("not pixels\n")
    r = _predict(tmp_path, str(txt))
    assert r.returncode == 2 and "not an image PIL can read" in r.stderr and "Traceback" not in r.stderr


def test_an_output_name_that_is_no_image_format(tmp_path: Path):
    r = _predict(tmp_path, str(SHARED / "datasets" / "Set5" / "bird.png"), "--out", str(tmp_path / "x.txt"))
    assert r.returncode == 2 and "not an image file name" in r.stderr
    assert not (tmp_path / "x.txt").exists()
