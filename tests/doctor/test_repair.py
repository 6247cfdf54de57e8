"""The repair executor runs real, harmless steps inside a throwaway root.

Where a step needs a privileged tool (apt-get, modprobe, systemctl, dkms, nvidia-smi ...), the tests put
a fake executable of that name first on the runner's PATH; it records the argument vector it was called
with (one JSON line per call) and exits 0. ``rm`` records too and then runs the real program, so
deletions really happen under the temp root. File writes are done by the executor itself, under the
temp root. The recorded argument vectors are compared with the plan's.
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path

import pytest

from gpuops.doctor import diagnose, load_capture, plans
from gpuops.doctor.capture import CommandRecord, FileRecord
from gpuops.doctor.facts import Gpu, facts_from_capture
from gpuops.doctor.findings import RepairStep, WriteFile
from gpuops.doctor.parsers import DkmsStatus
from gpuops.doctor.repair import apply_plan, check_step
from gpuops.doctor.runner import LiveRunner
from gpuops.errors import UsageError
from tests.doctor.test_plans import OS_RELEASES, _Ctx

FIXTURES = Path(__file__).parent / "fixtures"


def _nouveau_steps(root: Path) -> list[RepairStep]:
    # the real plan for the nouveau case (real_17), with its files written under ``root``
    report = diagnose(load_capture(FIXTURES / "real_17.capture.yaml"), root=str(root))
    return report.plan()


def _exe(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


class Recorder:
    """A runner that records each argument vector; ``fail`` maps a program name to its exit code."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail or {}

    def run(self, argv, timeout=None, env=None):
        self.calls.append(list(argv))
        return CommandRecord(argv=list(argv), rc=self.fail.get(argv[0], 0))


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
    assert blacklist.write is not None and blacklist.argv == []
    assert blacklist.write.path == f"{tmp_path}/etc/modprobe.d/blacklist-nouveau.conf"
    fail = _exe(tmp_path / "fails", "echo about to fail; exit 1")
    steps = [
        blacklist,
        RepairStep(argv=["true"], why="a step that works", needs_root=False),
        RepairStep(argv=[str(fail)], why="a step that fails", needs_root=False),
        RepairStep(argv=["touch", f"{tmp_path}/never"], why="must not run", needs_root=False),
    ]
    log = tmp_path / "fix.log"
    res = apply_plan(steps, yes=True, is_root=True, log_path=log, root=str(tmp_path))
    assert [r.status for r in res.results] == ["ok", "ok", "failed"]
    assert (
        tmp_path / "etc/modprobe.d/blacklist-nouveau.conf"
    ).read_text() == "blacklist nouveau\noptions nouveau modeset=0\n"
    assert not (tmp_path / "never").exists()
    assert res.exit_code == 1
    assert "step 3 failed" in res.next_action and "touch" in res.next_action
    text = log.read_text()
    assert f"$ {fail}" in text and "about to fail" in text and "exit code 1" in text


def test_stops_before_a_reboot_and_at_a_failed_verify(tmp_path):
    steps = _nouveau_steps(tmp_path)
    reboot = [s for s in steps if s.needs_reboot]
    assert reboot
    # run only the file step and the reboot step: it must stop at the reboot, never run it
    res = apply_plan(
        [steps[0], reboot[0]], yes=True, is_root=True, log_path=tmp_path / "a.log", root=str(tmp_path)
    )
    assert [r.status for r in res.results] == ["ok", "stopped_reboot"]
    assert "never reboots" in res.next_action
    bad = RepairStep(
        argv=["true"], verify=["test", "-e", f"{tmp_path}/missing"], why="verify fails", needs_root=False
    )
    res = apply_plan(
        [bad, RepairStep(argv=["true"], why="x", needs_root=False)],
        yes=True,
        is_root=True,
        log_path=tmp_path / "b.log",
    )
    assert [r.status for r in res.results] == ["verify_failed"]


def test_reprobe_checks_the_finding_is_gone(tmp_path):
    step = RepairStep(argv=["true"], why="pretend fix", needs_root=False, resolves="nouveau_conflict")
    res = apply_plan(
        [step], yes=True, is_root=True, log_path=tmp_path / "c.log", reprobe=lambda: {"nouveau_conflict"}
    )
    assert [r.status for r in res.results] == ["still_reported"]
    res = apply_plan([step], yes=True, is_root=True, log_path=tmp_path / "d.log", reprobe=lambda: set())
    assert res.ok


def test_optional_prevention_only_on_request(tmp_path):
    report = diagnose(load_capture(FIXTURES / "shine_cluster_30.capture.yaml"), root=str(tmp_path))
    prevention = [s for s in report.plan() if s.optional and s.write is not None]
    assert prevention
    res = apply_plan(prevention, yes=True, is_root=True, log_path=tmp_path / "e.log", root=str(tmp_path))
    assert res.results == [] and not (tmp_path / "etc").exists()
    res = apply_plan(
        prevention,
        yes=True,
        is_root=True,
        include_optional=True,
        log_path=tmp_path / "f.log",
        root=str(tmp_path),
    )
    assert res.ok
    assert '"libnvidia-";' in (tmp_path / "etc/apt/apt.conf.d/51gpuops-nvidia").read_text()


