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
    """Run the children one after another under a parent run; the sweep's document."""
    import tempfile

    from gpuops.launch import build_request
    from gpuops.tracking.runs import prepare_run
    from gpuops.tracking.tracker import Tracker

    tr = Tracker(tracking_uri)
    tags = {"gpuops.sweep.param": plan.key, "gpuops.sweep.values": json.dumps(plan.values)}
    parent = prepare_run(tr, plan.base, target=options.kind, run_name=f"sweep {plan.key}", tags=tags)
    tr.run_id = parent
    results: list[dict[str, Any]] = []
    try:
        for value, child in zip(plan.values, plan.children, strict=True):
            if on_child is not None:
                on_child(f"{plan.key}={value}")
            request = build_request(resolved=child, options=options, tracking_uri=tr.tracking_uri,
                                    parent_run_id=parent)
            doc = run_child(request)
            results.append({"value": value, "run_id": doc["run_id"], "status": doc["status"],
                            "metric": doc["metrics"].get(plan.metric)})
            if doc["status"] == "KILLED":
                raise KeyboardInterrupt
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
