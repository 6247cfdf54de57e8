"""``gpuops reproduce RUN_ID``: run a tracked run again and say how the new run differs from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gpuops.cli.app import Application, JsonOpt, NoColorOpt, QuietOpt
from gpuops.cli.commands.run import (
    UriOpt,
    _fmt,
    _quiet_mlflow,
    _redacted_crash,
    _redacted_messages,
    _stop_signals,
    execute,
    report,
    target_options,
)


def _options(original: Any, target: str) -> Any:
    """The original run's own target options, from its tags: the same environment and, for a
    container run, the same image by digest."""
    tags = original.tags
    if target == "docker":
        return target_options("docker", env=tags.get("gpuops.env") or None,
                              image=original.image_digest if original.target == "docker" else None)
    if target == "aws":
        aws = {"--instance-type": tags.get("aws.instance_type"), "--region": tags.get("aws.region"),
               "--spot": tags.get("aws.spot") == "true",
               "--max-hours": float(tags["aws.max_hours"]) if tags.get("aws.max_hours") else None}
        return target_options("aws", image=tags.get("env.image") or None, aws=aws)
    return target_options(target)


def _render(app: Application, doc: dict[str, Any]) -> Any:
    cmp = doc["comparison"]
    rows = [(m["name"], _fmt(m["original"]), _fmt(m["new"]),
             "same" if m["identical"] else _fmt(m["abs_diff"]) + (" (speed)" if m["timing"] else ""))
            for m in cmp["metrics"]]
    rows += [(e["key"], str(e["original"]), str(e["new"]), "differs") for e in cmp["env"]]
    verdict = ("bit-identical results" if cmp["bit_identical"] else "results differ") + \
        (", same environment" if not cmp["env"] else f", {len(cmp['env'])} environment tag(s) differ")
    return app.out.table(["", f"run {doc['original'][:8]}", f"run {doc['run']['run_id'][:8]}", ""], rows,
                         title=f"gpuops reproduce: {verdict}")


def reproduce(
    run_id: Annotated[str, typer.Argument(help="The run to make again (a unique prefix will do).",
                                          show_default=False)],
    target: Annotated[str | None, typer.Option("--target", help="Where to run it: local | docker | aws "
                                               "(default: where the original ran).")] = None,
    allow_dirty: Annotated[bool, typer.Option("--allow-dirty", help="Go on (with a warning) when this "
                                              "checkout is not at the run's commit, or has uncommitted "
                                              "changes.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before spending money (aws).")] = False,
    tracking_uri: UriOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Run a tracked run again, then compare: metrics side by side and every environment tag that
    differs.

    The new run trains the original's stored spec (its spec.yaml: the same seed and the same --set
    overrides), on the target it ran on unless --target says otherwise; a container run uses the
    same image, by digest. gpuops checks out nothing: it refuses (exit 2) when this checkout is not
    at the run's git commit or has uncommitted changes, unless --allow-dirty. A run made from a dirty
    tree carries its diff as the artifact git.diff (git apply it). The new run is tagged
    gpuops.reproduces=RUN_ID. On a CPU the results of a deterministic run are bit-identical; speed
    metrics are shown but not counted.

    \b
    Examples:
      gpuops reproduce 3f2c9a0e
      gpuops reproduce 3f2c9a0e --target docker --json
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    _quiet_mlflow()
    with _redacted_crash(), _stop_signals(), app.guard(), _redacted_messages():
        from gpuops.launch import build_request
        from gpuops.tracking.reproduce import REPRODUCES_TAG, check_tree, compare_runs, load_original
        from gpuops.tracking.tracker import Tracker

        tracker = Tracker(tracking_uri)
        original = load_original(tracker, run_id)
        for warning in check_tree(original, Path.cwd(), allow_dirty=allow_dirty):
            app.out.warn(warning)
        where = target or original.target or "local"
        request = build_request(resolved=original.resolved, options=_options(original, where),
                                tracking_uri=tracker.tracking_uri, tags={REPRODUCES_TAG: original.run_id})
        run_doc = execute(app, request, yes=yes)
        if run_doc["status"] != "FINISHED":
            report(app, run_doc)
        else:
            cmp = compare_runs(tracker, original.run_id, run_doc["run_id"])
            doc = {"original": original.run_id, "run": run_doc, "comparison": cmp.to_dict()}
            app.out.result(doc, render=_render(app, doc))
    app.exit()


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)
