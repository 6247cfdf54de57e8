"""DDP through Ray Train on the session's real two-node cluster: 2 workers on gloo, gpuops's own
trainer in each, a real MLflow run; then one worker killed by pid mid-run."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gpuops.cluster.ddp import DdpResult, checkpoint_dir_for, train_ddp
from tests.run.conftest import client, tiny_sr_spec, wait_for

ITERS, CKPT = 240, 40


def _run(store: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    from gpuops.experiments.spec import load_experiment
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker

    spec = tiny_sr_spec(tmp_path, train={"iterations": ITERS, "log_every": 5, "checkpoint_every": CKPT,
                                         "batch_size": 16},
                        model={"layers": "16x5x5_1x3x3"}, eval={"every": 1000, "panels": False})
    resolved = load_experiment(spec, [])
    return prepare_run(Tracker(store), resolved, target="ray"), resolved.to_dict()


def test_two_workers_log_each_metric_once(ray_conn: Any, ray_cluster: dict[str, Any], store: str,
                                          tmp_path: Path) -> None:
    run_id, doc = _run(store, tmp_path)
    res = train_ddp(run_id, doc, store, workers=2, storage_path=str(tmp_path / "ray-train"))
    assert isinstance(res, DdpResult)
    assert res.status == "FINISHED", res.error
    assert res.attempts == 1 and res.resumed_from is None
    c = client(store)
    run = c.get_run(run_id)
    assert run.data.tags["gpuops.world_size"] == "2" and run.data.tags["gpuops.ddp_backend"] == "gloo"
    steps = [m.step for m in c.get_metric_history(run_id, "train/loss")]
    assert sorted(steps) == list(range(5, ITERS + 1, 5))  # rank 0 only: each step once, none twice
    assert [m.step for m in c.get_metric_history(run_id, "val/psnr")] == [ITERS]
    assert 0 < res.metrics["val/psnr"] < 100
    assert run.data.tags["gpuops.checkpoint_iteration"] == str(ITERS - CKPT)
    # The node-local copy (under the nodes' TMPDIR, the cluster's temp folder) is gone after a good end.
    assert checkpoint_dir_for(run_id).parent.name == "gpuops-ddp"
    assert not (Path(ray_cluster["temp_dir"]).parent / "gpuops-ddp" / run_id).exists()


def _train_workers() -> list[Any]:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])


def test_killed_worker_resumes_from_last_checkpoint(ray_conn: Any, ray_cluster: dict[str, Any], store: str,
                                                    tmp_path: Path) -> None:
    run_id, doc = _run(store, tmp_path)
    c = client(store)
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(res=train_ddp(
        run_id, doc, store, workers=2, storage_path=str(tmp_path / "ray-train"), max_failures=1)))
    t.start()
    try:
        def checkpointed() -> int | None:
            it = c.get_run(run_id).data.tags.get("gpuops.checkpoint_iteration")
            return int(it) if it else None

        wait_for(checkpointed, 150, "the first checkpoint")
        actors = _train_workers()
        assert len(actors) == 2, actors
        victim = max(actors, key=lambda a: a.pid)
        before = checkpointed()
        staged = Path(ray_cluster["temp_dir"]).parent / "gpuops-ddp" / run_id / "last.pt"
        assert staged.is_file()  # rank 0 writes its checkpoints into the node-local folder too
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.time()
        assert before is not None and before < ITERS
    finally:
        t.join(timeout=240)
    assert not t.is_alive(), "train_ddp did not return"
    res: DdpResult = out["res"]
    assert res.status == "FINISHED", (res.error, res.previous_errors)
    assert res.attempts == 2
    # It went on from a checkpoint at or after the one seen before the kill, not from 0.
    assert res.resumed_from is not None and res.resumed_from % CKPT == 0
    assert before <= res.resumed_from < ITERS
    hist = c.get_metric_history(run_id, "train/loss")
    counts = Counter(m.step for m in hist)
    assert set(counts) == set(range(5, ITERS + 1, 5))
    # Up to the checkpoint it resumed from, each step was logged once (no restart from 0); after
    # it, steps between the checkpoint and the kill were trained (and logged) a second time.
    assert all(counts[s] == 1 for s in counts if s <= res.resumed_from)
    assert all(counts[s] <= 2 for s in counts)
    assert min(m.timestamp for m in hist if m.step == ITERS) / 1000 > killed_at
