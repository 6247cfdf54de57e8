"""``gpuops doctor``: parse options, call the doctor library, render the report.

Its options are parsed with argparse, not typer: ``gpuops doctor`` must start in a fraction of a
second and keep working when typer, pydantic or rich are broken, so this module imports none of
them (``gpuops.cli.entry`` sends ``gpuops doctor ...`` here directly). ``register`` lists doctor in
the typer app as well, forwarding its arguments, so ``gpuops --help`` shows it with the others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gpuops.cli.application import JSON_HELP, NO_COLOR_HELP, QUIET_HELP, Application
from gpuops.output import Lines

SUMMARY = "What is broken in the NVIDIA driver/CUDA/cuDNN/framework stack, why, what changed, how to fix it."

DESCRIPTION = SUMMARY + """

Gathers the driver, GPUs, kernel module, DKMS, Secure Boot, nouveau, CUDA toolkits, cuDNN,
framework builds (from package metadata; no framework is imported), Docker and the apt history,
then runs an ordered list of checks. Each finding has a code, a severity, the evidence, an
explanation and a repair plan. Exit code: 0 no error, 1 an error finding, 2 bad input."""

EXAMPLES = """Examples:
  gpuops doctor                       diagnose this machine
  gpuops doctor --capture host.yaml   also save everything gathered (attach it to a bug report)
  gpuops doctor --replay host.yaml    diagnose a saved capture, on any machine
  gpuops doctor --log err.txt         add an error text you got (a traceback, a docker error)
  gpuops doctor --fix                 print the repair plan (changes nothing)
  sudo gpuops doctor --fix --yes      apply it step by step, verifying each step
  gpuops doctor --json                one JSON document, for scripts
  gpuops doctor --against 3f2a9c      what differs from the machine that made run 3f2a9c...
  gpuops doctor --replay host.yaml --against 3f2a9c   the same, for a saved capture's machine
  gpuops doctor --cluster --ray-address 10.0.0.5:6379   every node of a Ray cluster

With --against RUN_ID, doctor compares this machine's environment fingerprint (or that of the
--replay capture) with the env.* tags of a run made by gpuops run: driver, CUDA, cuDNN, framework
build, GPU, image digest, and the rest; and says whether the run's torch build still fits this
machine's driver and GPUs, from the knowledge base. Exit code 1 when it does not, else 0."""

_SEV_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _render(report: Any, fix: bool) -> Lines:
    out = Lines()
    out.add(("gpuops doctor" + (
        f" (replay of {report.capture_kind} capture)" if report.capture_kind != "live" else ""
    ), "bold"))
    if report.source:
        out.add((f"source: {report.source}", "bold"))
    width = max((len(k) for k in report.summary), default=0)
    for k, v in report.summary.items():
        out.add((f"{k:<{width}}", "dim"), f"  {v}")
    for f in report.findings:
        out.add()
        line = [(f"{f.severity.upper():7}", _SEV_STYLE[f.severity]), (f" {f.code}: ", "bold"), (f.title, "")]
        if f.confidence == "likely":
            line.append(("  (likely)", "dim"))
        out.add(*line)
        for e in f.evidence:
            out.add(f"    • {e}")
        for h in f.history:
            out.add((f"    ↳ {h}", "magenta"))
        if f.explanation:
            out.add((f"    {f.explanation}", "dim"))
        if f.plan and not fix and f.severity != "info":
            more = "  (+ more: gpuops doctor --fix)" if len(f.plan) > 1 else ""
            out.add((f"    fix: {_fix_line(f.plan)}{more}", "green"))
    if report.timeline:
        out.add().add(("Driver / CUDA / kernel package changes (apt, dpkg):", "bold"))
        for entry in report.timeline[-10:]:
            out.add(f"  {entry}")
    if report.environments or report.environments_note:
        out.add().add(("Pinned environments:", "bold"))
        # A reason that every environment shares (no Docker daemon, say) is said once.
        shared = set(report.environments[0].reasons) if len(report.environments) > 1 else set()
        for e in report.environments[1:]:
            shared &= set(e.reasons)
        first = report.environments[0].reasons if report.environments else []
        for reason in (r for r in first if r in shared):
            out.add((f"  all: {reason}", "dim"))
        for e in report.environments:
            mark = {True: "yes", False: "no", None: "?"}[e.runnable]
            style = {True: "green", False: "red", None: "yellow"}[e.runnable]
            build = f"CUDA {e.cuda}" if e.cuda else "CPU"
            line = [(f"  {mark:3} ", style), (f"{e.name} ({e.framework} {e.framework_version}, {build})", "")]
            own = [r for r in e.reasons if r not in shared]
            if own:
                line.append((": " + "; ".join(own), "dim"))
            out.add(*line)
        if report.environments_note:
            out.add((f"  {report.environments_note}", "dim"))
    if fix:
        out.extend(_render_plan(report.plan()))
    style = {"problems": "bold red", "could_not_verify": "yellow", "warnings": "yellow", "healthy": "green"}
    out.add().add((report.verdict_line, style[report.verdict]))
    return out


