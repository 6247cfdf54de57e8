"""``--target ray``: a run as one trial on a Ray cluster (``gpuops.cluster``).

``plan`` checks what can be checked without a cluster: a tracking store the nodes can reach (a local
sqlite store only with a Ray instance on this machine) and Ray's token settings. ``launch`` creates
the MLflow run on this machine (``prepare_run``, as every target), then the handle connects to the
cluster (``ray_session``: the given address, or a Ray instance started for the command on 127.0.0.1),
runs the trial there (``run_trials``: a Ray task holding the trial's GPUs, gpuops's trainer inside,
retried into the same run after a failure) and disconnects. A sweep on Ray fans its children out
over the cluster's free GPUs instead (``gpuops.sweeps``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gpuops.errors import UsageError
from gpuops.targets.base import Job, JobState, LaunchPlan, LaunchRequest, RayOptions, RunEvent, RunOutcome

_LOCAL_STORES = ("sqlite:", "file:")


def ray_options(request: LaunchRequest) -> RayOptions:
    if not isinstance(request.options, RayOptions):
        raise UsageError(f"the ray target was given {request.options.kind} options")
    return request.options


def trial_gpus(resolved: Any, options: RayOptions) -> float:
    """The GPUs one trial holds: none for a CPU spec, else ``--gpus-per-trial`` or ``resources.gpus``."""
    res = resolved.spec.resources
    if res.device == "cpu":
        return 0.0
    return float(options.gpus_per_trial if options.gpus_per_trial is not None else res.gpus)


def check_reachable_store(tracking_uri: str, address: str | None) -> None:
    """The trainers on the nodes log to the tracking store themselves: a store on this machine's disk
    only works with a Ray instance on this machine."""
    from gpuops.cluster.ray_cluster import _host_of, is_loopback

    local_store = tracking_uri.startswith(_LOCAL_STORES) or "://" not in tracking_uri
    if local_store and address not in (None, "local") and not is_loopback(_host_of(address)):
        raise UsageError(f"the tracking store {tracking_uri} is on this machine's disk; the Ray cluster "
                         f"at {address} cannot log to it",
                         hint="run an MLflow server the nodes can reach and pass --tracking-uri http://HOST:5000")


def ddp_workers(resolved: Any) -> int:
    """``resources.gpus: N`` (N > 1) on Ray: N Ray Train workers (DDP); 0: one trial."""
    gpus = int(resolved.spec.resources.gpus)
    return gpus if gpus > 1 and resolved.spec.task != "script" else 0


def cluster_rows(address: str | None) -> list[tuple[str, str]]:
    where = address or "a Ray instance on 127.0.0.1, started for this command"
    return [("target", "ray"), ("cluster", where)]


class RayTarget:
    name = "ray"

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        from gpuops.cluster.ray_cluster import check_auth, resolve_address
        from gpuops.tracking.tracker import resolve_tracking_uri

        opts = ray_options(request)
        check_auth()
        address = resolve_address(opts.address)
        if opts.dashboard is not None:  # a job: what must reach the store is the cluster behind it
            check_reachable_store(resolve_tracking_uri(request.tracking_uri), opts.dashboard)
            rows = [("target", "ray (a job, through the Jobs API)"), ("dashboard", opts.dashboard)]
            return LaunchPlan(request, rows=rows, detail={"address": address, "gpus": 0.0})
        check_reachable_store(resolve_tracking_uri(request.tracking_uri), address)
        gpus = trial_gpus(request.resolved, opts)
        rows = [*cluster_rows(address), ("GPUs per trial", f"{gpus:g}"),
                ("retries", f"{opts.max_failures} after a failure")]
        if ddp_workers(request.resolved):
            rows.append(("DDP", f"{ddp_workers(request.resolved)} Ray Train workers"))
        return LaunchPlan(request, rows=rows, detail={"address": address, "gpus": gpus})

    def launch(self, plan: LaunchPlan) -> RayRun:
        from gpuops.cluster.trials import Trial
        from gpuops.tracking.runs import prepare_run
        from gpuops.tracking.tracker import Tracker

        request = plan.request
        opts = ray_options(request)
        tracker = Tracker(request.tracking_uri)
        run_id = prepare_run(tracker, request.resolved, target="ray", run_id=request.run_id,
                             parent_run_id=request.parent_run_id, tags=request.tags)
        if opts.dashboard is not None:  # a job on a shared cluster: submitted, then left to run
            from gpuops.cluster import jobs

            try:
                job_id = jobs.submit(run_id, request.resolved.to_dict(), tracker.tracking_uri, opts.dashboard,
                                     gpuops_cmd=opts.gpuops_cmd)
            except BaseException as e:
                from gpuops.tracking.tracker import mark_if_running

                mark_if_running(tracker.tracking_uri, run_id, "FAILED", f"the Ray job was not submitted: {e}")
                raise
            return RayJobRun(run_id, job_id, tracker.tracking_uri, request.resolved.experiment_name,
                             opts.dashboard)
        trial = Trial(run_id=run_id, resolved=request.resolved.to_dict(), gpus=float(plan.detail["gpus"]),
                      name=request.resolved.spec.name)
        return RayRun(trial, tracker.tracking_uri, request.resolved.experiment_name, plan.detail["address"],
                      opts.max_failures, ddp_workers=ddp_workers(request.resolved))


class RayRun:
    """The handle of one trial on Ray. The trial runs while ``events()`` is read (or in ``wait``)."""

    def __init__(self, trial: Any, tracking_uri: str, experiment: str, address: str | None,
                 max_failures: int, ddp_workers: int = 0) -> None:
        self.trial, self.tracking_uri, self.experiment = trial, tracking_uri, experiment
        self.run_id = trial.run_id
        self.address, self.max_failures, self.ddp_workers = address, max_failures, ddp_workers
        self.job = Job(target="ray", job_id=trial.run_id[:12], run_id=trial.run_id,
                       details={"cluster": address or "local"})
        self.result: Any = None

    def _run(self) -> Iterator[RunEvent]:
        from gpuops.cluster.ray_cluster import ray_session
        from gpuops.cluster.trials import run_trials

        lines: list[str] = []

        def on_event(kind: str, trial: Any, attempt: int) -> None:
            lines.append(f"ray: trial {trial.name or trial.run_id[:8]} {kind} (attempt {attempt})")

        with ray_session(self.address) as session:
            for warning in session.warnings:
                yield RunEvent("log", text=f"ray: warning: {warning}")
            free, total = session.gpus()
            nodes = len(session.nodes())
            yield RunEvent("log", text=f"ray: {nodes} node(s), {free:g} of {total:g} GPU(s) free")
            if self.ddp_workers:
                yield RunEvent("log", text=f"ray: DDP with {self.ddp_workers} Ray Train workers")
                self.result = self._ddp(total > 0)
            else:
                self.result = run_trials([self.trial], tracking_uri=self.tracking_uri,
                                         max_failures=self.max_failures, on_event=on_event)[0]
        for line in lines:
            yield RunEvent("log", text=line)
        r = self.result
        self.job.details.update({"node": r.hostname, "node_ip": r.node_ip, "attempts": r.attempts,
                                 "cuda_visible_devices": r.cuda_visible_devices or "unset"})
        yield RunEvent("log", text=f"ray: trial {r.status} on {r.hostname} after {r.attempts} attempt(s)")

    def _ddp(self, cluster_has_gpus: bool) -> Any:
        """``resources.gpus: N`` through Ray Train's TorchTrainer, as a result shaped like a trial's."""
        import tempfile
        from types import SimpleNamespace

        from gpuops.cluster.ddp import train_ddp

        spec = self.trial.resolved["spec"]
        use_gpu = cluster_has_gpus and spec["resources"].get("device") != "cpu"
        storage = tempfile.mkdtemp(prefix="gpuops-ray-train-")
        r = train_ddp(self.run_id, self.trial.resolved, self.tracking_uri, workers=self.ddp_workers,
                      use_gpu=use_gpu, storage_path=storage, max_failures=self.max_failures)
        return SimpleNamespace(status=r.status, error=r.error, attempts=r.attempts, hostname="(Ray Train)",
                               node_ip="", cuda_visible_devices=None)

    def events(self) -> Iterator[RunEvent]:
        if self.result is None:
            yield from self._run()

    def logs(self, follow: bool = False) -> Iterator[str]:
        for ev in self.events():
            yield ev.text or ""

    def status(self) -> JobState:
        if self.result is None:
            return JobState.PENDING
        return {"FINISHED": JobState.SUCCEEDED, "KILLED": JobState.KILLED}.get(self.result.status,
                                                                                JobState.FAILED)

    def wait(self) -> RunOutcome:
        for _ in self.events():
            pass
        status = self.result.status
        return RunOutcome(status=status, exit_code={"FINISHED": 0, "KILLED": 130}.get(status, 1),
                          state=self.status(), error=self.result.error)

    def stop(self, reason: str = "stopped by gpuops") -> None:
        from gpuops.tracking.tracker import mark_if_running

        mark_if_running(self.tracking_uri, self.run_id, "KILLED", reason)

    def interrupt(self, *, signalled: bool, reason: str) -> RunOutcome:
        self.stop(reason)  # run_trials has cancelled the task on its way out
        return RunOutcome(status="KILLED", exit_code=130, state=JobState.KILLED, error=reason)

    def close(self) -> None:
        return None


class RayJobRun:
    """The handle of a run submitted as a Ray job (Jobs API): it runs on the cluster by itself;
    ``gpuops ps/logs/stop --target ray`` reach it later."""

    def __init__(self, run_id: str, job_id: str, tracking_uri: str, experiment: str, dashboard: str) -> None:
        self.run_id, self.tracking_uri, self.experiment = run_id, tracking_uri, experiment
        self.dashboard = dashboard
        self.job = Job(target="ray", job_id=job_id, run_id=run_id, details={"dashboard": dashboard})

    def events(self) -> Iterator[RunEvent]:
        return iter(())

    def logs(self, follow: bool = False) -> Iterator[str]:
        from gpuops.cluster import jobs

        return iter(jobs.job_logs(self.dashboard, self.run_id).splitlines())

    def status(self) -> JobState:
        from gpuops.cluster import jobs

        st = jobs.job_status(self.dashboard, self.run_id)
        return {"PENDING": JobState.PENDING, "RUNNING": JobState.RUNNING, "SUCCEEDED": JobState.SUCCEEDED,
                "STOPPED": JobState.KILLED}.get(st, JobState.FAILED)

    def wait(self) -> RunOutcome:
        return RunOutcome(status="RUNNING", exit_code=0, state=JobState.RUNNING)

    def stop(self, reason: str = "stopped by gpuops") -> None:
        from gpuops.cluster import jobs

        jobs.stop(self.dashboard, self.run_id, self.tracking_uri)

    def interrupt(self, *, signalled: bool, reason: str) -> RunOutcome:
        return RunOutcome(status="RUNNING", exit_code=130, state=JobState.RUNNING, error="detached")

    def close(self) -> None:
        return None
