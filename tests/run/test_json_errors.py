"""With --json, a failing command still gives a script one JSON document on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_a_spec_error_is_a_json_object_too(tmp_path: Path):
    r = subprocess.run([sys.executable, "-m", "gpuops", "run", str(REPO / "experiments" / "quickstart.yaml"),
                        "--set", "train.lr=abc", "--json"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 2
    doc = json.loads(r.stdout)["error"]
    assert doc["code"] == "SpecError" and doc["exit_code"] == 2
    assert "train.lr" in doc["message"] and "expected a valid number" in doc["message"]
    assert "train.lr" in r.stderr  # the text is still on stderr for a person
