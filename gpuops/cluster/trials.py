"""Trials on a Ray cluster: each one a Ray task holding the GPUs its spec asks for, running
gpuops's own trainer (``python -m gpuops.train.worker``) for an MLflow run created beforehand.

The caller (``gpuops sweep --target ray``) creates the child runs (``prepare_run`` under the parent)
and hands ``run_trials`` one ``Trial`` per run: the run id and the resolved experiment
(``ResolvedExperiment.to_dict()``). On the node, the task

1. writes the resolved JSON into a job folder of its own (as ``LocalTarget.launch`` does),
2. tags the run with that node's environment fingerprint (``fingerprint_tags()``, called there) and
   where it ran (``gpuops.ray.node_id``, ``.node_ip``, ``.host``, ``.cuda_visible_devices``,
   ``.attempt``),
3. starts the trainer with ``worker_command`` and waits for it; Ray has set
   ``CUDA_VISIBLE_DEVICES`` to the GPUs it gave the task, and the trainer inherits it,
4. makes sure the run does not stay RUNNING (a trainer that crashed before ending it: FAILED, with
   the end of its log), and returns status, final metrics and the error.

A failed trial is submitted again, up to ``max_failures`` more times, into the same MLflow run (the
run is marked RUNNING again by the trainer; the previous error moves to ``gpuops.ray.previous_error``).
At most ``max_concurrent`` trials are in flight: by default what the cluster's free GPUs allow at
the start (Ray's scheduler holds each one to its GPUs in any case).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAY_TAG = "gpuops.ray"  # gpuops.ray.node_id / .node_ip / .host / .cuda_visible_devices / .attempt / .attempts


@dataclass
class Trial:
    """One trial: the MLflow run it trains into and the resolved experiment (``to_dict()``).

    ``gpus``: the GPUs the Ray task asks for; None takes ``resources.gpus`` of the spec (fractional
    values such as 0.5 share a GPU between small trials). ``env``: extra environment for the trainer."""

    run_id: str
    resolved: dict[str, Any]
    gpus: float | None = None
    cpus: float = 1.0
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def gpus_wanted(self) -> float:
        if self.gpus is not None:
            return float(self.gpus)
        return float(((self.resolved.get("spec") or {}).get("resources") or {}).get("gpus", 1))


@dataclass
class TrialResult:
    run_id: str
    name: str | None
    status: str  # the MLflow run's final status: FINISHED | FAILED | KILLED
    metrics: dict[str, float]
    attempts: int
    node_id: str
    node_ip: str
    hostname: str
    cuda_visible_devices: str | None  # as the trial's task saw it; None: not set
    error: str | None  # why the last attempt failed (first and last line of the trainer's error)
    exit_code: int | None
    started: float  # wall-clock seconds (time.time()) of the last attempt's trainer start / end
    ended: float
    attempt_errors: list[str] = field(default_factory=list)


def _short_error(text: str | None, limit: int = 2000) -> str | None:
    if not text:
        return None
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    short = lines[0] if len(lines) == 1 else f"{lines[0]}\n{lines[-1]}"
    return short[:limit]


def _read_events(path: Path) -> tuple[dict[str, float], str | None]:
    """Final metrics (the ``summary`` event) and the last ``error`` event of a trainer's events file."""
    metrics: dict[str, float] = {}
    error = None
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ev.get("event") == "summary":
                metrics = {str(k): float(v) for k, v in (ev.get("metrics") or {}).items()
                           if isinstance(v, int | float)}
            elif ev.get("event") == "error":
                error = str(ev.get("message") or "")
    return metrics, error


