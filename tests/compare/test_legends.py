"""`gpuops compare`'s legends name the params that differ between the runs, not the run names."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from gpuops.tracking.compare import compare_runs, legend_labels, plot_comparison
from tests.compare.store import Store


@pytest.fixture
def store(sr_store: Store) -> Store:
    return sr_store


def _pairs(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(", "))


def test_legends_name_the_differing_params_with_each_runs_value(store: Store, tmp_path: Path) -> None:
    runs = [store.runs[n] for n in ("srcnn-955-adam", "srcnn-333-sgd")]
    c, histories = compare_runs(store.uri, run_ids=[r.run_id for r in runs])
    labels = legend_labels(c)
    # what differs, computed from the params as the store logged them
    keys = set(runs[0].params) | set(runs[1].params)
    differ = {k for k in keys if runs[0].params.get(k) != runs[1].params.get(k)}
    assert {"model.layers", "train.optimizer", "train.lr"} <= differ
    for r in runs:
        text = labels[r.run_id]
        assert r.name not in text  # not the random/free-form run name
        pairs = _pairs(text)
        assert pairs and set(pairs) <= differ
        for k, v in pairs.items():
            assert v == r.params.get(k, "(unset)")
    assert labels[runs[0].run_id] != labels[runs[1].run_id]

    path = plot_comparison(c, histories, tmp_path / "cmp.png")
    with Image.open(path) as im:
        described = im.text["Description"]
    for r in runs:
        assert labels[r.run_id] in described


def test_runs_with_the_same_params_fall_back_to_name_and_id(store: Store) -> None:
    runs = [store.runs[n] for n in ("srcnn-955-adam", "srcnn-955-adam-gpu")]
    assert runs[0].params == runs[1].params  # the same spec on two machines
    c, _ = compare_runs(store.uri, run_ids=[r.run_id for r in runs])
    labels = legend_labels(c)
    for r in runs:
        assert labels[r.run_id] == f"{r.name} ({r.run_id[:8]})"
