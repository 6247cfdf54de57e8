"""``--target ray`` through the CLI, against the session's real two-node Ray cluster on 127.0.0.1:
``gpuops run``, ``gpuops sweep`` (the children as trials, the parent's table and plot) and
``gpuops doctor --cluster``; and the refusals that come before any run exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.run.conftest import client, run_cli, tiny_sr_spec


def _spec(tmp_path: Path, name: str) -> Path:
    # one (declared) GPU per trial: Ray sets CUDA_VISIBLE_DEVICES; the trainer finds no CUDA, uses the CPU
    return tiny_sr_spec(tmp_path, name, resources={"device": "auto", "gpus": 1, "threads": 1})


def test_run_on_ray_is_one_trial_in_the_specs_experiment(ray_cluster: dict[str, Any], store: str,
                                                          tmp_path: Path) -> None:
    r = run_cli("run", str(_spec(tmp_path, "ray_one")), "--smoke", "--target", "ray", "--ray-address",
                ray_cluster["address"], "--tracking-uri", store, "--json", cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["target"] == "ray" and doc["status"] == "FINISHED" and "val/psnr" in doc["metrics"]
    run = client(store).get_run(doc["run_id"])
    tags = run.data.tags
    assert tags["gpuops.target"] == "ray" and tags["gpuops.ray.node_id"] in ray_cluster["nodes"]
    assert tags["gpuops.ray.cuda_visible_devices"] in ("0", "1")  # the declared GPU Ray gave the trial
    assert "env.python" in tags  # the fingerprint of the node it ran on


def test_sweep_on_ray_fans_out_and_collects(ray_cluster: dict[str, Any], store: str, tmp_path: Path) -> None:
    r = run_cli("sweep", str(_spec(tmp_path, "ray_sweep")), "--param", "train.lr=0.001,0.002,0.003,0.004",
                "--smoke", "--target", "ray", "--ray-address", ray_cluster["address"],
                "--tracking-uri", store, "--json", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["target"] == "ray" and len(doc["runs"]) == 4
    assert all(row["status"] == "FINISHED" and row["metric"] is not None for row in doc["runs"])
    c = client(store)
    children = c.search_runs([c.get_run(doc["parent_run_id"]).info.experiment_id],
                             filter_string=f"tags.mlflow.parentRunId = '{doc['parent_run_id']}'")
    assert sorted(run.data.params["train.lr"] for run in children) == ["0.001", "0.002", "0.003", "0.004"]
    assert all(run.data.tags["gpuops.target"] == "ray" for run in children)
    assert {a.path for a in c.list_artifacts(doc["parent_run_id"])} >= {"sweep.json", "sweep.png"}
    assert c.get_run(doc["parent_run_id"]).info.status == "FINISHED"


def test_doctor_cluster_reports_every_node(ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    r = run_cli("doctor", "--cluster", "--ray-address", ray_cluster["address"], "--capture", str(tmp_path),
                "--json", cwd=tmp_path, timeout=300)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert sorted(n["node_id"] for n in doc["nodes"]) == sorted(ray_cluster["nodes"])
    assert all(n["verdict"] != "capture_failed" and not n["frameworks_imported"] for n in doc["nodes"])
    assert len(list(tmp_path.glob("*.yaml"))) == len(ray_cluster["nodes"])  # one capture per node


def test_a_local_store_with_a_remote_cluster_is_refused_before_any_run(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    r = run_cli("run", str(_spec(tmp_path, "ray_far")), "--target", "ray",
                "--ray-address", "10.11.12.13:6379", "--tracking-uri", f"sqlite:///{db}", cwd=tmp_path,
                timeout=120)
    assert r.returncode == 2 and "cannot log to it" in r.stderr, r.stderr[-2000:]
    assert not db.exists()
    r = run_cli("run", str(_spec(tmp_path, "ray_opts")), "--ray-address", "x:1", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "only for --target ray" in r.stderr


def test_a_job_through_the_cli_is_listed_logged_and_stopped(ray_cluster: dict[str, Any], store: str,
                                                             tmp_path: Path) -> None:
    import os
    import sys
    import time

    dash = ray_cluster["dashboard"]
    dash = dash if dash.startswith("http") else f"http://{dash}"
    spec = tiny_sr_spec(tmp_path, "ray_job", train={"iterations": 200_000, "checkpoint_every": 0},
                        eval={"every": None}, resources={"device": "cpu", "threads": 1})
    r = run_cli("run", str(spec), "--target", "ray", "--submit", dash, "--gpuops-cmd",
                f"{sys.executable} -m gpuops", "--tracking-uri", store, "--json", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["state"] == "launched" and doc["status"] == "RUNNING"
    run_id = doc["run_id"]
    seen: dict[str, Any] = {}
    end = time.monotonic() + 240
    while time.monotonic() < end:  # listed, and training (its first loss in MLflow)
        out = run_cli("ps", "--target", "ray", "--ray-dashboard", dash, "--json", cwd=tmp_path).stdout
        ps = json.loads(out)
        seen = next((j for j in ps["jobs"] if j["run_id"] == run_id), {})
        if seen.get("status") == "RUNNING" and "train/loss" in client(store).get_run(run_id).data.metrics:
            break
        time.sleep(2)
    assert seen.get("status") == "RUNNING", seen
    logs = run_cli("logs", run_id, "--target", "ray", "--ray-dashboard", dash, cwd=tmp_path)
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr[-2000:]
    stop = run_cli("stop", run_id, "--target", "ray", "--ray-dashboard", dash, "--tracking-uri", store,
                   "--json", cwd=tmp_path, timeout=180)
    assert stop.returncode == 0, stop.stderr[-2000:]
    assert json.loads(stop.stdout)["run_status"] == "KILLED"
    assert client(store).get_run(run_id).info.status == "KILLED"
    token = ray_cluster.get("token") or os.environ.get("RAY_AUTH_TOKEN")
    if token:  # the cluster runs with token auth: the token is in none of what gpuops printed
        assert token not in r.stdout + r.stderr + logs.stdout + stop.stdout


def test_resources_gpus_on_ray_is_ddp_through_ray_train(ray_cluster: dict[str, Any], store: str,
                                                        tmp_path: Path) -> None:
    spec = tiny_sr_spec(tmp_path, "ray_ddp", resources={"device": "cpu", "gpus": 2, "threads": 1})
    r = run_cli("run", str(spec), "--smoke", "--target", "ray", "--ray-address", ray_cluster["address"],
                "--tracking-uri", store, "--json", cwd=tmp_path, timeout=500)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["status"] == "FINISHED" and "val/psnr" in doc["metrics"]
    c = client(store)
    history = c.get_metric_history(doc["run_id"], "train/loss")
    steps = [m.step for m in history]
    assert steps and len(steps) == len(set(steps))  # logged once, from rank 0
    assert c.get_run(doc["run_id"]).data.params["resources.gpus"] == "2"