def run_trial_on_node(run_id: str, resolved: dict[str, Any], tracking_uri: str, attempt: int,
                      extra_env: Mapping[str, str] | None = None,
                      timeout: float | None = None) -> dict[str, Any]:
    """The body of one trial's Ray task (runs on the node Ray picked). Returns plain data."""
    from mlflow.tracking import MlflowClient

    from gpuops.cluster.ray_cluster import redact_token, trainer_env
    from gpuops.targets.local import JOBDIR_ENV, PARENT_ENV, worker_command
    from gpuops.tracking.runs import fingerprint_tags
    from gpuops.tracking.tracker import clip_error, mark_if_running, redact_text

    node_id, node_ip = "unknown", "unknown"
    with contextlib.suppress(Exception):
        import ray

        if ray.is_initialized():  # in a Ray task; never start a Ray instance by asking
            node_id = ray.get_runtime_context().get_node_id()
            node_ip = ray.util.get_node_ip_address()
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    host = socket.gethostname()
    client = MlflowClient(tracking_uri=tracking_uri)
    tags = {**fingerprint_tags(), f"{RAY_TAG}.node_id": node_id, f"{RAY_TAG}.node_ip": node_ip,
            f"{RAY_TAG}.host": host, f"{RAY_TAG}.cuda_visible_devices": cvd if cvd is not None else "unset",
            f"{RAY_TAG}.attempt": str(attempt)}
    run = client.get_run(run_id)
    if attempt > 1 and run.data.tags.get("gpuops.error"):  # keep the first failure beside the run
        client.set_tag(run_id, f"{RAY_TAG}.previous_error", run.data.tags["gpuops.error"])
        with contextlib.suppress(Exception):
            client.delete_tag(run_id, "gpuops.error")
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])  # one request

    jobdir = Path(tempfile.mkdtemp(prefix="gpuops-job-"))
    started = time.time()
    rc: int | None = None
    try:
        resolved_file, events, log = jobdir / "resolved.json", jobdir / "events.jsonl", jobdir / "worker.log"
        resolved_file.write_text(json.dumps(resolved))
        events.touch()
        res = (resolved.get("spec") or {}).get("resources") or {}
        # One trainer process per trial: a trial's GPUs are one task's, and resources.gpus > 1 goes
        # through torchrun on this node exactly as the local target does.
        cmd = worker_command(resolved_file, run_id, tracking_uri, events, resume=False,
                             gpus=int(res.get("gpus", 1)), device=str(res.get("device", "auto")))
        env = trainer_env(os.environ)
        env.update(extra_env or {})
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update({PARENT_ENV: str(os.getpid()), JOBDIR_ENV: str(jobdir)})
        from gpuops.tracking.procs import child_dies_with_parent

        with open(log, "wb") as logf:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=child_dies_with_parent())
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                try:
                    rc = proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait()
                mark_if_running(tracking_uri, run_id, "FAILED",
                                f"the trial ran past its {timeout:.0f} s limit")
            except BaseException:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                raise
        ended = time.time()
        metrics, event_error = _read_events(events)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        if rc == 0:
            mark_if_running(tracking_uri, run_id, "FAILED", "the trainer exited without ending its run")
        else:
            why = f"the trainer exited with code {rc} on {host}:\n{tail}"
            mark_if_running(tracking_uri, run_id, "FAILED", redact_text(redact_token(why)))
        final = client.get_run(run_id)
        status = final.info.status
        error = None
        if status != "FINISHED":
            error = _short_error(final.data.tags.get("gpuops.error")) or event_error or _short_error(tail)
        if not metrics and status == "FINISHED":
            metrics = {k: float(v) for k, v in final.data.metrics.items()}
        return {"run_id": run_id, "status": status, "metrics": metrics, "exit_code": rc, "node_id": node_id,
                "node_ip": node_ip, "hostname": host, "cuda_visible_devices": cvd,
                "error": redact_token(clip_error(error, 2000)) if error else None,
                "started": started, "ended": ended}
    finally:
        shutil.rmtree(jobdir, ignore_errors=True)


def concurrency_limit(free_gpus: float, gpus_per_trial: float, free_cpus: float | None = None,
                      cpus_per_trial: float = 1.0) -> int:
    """How many trials fit at once in what is free now (at least 1, so that a trial whose GPUs
    are busy still waits its turn in Ray's queue rather than never being sent)."""
    n = math.inf
    if gpus_per_trial > 0:
        n = math.floor(free_gpus / gpus_per_trial + 1e-9)
    if free_cpus is not None and cpus_per_trial > 0:
        n = min(n, math.floor(free_cpus / cpus_per_trial + 1e-9))
    return max(1, int(n)) if n != math.inf else 1_000_000


