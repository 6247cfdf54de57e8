"""The Ray Jobs API path on the session's real two-node cluster (token auth on): a real `gpuops run`
as the job's entrypoint, its spec and data shipped as the job's working dir, real MLflow runs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from gpuops.cluster import jobs
from tests.run.conftest import client, tiny_sr_spec, wait_for

GPUOPS = f"{sys.executable} -m gpuops"  # the cluster's nodes run this venv's Python


def _run(store: str, tmp_path: Path, **sections: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from gpuops.experiments.spec import load_experiment
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker

    resolved = load_experiment(tiny_sr_spec(tmp_path, **sections), [])
    run_id = prepare_run(Tracker(store), resolved, target="ray")
    return run_id, resolved.to_dict()


def _wait_job(dashboard: str, run_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        row = jobs.find_job(dashboard, run_id)
        return row if row["status"] in statuses else None

    return wait_for(done, timeout, f"job of {run_id} in {statuses}")


def _assert_no_token(token: str, store: str, run_id: str, dashboard: str, log: str) -> None:
    run = client(store).get_run(run_id)
    everything = json.dumps({"params": run.data.params, "tags": run.data.tags})
    assert token not in everything
    info = jobs._client(dashboard).get_job_info(jobs.find_job(dashboard, run_id)["job_id"])
    assert token not in json.dumps(info.metadata or {}) and token not in info.entrypoint
    assert token not in json.dumps(info.runtime_env or {}, default=str)
    assert token not in log


def test_job_runs_lists_logs_and_finishes(ray_cluster: dict[str, Any], store: str, tmp_path: Path) -> None:
    dashboard, token = ray_cluster["dashboard"], ray_cluster["token"]
    run_id, doc = _run(store, tmp_path)
    job_id = jobs.submit(run_id, doc, store, dashboard, gpuops_cmd=GPUOPS)
    assert job_id.startswith("gpuops-")

    rows = [r for r in jobs.list_jobs(dashboard) if r["run_id"] == run_id]
    assert len(rows) == 1 and rows[0]["job_id"] == job_id
    assert rows[0]["status"] in {"PENDING", "RUNNING", "SUCCEEDED"}
    row = _wait_job(dashboard, run_id, set(jobs.TERMINAL), 150)
    log = jobs.job_logs(dashboard, run_id)
    assert row["status"] == "SUCCEEDED", log[-3000:]
    assert row["start"] and row["end"] and row["start"] <= row["end"] <= time.time() + 1

    run = client(store).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert 0 < run.data.metrics["val/psnr"] < 100 and run.data.metrics["train/loss"] > 0
    assert run_id[:8] in log  # the log is gpuops run's own output, which names the run
    _assert_no_token(token, store, run_id, dashboard, log)
    # What went into the working dir: the data folders at data/<field>, the rest of the spec as it was.
    bundled, folders = jobs.bundle_doc(doc)
    assert bundled["spec"]["data"]["train"] == "data/train" and bundled["spec"]["data"]["eval"] == "data/eval"
    assert folders == {str(Path(doc["spec"]["data"]["train"]).resolve()): "data/train",
                       str(Path(doc["spec"]["data"]["eval"]).resolve()): "data/eval"}
    assert bundled["spec"]["model"] == doc["spec"]["model"]
    cmd = jobs.entrypoint(run_id, store)
    assert f"--run-id {run_id}" in cmd and "--resolved resolved.json --target local" in cmd
    assert token not in cmd


def test_job_stopped_mid_run_is_killed(ray_cluster: dict[str, Any], store: str, tmp_path: Path) -> None:
    dashboard, token = ray_cluster["dashboard"], ray_cluster["token"]
    run_id, doc = _run(store, tmp_path, eval={"every": 100000, "panels": False},
                       train={"iterations": 200000, "log_every": 5, "checkpoint_every": 100000})
    jobs.submit(run_id, doc, store, dashboard, gpuops_cmd=GPUOPS)
    c = client(store)
    wait_for(lambda: c.get_run(run_id).data.metrics.get("train/loss"), 150, "the job's first metrics")
    assert jobs.find_job(dashboard, run_id)["status"] == "RUNNING"

    row = jobs.stop(dashboard, run_id[:10], store)
    assert row["status"] == "STOPPED" and row["run_id"] == run_id
    run = c.get_run(run_id)
    assert run.info.status == "KILLED"
    steps = [m.step for m in c.get_metric_history(run_id, "train/loss")]
    assert steps and max(steps) < 200000  # it was stopped well before its end
    log = jobs.job_logs(dashboard, run_id)
    _assert_no_token(token, store, run_id, dashboard, log)
