"""A gpuops run on a shared Ray cluster through the Ray Jobs API (``ray.job_submission``).

``submit`` bundles the resolved experiment (``resolved.json``) and its data folders (each at
``data/<field>``, the layout ``gpuops.targets.aws.bundle_resolved`` gives the aws inputs) into a
folder that becomes the job's ``runtime_env`` ``working_dir``: Ray zips it, uploads it to the cluster
and unpacks it on the node that runs the entrypoint, which is then the entrypoint's working directory
(https://docs.ray.io/en/latest/ray-core/handling-dependencies.html). The entrypoint is

    gpuops run --resolved resolved.json --target local --run-id RUN --tracking-uri URI

into an MLflow run the caller created beforehand; ``gpuops run --resolved`` takes ``data/...`` paths
relative to the file's folder (``gpuops.launch.load_resolved_file``). The job carries the metadata
``gpuops_run_id``, which is how ``list_jobs``, ``job_logs`` and ``stop`` find it.

Token authentication: ``JobSubmissionClient`` adds the token from ``RAY_AUTH_TOKEN`` /
``RAY_AUTH_TOKEN_PATH`` to its requests itself. gpuops never puts it in the entrypoint, the
metadata or the runtime environment, and log text handed back goes through ``redact_token``.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

RUN_ID_KEY = "gpuops_run_id"
RESOLVED_FILE = "resolved.json"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
_NO_AGENT = "No available agent to submit job"


def _client(dashboard_url: str) -> Any:
    from gpuops.cluster.ray_cluster import check_auth, redact_token
    from gpuops.errors import ExternalError, UsageError

    check_auth()
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as e:
        raise UsageError(f"Ray is not installed ({e})", hint="pip install 'gpuops[ray]'") from None
    url = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
    try:
        return JobSubmissionClient(url)
    except Exception as e:
        raise ExternalError(f"could not reach the Ray dashboard at {url}: "
                            f"{redact_token(f'{type(e).__name__}: {e}')}",
                            hint="check the address (ray start --head prints it) and RAY_AUTH_TOKEN"
                            ) from None


def bundle_doc(resolved_doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The resolved experiment with each data folder rewritten to ``data/<field>`` (as
    ``gpuops.targets.aws.bundle_resolved`` does), and the map of local folders to those paths."""
    from gpuops.experiments.spec import resolved_from_dict
    from gpuops.targets.aws import bundle_resolved

    return bundle_resolved(resolved_from_dict(resolved_doc))


def entrypoint(run_id: str, tracking_uri: str, gpuops_cmd: str = "gpuops") -> str:
    return (f"{gpuops_cmd} run --resolved {RESOLVED_FILE} --target local --run-id {shlex.quote(run_id)} "
            f"--tracking-uri {shlex.quote(tracking_uri)}")


