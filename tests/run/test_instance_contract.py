"""The trainer's side of the instance contract (``gpuops/cloud/bootstrap.sh.tmpl``), for real: the
CLI in a subprocess as the bootstrap runs it, a real sqlite MLflow store read back with MlflowClient.

A spot interruption notice (``$GPUOPS_CHECKPOINT_DIR/INTERRUPT``) makes the trainer checkpoint into
that folder at the next iteration and stop, the run KILLED; ``--resume`` then continues from the
folder's checkpoint into the same run, with the batches an uninterrupted run would have seen.
Artifacts are mirrored into ``$GPUOPS_OUTPUT_DIR`` (what the instance uploads)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from gpuops.experiments.spec import load_experiment
from tests.run.conftest import client, run_cli, tiny_sr_spec


def _checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def test_spot_notice_checkpoints_to_the_folder_and_resume_continues_the_run(
        tmp_path: Path, data_dir: Path, store: str) -> None:
    spec = tiny_sr_spec(tmp_path, "spot")
    ckpt, out1, out2 = tmp_path / "checkpoints", tmp_path / "out1", tmp_path / "out2"
    ckpt.mkdir()
    (ckpt / "INTERRUPT").touch()  # the notice is there: the trainer must stop after one iteration

    r = run_cli("run", str(spec), "--tracking-uri", store, "--json", cwd=tmp_path,
                env={"GPUOPS_CHECKPOINT_DIR": str(ckpt), "GPUOPS_OUTPUT_DIR": str(out1)})
    assert r.returncode == 130, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    run_id = doc["run_id"]
    assert doc["status"] == "KILLED" and "spot interruption notice" in doc["error"]
    state = _checkpoint(ckpt / "last.pt")
    assert state["iteration"] == 1 and state["run_id"] == run_id
    c = client(store)
    run = c.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["gpuops.interrupted_at"] == "1"
    assert f"--resume {run_id}" in run.data.tags["gpuops.error"]
    summary = json.loads((out1 / "summary.json").read_text())
    assert summary["status"] == "KILLED" and summary["interrupted_at"] == 1 and summary["run_id"] == run_id

    # what the bootstrap does before a resume: the notice is gone. The MLflow copy of the checkpoint
    # is removed too (an upload the reclaim cut short): the folder's copy alone must carry the resume.
    (ckpt / "INTERRUPT").unlink()
    art = Path(unquote(urlsplit(run.info.artifact_uri).path)) / "checkpoints" / "last.pt"
    assert art.is_file()
    art.unlink()

    r = run_cli("run", "--resume", run_id, "--tracking-uri", store, "--json", cwd=tmp_path,
                env={"GPUOPS_CHECKPOINT_DIR": str(ckpt), "GPUOPS_OUTPUT_DIR": str(out2)})
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["run_id"] == run_id and doc["status"] == "FINISHED"
    run = c.get_run(run_id)
    assert run.data.tags["gpuops.resumed_from"] == "1"
    assert len(c.search_runs([run.info.experiment_id])) == 1  # the same run, not a new one
    assert _checkpoint(ckpt / "last.pt")["iteration"] == 4  # checkpoint_every: 4, into the folder too
    resumed = {k: {m.step: m.value for m in c.get_metric_history(run_id, k)}
               for k in ("train/loss", "val/psnr")}
    assert sorted(resumed["train/loss"]) == [2, 4, 6, 8] and sorted(resumed["val/psnr"]) == [4, 8]

    # the outputs folder holds the run's artifacts in their MLflow layout, and its summary
    got = {p.relative_to(out2).as_posix() for p in out2.rglob("*") if p.is_file()}
    assert {"model/state_dict.pt", "model/config.json", "learning_curve.png", "spec.yaml",
            "summary.json", "panels/bird.png"} <= got
    assert not any(p.startswith("checkpoints/") for p in got)  # those live in the checkpoint folder
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["resumed_from"] == 1
    assert summary["metrics"]["val/psnr"] == pytest.approx(run.data.metrics["val/psnr"])

    # the resumed run saw exactly the batches of an uninterrupted one: same losses from step 4 on
    # (step 2's window held one iteration instead of two), same final PSNR
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker
    from gpuops.train.worker import run_worker

    resolved = load_experiment(spec)
    tr = Tracker(store)
    ref_id = prepare_run(tr, resolved)
    assert run_worker(resolved.to_dict(), ref_id, store) == 0
    ref = {k: {m.step: m.value for m in c.get_metric_history(ref_id, k)} for k in ("train/loss", "val/psnr")}
    for step in (4, 6, 8):
        assert resumed["train/loss"][step] == pytest.approx(ref["train/loss"][step], rel=1e-5)
    assert resumed["val/psnr"][8] == pytest.approx(ref["val/psnr"][8], rel=1e-5)
