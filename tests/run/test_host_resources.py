"""A spec asking for CUDA, or for more GPUs than the machine has, is refused before any MLflow run
exists (the test machines have no GPU; on one with GPUs these cases would be allowed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpuops.targets.local import visible_gpus
from tests.conftest import REPO

SPEC = REPO / "experiments" / "quickstart.yaml"


@pytest.mark.parametrize(("override", "said"), [
    ("resources.device=cuda", "resources.device is cuda, but torch sees no CUDA device"),
    ("resources.gpus=2", "resources.gpus is 2, but this machine has no CUDA device"),
])
def test_refused_before_a_run_exists(tmp_path: Path, override: str, said: str):
    n, note = visible_gpus()
    assert note == ""
    if n:
        pytest.fail(f"this test expects a machine without CUDA devices; torch sees {n}")  # never silent
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = subprocess.run([sys.executable, "-m", "gpuops", "run", str(SPEC), "--smoke", "--set", override,
                        "--tracking-uri", store], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert said in r.stderr and "Traceback" not in r.stderr
    from mlflow.tracking import MlflowClient

    c = MlflowClient(store)
    assert c.search_runs([e.experiment_id for e in c.search_experiments()]) == []
