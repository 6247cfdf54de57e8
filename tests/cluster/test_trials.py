"""Trials on the session's real two-node Ray cluster: the real trainer, real MLflow child runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gpuops.cluster.trials import Trial, TrialResult, concurrency_limit, run_trials
from tests.run.conftest import client, tiny_sr_spec


def _children(store: str, tmp_path: Path, n: int, **sections: dict[str, Any]) -> tuple[str, list[Trial]]:
    """A parent run and ``n`` child runs created the way a sweep creates them (``prepare_run``)."""
    from gpuops.experiments.spec import load_experiment
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker

    spec = tiny_sr_spec(tmp_path, **sections)
    parent = Tracker(store)
    parent_id = parent.start("tiny_sr", run_name="sweep-parent")
    trials = []
    for i in range(n):
        resolved = load_experiment(spec, [f"seed={i + 1}"])
        run_id = prepare_run(Tracker(store), resolved, target="ray", parent_run_id=parent_id,
                             run_name=f"child-{i}")
        trials.append(Trial(run_id=run_id, resolved=resolved.to_dict(), cpus=0.5, name=f"child-{i}"))
    return parent_id, trials


def _max_overlap(results: list[TrialResult]) -> int:
    points = sorted([(r.started, 1) for r in results] + [(r.ended, -1) for r in results],
                    key=lambda p: (p[0], p[1]))
    now = most = 0
    for _, d in points:
        now += d
        most = max(most, now)
    return most


def test_four_trials_two_gpus(ray_conn: Any, ray_cluster: dict[str, Any], store: str, tmp_path: Path) -> None:
    free, total = ray_conn.gpus()
    assert total == 2.0 and free == 2.0
    parent_id, trials = _children(store, tmp_path, 4)
    results = run_trials(trials, tracking_uri=store)

    assert [r.run_id for r in results] == [t.run_id for t in trials]
    assert [r.status for r in results] == ["FINISHED"] * 4, [r.error for r in results]
    assert all(r.attempts == 1 for r in results)
    # The 2 declared GPUs bound the trials (CPUs would allow 4 at 0.5 each on the head node).
    assert 1 <= _max_overlap(results) <= 2
    head = ray_cluster["nodes"][0]
    for r in results:
        assert r.node_id == head  # the only node with GPUs
        assert r.cuda_visible_devices in {"0", "1"}
        assert 0 < r.metrics["val/psnr"] < 100 and r.metrics["train/loss"] > 0, r.metrics
    # Trials that ran at the same time saw different GPUs.
    for a in results:
        for b in results:
            if a is not b and a.started < b.ended and b.started < a.ended:
                assert a.cuda_visible_devices != b.cuda_visible_devices

    c = client(store)
    exp = c.get_experiment_by_name("tiny_sr")
    kids = c.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(kids) == 4
    by_id = {r.run_id: r for r in results}
    for run in kids:
        assert run.info.status == "FINISHED"
        assert run.data.metrics["val/psnr"] == pytest.approx(by_id[run.info.run_id].metrics["val/psnr"])
        tags = run.data.tags
        assert tags["gpuops.ray.node_id"] == head
        assert tags["gpuops.ray.cuda_visible_devices"] == by_id[run.info.run_id].cuda_visible_devices
        assert tags["gpuops.ray.attempts"] == "1"
        assert tags["env.python"].count(".") == 2  # the node's fingerprint, set on the node
        assert "env.driver" in tags and "env.torch" in tags
    # The cluster runs with token auth; the token is nowhere in what MLflow holds about the runs.
    assert ray_conn.auth_mode == "token"
    token = ray_cluster["token"]
    for run in [*kids, c.get_run(parent_id)]:
        assert token not in json.dumps([run.data.tags, run.data.params])
        for art in c.list_artifacts(run.info.run_id):
            if not art.is_dir and art.path.endswith((".yaml", ".txt", ".json")):
                local = c.download_artifacts(run.info.run_id, art.path, str(tmp_path / "art"))
                assert token not in Path(local).read_text(errors="replace")


def test_retry_once_then_finish_and_always_failing(ray_conn: Any, store: str, tmp_path: Path) -> None:
    _, trials = _children(store, tmp_path, 2)
    # Trial 0: its trainer process dies at start-up (exit code 3) the first time only: a
    # sitecustomize on its PYTHONPATH exits before gpuops runs while the marker file is missing.
    hook = tmp_path / "crash_once"
    hook.mkdir()
    marker = tmp_path / "crashed.marker"
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "m = os.environ.get('CRASH_ONCE_MARKER')\n"
        "with open(m + '.env', 'a') as f:\n"
        "    f.write(str('RAY_AUTH_TOKEN' in os.environ) + '\\n')\n"
        "if m and not os.path.exists(m):\n"
        "    open(m, 'w').close()\n"
        "    os._exit(3)\n")
    trials[0].env = {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
                     "CRASH_ONCE_MARKER": str(marker)}
    # Trial 1: a training folder that does not exist: the real trainer fails on every attempt.
    trials[1].resolved["spec"]["data"]["train"] = str(tmp_path / "no-such-T91")
    events: list[tuple[str, str, int]] = []
    results = run_trials(trials, tracking_uri=store, max_failures=1,
                         on_event=lambda kind, t, n: events.append((kind, str(t.name), n)))

    once, always = results
    assert marker.exists()
    # Both starts of its trainer ran without the Ray token in their environment.
    assert Path(f"{marker}.env").read_text().split() == ["False", "False"]
    assert once.status == "FINISHED" and once.attempts == 2
    assert "exit" in once.attempt_errors[0] and "3" in once.attempt_errors[0]
    assert 0 < once.metrics["val/psnr"] < 100
    assert always.status == "FAILED" and always.attempts == 2
    assert always.error and "no-such-T91" in always.error, always.error
    assert len(always.attempt_errors) == 2
    assert ("retrying", "child-0", 2) in events and ("retrying", "child-1", 2) in events

    c = client(store)
    r0, r1 = c.get_run(once.run_id), c.get_run(always.run_id)
    assert r0.info.status == "FINISHED"  # retried into the same run
    assert "gpuops.error" not in r0.data.tags
    assert "code 3" in r0.data.tags["gpuops.ray.previous_error"]
    assert r0.data.tags["gpuops.ray.attempts"] == "2"
    assert r1.info.status == "FAILED" and "no-such-T91" in r1.data.tags["gpuops.error"]


def test_concurrency_limit() -> None:
    assert concurrency_limit(2.0, 1.0) == 2
    assert concurrency_limit(2.0, 0.5) == 4  # fractional GPUs: two small trials per GPU
    assert concurrency_limit(2.0, 0.5, free_cpus=3.0, cpus_per_trial=1.0) == 3
    assert concurrency_limit(0.0, 1.0) == 1  # all busy: one waits in Ray's queue


def test_more_gpus_than_any_node_is_refused(ray_conn: Any, store: str, tmp_path: Path) -> None:
    from gpuops.errors import UsageError

    _, trials = _children(store, tmp_path, 1)
    trials[0].gpus = 3  # the head node has 2, the other none: Ray would queue it for ever
    with pytest.raises(UsageError, match="asks for 3 GPU"):
        run_trials(trials, tracking_uri=store)
