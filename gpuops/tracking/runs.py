"""Setting up the MLflow run of an experiment: params, tags, the resolved spec.

``prepare_run`` is idempotent, so that it can attach to a run created by someone else (the
docker target creates the run on the host and the container logs into it) or to a run being
resumed: params already there are left alone, and ``gpuops.target`` is only set when missing.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuops import __version__

if TYPE_CHECKING:
    from gpuops.experiments.spec import ResolvedExperiment
    from gpuops.tracking.tracker import Tracker

SPEC_ARTIFACT = "spec.yaml"


def _git(repo: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                           check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_tags(start: Path) -> dict[str, str]:
    """``git.commit`` and ``git.dirty`` (tracked files changed) of the checkout holding ``start``."""
    commit = _git(start, "rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = _git(start, "status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": "unknown" if status is None else str(bool(status)).lower()}


def fingerprint_tags() -> dict[str, str]:
    """The environment fingerprint from doctor's quick capture; a minimal local one if that fails."""
    try:
        from gpuops.doctor.fingerprint import environment_fingerprint

        fp = environment_fingerprint()
        return {str(k): str(v) for k, v in fp.items()}
    except Exception:  # doctor must never stop a training run
        import os
        import platform

        return {
            "env.python": platform.python_version(),
            "env.os": platform.platform(),
            "env.image_digest": os.environ.get("GPUOPS_IMAGE_DIGEST", "unknown"),
        }


def _git_of(spec_file: Path) -> dict[str, str]:
    """The checkout holding the spec file; the working directory's when the spec is elsewhere."""
    tags = git_tags(spec_file.parent) if spec_file.parent.is_dir() else {"git.commit": "unknown"}
    if tags["git.commit"] == "unknown":
        tags = git_tags(Path.cwd())
    return tags


def run_tags(resolved: ResolvedExperiment, target: str) -> dict[str, str]:
    src = Path(resolved.source)
    tags = {
        **fingerprint_tags(),
        **_git_of(src),
        "spec.hash": resolved.spec_hash,
        "spec.name": resolved.spec.name,
        "spec.task": resolved.spec.task,
        "gpuops.target": target,
        "gpuops.version": __version__,
        "gpuops.overrides": json.dumps(resolved.public_overrides()),
        "gpuops.smoke": str(resolved.smoke).lower(),
        **resolved.spec.tracking.tags,
    }
    return tags


def prepare_run(tracker: Tracker, resolved: ResolvedExperiment, *, target: str = "local",
                run_id: str | None = None, parent_run_id: str | None = None,
                run_name: str | None = None, tags: dict[str, str] | None = None) -> str:
    """The one way a run is made, for every target: create it (or attach to ``run_id``) in the
    experiment ``resolved.experiment_name``, and log the params, the tags (``run_tags`` plus
    ``tags``) and ``spec.yaml``. A run that cannot be set up is not left RUNNING."""
    import yaml

    tags = {**run_tags(resolved, target), **(tags or {})}
    created = run_id is None
    if run_id is None:
        run_id = tracker.start(resolved.experiment_name, run_name=run_name or resolved.spec.tracking.run_name,
                               tags=tags, parent_run_id=parent_run_id)
    else:
        tracker.start(run_id=run_id)
    try:
        if not created:
            have = tracker.tags()
            for key in ("gpuops.target", "gpuops.reproduces"):  # set where the run was made
                if key in have:
                    tags.pop(key, None)
            # what the machine that made the run knew (its git commit) is kept over an "unknown"
            # from a container or instance that has no checkout
            tags = {k: v for k, v in tags.items()
                    if not (v == "unknown" and have.get(k, "unknown") != "unknown")}
            tracker.set_tags(tags)
        tracker.log_params(resolved.params())
        artifacts = {a.path for a in tracker.client.list_artifacts(run_id)}
        if SPEC_ARTIFACT not in artifacts:
            tracker.log_text(yaml.safe_dump(resolved.to_dict(), sort_keys=False), SPEC_ARTIFACT)
        if created and tags.get("git.dirty") == "true":  # so that a run from a dirty tree can be remade
            from gpuops.tracking.gitinfo import run_diff
            from gpuops.tracking.reproduce import DIFF_ARTIFACT

            diff = run_diff(Path(resolved.source))
            if diff:
                from gpuops.tracking.tracker import redact_text

                tracker.log_text(redact_text(diff), DIFF_ARTIFACT)
    except BaseException as e:  # never leave a run RUNNING that no trainer will ever end
        import contextlib

        from gpuops.tracking.tracker import redact_text

        with contextlib.suppress(Exception):
            tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED",
                           redact_text(f"setting up the run failed: {type(e).__name__}: {e}"))
        raise
    return run_id


