"""The repair executor: apply a plan step by step, verify each step, stop at the first failure.

Rules: nothing happens without ``yes=True``; steps that need root refuse to run as another user;
a step that needs a reboot, or that a person must do (firmware, shell profile), stops the run
with what to do next, because gpuops never reboots by itself; every command and its output go to
the log file. After a step, its ``verify`` command must succeed, and when the step names the
finding it resolves, a fresh probe (``reprobe``) must no longer report it.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpuops.doctor.findings import RepairStep
from gpuops.doctor.runner import LiveRunner, Runner
from gpuops.errors import UsageError


@dataclass
class StepResult:
    index: int
    step: RepairStep
    status: str  # ok | failed | verify_failed | still_reported | stopped_reboot | stopped_manual | skipped
    rc: int | None = None
    output: str = ""


@dataclass
class RepairResult:
    results: list[StepResult] = field(default_factory=list)
    log_path: Path | None = None
    next_action: str | None = None

    @property
    def ok(self) -> bool:
        return all(r.status in ("ok", "skipped") for r in self.results)

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
) -> RepairResult:
    if not yes:
        raise UsageError(
            "refusing to change this machine without --yes",
            hint="`gpuops doctor --fix` shows the plan; add --yes to apply it",
        )
    todo = [s for s in steps if include_optional or not s.optional]
    root = (os.geteuid() == 0) if is_root is None else is_root
    if not root and any(s.needs_root and not s.manual and not s.needs_reboot for s in todo):
        raise UsageError("the repair plan needs root", hint="run: sudo gpuops doctor --fix --yes")
    runner = runner or LiveRunner()
    log = _Log(log_path or default_log_path())
    res = RepairResult(log_path=log.path)
    log.write(f"gpuops doctor --fix --yes: {len(todo)} step(s)")
    try:
        for i, step in enumerate(todo, 1):
            if step.manual:
                res.results.append(StepResult(i, step, "stopped_manual"))
                res.next_action = (
                    f"step {i} must be done by hand: {step.command}  ({step.why}); then run "
                    f"`gpuops doctor` again"
                )
                log.write(f"[{i}] manual step, stopping: {step.command}")
                break
            if step.needs_reboot:
                res.results.append(StepResult(i, step, "stopped_reboot"))
                res.next_action = (
                    f"reboot now ({step.why}); gpuops never reboots by itself. After the reboot "
                    f"run `gpuops doctor` again"
                )
                log.write(f"[{i}] reboot needed, stopping: {step.command}")
                break
            log.write(f"[{i}] $ {step.command}")
            rec = runner.run(["bash", "-c", step.command], timeout=timeout)
            out = (rec.stdout + rec.stderr).strip()
            log.write(out or "(no output)")
            log.write(f"[{i}] exit code {rec.rc if rec.error is None else rec.error}")
            if rec.error is not None or rec.rc != 0:
                res.results.append(StepResult(i, step, "failed", rc=rec.rc, output=out))
                rest = todo[i:]
                res.next_action = (
                    f"step {i} failed ({step.command}); fix the cause shown above and re-run "
                    f"`gpuops doctor --fix`"
                    + (f"; remaining: {'; '.join(s.command for s in rest)}" if rest else "")
                )
                break
            if step.verify:
                log.write(f"[{i}] verify $ {step.verify}")
                vr = runner.run(["bash", "-c", step.verify], timeout=120)
                vout = (vr.stdout + vr.stderr).strip()
                log.write(vout or "(no output)")
                if vr.error is not None or vr.rc != 0:
                    res.results.append(StepResult(i, step, "verify_failed", rc=vr.rc, output=vout))
                    res.next_action = (
                        f"step {i} ran but its check failed ({step.verify}); look at the log "
                        f"{log.path} before going on"
                    )
                    log.write(f"[{i}] verify failed, stopping")
                    break
            if step.resolves and reprobe is not None:
                codes = reprobe()
                if step.resolves in codes:
                    res.results.append(StepResult(i, step, "still_reported", rc=rec.rc, output=out))
                    res.next_action = f"step {i} ran, but doctor still reports {step.resolves}"
                    log.write(f"[{i}] re-probe still reports {step.resolves}, stopping")
                    break
                log.write(f"[{i}] re-probe: {step.resolves} gone")
            res.results.append(StepResult(i, step, "ok", rc=rec.rc, output=out))
        else:
            log.write("all steps done")
    finally:
        log.close()
    return res
