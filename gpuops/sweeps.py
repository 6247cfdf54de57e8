"""Sweeps: one spec for several values of one field, as child runs under a parent MLflow run.

``plan_sweep`` validates every child before anything is tracked; ``run_sweep`` creates the parent
run (``prepare_run``, as every run), launches each child through the one run path (the caller's
``run_child`` renders and returns the child's summary document) and gives the parent the results
table (``sweep.json``), the plot (``sweep.png``) and one ``sweep/<metric>`` point per numeric value.
Never prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuops.errors import UsageError

if TYPE_CHECKING:
    from gpuops.experiments.spec import ResolvedExperiment
    from gpuops.targets.base import LaunchRequest, TargetOptions


@dataclass
class SweepPlan:
    base: ResolvedExperiment
    key: str
    values: list[Any]
    metric: str
    children: list[ResolvedExperiment] = field(default_factory=list)


def plan_sweep(spec: str | Path, *, param: list[str] | None = None, metric: str | None = None,
               overrides: list[str] | None = None, smoke: bool = False) -> SweepPlan:
    """The sweep's field, values and metric (``--param KEY=V1,V2`` or the spec's ``sweep:``
    section), with every child spec validated (an invalid one is exit 2 before any run exists)."""
    from gpuops.experiments.spec import load_experiment, parse_override

    overrides = list(overrides or [])
    base = load_experiment(spec, overrides, smoke=smoke)
    if param:
        if len(param) != 1:
            raise UsageError("one --param KEY=V1,V2,... per sweep")
        key, _, raw = param[0].partition("=")
        values = [parse_override(f"{key}={v}")[1] for v in raw.split(",") if v.strip()]
        if not key or not values:
            raise UsageError(f"--param {param[0]!r}: expected KEY=V1,V2,...")
    elif base.spec.sweep is not None:
        key, values = base.spec.sweep.param, list(base.spec.sweep.values)
    else:
        raise UsageError(f"{spec}: no sweep: section; give --param KEY=V1,V2,...")
    metric = metric or (base.spec.sweep.metric if base.spec.sweep else None) or (
        "val/psnr" if base.spec.task == "sr" else "val/accuracy")
    children = [load_experiment(spec, [*overrides, f"{key}={v}"], smoke=smoke) for v in values]
    return SweepPlan(base=base, key=key, values=values, metric=metric, children=children)


def run_sweep(plan: SweepPlan, *, options: TargetOptions, tracking_uri: str | None,
              run_child: Callable[[LaunchRequest], dict[str, Any]],
              on_child: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the children under a parent run (one after another; on Ray, as many at once as the
    cluster's free GPUs allow); the sweep's document."""
    import tempfile

    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker

    tr = Tracker(tracking_uri)
    if options.kind == "ray":  # before any run exists
        from gpuops.cluster.ray_cluster import check_auth, resolve_address
        from gpuops.targets.ray import check_reachable_store

        check_auth()
        check_reachable_store(tr.tracking_uri, resolve_address(options.address))
    tags = {"gpuops.sweep.param": plan.key, "gpuops.sweep.values": json.dumps(plan.values)}
    parent = prepare_run(tr, plan.base, target=options.kind, run_name=f"sweep {plan.key}", tags=tags)
    tr.run_id = parent
    try:
        if options.kind == "ray":
            results = _on_ray(plan, parent, options, tr, on_child)
        else:
            results = _one_by_one(plan, parent, options, tr.tracking_uri, run_child, on_child)
        with tempfile.TemporaryDirectory() as tmp:
            png = sweep_plot(results, plan.key, plan.metric, Path(tmp) / "sweep.png",
                             smoke=any(c.smoke for c in plan.children))
            tr.log_artifact(png)
            tr.log_text(json.dumps(results, indent=2), "sweep.json")
        for r in results:
            if r["metric"] is not None and isinstance(r["value"], int | float):
                tr.log_metrics({f"sweep/{plan.metric}": r["metric"]}, step=int(r["value"]))
        tr.finish("FINISHED" if all(r["status"] == "FINISHED" for r in results) else "FAILED")
    except KeyboardInterrupt:
        tr.finish("KILLED", "sweep interrupted")
        raise
    except BaseException as e:
        tr.finish("FAILED", f"{type(e).__name__}: {e}")
        raise
    return {"parent_run_id": parent, "param": plan.key, "metric": plan.metric, "target": options.kind,
            "runs": results}


