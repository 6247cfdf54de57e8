"""Fixtures for the ``gpuops run`` tests: a real sqlite MLflow store per test, real image data
(the T91/Set5 copies in experiments/data), the real CLI in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require

DATA = REPO / "experiments" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    require((DATA / "T91").is_dir() and (DATA / "Set5").is_dir(),
            f"{DATA}/T91 and Set5 (copied there by the sr library work)")
    return DATA


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, created (schema migrations run) once per session."""
    db = tmp_path_factory.mktemp("store_template") / "mlflow.db"
    client(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path: Path, store_template: Path) -> str:
    """A fresh real sqlite store in this test's folder (a copy of the empty template: creating the
    schema takes seconds, and two processes creating it at once race)."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(store_template, db)
    return f"sqlite:///{db}"


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def tiny_sr_spec(folder: Path, name: str = "tiny_sr", **sections: dict[str, Any]) -> Path:
    """A small but real SR experiment: 2 T91 images, a 2-layer net, Set5 centre crops."""
    spec: dict[str, Any] = {
        "name": name,
        "task": "sr",
        "seed": 3,
        "data": {"train": str(DATA / "T91"), "eval": str(DATA / "Set5"), "scale": 3, "colour": "y",
                 "patch": 21, "sampling": "random", "patches": 64, "train_images": 2},
        "model": {"arch": "srcnn", "layers": "8x3x3_1x3x3", "padding": "same"},
        "train": {"iterations": 8, "batch_size": 8, "log_every": 2, "checkpoint_every": 4},
        "eval": {"every": 4, "crop": 48, "panels": True},
        "resources": {"device": "cpu", "threads": 1},
    }
    for key, value in sections.items():
        spec.setdefault(key, {}).update(value)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def gpuops_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpuops", *args]


def run_cli(*args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    e.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(gpuops_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e,
                          check=False)


def wait_for(pred: Callable[[], Any], timeout: float, what: str,
             proc: subprocess.Popen[Any] | None = None) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}:\n{out[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def only_run(uri: str, experiment: str) -> Any:
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = c.search_runs([exp.experiment_id])
    return runs[0] if len(runs) == 1 else None


# The tags every target's run carries (``tracking.runs.prepare_run``: one function for all targets).
PATH_TAGS = ("spec.hash", "spec.name", "spec.task", "gpuops.version", "gpuops.overrides", "gpuops.smoke",
             "git.commit", "git.dirty", "gpuops.target")


def with_experiment(spec: Path, folder: Path, experiment: str) -> Path:
    """A copy of ``spec`` in ``folder`` with ``tracking.experiment`` set and its data paths made
    absolute (so the copy finds the same data)."""
    from gpuops.experiments.spec import resolve_data_path

    doc = yaml.safe_load(spec.read_text())
    for key in ("train", "eval"):
        if key in (doc.get("data") or {}):
            found = resolve_data_path(doc["data"][key], spec.resolve().parent)
            assert found is not None, f"{spec}: data.{key}"
            doc["data"][key] = str(found)
    doc.setdefault("tracking", {})["experiment"] = experiment
    out = folder / f"{experiment}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def check_one_path(uri: str, run_id: str, experiment: str, target: str, override: str) -> dict[str, str]:
    """The run landed in ``experiment`` with the tags every target gives, its ``--set`` applied to
    the params and recorded, and its ``spec.yaml`` stored; returns its tags. (A run made through a
    server that proxies artifacts, ``mlflow-artifacts:``, is checked on the server's disk instead.)"""
    import json

    c = client(uri)
    run = c.get_run(run_id)
    assert c.get_experiment(run.info.experiment_id).name == experiment
    tags = run.data.tags
    missing = [k for k in PATH_TAGS if k not in tags]
    assert not missing, (missing, sorted(tags))
    assert tags["gpuops.target"] == target
    assert override in json.loads(tags["gpuops.overrides"])
    key, _, value = override.partition("=")
    assert run.data.params[key] == value
    if run.info.artifact_uri.startswith("mlflow-artifacts:") and uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        from gpuops.tracking.server import default_artifacts_dir

        found = list(default_artifacts_dir(f"sqlite:///{db}").rglob(f"{run_id}/artifacts/spec.yaml"))
        assert found, run.info.artifact_uri
    else:
        assert any(a.path == "spec.yaml" for a in c.list_artifacts(run_id))
    return tags


def process_gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rpartition(")")[2].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.2)
    return False
