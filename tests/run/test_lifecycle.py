"""The whole ``gpuops run`` path on the CPU, for real: the CLI in a subprocess, the trainer in its
child process (or two under torchrun), a real sqlite MLflow store read back with MlflowClient.

Covers: MLflow contents (params, metrics, tags, artifacts), predict with the logged model,
Ctrl-C -> KILLED, a crash -> FAILED with the error, resume after a kill into the same run,
determinism, DDP with 2 gloo processes, and a sweep."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gpuops.experiments.spec import flatten, load_experiment
from tests.conftest import REPO
from tests.run.conftest import DATA, client, gpuops_cmd, only_run, run_cli, tiny_sr_spec, wait_for

SR_METRICS = {"train/loss", "train/throughput", "val/psnr", "val/ssim", "val/psnr_bicubic",
              "val/ssim_bicubic"}


def _popen(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # a session of its own, so that the test can signal the whole group as a terminal's Ctrl-C does
    return subprocess.Popen(gpuops_cmd(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data_dir: Path,
             store_template: Path) -> dict[str, Any]:
    """One real run through the CLI (cwd = the repository, so git tags are real)."""
    tmp = tmp_path_factory.mktemp("finished")
    spec = tiny_sr_spec(tmp)
    shutil.copyfile(store_template, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    r = run_cli("run", str(spec), "--tracking-uri", uri, "--set", "train.lr=0.002", "--json", cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    return {"doc": doc, "uri": uri, "spec": spec, "tmp": tmp}


def test_run_summary_json(finished: dict[str, Any]) -> None:
    doc = finished["doc"]
    assert doc["status"] == "FINISHED" and doc["exit_code"] == 0
    assert doc["experiment"] == "tiny_sr"
    assert doc["iterations"] == 8
    assert set(doc["metrics"]) >= SR_METRICS
    # evaluation on the same Set5 centre crops: the bicubic figure is a real PSNR in dB
    assert 20 < doc["metrics"]["val/psnr_bicubic"] < 40
    assert doc["metrics"]["val/psnr_bicubic_full"] == pytest.approx(30.39, abs=0.02)  # published x3


def test_mlflow_contents(finished: dict[str, Any]) -> None:
    c = client(finished["uri"])
    run = c.get_run(finished["doc"]["run_id"])
    assert run.info.status == "FINISHED"
    assert c.get_experiment(run.info.experiment_id).name == "tiny_sr"

    # params: the whole resolved spec, flattened, with the override applied
    resolved = load_experiment(finished["spec"], ["train.lr=0.002"])
    expected = flatten(resolved.spec.model_dump(mode="json"))
    assert run.data.params == expected
    assert run.data.params["model.layers"] == "8x3x3_1x3x3"
    assert float(run.data.params["train.lr"]) == 0.002

    # metrics: logged every log_every iterations / every evaluation, with their steps
    loss = c.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in loss] == [2, 4, 6, 8]
    assert [m.step for m in c.get_metric_history(run.info.run_id, "val/psnr")] == [4, 8]
    assert set(run.data.metrics) >= SR_METRICS

    # tags: environment fingerprint, git, spec hash, target, version, overrides
    tags = run.data.tags
    for key in ("env.python", "env.os", "env.image_digest", "git.commit", "git.dirty", "spec.hash",
                "gpuops.target", "gpuops.version", "gpuops.overrides"):
        assert key in tags, key
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False).stdout.strip()
    assert tags["git.commit"] == (head or "unknown")
    assert tags["spec.hash"] == resolved.spec_hash
    assert tags["gpuops.target"] == "local"
    assert json.loads(tags["gpuops.overrides"]) == ["train.lr=0.002"]
    assert tags["gpuops.world_size"] == "1"

    # artifacts: resolved spec, model (+ config to rebuild it), panels, learning curve, checkpoint
    def files(path: str | None = None) -> set[str]:
        out: set[str] = set()
        for a in c.list_artifacts(run.info.run_id, path):
            out |= files(a.path) if a.is_dir else {a.path}
        return out

    got = files()
    assert {"spec.yaml", "model/state_dict.pt", "model/config.json", "learning_curve.png",
            "checkpoints/last.pt"} <= got
    assert {f"panels/{n}.png" for n in ("baby", "bird", "butterfly", "head", "woman")} <= got
    # no credential-looking tag ever
    assert not any(k.lower().endswith(("secret", "token", "password")) for k in tags)


def test_predict_upscales_with_the_logged_model(finished: dict[str, Any]) -> None:
    tmp = finished["tmp"]
    src = np.asarray(Image.open(DATA / "Set5" / "bird.png").convert("RGB"))[:60, :75]
    Image.fromarray(src).save(tmp / "in.png")
    r = run_cli("predict", finished["doc"]["run_id"], str(tmp / "in.png"), "--out", str(tmp / "out.png"),
                "--tracking-uri", finished["uri"], "--json", cwd=tmp)
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp / "out.png"))
    assert out.shape == (180, 225, 3)
    assert json.loads(r.stdout)["scale"] == 3
    # the network was trained to approximate the HR image from its bicubic enlargement: its output
    # stays close to a bicubic enlargement (a broken rebuild/weights load would not)
    from gpuops.sr.color import to_uint8
    from gpuops.sr.imresize import imresize
    from gpuops.sr.metrics import psnr

    bic = to_uint8(imresize(src, output_shape=(180, 225)))
    assert psnr(out.astype(float), bic.astype(float)) > 22


def test_ctrl_c_marks_the_run_killed(tmp_path: Path, data_dir: Path, store: str) -> None:
    spec = tiny_sr_spec(tmp_path, "ctrl_c", train={"iterations": 1_000_000, "checkpoint_every": 0})
    proc = _popen("run", str(spec), "--tracking-uri", store, cwd=tmp_path)
    try:
        run = wait_for(lambda: (r := only_run(store, "ctrl_c")) is not None and "train/loss" in r.data.metrics
                       and r, 180, "the first logged loss", proc)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the whole group
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    run = client(store).get_run(run.info.run_id)
    assert run.info.status == "KILLED"
    assert "interrupted" in run.data.tags["gpuops.error"]


def test_a_broken_image_is_refused_before_any_run(tmp_path: Path, data_dir: Path, store: str) -> None:
    broken = tmp_path / "broken_images"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"this is not a PNG file")
    spec = tiny_sr_spec(tmp_path, "crash", data={"train": str(broken)})
    r = run_cli("run", str(spec), "--tracking-uri", store, "--json", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "data.train: expected decodable images; a.png is not" in r.stderr
    assert client(store).get_experiment_by_name("crash") is None


def test_crash_marks_the_run_failed_with_the_error(tmp_path: Path, data_dir: Path, store: str) -> None:
    """A trainer that raises (here: the image was fine when checked, broken when read) ends its run
    FAILED with the traceback as the gpuops.error tag and error.txt."""
    import sys

    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker

    folder = tmp_path / "images"
    shutil.copytree(data_dir / "T91", folder)
    resolved = load_experiment(tiny_sr_spec(tmp_path, "crash", data={"train": str(folder)}))
    tr = Tracker(store)
    run_id = prepare_run(tr, resolved)
    for png in folder.glob("*.png"):  # broken after the check, before the trainer reads them
        png.write_bytes(b"this is not a PNG file")
    doc_file = tmp_path / "resolved.json"
    doc_file.write_text(json.dumps(resolved.to_dict()))
    r = subprocess.run([sys.executable, "-m", "gpuops.train.worker", "--resolved", str(doc_file), "--run-id",
                        run_id, "--tracking-uri", store], capture_output=True, text=True, timeout=240,
                       check=False)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "UnidentifiedImageError" in r.stderr
    run = client(store).get_run(run_id)
    assert run.info.status == "FAILED"
    assert "UnidentifiedImageError" in run.data.tags["gpuops.error"]
    assert any(a.path == "error.txt" for a in client(store).list_artifacts(run_id))


def test_a_killed_trainer_never_leaves_the_run_running(tmp_path: Path, data_dir: Path, store: str) -> None:
    """SIGKILL of the trainer alone (no chance to clean up): the parent marks the run."""
    spec = tiny_sr_spec(tmp_path, "sigkill", train={"iterations": 1_000_000, "checkpoint_every": 0})
    proc = _popen("run", str(spec), "--tracking-uri", store, "--json", cwd=tmp_path)
    try:
        wait_for(lambda: (r := only_run(store, "sigkill")) is not None and "train/loss" in r.data.metrics,
                 180, "the first logged loss", proc)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True,
                                  check=False).stdout.split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    doc, _ = json.JSONDecoder().raw_decode(out[out.index("{"):])  # stderr lines follow
    assert doc["status"] == "KILLED"
    assert client(store).get_run(doc["run_id"]).info.status == "KILLED"


def test_resume_after_a_kill_continues_the_same_run(tmp_path: Path, data_dir: Path, store: str) -> None:
    spec = tiny_sr_spec(tmp_path, "resume", model={"layers": "32x5x5_32x3x3_1x3x3"},
                        data={"patch": 33, "patches": 256},
                        train={"iterations": 200, "batch_size": 32, "checkpoint_every": 10, "log_every": 10},
                        eval={"every": None})
    proc = _popen("run", str(spec), "--tracking-uri", store, cwd=tmp_path)
    try:
        run = wait_for(lambda: (r := only_run(store, "resume")) is not None
                       and "gpuops.checkpoint_iteration" in r.data.tags and r, 180, "a checkpoint", proc)
        os.killpg(proc.pid, signal.SIGKILL)  # nothing gets to clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    c = client(store)
    run_id = run.info.run_id
    assert c.get_run(run_id).info.status == "RUNNING", "the run finished before the test could kill it"

    r = run_cli("run", "--resume", run_id, "--tracking-uri", store, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["run_id"] == run_id and doc["status"] == "FINISHED"
    run = c.get_run(run_id)
    resumed_from = int(run.data.tags["gpuops.resumed_from"])
    assert resumed_from >= 10 and resumed_from % 10 == 0
    steps = [m.step for m in c.get_metric_history(run_id, "train/loss")]
    assert steps[-1] == 200 and min(steps) == 10
    assert len(c.search_runs([run.info.experiment_id])) == 1  # the same run, not a new one
    assert "val/psnr" in run.data.metrics


def test_same_spec_twice_gives_identical_metrics(tmp_path: Path, data_dir: Path, store: str) -> None:
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker
    from gpuops.train.worker import run_worker

    spec = tiny_sr_spec(tmp_path, "determinism")
    resolved = load_experiment(spec)
    histories = []
    for _ in range(2):
        tr = Tracker(store)
        run_id = prepare_run(tr, resolved)
        assert run_worker(resolved.to_dict(), run_id, store) == 0
        histories.append({k: [(m.step, m.value) for m in tr.client.get_metric_history(run_id, k)]
                          for k in ("train/loss", "val/psnr", "val/ssim")})
    assert histories[0] == histories[1]
    assert len(histories[0]["train/loss"]) == 4


def test_ddp_two_cpu_processes_log_once(tmp_path: Path, data_dir: Path, store: str) -> None:
    spec = tiny_sr_spec(tmp_path, "ddp", resources={"gpus": 2, "device": "cpu", "threads": 1})
    r = run_cli("run", str(spec), "--tracking-uri", store, "--json", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    c = client(store)
    run = c.get_run(doc["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["gpuops.world_size"] == "2"
    assert run.data.tags["gpuops.ddp_backend"] == "gloo"
    steps = [m.step for m in c.get_metric_history(doc["run_id"], "train/loss")]
    assert steps == [2, 4, 6, 8]  # rank 0 alone logs: each step exactly once
    assert [m.step for m in c.get_metric_history(doc["run_id"], "val/psnr")] == [4, 8]
    assert len(c.search_runs([run.info.experiment_id])) == 1


def test_sweep_runs_children_under_a_parent_with_a_plot(tmp_path: Path, store: str) -> None:
    r = run_cli("sweep", str(REPO / "experiments" / "cifar10_subset_sweep.yaml"), "--smoke",
                "--param", "train.subset=64,128", "--tracking-uri", store, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert [x["value"] for x in doc["runs"]] == [64, 128]
    c = client(store)
    parent = c.get_run(doc["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert {a.path for a in c.list_artifacts(parent.info.run_id)} >= {"sweep.png", "sweep.json"}
    for child in doc["runs"]:
        run = c.get_run(child["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["train.subset"] == str(child["value"])
        assert run.data.metrics["val/accuracy"] == child["metric"]


def test_run_id_logs_into_a_run_the_caller_created(tmp_path: Path, data_dir: Path, store: str) -> None:
    """The docker/aws targets create the run on the host and the container logs into it with
    ``gpuops run SPEC --target local --run-id RUN``: same run, the caller's target tag kept."""
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker
    from gpuops.train.worker import run_worker

    c = client(store)
    exp = c.create_experiment("caller", artifact_location=(tmp_path / "art").as_uri())
    made = c.create_run(exp, tags={"gpuops.target": "docker"}).info.run_id
    resolved = load_experiment(tiny_sr_spec(tmp_path, "caller"))
    tr = Tracker(store)
    assert prepare_run(tr, resolved, run_id=made) == made
    assert run_worker(resolved.to_dict(), made, store) == 0
    run = c.get_run(made)
    assert run.info.status == "FINISHED"
    assert run.data.tags["gpuops.target"] == "docker"
    assert run.data.tags["spec.hash"] == resolved.spec_hash
    assert run.data.params["model.layers"] == "8x3x3_1x3x3"
    assert len(c.search_runs([exp])) == 1


def test_resume_refuses_finished_and_unknown_runs_and_takes_prefixes(tmp_path: Path, store: str) -> None:
    from gpuops.tracking.runs import resolve_run_id
    from gpuops.tracking.tracker import Tracker

    tr = Tracker(store)
    run_id = tr.start("resume-checks")
    tr.finish("FINISHED")
    # a FINISHED run, named by the 8-digit prefix that `gpuops compare` prints
    r = run_cli("run", "--resume", run_id[:8], "--tracking-uri", store, cwd=tmp_path)
    assert r.returncode == 2
    assert f"run {run_id} is FINISHED" in r.stderr and "--force" in r.stderr
    r = run_cli("run", "--resume", "0123abcd", "--tracking-uri", store, cwd=tmp_path)
    assert r.returncode == 2 and "no MLflow run whose id starts with 0123abcd" in r.stderr
    assert "spec.yaml" not in r.stderr
    assert resolve_run_id(tr.client, run_id[:6].upper()) == run_id
    r = run_cli("run", "--resume", "not-an-id", "--tracking-uri", store, cwd=tmp_path)
    assert r.returncode == 2 and "is not a run id" in r.stderr
