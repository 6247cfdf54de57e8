"""The repair executor: apply a plan step by step, verify each step, stop at the first failure.

Rules: nothing happens without ``yes=True``; steps that need root refuse to run as another user;
a step that needs a reboot, or that a person must do (firmware, shell profile), stops the run
with what to do next, because gpuops never reboots by itself; every command and its output go to
the log file. After a step, its ``verify`` command must succeed, and when the step names the
finding it resolves, a fresh probe (``reprobe``) must no longer report it.

Steps are argument vectors run without a shell; a file write is done here, in Python. Before
anything runs, every step is checked again (defence in depth, whatever built the plan): no shell
interpreter, no control characters, ``rm`` only inside an allow-list (a DKMS tree
``/var/lib/dkms/<module>/<version>``, a libcuda copy in a library directory), file writes only
inside the configuration directories plans write to. ``root`` re-bases those lists for tests.

Alternatives: steps that share a ``group`` are tried one ``alternative`` at a time, in order. When
one alternative's steps all succeed and the re-probe no longer reports the finding, the other
alternatives are skipped; when it fails, the next alternative is tried.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpuops.doctor import grammar
from gpuops.doctor.findings import RepairStep
from gpuops.doctor.runner import LiveRunner, Runner
from gpuops.errors import UsageError


@dataclass
class StepResult:
    index: int
    step: RepairStep
    status: str  # ok | failed | verify_failed | still_reported | stopped_reboot | stopped_manual | skipped
    # | refused (the step failed the executor's own checks: nothing ran)
    # | failed_alternative (it failed or did not resolve the finding; the next alternative was tried)
    rc: int | None = None
    output: str = ""


@dataclass
class RepairResult:
    results: list[StepResult] = field(default_factory=list)
    log_path: Path | None = None
    next_action: str | None = None

    @property
    def ok(self) -> bool:
        return all(r.status in ("ok", "skipped", "failed_alternative") for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def default_log_path() -> Path:
    ts = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = (
        Path("/var/log")
        if os.geteuid() == 0 and os.access("/var/log", os.W_OK)
        else Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "gpuops"
    )
    return base / f"gpuops-doctor-fix-{ts}.log"


class _Log:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, text: str) -> None:
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        for line in text.rstrip("\n").splitlines() or [""]:
            self.fh.write(f"{stamp} {line}\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


_SHELLS = {
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "mksh",
    "fish",
    "csh",
    "tcsh",
    "busybox",
    "env",
    "eval",
    "sudo",
}
DKMS_ROOT = "/var/lib/dkms"
RM_LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/local/cuda/lib64",
    "/usr/local/cuda/compat",
)
WRITE_DIRS = ("/etc/modprobe.d", "/etc/apt/apt.conf.d", "/etc/docker", "/etc/dracut.conf.d")
_LIBCUDA = re.compile(r"libcuda\.so(\.\d+)*")


def _unroot(path: str, root: str) -> str | None:
    """``path`` without the test prefix ``root``; None when it is not under it."""
    if not root:
        return path
    r = os.path.normpath(root)
    return path[len(r) :] if path.startswith(r + os.sep) else None


def rm_allowed(path: str, root: str = "") -> bool:
    """Whether ``rm`` may delete ``path``: a DKMS tree or a libcuda copy, nothing else."""
    if not path or os.path.normpath(path) != path or "\x00" in path:
        return False
    host = _unroot(path, root)
    if host is None:
        return False
    inside = grammar.path_inside(host, DKMS_ROOT)
    if inside is not None:
        parts = inside[len(DKMS_ROOT) + 1 :].split("/")
        return len(parts) == 2 and bool(grammar.module_name(parts[0])) and bool(grammar.version(parts[1]))
    return os.path.dirname(host) in RM_LIB_DIRS and bool(_LIBCUDA.fullmatch(os.path.basename(host)))


def write_allowed(path: str, root: str = "") -> bool:
    if not path or os.path.normpath(path) != path or "\x00" in path:
        return False
    host = _unroot(path, root)
    return host is not None and any(
        grammar.path_inside(host, d) == host and os.path.dirname(host) == d for d in WRITE_DIRS
    )


def check_step(step: RepairStep, root: str = "") -> str | None:
    """Why the executor refuses ``step`` (None: it may run)."""
    if step.manual or step.needs_reboot:
        return None
    if step.write is not None:
        if step.argv:
            return "a step either writes a file or runs a command, not both"
        if step.verify and os.path.basename(step.verify[0]) in _SHELLS:
            return f"{step.verify[0]}: repairs never run through a shell or a wrapper"
        if not write_allowed(step.write.path, root):
            return f"{step.write.path} is outside the directories a repair may write to"
        if not isinstance(step.write.mode, int) or not 0 <= step.write.mode <= 0o777:
            return "bad file mode"
        return None
    for argv in (step.argv, step.verify or []):
        if argv is step.argv and not argv:
            return "empty command"
        for a in argv:
            if not isinstance(a, str) or any(c in a for c in "\x00\n\r"):
                return "a control character in the command"
        if argv and os.path.basename(argv[0]) in _SHELLS:
            return f"{argv[0]}: repairs never run through a shell or a wrapper"
        if argv and os.path.basename(argv[0]).startswith("python") and "-c" in argv[1:]:
            return "python -c: repairs run modules (python -m pip), never code strings"
    prog = os.path.basename(step.argv[0])
    if prog == "rm":
        targets, opts_done = [], False
        for a in step.argv[1:]:
            if not opts_done and a == "--":
                opts_done = True
            elif not opts_done and a.startswith("-"):
                if not re.fullmatch(r"-[rf]{1,2}", a):
                    return f"rm option {a} is not allowed"
            else:
                targets.append(a)
        if not targets:
            return "rm without a target"
        bad = [t for t in targets if not rm_allowed(t, root)]
        if bad:
            return f"rm target {bad[0]!r} is outside the allow-list (a DKMS tree, a libcuda copy)"
    return None


def _write(step: RepairStep) -> tuple[bool, str]:
    w = step.write
    assert w is not None
    parent = os.path.dirname(w.path)
    try:
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".gpuops-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(w.content)
            os.chmod(tmp, w.mode)
            os.replace(tmp, w.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        with open(w.path, encoding="utf-8") as fh:
            ok = fh.read() == w.content
    except OSError as e:
        return False, f"cannot write {w.path}: {e.strerror or e}"
    return ok, f"wrote {w.path} ({len(w.content)} bytes, mode {w.mode:o})" + (
        "" if ok else ": read back differs"
    )


def _units(todo: list[RepairStep]) -> list[list[list[int]]]:
    """The plan as units: a unit is a list of alternatives, each a list of step indexes (0-based).

    An ungrouped step is a unit of one alternative of one step. A group's steps form one unit,
    placed where its first step is, its alternatives in their order."""
    units: list[list[list[int]]] = []
    unit_of: dict[str, int] = {}
    alts: dict[str, dict[int | None, list[int]]] = {}
    for i, s in enumerate(todo):
        if s.group is None:
            units.append([[i]])
            continue
        if s.group not in unit_of:
            unit_of[s.group] = len(units)
            units.append([])
            alts[s.group] = {}
        alts[s.group].setdefault(s.alternative, []).append(i)
    for g, u in unit_of.items():
        units[u] = [alts[g][k] for k in sorted(alts[g], key=lambda a: (a is None, a or 0))]
    return units


def apply_plan(
    steps: list[RepairStep],
    *,
    yes: bool,
    log_path: Path | None = None,
    runner: Runner | None = None,
    is_root: bool | None = None,
    include_optional: bool = False,
    reprobe: Callable[[], set[str]] | None = None,
    timeout: float = 900.0,
    root: str = "",
) -> RepairResult:
    if not yes:
        raise UsageError(
            "refusing to change this machine without --yes",
            hint="`gpuops doctor --fix` shows the plan; add --yes to apply it",
        )
    todo = [s for s in steps if include_optional or not s.optional]
    is_root = (os.geteuid() == 0) if is_root is None else is_root
    if not is_root and any(s.needs_root and not s.manual and not s.needs_reboot for s in todo):
        raise UsageError("the repair plan needs root", hint="run: sudo gpuops doctor --fix --yes")
    runner = runner or LiveRunner()
    log = _Log(log_path or default_log_path())
    res = RepairResult(log_path=log.path)
    log.write(f"gpuops doctor --fix --yes: {len(todo)} step(s)")
    try:
        for i, step in enumerate(todo, 1):
            why = check_step(step, root)
            if why is not None:
                res.results.append(StepResult(i, step, "refused", output=why))
                res.next_action = f"step {i} refused, nothing was changed: {why} ({step.command})"
                log.write(f"[{i}] refused before anything ran: {why}: {step.command}")
                return res
        _run_units(todo, _units(todo), res, log, runner, reprobe, timeout)
    finally:
        log.close()
    return res


def _run_units(
    todo: list[RepairStep],
    units: list[list[list[int]]],
    res: RepairResult,
    log: _Log,
    runner: Runner,
    reprobe: Callable[[], set[str]] | None,
    timeout: float,
) -> None:
    for unit in units:
        for a, alt in enumerate(unit):
            last = a == len(unit) - 1
            outcome = _run_alternative(todo, alt, res, log, runner, reprobe, timeout, grouped=len(unit) > 1)
            if outcome == "ok":
                for rest in unit[a + 1 :]:
                    for j in rest:
                        res.results.append(
                            StepResult(j + 1, todo[j], "skipped", output="alternative not needed")
                        )
                    log.write(f"[{rest[0] + 1}] alternative not needed: the one before resolved it")
                break
            if outcome == "stop" or last:
                if res.next_action is None:
                    res.next_action = "repair stopped"
                return
            g = todo[alt[0]].group
            log.write(f"alternative {todo[alt[0]].alternative} of {g} did not resolve it; trying the next")
            res.results[-1].status = "failed_alternative"
            res.next_action = None
    log.write("all steps done")


def _run_alternative(
    todo: list[RepairStep],
    alt: list[int],
    res: RepairResult,
    log: _Log,
    runner: Runner,
    reprobe: Callable[[], set[str]] | None,
    timeout: float,
    grouped: bool,
) -> str:
    """Run one alternative's steps. "ok": done (finding gone); "next": try another; "stop": stop all."""
    for j in alt:
        i, step = j + 1, todo[j]
        if step.manual:
            res.results.append(StepResult(i, step, "stopped_manual"))
            res.next_action = (
                f"step {i} must be done by hand: {step.command}  ({step.why}); then run `gpuops doctor` again"
            )
            log.write(f"[{i}] manual step, stopping: {step.command}")
            return "stop"
        if step.needs_reboot:
            res.results.append(StepResult(i, step, "stopped_reboot"))
            res.next_action = (
                f"reboot now ({step.why}); gpuops never reboots by itself. After the reboot "
                f"run `gpuops doctor` again"
            )
            log.write(f"[{i}] reboot needed, stopping: {step.command}")
            return "stop"
        if step.write is not None:
            log.write(f"[{i}] write {step.write.path}")
            ok, out = _write(step)
            log.write(out)
            rc: int | None = 0 if ok else 1
            failed = not ok
        else:
            log.write(f"[{i}] $ {step.command}")
            rec = runner.run(list(step.argv), timeout=timeout)
            out = (rec.stdout + rec.stderr).strip()
            log.write(out or "(no output)")
            log.write(f"[{i}] exit code {rec.rc if rec.error is None else rec.error}")
            rc = rec.rc
            failed = rec.error is not None or rec.rc != 0
        rest = todo[j + 1 :]
        if failed:
            res.results.append(StepResult(i, step, "failed", rc=rc, output=out))
            res.next_action = (
                f"step {i} failed ({step.command}); fix the cause shown above and re-run "
                "`gpuops doctor --fix`"
                + (f"; remaining: {'; '.join(s.command for s in rest)}" if rest else "")
            )
            return "next" if grouped else "stop"
        if step.verify:
            log.write(f"[{i}] verify $ {step.verify_command}")
            vr = runner.run(list(step.verify), timeout=120)
            vout = (vr.stdout + vr.stderr).strip()
            log.write(vout or "(no output)")
            if vr.error is not None or vr.rc != 0:
                res.results.append(StepResult(i, step, "verify_failed", rc=vr.rc, output=vout))
                res.next_action = (
                    f"step {i} ran but its check failed ({step.verify_command}); look at the log "
                    f"{log.path} before going on"
                )
                log.write(f"[{i}] verify failed, stopping")
                return "next" if grouped else "stop"
        if step.resolves and reprobe is not None:
            codes = reprobe()
            if step.resolves in codes:
                res.results.append(StepResult(i, step, "still_reported", rc=rc, output=out))
                res.next_action = f"step {i} ran, but doctor still reports {step.resolves}"
                log.write(f"[{i}] re-probe still reports {step.resolves}, stopping")
                return "next" if grouped else "stop"
            log.write(f"[{i}] re-probe: {step.resolves} gone")
        res.results.append(StepResult(i, step, "ok", rc=rc, output=out))
    return "ok"
