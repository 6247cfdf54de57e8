"""Experiment spec validation: every shipped spec loads; bad specs are one line, exit 2, no run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpuops.errors import SpecError, UsageError
from gpuops.experiments.spec import load_experiment, resolved_from_dict
from tests.conftest import REPO
from tests.run.conftest import run_cli

# the built-in tasks (sr, classify); the task: script examples run in tests/scripts/test_examples.py
EXPERIMENTS = sorted(p for p in (REPO / "experiments").glob("*.yaml")
                     if "task: script" not in p.read_text())


def test_the_shipped_experiments_are_all_there() -> None:
    names = {p.stem for p in EXPERIMENTS}
    assert {"srcnn_y", "srcnn_rgb", "fsrcnn_y", "vdsr_y", "cifar10_cnn", "cifar10_resnet20", "cifar10_fast",
            "cifar10_subset_sweep", "quickstart"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_specs_validate_and_resolve(path: Path, data_dir: Path) -> None:
    r = load_experiment(path, smoke=True)
    assert r.spec.name == path.stem
    if r.spec.task == "sr":
        # "data/T91" is relative to the spec's folder: experiments/data/T91
        assert Path(r.spec.data.train) == (data_dir / "T91").resolve()
        assert Path(r.spec.data.eval) == (data_dir / "Set5").resolve()
    else:
        assert r.spec.data.dataset == "digits"  # the offline smoke data


def test_srcnn_y_is_the_paper_setup(data_dir: Path) -> None:
    r = load_experiment(REPO / "experiments" / "srcnn_y.yaml")
    s = r.spec
    assert (s.model.arch, s.model.layers, s.model.padding) == ("srcnn", "64x9x9_32x5x5_1x5x5", "valid")
    assert (s.data.scale, s.data.colour, s.data.patch, s.data.stride) == (3, "y", 33, 14)
    params = r.params()
    assert params["model.layers"] == "64x9x9_32x5x5_1x5x5"
    assert params["train.optimizer"] == "adam"
    assert float(params["train.lr"]) == pytest.approx(1e-4)


def _write(tmp: Path, doc: dict) -> Path:
    p = tmp / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _base(data_dir: Path) -> dict:
    return {
        "name": "bad", "task": "sr",
        "data": {"train": str(data_dir / "T91"), "eval": str(data_dir / "Set5")},
        "train": {"iterations": 2},
    }


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"train": {"iterations": 2, "learning_rate": 0.1}}, "train.learning_rate", "unknown key"),
        ({"train": {"iterations": "many"}}, "train.iterations", "integer"),
        ({"model": {"layers": "64x9x9_32x5_1x5x5"}}, "model.layers", "layer 2"),
        ({"model": {"layers": "64x9x9_32x5x5_3x5x5"}}, "model.layers", "1 filter"),
        ({"data": {"train": "no/such/folder"}}, "data.train", "existing image folder"),
        ({"task": "segment"}, "task", "one of sr, classify"),
        ({"train": {"iterations": 2, "epochs": 3}}, "train", "exactly one of"),
        ({"train": {"iterations": 2, "optimizer": "rmsprop"}}, "train.optimizer", "adam"),
    ],
)
def test_invalid_specs_name_file_field_and_expectation(tmp_path: Path, data_dir: Path, change: dict,
                                                       field: str, expected: str) -> None:
    doc = _base(data_dir)
    for k, v in change.items():
        if isinstance(v, dict):
            doc[k] = {**doc.get(k, {}), **v}
        else:
            doc[k] = v
    path = _write(tmp_path, doc)
    with pytest.raises(SpecError) as e:
        load_experiment(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {field}")
    assert expected in msg
    assert "\n" not in msg


def test_invalid_spec_on_the_cli_is_one_line_exit_2_and_no_run(tmp_path: Path, data_dir: Path) -> None:
    doc = _base(data_dir)
    doc["model"] = {"layers": "64x9x9_oops_1x5x5"}
    path = _write(tmp_path, doc)
    db = tmp_path / "mlflow.db"
    r = run_cli("run", str(path), "--tracking-uri", f"sqlite:///{db}", cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {path}: model.layers: expected")
    assert "'oops'" in lines[0]
    assert r.stdout == ""
    assert not db.exists()  # nothing was tracked, not even a store created
    assert not (tmp_path / "mlruns").exists()


def test_bad_override_is_exit_2_and_no_run(tmp_path: Path, data_dir: Path) -> None:
    path = _write(tmp_path, _base(data_dir))
    r = run_cli("run", str(path), "--set", "train.lr=-1", cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert "train.lr: expected" in r.stderr and "greater than 0" in r.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_overrides_are_validated_applied_and_recorded(tmp_path: Path, data_dir: Path) -> None:
    path = _write(tmp_path, _base(data_dir))
    r = load_experiment(path, ["train.lr=1e-4", "model.padding=same", "data.colour=rgb",
                               "model.layers=16x3x3_3x3x3"])
    assert r.spec.train.lr == pytest.approx(1e-4)
    assert r.spec.model.padding == "same"
    assert r.overrides == ["train.lr=1e-4", "model.padding=same", "data.colour=rgb",
                           "model.layers=16x3x3_3x3x3"]
    assert r.spec_hash != load_experiment(path).spec_hash
    with pytest.raises(UsageError):
        load_experiment(path, ["train.lr"])  # no '='


def test_smoke_keeps_explicit_overrides(tmp_path: Path, data_dir: Path) -> None:
    path = _write(tmp_path, _base(data_dir))
    assert load_experiment(path, smoke=True).spec.train.iterations == 4
    assert load_experiment(path, ["train.iterations=9"], smoke=True).spec.train.iterations == 9


def test_relative_data_paths_resolve_against_spec_folder_then_repo(tmp_path: Path, data_dir: Path) -> None:
    # A spec outside the repository with paths relative to the repository root: not found
    # beside the spec, found in the working directory (the repo) instead.
    doc = _base(data_dir)
    doc["data"] = {"train": "experiments/data/T91", "eval": "experiments/data/Set5"}
    p = tmp_path / "rel.yaml"
    p.write_text(yaml.safe_dump(doc))
    import os

    old = Path.cwd()
    os.chdir(REPO)
    try:
        r = load_experiment(p)
    finally:
        os.chdir(old)
    assert Path(r.spec.data.train) == (data_dir / "T91").resolve()
    # the same spec from another working directory: one clear error naming the field
    os.chdir(tmp_path)
    try:
        with pytest.raises(SpecError, match=r"data.train: expected an existing image folder"):
            load_experiment(p)
    finally:
        os.chdir(old)


def test_hash_is_stable_and_the_stored_document_round_trips(tmp_path: Path, data_dir: Path) -> None:
    a = load_experiment(REPO / "experiments" / "srcnn_y.yaml")
    b = load_experiment(REPO / "experiments" / "srcnn_y.yaml")
    assert a.spec_hash == b.spec_hash and len(a.spec_hash) == 64
    # the stored document rebuilds the same resolved experiment (used by --resume and the worker)
    again = resolved_from_dict(a.to_dict())
    assert again.spec == a.spec and again.spec_hash == a.spec_hash
