"""The repair executor runs real, harmless steps inside a throwaway root."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuops.doctor import diagnose, load_capture
from gpuops.doctor.findings import RepairStep
from gpuops.doctor.repair import apply_plan
from gpuops.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures"


def _nouveau_steps(root: Path) -> list[RepairStep]:
    # the real plan for the nouveau case (real_17), with its files written under ``root``
    report = diagnose(load_capture(FIXTURES / "real_17.capture.yaml"), root=str(root))
    return report.plan()


def test_refuses_without_yes(tmp_path):
    with pytest.raises(UsageError, match="without --yes"):
        apply_plan(_nouveau_steps(tmp_path), yes=False, log_path=tmp_path / "fix.log")
    assert not (tmp_path / "etc").exists()
    assert not (tmp_path / "fix.log").exists()


def test_refuses_root_steps_when_not_root(tmp_path):
    with pytest.raises(UsageError, match="needs root"):
        apply_plan(_nouveau_steps(tmp_path), yes=True, is_root=False, log_path=tmp_path / "fix.log")


def test_applies_verifies_and_stops_at_failure(tmp_path):
    blacklist = _nouveau_steps(tmp_path)[0]
    assert "blacklist nouveau" in blacklist.command and blacklist.verify
    steps = [
        blacklist,
        RepairStep(command="true", why="a step that works", needs_root=False),
        RepairStep(command="echo about to fail; false", why="a step that fails", needs_root=False),
        RepairStep(command=f"touch {tmp_path}/never", why="must not run", needs_root=False),
    ]
    log = tmp_path / "fix.log"
    res = apply_plan(steps, yes=True, is_root=True, log_path=log)
    assert [r.status for r in res.results] == ["ok", "ok", "failed"]
    assert (
        tmp_path / "etc/modprobe.d/blacklist-nouveau.conf"
    ).read_text() == "blacklist nouveau\noptions nouveau modeset=0\n"
    assert not (tmp_path / "never").exists()
    assert res.exit_code == 1
    assert "step 3 failed" in res.next_action and "touch" in res.next_action
    text = log.read_text()
    assert "$ echo about to fail; false" in text and "about to fail" in text and "exit code 1" in text


def test_stops_before_a_reboot_and_at_a_failed_verify(tmp_path):
    steps = _nouveau_steps(tmp_path)
    reboot = [s for s in steps if s.needs_reboot]
    assert reboot
    # run only the file step and the reboot step: it must stop at the reboot, never run it
    res = apply_plan([steps[0], reboot[0]], yes=True, is_root=True, log_path=tmp_path / "a.log")
    assert [r.status for r in res.results] == ["ok", "stopped_reboot"]
    assert "never reboots" in res.next_action
    bad = RepairStep(
        command="true", verify=f"test -e {tmp_path}/missing", why="verify fails", needs_root=False
    )
    res = apply_plan(
        [bad, RepairStep(command="true", why="x", needs_root=False)],
        yes=True,
        is_root=True,
        log_path=tmp_path / "b.log",
    )
    assert [r.status for r in res.results] == ["verify_failed"]


def test_reprobe_checks_the_finding_is_gone(tmp_path):
    step = RepairStep(command="true", why="pretend fix", needs_root=False, resolves="nouveau_conflict")
    res = apply_plan(
        [step], yes=True, is_root=True, log_path=tmp_path / "c.log", reprobe=lambda: {"nouveau_conflict"}
    )
    assert [r.status for r in res.results] == ["still_reported"]
    res = apply_plan([step], yes=True, is_root=True, log_path=tmp_path / "d.log", reprobe=lambda: set())
    assert res.ok


def test_optional_prevention_only_on_request(tmp_path):
    report = diagnose(load_capture(FIXTURES / "shine_cluster_30.capture.yaml"), root=str(tmp_path))
    prevention = [s for s in report.plan() if s.optional and not s.command.startswith("apt-mark")]
    assert prevention
    res = apply_plan(prevention, yes=True, is_root=True, log_path=tmp_path / "e.log")
    assert res.results == [] and not (tmp_path / "etc").exists()
    (tmp_path / "etc/apt/apt.conf.d").mkdir(parents=True)
    res = apply_plan(prevention, yes=True, is_root=True, include_optional=True, log_path=tmp_path / "f.log")
    assert res.ok
    assert '"libnvidia-";' in (tmp_path / "etc/apt/apt.conf.d/51gpuops-nvidia").read_text()