def submit(run_id: str, resolved_doc: dict[str, Any], tracking_uri: str, dashboard_url: str, *,
           gpuops_cmd: str = "gpuops", entrypoint_num_cpus: float | None = None,
           entrypoint_num_gpus: float | None = None, agent_wait: float = 20.0) -> str:
    """Submit the run ``run_id`` (already created in MLflow) as a Ray job; return the job's
    submission id. ``gpuops_cmd``: how the cluster's nodes start gpuops (``gpuops`` on their PATH,
    or e.g. ``/opt/venv/bin/python -m gpuops``). ``agent_wait``: how long to keep trying while a
    cluster that has just started has no job agent yet."""
    from gpuops.cluster.ray_cluster import redact_token
    from gpuops.errors import ExternalError

    client = _client(dashboard_url)
    doc, folders = bundle_doc(resolved_doc)
    stage = Path(tempfile.mkdtemp(prefix="gpuops-rayjob-"))
    try:
        (stage / RESOLVED_FILE).write_text(json.dumps(doc))
        for local, rel in folders.items():
            shutil.copytree(local, stage / rel)
        submission_id = f"gpuops-{run_id[:12]}-{int(time.time() * 1000) % 10**8:08d}"
        kwargs: dict[str, Any] = {}
        if entrypoint_num_cpus is not None:
            kwargs["entrypoint_num_cpus"] = entrypoint_num_cpus
        if entrypoint_num_gpus is not None:
            kwargs["entrypoint_num_gpus"] = entrypoint_num_gpus
        deadline = time.monotonic() + agent_wait
        while True:
            try:  # the working dir is zipped and uploaded during this call
                return str(client.submit_job(entrypoint=entrypoint(run_id, tracking_uri, gpuops_cmd),
                                             submission_id=submission_id,
                                             runtime_env={"working_dir": str(stage)},
                                             metadata={RUN_ID_KEY: run_id}, **kwargs))
            except Exception as e:
                # A cluster that has just started answers 500 "No available agent to submit job,
                # please try again later" until its nodes' dashboard agents have registered.
                if _NO_AGENT in str(e) and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                raise ExternalError(f"the Ray Jobs API refused the job: "
                                    f"{redact_token(f'{type(e).__name__}: {e}')}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _row(job: Any) -> dict[str, Any]:
    meta = getattr(job, "metadata", None) or {}
    start, end = getattr(job, "start_time", None), getattr(job, "end_time", None)
    status = getattr(job, "status", "")
    return {"run_id": meta.get(RUN_ID_KEY), "job_id": job.submission_id,
            "status": str(getattr(status, "value", status)),
            "start": start / 1000.0 if start else None,  # Ray gives milliseconds since the epoch
            "end": end / 1000.0 if end else None}


def list_jobs(dashboard_url: str) -> list[dict[str, Any]]:
    """The gpuops jobs of the cluster (those with ``gpuops_run_id`` metadata), oldest first: rows
    with ``run_id``, ``job_id``, ``status`` (Ray's: PENDING RUNNING SUCCEEDED FAILED STOPPED),
    ``start`` and ``end`` (seconds since the epoch, None when not yet)."""
    rows = [_row(j) for j in _client(dashboard_url).list_jobs()
            if (getattr(j, "metadata", None) or {}).get(RUN_ID_KEY) and j.submission_id]
    return sorted(rows, key=lambda r: r["start"] or float("inf"))


def find_job(dashboard_url: str, run_id: str) -> dict[str, Any]:
    """The latest job of ``run_id`` (a unique prefix of it will do)."""
    from gpuops.errors import UsageError

    rows = [r for r in list_jobs(dashboard_url) if str(r["run_id"]).startswith(run_id)]
    if len({r["run_id"] for r in rows}) > 1:
        raise UsageError(f"{run_id!r} matches the jobs of several runs; give more of the run id")
    if not rows:
        raise UsageError(f"no Ray job for run {run_id} on the cluster at {dashboard_url}",
                         hint="gpuops ps --target ray lists them")
    return rows[-1]


def job_status(dashboard_url: str, run_id: str) -> str:
    row = find_job(dashboard_url, run_id)
    return str(_client(dashboard_url).get_job_status(row["job_id"]))


def job_logs(dashboard_url: str, run_id: str) -> str:
    """The whole log of the run's latest job (its entrypoint's stdout and stderr), token redacted."""
    from gpuops.cluster.ray_cluster import redact_token

    row = find_job(dashboard_url, run_id)
    return redact_token(_client(dashboard_url).get_job_logs(row["job_id"]))


def stop(dashboard_url: str, run_id: str, tracking_uri: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """Stop the run's job (Ray sends SIGTERM to the entrypoint and its children, SIGKILL after
    ``RAY_JOB_STOP_WAIT_TIME_S``), wait for it to end, and mark the MLflow run KILLED unless
    something already ended it. Returns the job's row as it ended."""
    from gpuops.tracking.tracker import mark_if_running

    client = _client(dashboard_url)
    row = find_job(dashboard_url, run_id)
    if row["status"] not in TERMINAL:
        client.stop_job(row["job_id"])
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status = str(getattr(s := client.get_job_status(row["job_id"]), "value", s))
            if status in TERMINAL:
                break
            time.sleep(0.5)
    with contextlib.suppress(Exception):
        row = _row(client.get_job_info(row["job_id"]))
    mark_if_running(tracking_uri, str(row["run_id"]), "KILLED",
                    "stopped through the Ray Jobs API (gpuops stop)")
    return row