def _alternatives(steps: list[Any]) -> dict[str, list[list[Any]]]:
    """group -> its alternatives (each the list of its steps), in order."""
    out: dict[str, dict[Any, list[Any]]] = {}
    for s in steps:
        if s.group is not None:
            out.setdefault(s.group, {}).setdefault(s.alternative, []).append(s)
    return {
        g: [alts[k] for k in sorted(alts, key=lambda a: (a is None, a or 0))]
        for g, alts in out.items()
        if len(alts) > 1
    }


def _either(alts: list[list[Any]]) -> str:
    """"either A or B": the first step of each alternative (and how many more it has)."""
    parts = []
    for alt in alts:
        more = f" (+{len(alt) - 1} step{'s' if len(alt) > 2 else ''})" if len(alt) > 1 else ""
        parts.append(alt[0].command + more)
    return "either " + " or ".join(parts)


def _fix_line(plan: list[Any]) -> str:
    first = plan[0]
    alts = _alternatives(plan)
    if first.group in alts:
        return _either(alts[first.group])
    return first.command


def _tags(s: Any) -> list[str]:
    return [
        t
        for t, on in (
            ("root", s.needs_root),
            ("reboot", s.needs_reboot),
            ("optional", s.optional),
            ("by hand", s.manual),
        )
        if on
    ]


def _render_plan(steps: list[Any]) -> Lines:
    out = Lines().add()
    if not steps:
        return out.add(("Repair plan: nothing to do.", "green"))
    out.add(("Repair plan (nothing has been changed; apply with: sudo gpuops doctor --fix --yes):", "bold"))
    alts = _alternatives(steps)
    seen: dict[str, Any] = {}
    for i, s in enumerate(steps, 1):
        if s.group in alts:
            if s.group not in seen:
                n = len(alts[s.group])
                out.add((f"  either ({n} alternatives; --fix --yes tries them in order and stops at the "
                         "first that clears the finding):", "cyan"))
            elif seen[s.group] != s.alternative:
                out.add(("  or:", "cyan"))
            seen[s.group] = s.alternative
        tags = _tags(s)
        indent = "    " if s.group in alts else "  "
        out.add(f"{indent}{i:2}. ", (s.command, "bold"), (f"  [{', '.join(tags)}]", "yellow") if tags else "")
        out.add((f"{indent}    why: {s.why}", "dim"))
        if s.group in alts and s is alts[s.group][-1][-1]:
            out.add(("  (end of alternatives)", "cyan"))
    return out


def plan_data(steps: list[Any]) -> dict[str, Any]:
    """The plan for ``--json``: the steps (argv, command, group, alternative) and the alternatives."""
    alts = _alternatives(steps)
    return {
        "steps": [s.to_dict() for s in steps],
        "alternatives": [
            {
                "group": g,
                "text": _either(a),
                "alternatives": [[st.command for st in alt] for alt in a],
            }
            for g, a in alts.items()
        ],
    }


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2, like the other commands."""

    def error(self, message: str) -> Any:
        Application().out.error(f"{message} (gpuops doctor --help lists the options)")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="gpuops doctor",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    a = p.add_argument
    a("--capture", metavar="FILE", type=Path, help="Also write everything gathered to FILE (YAML).")
    a("--replay", metavar="FILE", type=Path, help="Diagnose a saved capture instead of this machine.")
    a("--fix", action="store_true", help="Print the ordered repair plan; changes nothing.")
    a("--yes", action="store_true", help="With --fix: apply the plan (as root), verifying each step.")
    a("--prevent", action="store_true",
      help="With --fix --yes: also apply the optional prevention steps (hold driver packages).")
    a("--fix-log", metavar="FILE", type=Path, help="Where --fix --yes logs every command and its output.")
    a("--deep", action="store_true",
      help="Also import each framework in a child process and run a tiny GPU convolution.")
    a("--log", metavar="FILE", type=Path, action="append", default=[],
      help="An error text you got (traceback, docker error); repeatable.")
    a("--python", metavar="PATH", help="Inspect the packages of this Python instead of gpuops' own.")
    a("--env-dir", metavar="DIR", type=Path, default=Path("environments"),
      help="Pinned environments to check (default: environments).")
    a("--against", metavar="RUN_ID",
      help="Compare with the machine that made this tracked run (an id or a unique prefix).")
    a("--tracking-uri", metavar="URI",
      help="With --against: the MLflow store of the run (default: MLFLOW_TRACKING_URI, else ./mlflow.db).")
    a("--cluster", action="store_true",
      help="Doctor on every node of a Ray cluster, one report per node and what differs between them "
           "(with --capture DIR: one capture per node).")
    a("--ray-address", metavar="ADDRESS",
      help="With --cluster: the cluster (default: RAY_ADDRESS, else a Ray instance on this machine).")
    a("--json", dest="json_", action="store_true", help=JSON_HELP)
    a("--quiet", "-q", action="store_true", help=QUIET_HELP)
    a("--no-color", action="store_true", help=NO_COLOR_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``gpuops doctor`` with ``argv`` (the arguments after ``doctor``); return the exit code."""
    ns = build_parser().parse_args(sys.argv[2:] if argv is None else argv)
    return doctor(**vars(ns))


