"""The three shipped script examples, for real: ``gpuops run experiments/X.yaml --smoke`` on the local
target into a real sqlite MLflow store, the Chainer and TensorFlow ones in venvs made from their locks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpuops.experiments.spec import load_experiment
from gpuops.scripts.supervise import OutputMetrics
from tests.conftest import REPO
from tests.run.conftest import client, run_cli
from tests.scripts.conftest import artifact_paths, artifact_text, runs_of

EXAMPLES = {
    # spec: (script file, what it writes into outputs/, metrics it must log, logged by patterns?)
    "chainer_srcnn": ("chainer_srcnn.py", "model.npz", {"train/loss", "val/psnr", "val/psnr_bicubic_pil"},
                      True),
    "keras_resnet_cifar": ("keras_resnet_cifar.py", "model.keras", {"train/loss", "val/accuracy", "val/loss"},
                           True),
    "torch_script": ("torch_espcn.py", "espcn.pt", {"train/loss", "val/psnr", "train/throughput"}, False),
}


@pytest.fixture(scope="session")
def script_venvs() -> dict[str, float]:
    """The examples' venvs, made once (kept in gpuops's cache by the lock's hash; a later session on
    the same machine reuses them). Returns how long each took here."""
    from gpuops.scripts.venv import ensure_venv

    took = {}
    for env in ("chainer-cpu", "tensorflow-cpu"):
        began = time.monotonic()
        python = ensure_venv(REPO / "environments" / f"{env}.yaml")
        took[env] = time.monotonic() - began
        assert python.exists()
    print(f"script venvs: {json.dumps({k: round(v, 1) for k, v in took.items()})} s")
    return took


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs_smoke_and_is_tracked(name: str, tmp_path: Path, store: str, script_venvs: dict) -> None:
    script, output, wanted, by_patterns = EXAMPLES[name]
    spec_file = REPO / "experiments" / f"{name}.yaml"
    r = run_cli("run", str(spec_file), "--smoke", "--tracking-uri", store, "--json", cwd=tmp_path,
                timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["status"] == "FINISHED"
    (run,) = runs_of(store, name)
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["spec.task"] == "script"
    assert run.data.tags["gpuops.script.exit_code"] == "0"
    assert run.data.tags["env.python"], "the environment fingerprint, as on every run"

    # params: the smoke values of the spec's params, and the command line they were put into
    resolved = load_experiment(spec_file, smoke=True)
    for key, value in resolved.spec.params.items():
        assert run.data.params[f"params.{key}"] == str(value)
    argv = json.loads(run.data.tags["gpuops.script.command"])
    assert Path(argv[1]).name == script
    assert argv[argv.index("--seed") + 1] == str(resolved.spec.seed)
    env_name = Path(resolved.spec.env).stem if resolved.spec.env else None
    if env_name:
        assert f"/{env_name}-" in argv[0], "the script runs on the environment's venv Python"
        framework = "chainer==7.8.1" if name == "chainer_srcnn" else "tensorflow==2.21.0"
        assert run.data.tags["gpuops.script.framework"] == framework

    # metrics: all there, finite where they must be
    assert wanted <= set(run.data.metrics), run.data.metrics
    assert doc["metrics"]["train/loss"] == pytest.approx(run.data.metrics["train/loss"])

    # artifacts: the script's source, its stdout/stderr, what it wrote, the resolved spec
    paths = artifact_paths(store, rid)
    assert {f"code/{script}", "logs/stdout.txt", "logs/stderr.txt", f"outputs/{output}", "spec.yaml"} <= paths
    src = artifact_text(store, rid, f"code/{script}", tmp_path / "code")
    assert src == (REPO / "experiments" / "scripts" / script).read_text()
    stdout = artifact_text(store, rid, "logs/stdout.txt", tmp_path / "logs")
    assert stdout.strip(), "the script's stdout was kept"

    if by_patterns:
        # the logged history is exactly what the spec's patterns read from that stdout (plus stderr)
        stderr = artifact_text(store, rid, "logs/stderr.txt", tmp_path / "logs2")
        parser = OutputMetrics(resolved.spec.metrics)
        points = [p for line in (stdout + stderr).splitlines() for p in parser.feed(line)]
        for metric in wanted:
            expect = [(p.step, p.value) for p in points if p.name == metric]
            hist = sorted((m.step, m.value) for m in client(store).get_metric_history(rid, metric))
            assert hist == sorted(expect), metric
            assert expect, f"{metric} was printed"
    else:
        # logged by the script itself through MLFLOW_RUN_ID: its own tag and param are in gpuops's run
        assert run.data.tags["script.framework"].startswith("torch ")
        assert int(run.data.params["script.model_parameters"]) > 0
        hist = client(store).get_metric_history(rid, "train/loss")
        assert sorted(m.step for m in hist) == [2, 4]  # log_every 2, iterations 4 under --smoke
