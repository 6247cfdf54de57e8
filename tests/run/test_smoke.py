"""``--smoke`` for every file in experiments/: the whole path (data, model, training, evaluation,
artifacts, MLflow) for real, in this process to keep the suite fast (the child-process path is
covered by test_lifecycle.py); classification specs run on scikit-learn's digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuops.experiments.spec import load_experiment
from tests.conftest import REPO
from tests.run.conftest import client

# the built-in tasks (sr, classify); the task: script examples run in tests/scripts/test_examples.py
EXPERIMENTS = sorted(p for p in (REPO / "experiments").glob("*.yaml")
                     if "task: script" not in p.read_text())
# Bicubic PSNR (dB, Y channel) on whole Set5 by scale, as measured on these files with the papers'
# recipe (/work/shared/datasets/README.md; published: 33.66 / 30.39 / 28.42, SRCNN paper, TPAMI 2016).
BICUBIC_SET5 = {2: 33.65, 3: 30.39, 4: 28.42}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_smoke(path: Path, data_dir: Path, store: str, tmp_path: Path) -> None:
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker
    from gpuops.train.worker import run_worker

    resolved = load_experiment(path, smoke=True)
    tr = Tracker(store)
    run_id = prepare_run(tr, resolved, target="local")
    events = tmp_path / "events.jsonl"
    assert run_worker(resolved.to_dict(), run_id, store, str(events)) == 0
    run = client(store).get_run(run_id)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["train/loss"] > 0 and m["train/throughput"] > 0
    if resolved.spec.task == "sr":
        published = BICUBIC_SET5[resolved.spec.data.scale]
        if resolved.spec.eval.crop is None:  # the whole of Set5: the published bicubic figure
            assert m["val/psnr_bicubic"] == pytest.approx(published, abs=0.02)
        else:
            assert m["val/psnr_bicubic_full"] == pytest.approx(published, abs=0.02)
        assert 0 < m["val/ssim"] <= 1 and m["val/psnr"] > 0
    else:
        assert 0 <= m["val/accuracy"] <= 1 and m["val/loss"] > 0
        assert run.data.params["data.dataset"] == "digits"
    names = {a.path for a in client(store).list_artifacts(run_id)}
    assert {"spec.yaml", "model", "learning_curve.png"} <= names
    kinds = [line.split('"event": "')[1].split('"')[0] for line in events.read_text().splitlines()]
    assert kinds[-2:] == ["summary", "end"] and "progress" in kinds