def doctor(
    *,
    capture: Path | None = None,
    replay: Path | None = None,
    fix: bool = False,
    yes: bool = False,
    prevent: bool = False,
    fix_log: Path | None = None,
    deep: bool = False,
    log: list[Path] | None = None,
    python: str | None = None,
    env_dir: Path = Path("environments"),
    against: str | None = None,
    tracking_uri: str | None = None,
    cluster: bool = False,
    ray_address: str | None = None,
    json_: bool = False,
    quiet: bool = False,
    no_color: bool = False,
) -> int:
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
        if tracking_uri is not None and against is None:
            raise UsageError("--tracking-uri only goes with --against")
        if ray_address is not None and not cluster:
            raise UsageError("--ray-address only goes with --cluster")
        if cluster:
            used = [o for o, on in (("--fix", fix), ("--replay", replay is not None), ("--against", against),
                                    ("--deep", deep), ("--log", bool(log)), ("--python", python)) if on]
            if used:
                raise UsageError(f"--cluster runs doctor on the nodes; it does not go with {', '.join(used)}")
            _cluster(app, ray_address, capture_dir=capture, env_dir=env_dir)
            return app.exit_code
        if against is not None:
            used = [o for o, on in (("--fix", fix), ("--yes", yes), ("--deep", deep), ("--log", bool(log)))
                    if on]
            if used:
                raise UsageError(f"--against compares environments; it does not go with {', '.join(used)}")
            _against(app, against, tracking_uri=tracking_uri, replay=replay, capture=capture, python=python)
            return app.exit_code
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
            data = report.to_dict()
            data["verdict"] = report.verdict
            data["verdict_line"] = report.verdict_line
            if fix:
                pd = plan_data(report.plan())
                data["plan"] = pd["steps"]
                data["plan_alternatives"] = pd["alternatives"]
            app.out.result(data, render=None if app.out.json_mode or app.out.quiet else _render(report, fix))
            app.exit_code = report.exit_code
    return app.exit_code


def _cluster(app: Application, address: str | None, *, capture_dir: Path | None, env_dir: Path) -> None:
    """``--cluster``: doctor's capture on every alive Ray node; one report per node, and the
    fingerprint keys on which nodes disagree."""
    import dataclasses

    from gpuops.cluster.doctor import cluster_doctor
    from gpuops.cluster.ray_cluster import ray_session

    with ray_session(address, dashboard=False) as session:
        for warning in session.warnings:
            app.out.warn(warning)
        report = cluster_doctor(capture_dir=capture_dir, env_dir=env_dir)
    doc = {"nodes": [dataclasses.asdict(n) for n in report.nodes], "differences": report.differences,
           "odd_ones": report.odd_ones, "exit_code": report.exit_code}
    render = None
    if not (app.out.json_mode or app.out.quiet):
        out = Lines()
        out.add((f"gpuops doctor --cluster: {len(report.nodes)} node(s)", "bold"))
        style = {"problems": "bold red", "capture_failed": "bold red", "could_not_verify": "yellow",
                 "warnings": "yellow", "healthy": "green"}
        for n in report.nodes:
            out.add((f"  {n.hostname} ({n.node_ip}, node {n.node_id[:12]}): ", ""),
                    (n.verdict_line, style.get(n.verdict, "")))
            if n.capture_file:
                out.add((f"    capture: {n.capture_file}", "dim"))
        if report.differences:
            out.add(("what differs between the nodes:", "bold"))
            for key, by_node in report.differences.items():
                odd = set(report.odd_ones.get(key, []))
                values = ", ".join(f"{nid[:12]}={v}" + (" (differs)" if nid in odd else "")
                                   for nid, v in by_node.items())
                out.add((f"  {key}: {values}", ""))
        else:
            out.add(("the nodes agree on driver, CUDA, GPU and framework builds", "green"))
        render = out
    app.out.result(doc, render=render)
    app.exit_code = report.exit_code