def load_run_spec(tracker: Tracker, run_id: str) -> ResolvedExperiment:
    """The resolved experiment stored with a run (for ``--resume``)."""
    import tempfile

    import yaml

    from gpuops.errors import UsageError
    from gpuops.experiments.spec import resolved_from_dict

    tracker.run_id = run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            p = tracker.download(SPEC_ARTIFACT, tmp)
        except Exception as e:
            raise UsageError(f"run {run_id} has no {SPEC_ARTIFACT} artifact: it was not started by "
                             "gpuops run, so it cannot be resumed") from e
        doc = yaml.safe_load(p.read_text())
    return resolved_from_dict(doc, where=f"run {run_id}: {SPEC_ARTIFACT}")


# MLflow run ids are 32 lowercase hex digits; a shorter reference is a prefix of one.
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_PREFIX = re.compile(r"[0-9a-f]{4,31}")


def resolve_run_id(client: Any, ref: str) -> str:
    """The full id of the run ``ref`` names: a whole run id, or a unique prefix of at least 4 hex
    digits (as ``gpuops compare`` prints them). One clear ``UsageError`` otherwise: no such run, or
    a prefix that several runs share (they are listed)."""
    from gpuops.errors import UsageError

    ref = ref.strip().lower()
    if _RUN_ID.fullmatch(ref):
        try:
            return str(client.get_run(ref).info.run_id)
        except Exception:
            raise UsageError(f"no MLflow run {ref} in this store") from None
    if not _PREFIX.fullmatch(ref):
        raise UsageError(f"{ref!r} is not a run id (32 hex digits) or a prefix of one (at least 4)")
    from mlflow.entities import ViewType

    try:
        exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        found: list[str] = []
        token = None
        while exps:
            page = client.search_runs(exps, run_view_type=ViewType.ALL, max_results=1000, page_token=token)
            found += [r.info.run_id for r in page if r.info.run_id.startswith(ref)]
            token = page.token
            if not token:
                break
    except Exception as e:
        raise UsageError(f"cannot look up run {ref}: {type(e).__name__}: {e}") from None
    if not found:
        raise UsageError(f"no MLflow run whose id starts with {ref} in this store")
    if len(found) > 1:
        raise UsageError(f"{ref} is the start of {len(found)} run ids: {', '.join(sorted(found)[:5])}"
                         + (" ..." if len(found) > 5 else ""), hint="give more digits")
    return found[0]


def check_resumable(client: Any, run_id: str, *, force: bool = False) -> None:
    """``--resume`` continues an interrupted run. A FINISHED run was trained and evaluated to its
    end: continuing it would train and evaluate it again into the same run, so it needs ``--force``."""
    from gpuops.errors import UsageError

    status = client.get_run(run_id).info.status
    if status == "FINISHED" and not force:
        raise UsageError(f"run {run_id} is FINISHED: --resume would train and evaluate it again into it",
                         hint="start a new run with the same spec (gpuops run SPEC), or add --force")


def orphaned_runs(client: Any) -> list[tuple[Any, str]]:
    """RUNNING runs whose trainer is gone: (run, why). A run's trainer is known from its
    ``gpuops.trainer.pid/host/start`` tags; one trained on another host cannot be checked from here
    and is not listed. A RUNNING run without those tags was left by an older gpuops or another
    tool: listed as unknown only when it has not been updated for a day."""
    import time

    from mlflow.entities import ViewType

    from gpuops.targets.local import TRAINER_TAG
    from gpuops.tracking.procs import same_process_alive

    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    out: list[tuple[Any, str]] = []
    token = None
    while exps:
        page = client.search_runs(exps, filter_string="attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=token)
        for run in page:
            tags = run.data.tags
            ident = {k[len(TRAINER_TAG) + 1:]: v for k, v in tags.items() if k.startswith(TRAINER_TAG + ".")}
            if "pid" in ident:
                alive = same_process_alive(ident)
                if alive is False:
                    out.append((run, f"its trainer (pid {ident['pid']} on {ident.get('host')}) is gone"))
            elif (time.time() * 1000 - (run.info.start_time or 0)) > 86_400_000:
                out.append((run, "no trainer recorded, RUNNING for more than a day"))
        token = page.token
        if not token:
            break
    return out


def end_orphaned(tracking_uri: str, runs: list[tuple[Any, str]]) -> list[str]:
    """Mark each orphaned run KILLED, with why in ``gpuops.error``; returns their ids."""
    from gpuops.tracking.tracker import mark_if_running

    return [run.info.run_id for run, why in runs
            if mark_if_running(tracking_uri, run.info.run_id, "KILLED",
                               f"marked by gpuops runs --clean: {why}")]
