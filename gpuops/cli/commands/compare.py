"""``gpuops compare`` (runs side by side) and ``gpuops ui`` (the MLflow UI on the same store)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpuops.cli.app import Application, JsonOpt, NoColorOpt, QuietOpt

if TYPE_CHECKING:
    from rich.console import RenderableType

    from gpuops.tracking.compare import Comparison

TrackingUriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                 help="MLflow store or server. Default: sqlite:///<cwd>/mlflow.db, the store `gpuops run` "
                      "writes to."),
]


def _fmt(v: float) -> str:
    if v != v:
        return "nan"
    if abs(v) >= 100:
        return f"{v:,.1f}"
    if abs(v) >= 1:
        return f"{v:.3f}"
    return f"{v:.4g}"


def _val(v: str | None) -> str:
    return "—" if v is None else v


def _quiet_mlflow_logs() -> None:
    # MLflow logs INFO lines ("Creating initial MLflow database tables...") on every new store
    # connection; they are noise next to the tables. Warnings and errors still show.
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)


def render_comparison(c: Comparison) -> list[RenderableType]:
    """The tables of a comparison (rich renderables), in the order they are shown."""
    from rich.table import Table
    from rich.text import Text

    def run_table(title: str, first: str) -> Table:
        t = Table(title=title, title_justify="left", header_style="bold")
        t.add_column(first)
        for r in c.runs:
            t.add_column(f"{r.run_name or ''}\n{r.run_id[:8]}".strip())
        return t

    out: list[RenderableType] = []
    runs = run_table("Runs", "")
    runs.add_row("experiment", *[_val(r.experiment) for r in c.runs])
    runs.add_row("status", *[r.status for r in c.runs])
    runs.add_row("started (UTC)", *[_val(r.start_time) for r in c.runs])
    out.append(runs)

    metrics = run_table("Metrics: final value (best, at step)", "metric")
    for m in c.metrics:
        cells = []
        for r in c.runs:
            s = r.metrics.get(m)
            if s is None:
                cells.append("—")
            elif s.best != s.final:
                cells.append(f"{_fmt(s.final)} ({_fmt(s.best)} @{s.best_step})")
            else:
                cells.append(_fmt(s.final))
        metrics.add_row(m, *cells)
    out.append(metrics)

    for title, diff, none_msg in (
        (f"Params that differ ({c.params_same} identical)", c.params,
         f"Params: all {c.params_same} identical."),
        ("Environment that differs (env.* tags)", c.env, "Environment: the same env.* tags in every run."),
        ("Provenance that differs", c.tags, None),
    ):
        if diff:
            t = run_table(title, "name")
            for key, per_run in diff.items():
                cells = [_val(per_run.get(r.run_id)) for r in c.runs]
                if key == "git.commit":
                    cells = [v[:12] for v in cells]
                t.add_row(key, *cells)
            out.append(t)
        elif none_msg and len(c.runs) > 1:
            out.append(Text(none_msg))
    if c.env_same:
        same = ", ".join(f"{k.removeprefix('env.')}={v}" for k, v in c.env_same.items())
        out.append(Text(f"Same environment in every run: {same}", style="dim"))
    if c.plot:
        where = f" (logged to run {c.logged_run_id}, artifacts compare/)" if c.logged_run_id else ""
        out.append(Text(f"Plot: {c.plot}{where}"))
    return out


def compare(
    run_ids: Annotated[list[str] | None, typer.Argument(
        metavar="RUN_ID", help="Runs to compare. Default: the latest runs (see --experiment, --latest).",
        show_default=False)] = None,
    experiment: Annotated[str | None, typer.Option(
        "--experiment", "-e", help="Take the latest runs of this experiment (the spec's name).")] = None,
    latest: Annotated[int, typer.Option("--latest", "-n", min=1,
                                        help="How many recent runs to take when no RUN_ID is given.")] = 5,
    tracking_uri: TrackingUriOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Where to write the PNG. Default: gpuops-out/compare/<hash of run ids>.png.",
        dir_okay=False)] = None,
    no_log: Annotated[bool, typer.Option(
        "--no-log", help="Do not log the PNG and JSON to a run in the 'gpuops-compare' experiment.")] = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Put MLflow runs side by side: metrics, and the params and environment that differed.

    Reads the runs from the MLflow store (the same one `gpuops run` logs to), shows the final and
    best value of each key metric (val/psnr, val/ssim, val/accuracy, train/loss, ...), only the
    params that differ between the runs, and only the environment tags (env.*: GPU, driver,
    CUDA, cuDNN, torch, image digest, ...) and provenance tags (git commit, spec hash, target)
    that differ. It draws a PNG (validation and loss curves, final-metric bars) and logs it, with
    the comparison as JSON, to a new run of the 'gpuops-compare' experiment (--no-log: do not).

    \b
    Examples:
      gpuops compare                          the 5 latest runs of the store
      gpuops compare -e srcnn_y -n 3          the 3 latest runs of experiment srcnn_y
      gpuops compare 3f2a... 9bc1... --json   two runs by id, as one JSON document
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    _quiet_mlflow_logs()
    with app.guard():
        from gpuops.tracking.compare import compare_runs, default_plot_path, log_comparison, plot_comparison

        comparison, histories = compare_runs(tracking_uri, run_ids=run_ids or [], experiment=experiment,
                                             latest=latest)
        if len(comparison.runs) == 1:
            app.out.warn("only one run found: nothing to compare it with")
        path = plot_comparison(comparison, histories, out or default_plot_path(comparison))
        comparison.plot = str(path)
        if not no_log:
            log_comparison(comparison, path, tracking_uri)
        app.out.result(comparison.model_dump(mode="json"))
        if not app.out.json_mode:
            for part in render_comparison(comparison):
                app.out.print(part)
    app.exit()


def ui(
    tracking_uri: TrackingUriOpt = None,
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535,
                                      help="Port to listen on; 0 picks a free one.")] = 5000,
    host: Annotated[str, typer.Option(
        "--host", help="Interface to bind. Keep 127.0.0.1 unless you mean to expose the UI.")] = "127.0.0.1",
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Start the MLflow UI on the store that `gpuops run` logs to, until Ctrl-C.

    Runs a real `mlflow server` (UI and REST API) over the same store as `gpuops run` and
    `gpuops compare` (default sqlite:///<cwd>/mlflow.db), waits until it answers, prints its URL,
    and keeps it running until Ctrl-C. With --json it prints {"url", "pid", "log", ...} once
    the server is up. The server's own log goes to a file (shown on start).

    \b
    Examples:
      gpuops ui                                 http://127.0.0.1:5000
      gpuops ui --port 0                        on any free port
      gpuops ui --tracking-uri sqlite:////data/mlflow.db
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    server: Any = None

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _term)  # `kill` stops the server like Ctrl-C does
    previous_hup = signal.signal(signal.SIGHUP, _term)  # so does a closed terminal
    try:
        with app.guard():
            from gpuops.errors import UsageError
            from gpuops.tracking.server import sqlite_path, start_server
            from gpuops.tracking.tracker import redact_uri, resolve_tracking_uri

            uri = resolve_tracking_uri(tracking_uri)
            if uri.startswith(("http://", "https://")):
                raise UsageError(f"{redact_uri(uri)} is already a tracking server",
                                 hint="open it in a browser; `gpuops ui` serves a local store")
            db = sqlite_path(uri)
            if db is not None and not db.is_file():
                app.out.warn(f"no store at {db} yet: the UI starts empty (runs appear once logged)")
            app.out.info(f"starting the MLflow UI on {redact_uri(uri)} ...")
            try:
                server = start_server(uri, host=host, port=port or None, timeout=120)
                app.out.result(
                    {"url": server.url, "pid": server.pid, "tracking_uri": redact_uri(uri),
                     "log": str(server.log_path)},
                    render=f"MLflow UI: {server.url}   (Ctrl-C to stop)",
                )
                app.out.info(f"server log: {server.log_path}")
                code = server.wait()
                from gpuops.errors import ExternalError

                raise ExternalError(f"the MLflow server exited (code {code})",
                                    hint=f"its log is {server.log_path}:\n{server.log_tail(2000)}")
            except KeyboardInterrupt:
                app.out.info("stopping the MLflow UI")
    finally:
        if server is not None:
            server.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
    app.exit()


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("ui")(ui)