def _mismatch_plan() -> list[RepairStep]:
    return [
        s for s in diagnose(load_capture(FIXTURES / "shine_cluster_30.capture.yaml")).plan() if not s.optional
    ]


def test_stops_after_the_first_alternative_that_resolves(tmp_path):
    steps = _mismatch_plan()
    assert {s.alternative for s in steps} == {1, 2}
    rec = Recorder()
    probes: list[int] = []

    def reprobe() -> set[str]:
        probes.append(1)
        return set()

    res = apply_plan(steps, yes=True, is_root=True, runner=rec, reprobe=reprobe, log_path=tmp_path / "g.log")
    first = [s for s in steps if s.alternative == 1]
    expected = []
    for s in first:
        expected += [s.argv] + ([s.verify] if s.verify else [])
    assert rec.calls == expected  # the reboot alternative never ran
    assert [r.status for r in res.results] == ["ok", "ok", "ok", "skipped"]
    assert res.ok and probes == [1]


def test_a_failed_alternative_moves_on_to_the_next(tmp_path):
    steps = _mismatch_plan()
    rec = Recorder(fail={"rmmod": 1})  # the GPU is busy: the module cannot be unloaded
    res = apply_plan(steps, yes=True, is_root=True, runner=rec, reprobe=set, log_path=tmp_path / "h.log")
    assert rec.calls == [["rmmod", "nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia"]]
    assert [r.status for r in res.results] == ["failed_alternative", "stopped_reboot"]
    assert "never reboots" in res.next_action
    # and one that ran but left the finding in place
    rec = Recorder()
    res = apply_plan(
        steps,
        yes=True,
        is_root=True,
        runner=rec,
        reprobe=lambda: {"driver_library_mismatch_needs_reboot"},
        log_path=tmp_path / "i.log",
    )
    assert [r.status for r in res.results][-2:] == ["failed_alternative", "stopped_reboot"]


@pytest.mark.parametrize(
    "step",
    [
        RepairStep(argv=["bash", "-c", "touch /tmp/x"], why="a shell"),
        RepairStep(argv=["/bin/sh", "-c", "true"], why="a shell by path"),
        RepairStep(argv=["rm", "-rf", "/var/lib/dkms/.."], why="outside the dkms trees"),
        RepairStep(argv=["rm", "-rf", "/var/lib/dkms/nvidia"], why="a whole module, not one tree"),
        RepairStep(argv=["rm", "-rf", "--", "/etc"], why="not a package path"),
        RepairStep(argv=["rm", "-f", "/usr/lib/wsl/lib/libcuda.so.1"], why="WSL's own libcuda"),
        RepairStep(argv=["rm", "--no-preserve-root", "/"], why="an option"),
        RepairStep(argv=["modprobe", "nvidia\nrm -rf /"], why="a newline"),
        RepairStep(argv=["python3", "-c", "import os; os.system('id')"], why="a code string"),
        RepairStep(argv=["env", "touch", "/tmp/x"], why="a wrapper"),
        RepairStep(write=WriteFile("/etc/passwd", "x"), why="not a config directory"),
        RepairStep(write=WriteFile("/etc/modprobe.d/../shadow", "x"), why="leaves modprobe.d"),
    ],
)
def test_executor_refuses_unsafe_steps_before_running_anything(tmp_path, step):
    assert check_step(step) is not None
    rec = Recorder()
    ok = RepairStep(argv=["true"], why="would run first", needs_root=False)
    res = apply_plan([ok, step], yes=True, is_root=True, runner=rec, log_path=tmp_path / "j.log")
    assert rec.calls == [] and res.results[-1].status == "refused" and not res.ok


