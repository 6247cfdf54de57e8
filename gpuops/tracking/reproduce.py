"""Running a tracked run again, and saying how the new run differs from the original.

The library behind ``gpuops reproduce RUN_ID``; it prints nothing. The steps:

1. :func:`load_original`: the run's resolved experiment (its ``spec.yaml`` artifact: the same seed,
   the same ``--set`` overrides), where it ran (``gpuops.target``), its commit, whether its tree was
   dirty, the container image it used, its tags and final metrics.
2. :func:`check_tree`: the working tree must be at the run's commit and clean (else a
   ``UsageError``, exit 2), unless the caller allows a dirty tree (then the differences come back as
   warning lines). gpuops checks out nothing itself.
3. The caller starts the new run (tagged :data:`REPRODUCES_TAG` = the original's id).
4. :func:`compare_runs`: final metrics side by side, and every environment tag that differs.

A metric that measures speed (:func:`is_timing_metric`: throughput, seconds) differs between any two
runs and is shown but not counted against ``bit_identical``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuops.errors import UsageError

if TYPE_CHECKING:
    from gpuops.experiments.spec import ResolvedExperiment
    from gpuops.tracking.tracker import Tracker

REPRODUCES_TAG = "gpuops.reproduces"
DIFF_ARTIFACT = "git.diff"
UNKNOWN = "unknown"
# Tags compared besides every ``env.*`` tag: where the run ran, and the image a container run used.
ENV_EXTRA_TAGS = ("gpuops.target", "gpuops.image")

_TIMING = re.compile(r"(throughput|samples_per_s|per_sec|seconds|duration|(^|[/_.])(time|eta|fps)($|[/_.]))",
                     re.IGNORECASE)


def is_timing_metric(name: str) -> bool:
    """True for a metric that measures how fast the run went or what the machine did (MLflow's
    ``system/*`` metrics: CPU, memory, GPU use), not what it computed."""
    return name.startswith("system/") or bool(_TIMING.search(name))


@dataclass(frozen=True)
class Original:
    """What a tracked run needs to be run again, and what it is compared with afterwards."""

    run_id: str
    resolved: ResolvedExperiment
    target: str | None  # gpuops.target: local, docker, aws (None: the run has no such tag)
    git_commit: str  # "unknown" when the run was not started from a git checkout
    git_dirty: bool | None  # None: not recorded, or not known
    image_digest: str | None  # env.image_digest of a container run
    image: str | None  # the image tag a container run used (gpuops.image, env.image)
    has_diff: bool  # the run carries the git diff of its dirty tree (artifact git.diff)
    status: str
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def experiment_name(self) -> str:
        return self.resolved.experiment_name

    @property
    def seed(self) -> int | None:
        return getattr(self.resolved.spec, "seed", None)

    @property
    def overrides(self) -> list[str]:
        return self.resolved.public_overrides()


def _known(value: str | None) -> str | None:
    return None if value is None or value in ("", UNKNOWN) else value


def _as_tracker(client: Any) -> Tracker:
    from gpuops.tracking.tracker import Tracker

    if isinstance(client, Tracker):
        return client
    return Tracker(str(client.tracking_uri))


def _client(client: Any) -> Any:
    """The ``MlflowClient`` of a ``Tracker``, or ``client`` itself."""
    return getattr(client, "client", client)


def load_original(client: Any, run_id: str) -> Original:
    """The run ``run_id`` (a whole id or a unique prefix) as :class:`Original`. ``client`` is a
    ``Tracker`` or an ``MlflowClient``. ``UsageError`` when there is no such run, or when it has no
    ``spec.yaml`` (it was not started by ``gpuops run``)."""
    from gpuops.tracking.runs import SPEC_ARTIFACT, load_run_spec, resolve_run_id

    tracker = _as_tracker(client)
    mc = tracker.client
    full = resolve_run_id(mc, run_id)
    run = mc.get_run(full)
    names = {a.path for a in mc.list_artifacts(full)}
    if SPEC_ARTIFACT not in names:
        raise UsageError(f"run {full} has no {SPEC_ARTIFACT} artifact: it was not started by gpuops run, "
                         "so gpuops cannot run it again", hint="gpuops runs lists the runs gpuops made")
    resolved = load_run_spec(tracker, full)
    tags = dict(run.data.tags)
    dirty = tags.get("git.dirty")
    return Original(
        run_id=full,
        resolved=resolved,
        target=_known(tags.get("gpuops.target")),
        git_commit=tags.get("git.commit") or UNKNOWN,
        git_dirty={"true": True, "false": False}.get(str(dirty).lower()),
        image_digest=_known(tags.get("env.image_digest")),
        image=_known(tags.get("gpuops.image") or tags.get("env.image")),
        has_diff=DIFF_ARTIFACT in names,
        status=str(run.info.status),
        tags=tags,
        metrics={k: float(v) for k, v in run.data.metrics.items()},
    )


def check_tree(original: Original, cwd: Path, *, allow_dirty: bool = False) -> list[str]:
    """Whether the checkout holding ``cwd`` is where ``original`` was made from: at its commit, with
    no uncommitted change to a tracked file. A mismatch is a ``UsageError`` (exit 2) unless
    ``allow_dirty``; the lines returned are warnings for the caller to show (also when nothing is
    refused: a run with no recorded commit, a run made from a dirty tree)."""
    from gpuops.tracking.runs import git_tags

    warnings: list[str] = []
    short = original.run_id[:8]
    if original.git_dirty:
        where = (f"its changes are stored with it (artifact {DIFF_ARTIFACT}; apply them with git apply)"
                 if original.has_diff else "its uncommitted changes were not stored")
        warnings.append(f"run {short} was made from a working tree with uncommitted changes: {where}")
    if original.git_commit == UNKNOWN:
        warnings.append(f"run {short} recorded no git commit: the code it ran cannot be checked")
        return warnings
    here = git_tags(Path(cwd))
    head = here["git.commit"]
    problems: list[str] = []
    hint = None
    if head == UNKNOWN:
        problems.append(f"{cwd} is not in a git checkout (run {short} was made at commit "
                        f"{original.git_commit[:12]})")
        hint = "run it from the project's checkout"
    elif head != original.git_commit:
        problems.append(f"this checkout is at commit {head[:12]}, run {short} was made at "
                        f"{original.git_commit[:12]}")
        hint = f"git checkout {original.git_commit[:12]}, or pass --allow-dirty"
    if here["git.dirty"] == "true":
        problems.append("this checkout has uncommitted changes to tracked files")
        hint = hint or "commit or stash them, or pass --allow-dirty"
    elif here["git.dirty"] == UNKNOWN and head != UNKNOWN:
        warnings.append("git could not say whether this checkout has uncommitted changes")
    if problems and not allow_dirty:
        raise UsageError("; ".join(problems) + ": the new run would not run the same code", hint=hint)
    return warnings + [f"{p} (--allow-dirty: going on)" for p in problems]


@dataclass(frozen=True)
class MetricDiff:
    """One final metric of both runs."""

    name: str
    original: float
    new: float
    abs_diff: float
    identical: bool  # equal to the last bit (NaN equals NaN)
    timing: bool  # a speed measure: not counted in ``bit_identical``


@dataclass(frozen=True)
class TagDiff:
    """An environment tag whose value differs; None: the run has no such tag."""

    key: str
    original: str | None
    new: str | None


@dataclass(frozen=True)
class ReproReport:
    original_id: str
    new_id: str
    metrics: list[MetricDiff]
    only_original: list[str]  # metric names the new run lacks
    only_new: list[str]
    env: list[TagDiff]
    bit_identical: bool  # every shared final metric (timing ones aside) equal exactly; False if none

    @property
    def env_identical(self) -> bool:
        return not self.env

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for m in d["metrics"]:  # JSON has no NaN or infinity
            for k in ("original", "new", "abs_diff"):
                if not math.isfinite(m[k]):
                    m[k] = str(m[k])
        d["env_identical"] = self.env_identical
        return d


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def env_diff(original: dict[str, str], new: dict[str, str]) -> list[TagDiff]:
    """Every ``env.*`` tag, ``gpuops.target`` and ``gpuops.image`` whose value differs between two
    runs' tags or that only one of them has, sorted by key."""
    keys = {k for k in (*original, *new) if k.startswith("env.")} | set(ENV_EXTRA_TAGS)
    out = []
    for k in sorted(keys):
        a, b = original.get(k), new.get(k)
        if a != b:
            out.append(TagDiff(k, a, b))
    return out


def compare_runs(client: Any, original_id: str, new_id: str) -> ReproReport:
    """Final metrics and environment tags of two runs (ids or unique prefixes), side by side.
    ``client`` is an ``MlflowClient`` or a ``Tracker``."""
    from gpuops.tracking.runs import resolve_run_id

    mc = _client(client)
    a_id, b_id = resolve_run_id(mc, original_id), resolve_run_id(mc, new_id)
    a, b = mc.get_run(a_id), mc.get_run(b_id)
    am = {k: float(v) for k, v in a.data.metrics.items()}
    bm = {k: float(v) for k, v in b.data.metrics.items()}
    shared = sorted(set(am) & set(bm))
    metrics = []
    for k in shared:
        same = _same(am[k], bm[k])
        diff = 0.0 if same else abs(am[k] - bm[k])
        metrics.append(MetricDiff(name=k, original=am[k], new=bm[k], abs_diff=diff, identical=same,
                                  timing=is_timing_metric(k)))
    results = [m for m in metrics if not m.timing]
    return ReproReport(
        original_id=a_id,
        new_id=b_id,
        metrics=metrics,
        only_original=sorted(set(am) - set(bm)),
        only_new=sorted(set(bm) - set(am)),
        env=env_diff(dict(a.data.tags), dict(b.data.tags)),
        bit_identical=bool(results) and all(m.identical for m in results),
    )
