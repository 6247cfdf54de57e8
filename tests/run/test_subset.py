"""``train.subset`` larger than the data set is an error before any run exists, naming both
numbers; the number of examples a run trained on is logged with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from gpuops.classify.data import train_size


def _spec(tmp_path: Path, subset: int) -> Path:
    p = tmp_path / "digits.yaml"
    p.write_text(yaml.safe_dump({
        "name": "digits-subset", "task": "classify", "seed": 0,
        "data": {"dataset": "digits", "augment": False}, "model": {"arch": "cnn10"},
        "train": {"iterations": 2, "batch_size": 16, "subset": subset, "log_every": 1, "checkpoint_every": 0},
    }))
    return p


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuops", "run", *args, "--tracking-uri",
                           f"sqlite:///{tmp_path / 'm.db'}"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


def test_subset_beyond_the_data_set_is_refused(tmp_path: Path):
    n = train_size("digits")
    assert 1000 < n < 1797  # scikit-learn's 1,797 digits less the test fifth
    r = _run(tmp_path, str(_spec(tmp_path, n + 1)))
    assert r.returncode == 2
    assert "train.subset" in r.stderr and f"at most {n}" in r.stderr and str(n + 1) in r.stderr
    if (tmp_path / "m.db").exists():  # the store may exist; no run may
        from mlflow.tracking import MlflowClient

        c = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
        assert c.search_runs([e.experiment_id for e in c.search_experiments()]) == []


def test_the_effective_number_of_examples_is_logged(tmp_path: Path):
    r = _run(tmp_path, str(_spec(tmp_path, 300)), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").get_run(json.loads(r.stdout)["run_id"])
    assert run.data.params["data.train_examples"] == "300"
