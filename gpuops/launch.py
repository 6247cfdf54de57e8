"""The one run path: from what the user typed to a ``LaunchRequest``, and from a finished handle to
the run's summary. ``gpuops run``, ``gpuops sweep`` and ``gpuops reproduce`` all go through here, for
every target, and render what it returns (this module never prints).

    request = build_request(spec=..., overrides=..., options=DockerOptions(env="pytorch-cpu"))
    target = get_target(request.target)
    plan = target.plan(request)          # checks before any run exists; plan.consent for aws
    handle = target.launch(plan)         # the MLflow run exists from here on
    for event in handle.events(): ...    # progress, or log lines
    outcome = handle.wait()
    doc = summarise(handle, outcome)

Everything that can be checked before a run exists is checked in ``build_request`` and ``plan``: the
spec (one line, exit 2), the run being resumed (a unique id prefix; a FINISHED run needs ``force``;
an unknown id says so), the tracking server (reachable within seconds), the data folders, and the
host's device and GPU count (local target).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuops.errors import UsageError
from gpuops.targets.base import LaunchRequest, LocalOptions, RunEvent, RunHandle, RunOutcome, TargetOptions

if TYPE_CHECKING:
    from gpuops.experiments.spec import ResolvedExperiment

# The metrics a run's summary shows, in this order (those the run has).
SUMMARY_METRICS = ("val/psnr", "val/psnr_bicubic", "val/psnr_bicubic_full", "val/ssim", "val/ssim_bicubic",
                   "val/accuracy", "val/loss", "train/loss", "train/throughput")


def load_resolved_file(path: str | Path) -> ResolvedExperiment:
    """A resolved experiment written by gpuops (``gpuops run --resolved FILE``: the docker and aws
    targets hand the container or instance exactly what was validated on the host). Relative data
    paths are taken relative to the file's folder (the aws inputs bundle)."""
    import json

    from gpuops.experiments.spec import resolved_from_dict

    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{p}: not a resolved experiment file ({type(e).__name__}: {e})") from None
    resolved = resolved_from_dict(doc, where=str(p))
    data = resolved.spec.data
    fields = data if isinstance(data, dict) else dict(data)
    rebased = {k: str((p.parent / v).resolve()) for k, v in fields.items()
               if isinstance(v, str) and v.startswith("data/") and (p.parent / v).is_dir()}
    if rebased:
        new_data = {**data, **rebased} if isinstance(data, dict) else data.model_copy(update=rebased)
        resolved.spec = resolved.spec.model_copy(update={"data": new_data})
    return resolved


def fetch_data(resolved: ResolvedExperiment, notify: Callable[[str], None] | None = None) -> None:
    """``--download``: fetch a data set the spec names and the machine lacks (CIFAR-10)."""
    spec = resolved.spec
    if spec.task != "classify" or getattr(spec.data, "dataset", None) != "cifar10":
        return
    from gpuops.classify.data import CIFAR10_ARCHIVE, CIFAR10_FOLDER, download_cifar10

    root = Path(spec.data.root)
    if not (root / CIFAR10_ARCHIVE).is_file() and not (root / CIFAR10_FOLDER).is_dir():
        if notify is not None:
            notify(f"downloading CIFAR-10 into {root}")
        download_cifar10(root)