def test_executor_allows_the_known_package_paths(tmp_path):
    assert check_step(RepairStep(argv=["rm", "-rf", "--", "/var/lib/dkms/nvidia/390.48"], why="x")) is None
    assert (
        check_step(RepairStep(argv=["rm", "-f", "--", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"], why="x"))
        is None
    )
    w = RepairStep(write=WriteFile(f"{tmp_path}/etc/modprobe.d/x.conf", "y\n"), why="x")
    assert check_step(w, root=str(tmp_path)) is None
    assert check_step(w) is not None  # without the test root it is not under /etc


# -- each plan family, for real, under a throwaway root -------------------------------------------


def _fake_tools(bin_dir: Path, names: set[str], log: Path) -> None:
    bin_dir.mkdir(exist_ok=True)
    real = {"rm": shutil.which("rm") or "/bin/rm"}
    for name in names:
        tail = f"os.execv({real[name]!r}, [{real[name]!r}, *sys.argv[1:]])" if name in real else "sys.exit(0)"
        p = bin_dir / name
        p.write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            f"with open({str(log)!r}, 'a') as fh:\n"
            f"    fh.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + '\\n')\n"
            f"{tail}\n"
        )
        p.chmod(0o755)


def _family_facts(root: Path):
    cap = load_capture(FIXTURES / "devbox.capture.yaml")
    cap.files["/etc/os-release"] = FileRecord(content=OS_RELEASES["ubuntu-24.04"][0])
    f = facts_from_capture(cap)
    f.kernel = "6.8.0-45-generic"
    f.driver_version = "550.54.15"
    f.gpus = [Gpu(index=0, name="NVIDIA H100 80GB HBM3", cc="9.0")]
    f.gpu_count = 1
    f.in_container = False
    f.os_packages = {"nvidia-driver-550": "550.54.15-0ubuntu1", "libnvidia-compute-550": "550.54.15-0ubuntu1"}
    f.dkms = DkmsStatus(errors=["File: /var/lib/dkms/nvidia/535.104.05/source/dkms.conf does not exist."])
    f.daemon_json = '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}'
    f.cuda_libs = {
        "libcuda.so.1": ["/usr/lib/wsl/lib/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"]
    }
    f.python_executable = str(root / "venv/bin/python")
    return f


PLAN_FAMILIES = {
    "kmod.rebuild_module": lambda f, c: plans.rebuild_module(f, c, kernel="6.8.0-45-generic"),
    "kmod.blacklist_nouveau": plans.blacklist_nouveau,
    "kmod.load_uvm": plans.load_uvm,
    "kmod.make_device_nodes": plans.make_device_nodes,
    "kmod.reload_uvm_after_resume": plans.reload_uvm_after_resume,
    "kmod.unbind_nova": lambda f, c: plans.unbind_other_driver(f, c, "nova_core"),
    "driver.mismatch": plans.mismatch,
    "driver.fabric_manager_version": plans.fabric_manager_version,
    "driver.module_flavour": lambda f, c: plans.module_flavour(f, c, "open"),
    "hardware.mig": lambda f, c: plans.mig(f, c, [0]),
    "hardware.persistence": plans.persistence,
    "containers.container_toolkit": plans.container_toolkit,
    "containers.container_daemon_reload": plans.container_daemon_reload,
    "containers.cdi_regenerate": plans.cdi_regenerate,
    "frameworks.cupy_for_cuda": lambda f, c: plans.cupy_for_cuda(f, c, "12.2"),
    "frameworks.tf_and_cuda": lambda f, c: plans.tf_and_cuda(f, c, "2.15.0"),
    "cuda.conda_shadow": lambda f, c: plans.conda_shadow(f, c, ["cudatoolkit"]),
    "platform.wsl_libcuda": plans.wsl_libcuda,
}


@pytest.mark.parametrize("family", sorted(PLAN_FAMILIES))
def test_plan_family_runs_for_real_in_a_throwaway_root(tmp_path, family):
    root = tmp_path / "root"
    (root / "var/lib/dkms/nvidia/535.104.05").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu/libcuda.so.1").write_text("stale copy")
    (root / "venv/bin").mkdir(parents=True)
    f = _family_facts(root)
    steps = PLAN_FAMILIES[family](f, _Ctx(f, root=str(root)))
    assert steps
    log = tmp_path / "argv.jsonl"
    names = {Path(a[0]).name for s in steps for a in (s.argv, s.verify or []) if a}
    _fake_tools(tmp_path / "bin", names - {f.python_executable and Path(f.python_executable).name}, log)
    if f.python_executable and any(s.argv[:1] == [f.python_executable] for s in steps):
        _fake_tools(root / "venv/bin", {"python"}, log)
    res = apply_plan(
        steps,
        yes=True,
        is_root=True,
        include_optional=True,
        runner=LiveRunner(path=str(tmp_path / "bin")),
        log_path=tmp_path / "fix.log",
        root=str(root),
    )
    ran = [r.step for r in res.results if r.status == "ok"]
    assert ran, f"{family}: nothing ran ({res.next_action})"
    assert all(r.status in ("ok", "skipped", "stopped_reboot", "stopped_manual") for r in res.results), (
        res.next_action
    )
    expected = []
    for s in ran:
        if s.argv:
            expected.append([Path(s.argv[0]).name, *s.argv[1:]])
        if s.verify:
            expected.append([Path(s.verify[0]).name, *s.verify[1:]])
    recorded = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    assert recorded == expected
    for s in ran:
        if s.write is not None:
            assert s.write.path.startswith(f"{root}/etc/")
            assert Path(s.write.path).read_text() == s.write.content
        if s.argv[:1] == ["rm"]:
            assert all(not Path(t).exists() for t in s.argv if t.startswith(str(root)))
