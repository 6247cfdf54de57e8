"""``gpuops doctor``: parse options, call the doctor library, render the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gpuops.cli.app import Application, JsonOpt, NoColorOpt, QuietOpt

HELP = """What is broken in the NVIDIA driver/CUDA/cuDNN/framework stack, why, what changed, how to fix it.

\b
Gathers the driver, GPUs, kernel module, DKMS, Secure Boot, nouveau, CUDA toolkits, cuDNN,
framework builds (from package metadata; no framework is imported), Docker and the apt history,
then runs an ordered list of checks. Each finding has a code, a severity, the evidence, an
explanation and a repair plan. Exit code: 0 no error, 1 an error finding, 2 bad input.

\b
Examples:
  gpuops doctor                       diagnose this machine
  gpuops doctor --capture host.yaml   also save everything gathered (attach it to a bug report)
  gpuops doctor --replay host.yaml    diagnose a saved capture, on any machine
  gpuops doctor --log err.txt         add an error text you got (a traceback, a docker error)
  gpuops doctor --fix                 print the repair plan (changes nothing)
  sudo gpuops doctor --fix --yes      apply it step by step, verifying each step
"""

_SEV_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _render(report: Any, fix: bool) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    head = "gpuops doctor" + (
        f" (replay of {report.capture_kind} capture)" if report.capture_kind != "live" else ""
    )
    if report.source:
        head += f"\nsource: {report.source}"
    parts.append(Text(head, style="bold"))
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim")
    t.add_column()
    for k, v in report.summary.items():
        t.add_row(k, v)
    parts.append(t)
    if not report.findings:
        parts.append(Text("\nNo problems found.", style="green"))
    for f in report.findings:
        sev = Text(f"\n{f.severity.upper():7}", style=_SEV_STYLE[f.severity])
        sev.append(f" {f.code}: ", style="bold")
        sev.append(f.title)
        if f.confidence == "likely":
            sev.append("  (likely)", style="dim")
        parts.append(sev)
        for e in f.evidence:
            parts.append(Text(f"    • {e}"))
        for h in f.history:
            parts.append(Text(f"    ↳ {h}", style="magenta"))
        if f.explanation:
            parts.append(Text(f"    {f.explanation}", style="dim"))
        if f.plan and not fix and f.severity != "info":
            parts.append(
                Text(
                    "    fix: "
                    + f.plan[0].command
                    + ("  (+ more: gpuops doctor --fix)" if len(f.plan) > 1 else ""),
                    style="green",
                )
            )
    if report.timeline:
        parts.append(Text("\nDriver / CUDA / kernel package changes (apt, dpkg):", style="bold"))
        for line in report.timeline[-10:]:
            parts.append(Text(f"  {line}"))
    if report.environments or report.environments_note:
        parts.append(Text("\nPinned environments:", style="bold"))
        # A reason that every environment shares (no Docker daemon, say) is said once.
        shared = set(report.environments[0].reasons) if len(report.environments) > 1 else set()
        for e in report.environments[1:]:
            shared &= set(e.reasons)
        for reason in (r for r in report.environments[0].reasons if r in shared):
            parts.append(Text(f"  all: {reason}", style="dim"))
        for e in report.environments:
            mark = {True: "yes", False: "no", None: "?"}[e.runnable]
            style = {True: "green", False: "red", None: "yellow"}[e.runnable]
            line = Text(f"  {mark:3} ", style=style)
            line.append(
                f"{e.name} ({e.framework} {e.framework_version}, {'CUDA ' + e.cuda if e.cuda else 'CPU'})"
            )
            own = [r for r in e.reasons if r not in shared]
            if own:
                line.append(": " + "; ".join(own), style="dim")
            parts.append(line)
        if report.environments_note:
            parts.append(Text(f"  {report.environments_note}", style="dim"))
    if fix:
        parts.append(_render_plan(report.plan()))
    return Group(*parts)


def _render_plan(steps: list[Any]) -> Any:
    from rich.console import Group
    from rich.text import Text

    if not steps:
        return Text("\nRepair plan: nothing to do.", style="green")
    out: list[Any] = [
        Text(
            "\nRepair plan (nothing has been changed; apply with: sudo gpuops doctor --fix --yes):",
            style="bold",
        )
    ]
    for i, s in enumerate(steps, 1):
        tags = [
            t
            for t, on in (
                ("root", s.needs_root),
                ("reboot", s.needs_reboot),
                ("optional", s.optional),
                ("by hand", s.manual),
            )
            if on
        ]
        line = Text(f"  {i:2}. ")
        line.append(s.command, style="bold")
        if tags:
            line.append(f"  [{', '.join(tags)}]", style="yellow")
        out.append(line)
        out.append(Text(f"      why: {s.why}", style="dim"))
    return Group(*out)


def doctor(
    capture: Annotated[
        Path | None,
        typer.Option("--capture", metavar="FILE", help="Also write everything gathered to FILE (YAML)."),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option("--replay", metavar="FILE", help="Diagnose a saved capture instead of this machine."),
    ] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Print the ordered repair plan; changes nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="With --fix: apply the plan (as root), verifying each step.")
    ] = False,
    prevent: Annotated[
        bool,
        typer.Option(
            "--prevent",
            help="With --fix --yes: also apply the optional prevention steps (hold driver packages).",
        ),
    ] = False,
    fix_log: Annotated[
        Path | None,
        typer.Option(
            "--fix-log", metavar="FILE", help="Where --fix --yes logs every command and its output."
        ),
    ] = None,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep", help="Also import each framework in a child process and run a tiny GPU convolution."
        ),
    ] = False,
    log: Annotated[
        list[Path] | None,
        typer.Option(
            "--log", metavar="FILE", help="An error text you got (traceback, docker error); repeatable."
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(
            "--python", metavar="PATH", help="Inspect the packages of this Python instead of gpuops' own."
        ),
    ] = None,
    env_dir: Annotated[Path, typer.Option("--env-dir", help="Pinned environments to check.")] = Path(
        "environments"
    ),
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        from gpuops.doctor import diagnose, load_capture, save_capture
        from gpuops.doctor.capture import LogRecord
        from gpuops.errors import UsageError

        if yes and not fix:
            raise UsageError("--yes only goes with --fix")
        if replay is not None and capture is not None:
            raise UsageError("--capture and --replay exclude each other")
        if replay is not None and yes:
            raise UsageError(
                "--fix --yes repairs this machine; it cannot apply the plan of a replayed capture"
            )
        if replay is not None:
            cap = load_capture(replay)
        else:
            from gpuops.doctor import collect

            cap = collect(deep=deep, python=python)
        for p in log or []:
            try:
                cap.logs.append(
                    LogRecord(origin=str(p), text=p.read_text(encoding="utf-8", errors="replace")[:200_000])
                )
            except OSError as e:
                raise UsageError(f"{p}: cannot read the log ({e.strerror or e})") from None
        if capture is not None:
            save_capture(cap, capture)
            app.out.info(f"capture written to {capture}")
        report = diagnose(cap, env_dir=env_dir)
        if fix and yes:
            _apply(app, report, prevent=prevent, log_path=fix_log, python=python)
        else:
            data = report.model_dump(mode="json")
            if fix:
                data["plan"] = [s.model_dump(mode="json") for s in report.plan()]
            app.out.result(data, render=None if app.out.json_mode or app.out.quiet else _render(report, fix))
            app.exit_code = report.exit_code
    app.exit()


def _apply(
    app: Application, report: Any, *, prevent: bool, log_path: Path | None, python: str | None
) -> None:
    from gpuops.doctor import collect, diagnose
    from gpuops.doctor.repair import apply_plan

    steps = report.plan()
    if not steps:
        app.out.result({"applied": [], "ok": True}, render="Nothing to repair.")
        app.exit_code = report.exit_code
        return

    def reprobe() -> set[str]:
        return diagnose(collect(python=python)).codes("error")

    res = apply_plan(steps, yes=True, log_path=log_path, include_optional=prevent, reprobe=reprobe)
    data = {
        "ok": res.ok,
        "log": str(res.log_path),
        "next": res.next_action,
        "steps": [
            {"n": r.index, "command": r.step.command, "status": r.status, "rc": r.rc} for r in res.results
        ],
    }
    lines = [f"{r.index:2}. [{r.status}] {r.step.command}" for r in res.results]
    if res.next_action:
        lines.append(f"next: {res.next_action}")
    lines.append(f"log: {res.log_path}")
    app.out.result(data, render="\n".join(lines))
    if not res.ok and not any(r.status == "stopped_reboot" for r in res.results):
        app.out.error(res.next_action or "repair stopped")
    app.exit_code = 0 if res.ok else 1


def register(app: typer.Typer) -> None:
    app.command("doctor", help=HELP)(doctor)