def build_request(*, spec: str | Path | None = None, overrides: list[str] | None = None, smoke: bool = False,
                  download: bool = False, resume: str | None = None, run_id: str | None = None,
                  force: bool = False, options: TargetOptions | None = None, tracking_uri: str | None = None,
                  resolved: ResolvedExperiment | None = None, resolved_file: str | Path | None = None,
                  parent_run_id: str | None = None, tags: dict[str, str] | None = None,
                  notify: Callable[[str], None] | None = None) -> LaunchRequest:
    """Validate what the user asked for and resolve it into a ``LaunchRequest``.

    One of: ``spec`` (+ ``overrides``, ``smoke``, ``download``); ``resume`` (a run id or a unique
    prefix; its stored spec); ``resolved`` (already resolved: sweeps, reproduce); ``resolved_file``
    (the container/instance side of the docker and aws targets). ``run_id`` logs into a run the caller
    created."""
    from gpuops.tracking.tracker import Tracker

    options = options or LocalOptions()
    overrides = list(overrides or [])
    if resume and run_id:
        raise UsageError("--resume and --run-id are exclusive (--resume RUN_ID is enough)")
    if spec is None and not resume and resolved is None and resolved_file is None:
        raise UsageError("a spec file is needed (e.g. gpuops run experiments/srcnn_y.yaml), "
                         "or --resume RUN_ID")
    if resume and spec is not None:
        raise UsageError("--resume RUN_ID continues the run's own spec: give no spec file with it")
    if resume and (overrides or smoke):
        raise UsageError("--resume RUN_ID continues the run's own spec: --set and --smoke do not apply")
    if resume:
        from gpuops.tracking.runs import check_resumable, load_run_spec, resolve_run_id

        tracker = Tracker(tracking_uri)
        resume = resolve_run_id(tracker.client, resume)
        if resolved_file is None:  # the host side checks; the container it starts is told --force
            check_resumable(tracker.client, resume, force=force)
        if resolved is None and resolved_file is None:
            resolved = load_run_spec(tracker, resume)
    if resolved is None and resolved_file is not None:
        if overrides or smoke:
            raise UsageError("--resolved FILE is complete: --set and --smoke do not apply")
        resolved = load_resolved_file(resolved_file)
    if resolved is None:
        from gpuops.experiments.spec import load_experiment

        resolved = load_experiment(spec, overrides, smoke=smoke, download=download)  # type: ignore[arg-type]
    if options.kind != "aws":  # the aws plan checks its server (one the instance can reach)
        from gpuops.tracking.tracker import check_server, resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(tracking_uri)
        check_server(tracking_uri)  # an unreachable server is one line, exit 2, within seconds
    if download:
        fetch_data(resolved, notify)
    return LaunchRequest(resolved=resolved, options=options, tracking_uri=tracking_uri,
                         run_id=resume or run_id, resume=bool(resume), parent_run_id=parent_run_id,
                         tags=dict(tags or {}))


def store_hint(uri: str) -> str:
    """Where the runs are, for people: a sqlite store's file (and how to open it), else the URI."""
    from gpuops.tracking.tracker import redact_uri

    if uri.startswith("sqlite:///"):
        return f"{uri[len('sqlite:///'):]} (open it with: gpuops ui)"
    return redact_uri(uri)


def summarise(handle: RunHandle, outcome: RunOutcome, *, began: float, summary: RunEvent | None = None,
              error: str | None = None) -> dict[str, Any]:
    """The run's summary document (``--json`` prints it as is; the CLI renders it as a table):
    status and exit code, the headline metrics as MLflow holds them, times, where the run is."""
    from gpuops.tracking.tracker import Tracker, redact_text, redact_uri

    doc: dict[str, Any] = {
        "run_id": handle.run_id,
        "experiment": handle.experiment,
        "target": handle.job.target,
        "job_id": handle.job.job_id,
        "status": outcome.status,
        "state": str(outcome.state),
        "exit_code": outcome.exit_code,
        "metrics": {},
        "iterations": summary.iterations if summary else None,
        "train_seconds": summary.seconds if summary else None,
        "wall_seconds": round(time.monotonic() - began, 2),
        "tracking_uri": redact_uri(handle.tracking_uri),
        "store": store_hint(handle.tracking_uri),
        "details": {k: v for k, v in handle.job.details.items()
                    if isinstance(v, str | int | float | bool) and k not in ("log", "events", "jobdir")},
    }
    tags: dict[str, str] = {}
    try:
        run = Tracker(handle.tracking_uri).client.get_run(handle.run_id)
        doc["metrics"] = {k: run.data.metrics[k] for k in SUMMARY_METRICS if k in run.data.metrics}
        doc["artifact_uri"] = run.info.artifact_uri
        tags = run.data.tags
        if outcome.status == "RUNNING" or outcome.status == "UNKNOWN":
            doc["status"] = run.info.status if outcome.status == "UNKNOWN" else outcome.status
    except Exception as e:  # the outcome is known; the store may be out of reach (aws, detached)
        doc["store_error"] = redact_text(f"{type(e).__name__}: {e}")[:500]
    if outcome.status not in ("FINISHED", "RUNNING"):
        tail = getattr(handle, "tail", None)
        text = error or tags.get("gpuops.error", "")[-2000:] or (tail() if callable(tail) else "")
        doc["error"] = redact_text(text or outcome.error or "")
        if handle.job.details.get("log_kept"):
            from gpuops.targets.local import TRAINER_LOG

            doc["trainer_log"] = f"{doc.get('artifact_uri', '')}/{TRAINER_LOG}"
    return doc
