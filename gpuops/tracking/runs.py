"""Setting up the MLflow run of an experiment: params, tags, the resolved spec.

``prepare_run`` is idempotent, so that it can attach to a run created by someone else (the
docker target creates the run on the host and the container logs into it) or to a run being
resumed: params already there are left alone, and ``gpuops.target`` is only set when missing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

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
                run_name: str | None = None) -> str:
    """Create (or attach to ``run_id``) the run, and log params, tags and ``spec.yaml``."""
    import yaml

    tags = run_tags(resolved, target)
    created = run_id is None
    if run_id is None:
        run_id = tracker.start(resolved.experiment_name, run_name=run_name or resolved.spec.tracking.run_name,
                               tags=tags, parent_run_id=parent_run_id)
    else:
        tracker.start(run_id=run_id)
    try:
        if not created:
            have = tracker.tags()
            if "gpuops.target" in have:  # the caller (docker, aws) knows where it really runs
                tags.pop("gpuops.target")
            tracker.set_tags(tags)
        tracker.log_params(resolved.params())
        artifacts = {a.path for a in tracker.client.list_artifacts(run_id)}
        if SPEC_ARTIFACT not in artifacts:
            tracker.log_text(yaml.safe_dump(resolved.to_dict(), sort_keys=False), SPEC_ARTIFACT)
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