def _one_by_one(plan: SweepPlan, parent: str, options: Any, tracking_uri: str,
                run_child: Callable[[LaunchRequest], dict[str, Any]],
                on_child: Callable[[str], None] | None) -> list[dict[str, Any]]:
    """Each child through the one run path, one after another (a Ctrl-C ends the sweep)."""
    from gpuops.launch import build_request

    results: list[dict[str, Any]] = []
    for value, child in zip(plan.values, plan.children, strict=True):
        if on_child is not None:
            on_child(f"{plan.key}={value}")
        request = build_request(resolved=child, options=options, tracking_uri=tracking_uri,
                                parent_run_id=parent)
        doc = run_child(request)
        results.append({"value": value, "run_id": doc["run_id"], "status": doc["status"],
                        "metric": doc["metrics"].get(plan.metric)})
        if doc["status"] == "KILLED":
            raise KeyboardInterrupt
    return results


def _on_ray(plan: SweepPlan, parent: str, options: Any, tr: Any,
            on_child: Callable[[str], None] | None) -> list[dict[str, Any]]:
    """Every child a trial on the Ray cluster at once, as many in flight as its free GPUs allow;
    a failed trial is tried again into the same child run."""
    from gpuops.cluster.ray_cluster import ray_session, resolve_address
    from gpuops.cluster.trials import Trial, run_trials
    from gpuops.targets.ray import trial_gpus
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker, mark_if_running

    trials: list[Trial] = []

    def said(kind: str, trial: Trial, attempt: int) -> None:
        if on_child is not None:
            on_child(f"{trial.name}: {kind}" + (f" (attempt {attempt})" if attempt > 1 else ""))

    try:
        for value, child in zip(plan.values, plan.children, strict=True):
            run_id = prepare_run(Tracker(tr.tracking_uri), child, target="ray", parent_run_id=parent)
            trials.append(Trial(run_id=run_id, resolved=child.to_dict(), gpus=trial_gpus(child, options),
                                name=f"{plan.key}={value}"))
        with ray_session(resolve_address(options.address)) as session:
            if on_child is not None:
                free, total = session.gpus()
                on_child(f"ray: {len(session.nodes())} node(s), {free:g} of {total:g} GPU(s) free")
            done = run_trials(trials, tracking_uri=tr.tracking_uri, max_failures=options.max_failures,
                              on_event=said)
    except BaseException as e:  # no child run is left RUNNING (run_trials ends those it started)
        for t in trials:
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            mark_if_running(tr.tracking_uri, t.run_id, status,
                            f"the sweep on Ray ended early: {type(e).__name__}: {e}")
        raise
    out = []
    for value, r in zip(plan.values, done, strict=True):
        metrics = tr.client.get_run(r.run_id).data.metrics
        out.append({"value": value, "run_id": r.run_id, "status": r.status,
                    "metric": metrics.get(plan.metric),
                    "attempts": r.attempts, "node": r.hostname,
                    "cuda_visible_devices": r.cuda_visible_devices, "error": r.error})
    return out


def sweep_plot(results: list[dict[str, Any]], key: str, metric: str, path: Path, *,
               smoke: bool = False) -> Path:
    """The final metric against the swept value: a line (log x when the values span 20x or more)
    for numbers, bars otherwise; a smoke sweep says so in its title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["value"], r["metric"]) for r in results if r["metric"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = all(isinstance(v, int | float) for v, _ in pts)
    if numeric:
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        if pts and min(p[0] for p in pts) > 0 and max(p[0] for p in pts) / min(p[0] for p in pts) >= 20:
            ax.set_xscale("log")
    else:
        ax.bar([str(p[0]) for p in pts], [p[1] for p in pts])
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {key}" + (" (--smoke: a check of the path, not a result)"
                                              if smoke else ""), fontsize=10 if smoke else None)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