def run_trials(trials: list[Trial], *, tracking_uri: str, max_failures: int = 1,
               max_concurrent: int | None = None, trial_timeout: float | None = None,
               on_result: Callable[[TrialResult], None] | None = None,
               on_event: Callable[[str, Trial, int], None] | None = None) -> list[TrialResult]:
    """Run ``trials`` on the Ray cluster this process is connected to (``ray_session``), in the
    order given; return one result per trial, in that order.

    ``max_failures``: how many times a failed trial is tried again (into the same MLflow run).
    ``max_concurrent``: None is what the free GPUs (and CPUs) allow when this starts.
    ``on_event(kind, trial, attempt)`` is called with kind "submitted" or "retrying";
    ``on_result`` with each trial's final result as it comes."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("run_trials needs a connected Ray (gpuops.cluster.ray_cluster.ray_session)")
    if max_failures < 0:
        raise ValueError("max_failures must be >= 0")
    if not trials:
        return []
    biggest = max((float((n.get("Resources") or {}).get("GPU", 0.0)) for n in ray.nodes() if n.get("Alive")),
                  default=0.0)
    for t in trials:
        if t.gpus_wanted() > biggest:  # Ray would queue it for ever (or until an autoscaler adds a node)
            from gpuops.errors import UsageError

            raise UsageError(f"trial {t.name or t.run_id} asks for {t.gpus_wanted():g} GPU(s), but no "
                             f"node of the Ray cluster has more than {biggest:g}",
                             hint="lower resources.gpus, or add a node with GPUs (ray start --num-gpus)")
    remote = ray.remote(run_trial_on_node)
    if max_concurrent is None:
        free = ray.available_resources()
        max_concurrent = min(concurrency_limit(float(free.get("GPU", 0.0)), t.gpus_wanted(),
                                               float(free.get("CPU", 0.0)), t.cpus) for t in trials)
    max_concurrent = max(1, max_concurrent)

    pending = list(range(len(trials)))
    attempts = [0] * len(trials)
    errors: list[list[str]] = [[] for _ in trials]
    results: list[TrialResult | None] = [None] * len(trials)
    running: dict[Any, int] = {}

    def submit(i: int) -> None:
        t = trials[i]
        attempts[i] += 1
        # max_retries=0: Ray does not re-run a task on its own; a lost node shows here as an error
        # and is retried like a failed trainer, within max_failures.
        ref = remote.options(num_gpus=t.gpus_wanted(), num_cpus=t.cpus, max_retries=0,
                             name=f"gpuops-trial-{t.name or t.run_id[:8]}").remote(
            t.run_id, t.resolved, tracking_uri, attempts[i], t.env, trial_timeout)
        running[ref] = i
        if on_event:
            on_event("submitted" if attempts[i] == 1 else "retrying", t, attempts[i])

    try:
        while pending or running:
            while pending and len(running) < max_concurrent:
                submit(pending.pop(0))
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            i = running.pop(ref)
            t = trials[i]
            try:
                out = ray.get(ref)
            except Exception as e:  # the task itself failed: a lost node, a worker that died
                out = _task_failure(t, tracking_uri, e)
            if out["status"] != "FINISHED":
                errors[i].append(out.get("error") or f"status {out['status']}")
                if attempts[i] <= max_failures and out["status"] != "KILLED":
                    pending.insert(0, i)
                    continue
            res = TrialResult(run_id=t.run_id, name=t.name, status=out["status"], metrics=out["metrics"],
                              attempts=attempts[i], node_id=out["node_id"], node_ip=out["node_ip"],
                              hostname=out["hostname"], cuda_visible_devices=out["cuda_visible_devices"],
                              error=out["error"], exit_code=out["exit_code"], started=out["started"],
                              ended=out["ended"], attempt_errors=errors[i])
            with contextlib.suppress(Exception):
                from mlflow.tracking import MlflowClient

                MlflowClient(tracking_uri=tracking_uri).set_tag(t.run_id, f"{RAY_TAG}.attempts",
                                                                str(attempts[i]))
            results[i] = res
            if on_result:
                on_result(res)
    except BaseException:  # Ctrl-C or an error here: stop what runs, never leave a run RUNNING
        for ref in list(running):
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        from gpuops.tracking.tracker import mark_if_running

        for i in list(running.values()) + pending:
            with contextlib.suppress(Exception):
                mark_if_running(tracking_uri, trials[i].run_id, "KILLED", "the sweep on Ray was stopped")
        raise
    return [r for r in results if r is not None]


def _task_failure(t: Trial, tracking_uri: str, e: BaseException) -> dict[str, Any]:
    """A result for a task that Ray could not run to its end (a lost node, a dead worker)."""
    from gpuops.cluster.ray_cluster import redact_token
    from gpuops.tracking.tracker import mark_if_running

    first = (str(e).strip().splitlines() or [""])[0]
    msg = redact_token(f"the Ray task failed: {type(e).__name__}: {first}")
    with contextlib.suppress(Exception):
        mark_if_running(tracking_uri, t.run_id, "FAILED", msg)
    now = time.time()
    return {"run_id": t.run_id, "status": "FAILED", "metrics": {}, "exit_code": None, "node_id": "unknown",
            "node_ip": "unknown", "hostname": "unknown", "cuda_visible_devices": None, "error": msg,
            "started": now, "ended": now}

