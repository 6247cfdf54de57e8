"""Put MLflow runs side by side: key metrics, and what differed in the spec and the environment.

``compare_runs(tracking_uri, run_ids=..., experiment=..., latest=...)`` fetches the runs with
``MlflowClient`` and returns a ``Comparison`` (pydantic, JSON-able):

- ``runs``: per run its id, name, experiment, status and, per metric logged by ``gpuops run``
  (``train/loss``, ``val/psnr``, ...), the final value (last step) and the best value over the
  history (lowest for losses, highest for everything else) with their steps;
- ``params``: only the params whose values DIFFER between the runs (a param missing from a
  run counts as a difference, shown as ``None``); ``params_same`` counts the others;
- ``env``: only the ``env.*`` tags (the environment fingerprint) that differ, and
  ``env_same``: the ones every run shares (so a reader knows what was held fixed);
- ``tags``: the provenance tags that differ (``git.commit``, ``git.dirty``, ``spec.hash``,
  ``gpuops.target``).

Which runs: ``run_ids`` if given; else the ``latest`` most recent runs of ``experiment``; else
the ``latest`` most recent runs of all experiments (runs of different specs live in different
experiments, and comparing SRCNN against FSRCNN is a normal thing to do).

``plot_comparison(comparison, path)`` draws a PNG with matplotlib's Agg canvas (no display
needed): the validation curve (``val/psnr`` with the bicubic baseline dashed, or
``val/accuracy``), the ``train/loss`` curves, and bars of the final validation metric.

``log_comparison(...)``: where the PNG goes in MLflow. Choice: a dedicated run in the
experiment ``gpuops-compare`` (tag ``gpuops.compare.runs`` = the compared ids, artifacts
``compare/comparison.png`` and ``compare/comparison.json``), not an artifact of each compared
run. A training run stays exactly what its training produced; comparisons accumulate as a
history of their own; and comparing runs one may only read (a colleague's experiment) works.

The tracking URI: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
``sqlite:///<cwd>/mlflow.db`` (``gpuops.tracking.tracker.resolve_tracking_uri``, the same rule as
``gpuops run``). A sqlite store that does not exist is an error rather than a new empty database.
``Comparison.tracking_uri`` is shown and logged with any ``user:password@`` removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from gpuops.errors import ExternalError, UsageError
from gpuops.tracking.tracker import redact_uri, resolve_tracking_uri, sqlite_artifact_root

COMPARE_EXPERIMENT = "gpuops-compare"
COMPARE_TAG = "gpuops.compare.runs"

# The metric names ``gpuops run`` logs (fixed), in the order they are shown.
KEY_METRICS: tuple[str, ...] = (
    "val/psnr",
    "val/psnr_bicubic",
    "val/ssim",
    "val/ssim_bicubic",
    "val/accuracy",
    "val/loss",
    "train/loss",
    "train/throughput",
)
# Tags that say where a run came from, besides the env.* fingerprint.
PROVENANCE_TAGS: tuple[str, ...] = ("git.commit", "git.dirty", "spec.hash", "gpuops.target")
ENV_PREFIX = "env."


class MetricSummary(BaseModel):
    final: float
    final_step: int
    best: float
    best_step: int
    steps: int = Field(description="how many values were logged")


class RunSummary(BaseModel):
    run_id: str
    run_name: str | None = None
    experiment: str | None = None
    status: str
    start_time: str | None = None  # ISO 8601, UTC
    metrics: dict[str, MetricSummary] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        short = self.run_id[:8]
        return f"{self.run_name} ({short})" if self.run_name else short


class Comparison(BaseModel):
    tracking_uri: str
    experiment: str | None = None
    runs: list[RunSummary]
    metrics: list[str] = Field(description="key metrics logged by at least one run, in display order")
    params: dict[str, dict[str, str | None]] = Field(
        default_factory=dict, description="param -> run_id -> value, only params that differ")
    params_same: int = 0
    env: dict[str, dict[str, str | None]] = Field(
        default_factory=dict, description="env.* tag -> run_id -> value, only tags that differ")
    env_same: dict[str, str] = Field(default_factory=dict, description="env.* tags equal in every run")
    tags: dict[str, dict[str, str | None]] = Field(
        default_factory=dict, description="provenance tag -> run_id -> value, only tags that differ")
    plot: str | None = None
    logged_run_id: str | None = None

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]


# -- where the runs are -------------------------------------------------------------------------

def _check_store_exists(uri: str) -> None:
    from gpuops.tracking.server import sqlite_path

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UsageError(f"no MLflow store at {db}",
                         hint="run `gpuops run experiments/<spec>.yaml` first, or pass --tracking-uri")


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _mlflow_error(e: Exception, what: str) -> ExternalError:
    return ExternalError(f"MLflow: {what}: {getattr(e, 'message', None) or e}")


def _fetch_runs(client: Any, run_ids: list[str], experiment: str | None, latest: int) -> list[Any]:
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    if run_ids:
        runs = []
        for rid in dict.fromkeys(run_ids):  # keep order, drop repeats
            try:
                runs.append(client.get_run(rid))
            except MlflowException as e:
                if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                    raise UsageError(f"no run {rid!r} in this store") from None
                raise _mlflow_error(e, f"reading run {rid}") from None
        return runs
    if latest < 1:
        raise UsageError("--latest must be at least 1")
    try:
        if experiment is not None:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                names = sorted(e.name for e in client.search_experiments() if e.name != COMPARE_EXPERIMENT)
                raise UsageError(f"no experiment {experiment!r} in this store",
                                 hint=f"experiments here: {', '.join(names) or '(none)'}")
            exp_ids = [exp.experiment_id]
        else:
            exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
                       if e.name != COMPARE_EXPERIMENT]
        if not exp_ids:
            return []
        return list(client.search_runs(exp_ids, run_view_type=ViewType.ACTIVE_ONLY,
                                       order_by=["attribute.start_time DESC"], max_results=latest))
    except MlflowException as e:
        raise _mlflow_error(e, "searching runs") from None


# -- the comparison -----------------------------------------------------------------------------

def _lower_is_better(metric: str) -> bool:
    return "loss" in metric.rsplit("/", 1)[-1]


def summarize_history(metric: str, history: list[tuple[int, float]]) -> MetricSummary | None:
    """Final (highest step; the later log wins on equal steps) and best value of one metric."""
    points = sorted(((int(s), float(v)) for s, v in history if v == v), key=lambda p: p[0])  # no NaN
    if not points:
        return None
    final_step, final = points[-1]  # stable sort: on equal steps the later log wins
    sign = 1.0 if _lower_is_better(metric) else -1.0
    # Best value; on ties the earliest step.
    best_step, best = min(points, key=lambda p: (sign * p[1], p[0]))
    return MetricSummary(final=final, final_step=final_step, best=best, best_step=best_step,
                         steps=len(points))


def differing(values: dict[str, dict[str, str]]) -> tuple[dict[str, dict[str, str | None]], dict[str, str]]:
    """``run_id -> {key: value}`` into (keys whose value differs: key -> run_id -> value|None,
    keys equal in every run: key -> value). Keys are sorted."""
    keys = sorted({k for kv in values.values() for k in kv})
    differ: dict[str, dict[str, str | None]] = {}
    same: dict[str, str] = {}
    for k in keys:
        per_run = {rid: kv.get(k) for rid, kv in values.items()}
        distinct = set(per_run.values())
        if len(distinct) == 1 and None not in distinct:
            same[k] = next(iter(distinct))  # type: ignore[assignment]
        else:
            differ[k] = per_run
    return differ, same


def _histories(client: Any, run: Any) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for key in run.data.metrics:
        hist = client.get_metric_history(run.info.run_id, key)
        hist = sorted(hist, key=lambda m: (m.step, m.timestamp))
        out[key] = [(m.step, m.value) for m in hist]
    return out


def compare_runs(tracking_uri: str | None = None, run_ids: list[str] | None = None,
                 experiment: str | None = None, latest: int = 5) -> tuple[Comparison, dict[str, Any]]:
    """Fetch the runs and compare them. Returns the ``Comparison`` and the metric histories
    (``run_id -> metric -> [(step, value)]``) that ``plot_comparison`` draws."""
    from mlflow.exceptions import MlflowException

    if run_ids and experiment is not None:
        raise UsageError("give RUN_IDs or --experiment, not both")
    uri = resolve_tracking_uri(tracking_uri)
    _check_store_exists(uri)
    client = _client(uri)
    runs = _fetch_runs(client, list(run_ids or []), experiment, latest)
    if not runs:
        where = f"experiment {experiment!r}" if experiment else "this store"
        raise UsageError(f"no runs to compare in {where}", hint="run `gpuops run ...` first")

    exp_names: dict[str, str | None] = {}
    summaries: list[RunSummary] = []
    histories: dict[str, dict[str, list[tuple[int, float]]]] = {}
    params: dict[str, dict[str, str]] = {}
    env: dict[str, dict[str, str]] = {}
    prov: dict[str, dict[str, str]] = {}
    try:
        for run in runs:
            info, data = run.info, run.data
            rid = info.run_id
            if info.experiment_id not in exp_names:
                exp = client.get_experiment(info.experiment_id)
                exp_names[info.experiment_id] = exp.name if exp else None
            histories[rid] = _histories(client, run)
            metrics = {}
            for key in sorted(histories[rid], key=_metric_order):
                summary = summarize_history(key, histories[rid][key])
                if summary is not None:
                    metrics[key] = summary
            started = (datetime.fromtimestamp(info.start_time / 1000, tz=UTC).isoformat(timespec="seconds")
                       if info.start_time else None)
            summaries.append(RunSummary(run_id=rid, run_name=info.run_name,
                                        experiment=exp_names[info.experiment_id], status=info.status,
                                        start_time=started, metrics=metrics))
            params[rid] = dict(data.params)
            env[rid] = {k: v for k, v in data.tags.items() if k.startswith(ENV_PREFIX)}
            prov[rid] = {k: v for k, v in data.tags.items() if k in PROVENANCE_TAGS}
    except MlflowException as e:
        raise _mlflow_error(e, "reading runs") from None

    present = {m for s in summaries for m in s.metrics}
    metric_names = sorted(present, key=_metric_order)
    params_differ, params_same = differing(params)
    env_differ, env_same = differing(env)
    tags_differ, _ = differing(prov)
    comparison = Comparison(
        tracking_uri=redact_uri(uri), experiment=experiment, runs=summaries, metrics=metric_names,
        params=params_differ, params_same=len(params_same), env=env_differ, env_same=env_same,
        tags=tags_differ,
    )
    return comparison, histories


def _metric_order(name: str) -> tuple[int, str]:
    return (KEY_METRICS.index(name) if name in KEY_METRICS else len(KEY_METRICS), name)


# -- the picture --------------------------------------------------------------------------------

def _val_metric(comparison: Comparison) -> str | None:
    for m in ("val/psnr", "val/accuracy", "val/ssim", "val/loss"):
        if m in comparison.metrics:
            return m
    return None


def default_plot_path(comparison: Comparison, base: Path | None = None) -> Path:
    """``gpuops-out/compare/<hash of the run ids>.png``: the same runs give the same file."""
    digest = hashlib.sha256(",".join(sorted(comparison.run_ids)).encode()).hexdigest()[:12]
    return (base or Path.cwd()) / "gpuops-out" / "compare" / f"{digest}.png"


LEGEND_PARAMS = 3  # at most this many differing params in one legend entry
LEGEND_VALUE_CHARS = 24


def _short_value(value: str | None) -> str:
    if value is None:
        return "(unset)"
    return value if len(value) <= LEGEND_VALUE_CHARS else value[: LEGEND_VALUE_CHARS - 1] + "\u2026"


def legend_labels(comparison: Comparison) -> dict[str, str]:
    """``run_id -> legend text`` naming the params that differ between the runs, e.g.
    ``train.lr=0.001, model.layers=64x9x9_32x5x5_1x5x5``.

    Params are ordered by how many distinct values they take (the one that splits the runs most
    first), then by name, and at most ``LEGEND_PARAMS`` are named. When no param differs, the entry
    is the run's name and short id; when two runs would get the same text, the short id is
    appended so that every entry stays distinct.
    """
    runs = comparison.runs
    differ = {k: v for k, v in comparison.params.items() if k != "tracking.run_name"}
    keys = sorted(differ, key=lambda k: (-len(set(differ[k].values())), k))[:LEGEND_PARAMS]
    texts = {r.run_id: ", ".join(f"{k}={_short_value(differ[k].get(r.run_id))}" for k in keys) for r in runs}
    seen: dict[str, int] = {}
    for t in texts.values():
        seen[t] = seen.get(t, 0) + 1
    out: dict[str, str] = {}
    for r in runs:
        t = texts[r.run_id]
        if not t:
            out[r.run_id] = r.label
        elif seen[t] > 1:
            out[r.run_id] = f"{t} ({r.run_id[:8]})"
        else:
            out[r.run_id] = t
    return out


def plot_comparison(comparison: Comparison, histories: dict[str, Any], path: Path) -> Path:
    """Draw the learning curves and final-metric bars into ``path`` (PNG). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    val = _val_metric(comparison)
    fig = Figure(figsize=(15, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_val, ax_loss, ax_bar = fig.subplots(1, 3)
    colors = [f"C{i % 10}" for i in range(len(comparison.runs))]
    names = legend_labels(comparison)

    for run, color in zip(comparison.runs, colors, strict=True):
        hist = histories.get(run.run_id, {})
        if val and hist.get(val):
            steps, values = zip(*hist[val], strict=True)
            ax_val.plot(steps, values, marker="o", ms=3, color=color, label=names[run.run_id])
        if val == "val/psnr" and hist.get("val/psnr_bicubic"):
            ax_val.axhline(hist["val/psnr_bicubic"][-1][1], color=color, ls="--", lw=1, alpha=0.7)
        if hist.get("train/loss"):
            steps, values = zip(*hist["train/loss"], strict=True)
            ax_loss.plot(steps, values, color=color, lw=1.2, label=names[run.run_id])

    ax_val.set_title(f"{val} (dashed: bicubic)" if val == "val/psnr" else (val or "no validation metric"))
    ax_val.set_xlabel("iteration")
    ax_val.grid(alpha=0.3)
    if ax_val.lines:
        ax_val.legend(fontsize=8)
    ax_loss.set_title("train/loss")
    ax_loss.set_xlabel("iteration")
    ax_loss.grid(alpha=0.3)
    if ax_loss.lines:
        positive = all(min(ln.get_ydata()) > 0 for ln in ax_loss.lines)
        if positive:
            ax_loss.set_yscale("log")
        ax_loss.legend(fontsize=8)

    ax_bar.set_title(f"final {val}" if val else "final values")
    if val:
        labels = [names[r.run_id] for r in comparison.runs]
        finals = [r.metrics[val].final if val in r.metrics else float("nan") for r in comparison.runs]
        bars = ax_bar.bar(range(len(labels)), finals, color=colors)
        ax_bar.bar_label(bars, labels=[f"{v:.4g}" if v == v else "n/a" for v in finals], fontsize=8)
        ax_bar.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        known = [v for v in finals if v == v]
        if val == "val/psnr":  # the bicubic baseline(s), for scale
            for base in sorted({r.metrics["val/psnr_bicubic"].final for r in comparison.runs
                                if "val/psnr_bicubic" in r.metrics}):
                ax_bar.axhline(base, color="0.3", ls="--", lw=1)
                ax_bar.annotate(f"bicubic {base:.2f}", (0, base), xytext=(2, 2), textcoords="offset points",
                                xycoords=("axes fraction", "data"), fontsize=8, color="0.3")
                known.append(base)
        if known and val != "val/loss":
            lo, hi = min(known), max(known)
            pad = max((hi - lo) * 0.5, abs(hi) * 0.02, 1e-6)
            ax_bar.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    ax_bar.grid(axis="y", alpha=0.3)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The legend entries in the PNG's text chunks too, for scripts and tests that read them back.
    fig.savefig(path, format="png", metadata={
        "Title": f"gpuops compare: {val or 'no validation metric'}",
        "Description": "runs: " + "; ".join(names[r.run_id] for r in comparison.runs)})
    return path


def _terminate(client: Any, run_id: str, status: str) -> None:
    # Against a tracking server, MlflowClient.set_terminated writes "View run ... at: URL" to
    # stdout; a library must not print (and `--json` owns stdout), so that text is dropped.
    with contextlib.redirect_stdout(io.StringIO()):
        client.set_terminated(run_id, status)


def log_comparison(comparison: Comparison, plot: Path, tracking_uri: str | None = None) -> str:
    """Log the PNG and the comparison JSON to a new run in the ``gpuops-compare`` experiment.

    ``tracking_uri``: the store (with its credentials, if any); default: the one resolved as in
    ``compare_runs``. Returns the new run's id (also stored in ``comparison.logged_run_id``).
    """
    import tempfile

    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    try:
        exp = client.get_experiment_by_name(COMPARE_EXPERIMENT)
        if exp is None:
            root = sqlite_artifact_root(uri)  # artifacts beside a sqlite store, as `gpuops run` does
            exp_id = client.create_experiment(
                COMPARE_EXPERIMENT, artifact_location=f"{root}/{COMPARE_EXPERIMENT}" if root else None)
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp_id)
        names = ", ".join(r.run_name or r.run_id[:8] for r in comparison.runs)
        run = client.create_run(exp_id, run_name=f"compare {names}"[:250], tags={
            COMPARE_TAG: ",".join(comparison.run_ids),
            "mlflow.note.content": "Runs compared by `gpuops compare`: "
                                   + ", ".join(r.label for r in comparison.runs),
        })
        rid = run.info.run_id
    except MlflowException as e:
        raise _mlflow_error(e, "creating the comparison run") from None
    comparison.logged_run_id = rid
    try:
        with tempfile.TemporaryDirectory(prefix="gpuops-compare-") as tmp:
            # Stable names inside the run, whatever the local PNG is called.
            (Path(tmp) / "comparison.png").write_bytes(Path(plot).read_bytes())
            (Path(tmp) / "comparison.json").write_text(comparison.model_dump_json(indent=2),
                                                       encoding="utf-8")
            client.log_artifacts(rid, tmp, artifact_path="compare")
    except (MlflowException, OSError) as e:
        _terminate(client, rid, "FAILED")
        raise _mlflow_error(e, "logging the comparison") from None
    _terminate(client, rid, "FINISHED")
    return rid
