"""``--smoke`` of the new SR presets (sr_fast at x2/x3/x4, espcn_y) through the real worker and
MLflow store, and the artifacts a reader gets: the per-image table, labelled panels and curve."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from PIL import Image

from gpuops.experiments.spec import load_experiment
from tests.conftest import REPO
from tests.run.conftest import client

SPECS = [*sorted((REPO / "experiments").glob("sr_fast*.yaml")), REPO / "experiments" / "espcn_y.yaml"]
# Set5 bicubic PSNR on Y, measured with this recipe (the data sets' README; published 33.66 /
# 30.39 / 28.42 in the SRCNN paper, TPAMI 2016)
BICUBIC = {2: 33.65, 3: 30.39, 4: 28.42}
SET5 = ["baby", "bird", "butterfly", "head", "woman"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_presets_exist() -> None:
    names = {p.stem for p in SPECS}
    assert {"sr_fast", "sr_fast_x2", "sr_fast_x4", "espcn_y"} <= names
    for p in SPECS:
        spec = load_experiment(p).spec
        assert spec.model.arch == "espcn" and spec.model.padding == "same"
    fast = {load_experiment(p).spec.data.scale: load_experiment(p).spec for p in SPECS if "fast" in p.stem}
    assert sorted(fast) == [2, 3, 4]
    assert all(s.model.residual for s in fast.values())
    assert len({s.model.layers for s in fast.values()}) == 1  # one recipe, three scales


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_smoke_run_and_its_artifacts(path: Path, data_dir: Path, store: str, tmp_path: Path) -> None:
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker
    from gpuops.train.worker import run_worker

    resolved = load_experiment(path, smoke=True)
    scale = resolved.spec.data.scale
    run_id = prepare_run(Tracker(store), resolved, target="local")
    assert run_worker(resolved.to_dict(), run_id, store, str(tmp_path / "events.jsonl")) == 0
    c = client(store)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val/psnr_bicubic"] == pytest.approx(BICUBIC[scale], abs=0.02)

    got = Path(c.download_artifacts(run_id, "", str(tmp_path / "art")))
    # the per-image table: every Set5 image and the mean, the mean row equal to the logged metric
    table = list(csv.DictReader(io.StringIO((got / "eval" / "per_image.csv").read_text())))
    assert [r["image"] for r in table] == [*SET5, "mean"]
    assert float(table[-1]["psnr"]) == pytest.approx(run.data.metrics["val/psnr"], abs=1e-4)
    assert float(table[0]["psnr_bicubic"]) > 0
    # labelled panels, one per image
    for name in SET5:
        with Image.open(got / "panels" / f"{name}.png") as im:
            text = dict(im.text)
        assert f"Set5/{name}" in text["Title"] and f"x{scale}" in text["Title"]
        assert text["tile 1"].startswith("bicubic | PSNR") and text["tile 3"].startswith("ground truth")
        assert "crop rows" in text["crop"]
    # the learning curve names the data set, the scale, the unit and the bicubic line
    with Image.open(got / "learning_curve.png") as im:
        text = dict(im.text)
    assert f"Set5 x{scale}" in text["Title"] and "(dB)" in text["Title"]
    assert f"bicubic baseline {run.data.metrics['val/psnr_bicubic']:.2f} dB" in text["Description"]
