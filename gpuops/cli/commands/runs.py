"""``gpuops runs``: MLflow runs left RUNNING whose trainer is gone, and ``--clean`` to end them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gpuops.cli.app import Application, JsonOpt, NoColorOpt, QuietOpt


def runs(
    clean: Annotated[bool, typer.Option("--clean", help="Mark every listed run KILLED.")] = False,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="MLflow store or server (default: MLFLOW_TRACKING_URI, else ./mlflow.db)."
    )] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """List runs left RUNNING whose trainer process is gone (killed machine, lost session).

    \b
      gpuops runs              what is stuck, and why
      gpuops runs --clean      mark them KILLED (with the reason in gpuops.error)
      gpuops runs --json       for scripts

    A run trained on another host is not listed: its trainer cannot be checked from here.
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        from gpuops.tracking.runs import end_orphaned, orphaned_runs
        from gpuops.tracking.tracker import Tracker, redact_uri

        tr = Tracker(tracking_uri)
        found = orphaned_runs(tr.client)
        ended = end_orphaned(tr.tracking_uri, found) if clean else []
        doc: dict[str, Any] = {
            "store": redact_uri(tr.tracking_uri),
            "orphaned": [{"run_id": r.info.run_id, "experiment_id": r.info.experiment_id,
                          "run_name": r.info.run_name, "why": why} for r, why in found],
            "killed": ended,
        }

        def render() -> list[str]:
            if not found:
                return ["No run is left RUNNING without its trainer."]
            lines = [f"{r.info.run_id}  {r.info.run_name or ''}  {why}" for r, why in found]
            if clean:
                lines.append(f"marked {len(ended)} run(s) KILLED")
            else:
                lines.append("gpuops runs --clean marks them KILLED")
            return lines

        app.out.result(doc, render="\n".join(render()))
    raise typer.Exit(app.exit_code)


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