def _against(app: Application, run_ref: str, *, tracking_uri: str | None, replay: Path | None,
             capture: Path | None, python: str | None) -> None:
    """``--against RUN_ID``: the drift between the run's machine and this one (or the replayed one)."""
    from gpuops.doctor import load_capture, save_capture
    from gpuops.doctor.against import compare_environment, run_environment
    from gpuops.doctor.fingerprint import environment_fingerprint

    # the run first: a wrong id or store is said before anything is probed
    run_id, tags = run_environment(run_ref, tracking_uri)
    if replay is not None:
        cap = load_capture(replay)
        here_name = f"the capture {replay}"
    else:
        from gpuops.doctor import collect

        cap = collect(quick=True, python=python)  # the capture that run fingerprints come from
        here_name = "this machine"
    if capture is not None:
        save_capture(cap, capture)
        app.out.info(f"capture written to {capture}")
    report = compare_environment(run_id, tags, environment_fingerprint(cap), here_name=here_name)
    render = None if app.out.json_mode or app.out.quiet else _render_against(report)
    app.out.result(report.to_dict(), render=render)
    app.exit_code = report.exit_code


def _render_against(report: Any) -> Lines:
    out = Lines()
    out.add((f"gpuops doctor --against {report.run_id}", "bold"))
    if report.identical:
        out.add((f"No differences: {report.here} has the environment fingerprint of the run's machine "
                 f"({len(report.same)} keys).", "green"))
    else:
        n = len(report.differences)
        out.add(f"{n} difference{'s' if n != 1 else ''} between the run's machine and {report.here}:")
        width = max(len(d.label) for d in report.differences)
        runs = ["(not recorded)" if d.run is None else d.run for d in report.differences]
        rw = min(max(len(r) for r in runs), 40)
        out.add((f"  {'':<{width}}  {'the run':<{rw}}  here", "dim"))
        for d, run in zip(report.differences, runs, strict=True):
            out.add((f"  {d.label:<{width}}", "bold" if d.major else ""), f"  {run:<{rw}}  {d.here}")
    v = report.verdict
    out.add()
    if v.build is None:
        out.add(("The run's framework build: not recorded.", "yellow"))
    else:
        word = {True: ("fits", "green"), False: ("does not fit", "bold red"), None: ("cannot tell", "yellow")}
        text, style = word[v.ok]
        out.add(f"The run's build ({v.build}) on {report.here}: ", (text, style))
    for r in v.reasons:
        out.add(f"    • {r}")
    for s in v.sources:
        out.add((f"    source: {s.key} ({s.status}): {s.url or 'no URL'}", "dim"))
    return out


def _apply(
    app: Application, report: Any, *, prevent: bool, log_path: Path | None, python: str | None
) -> None:
    from gpuops.doctor import collect, diagnose
    from gpuops.doctor.repair import apply_plan

    steps = report.plan()
    if not steps:
        app.out.result({"applied": [], "ok": True}, render=Lines().add("Nothing to repair."))
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
            {
                "n": r.index,
                "command": r.step.command,
                "argv": list(r.step.argv),
                "group": r.step.group,
                "alternative": r.step.alternative,
                "status": r.status,
                "rc": r.rc,
            }
            for r in res.results
        ],
    }
    lines = Lines()
    for r in res.results:
        lines.add(f"{r.index:2}. [{r.status}] {r.step.command}")
    if res.next_action:
        lines.add(f"next: {res.next_action}")
    lines.add(f"log: {res.log_path}")
    app.out.result(data, render=lines)
    if not res.ok and not any(r.status == "stopped_reboot" for r in res.results):
        app.out.error(res.next_action or "repair stopped")
    app.exit_code = 0 if res.ok else 1


def register(app: Any) -> None:
    """List doctor in the typer app; its arguments go to ``main`` unparsed (``--help`` included)."""
    import typer

    @app.command(
        "doctor",
        help=SUMMARY + "\n\nOptions: gpuops doctor --help",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
        add_help_option=False,
    )
    def _doctor(ctx):  # type: ignore[no-untyped-def]
        raise typer.Exit(main(list(ctx.args)))

    # typer reads the parameter's type from the annotations; set here, where typer is imported.
    _doctor.__annotations__ = {"ctx": typer.Context, "return": None}
