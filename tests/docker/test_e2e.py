"""End to end: `gpuops run ... --target docker --env pytorch-cpu --smoke` logs into MLflow on the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, require
from tests.infra.docker_engine import build_env_vars
from tests.run.conftest import check_one_path, with_experiment

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_run_in_docker_logs_metrics_and_image_digest(tmp_path, pytorch_cpu_image, base_image, build_ca):
    import docker
    from mlflow.tracking import MlflowClient

    src = REPO / "experiments" / "srcnn_y.yaml"
    require(src.is_file(), f"{src} missing (helper 'run' writes it)")
    # the spec names its own experiment, and a --set changes a field: the container trains exactly
    # what the host resolved (the resolved experiment is handed in; nothing re-reads the YAML)
    spec = with_experiment(src, tmp_path, "one-path-exp")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, **build_env_vars(base_image, build_ca[0]), "NO_COLOR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run(
        [sys.executable, "-m", "gpuops", "run", str(spec), "--target", "docker",
         "--env", "pytorch-cpu", "--smoke", "--set", "resources.device=cpu", "--tracking-uri", store,
         "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-5000:]}"
    doc = json.loads(res.stdout)
    assert doc["target"] == "docker" and doc["state"] == "succeeded"
    assert doc["experiment"] == "one-path-exp" and doc["status"] == "FINISHED"
    run = MlflowClient(tracking_uri=store).get_run(doc["run_id"])
    assert run.info.status == "FINISHED"
    tags = check_one_path(store, doc["run_id"], "one-path-exp", "docker", "resources.device=cpu")
    assert tags["git.commit"] != "unknown"  # the host's checkout, kept over the container's view
    # The image the run used is the pytorch-cpu image built from this checkout: the fixture's, unless
    # the gpuops sources changed since it was built (then the target built the new one on demand).
    assert tags.get("gpuops.target") == "docker", tags
    assert tags["gpuops.image"].startswith("gpuops/pytorch-cpu:")
    assert tags["env.image_digest"] == docker.from_env().images.get(tags["gpuops.image"]).id
    if tags["gpuops.image"] == pytorch_cpu_image.tag:
        assert tags["env.image_digest"] == pytorch_cpu_image.image_id
    metrics = run.data.metrics
    for key in ("train/loss", "val/psnr", "val/psnr_bicubic"):
        assert key in metrics, sorted(metrics)
    assert 10.0 < metrics["val/psnr_bicubic"] < 50.0  # Set5 x3 bicubic, evaluated whole even in smoke
    # the container is gone after the run
    label = f"org.gpuops.run_id={doc['run_id']}"
    left = docker.from_env().containers.list(all=True, filters={"label": label})
    assert left == []
