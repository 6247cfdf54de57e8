"""End to end: `gpuops run ... --target docker --env pytorch-cpu --smoke` logs into MLflow on the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, require
from tests.infra.docker_engine import build_env_vars

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_run_in_docker_logs_metrics_and_image_digest(tmp_path, pytorch_cpu_image, base_image, build_ca):
    import docker
    from mlflow.tracking import MlflowClient

    spec = REPO / "experiments" / "srcnn_y.yaml"
    require(spec.is_file(), f"{spec} missing (helper 'run' writes it)")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, **build_env_vars(base_image, build_ca[0]), "NO_COLOR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run(
        [sys.executable, "-m", "gpuops", "run", str(spec.relative_to(REPO)), "--target", "docker",
         "--env", "pytorch-cpu", "--smoke", "--tracking-uri", store, "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-5000:]}"
    doc = json.loads(res.stdout)
    assert doc["target"] == "docker" and doc["state"] == "succeeded"
    run = MlflowClient(tracking_uri=store).get_run(doc["run_id"])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
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
