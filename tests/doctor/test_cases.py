"""Every real broken-machine report, as a capture, is diagnosed with its category as an error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpuops.doctor import diagnose, load_capture
from gpuops.doctor.findings import CODES
from tests.conftest import SHARED, require

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name.split(".")[0] for p in FIXTURES.glob("real_*.capture.yaml"))
SHARED_CODES = set(list(CODES)[:13])  # the vocabulary of doctor-cases/README.md


def _case(case: str) -> dict:
    path = SHARED / "doctor-cases" / "real" / f"{case}.yaml"
    require(path.is_file(), f"{path} not found")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_every_case_has_a_fixture():
    real = SHARED / "doctor-cases" / "real"
    require(real.is_dir(), f"{real} not found")
    assert sorted(p.stem for p in real.glob("real_*.yaml")) == CASES
    assert len(CASES) == 27


@pytest.mark.parametrize("case", CASES)
def test_case_is_diagnosed(case: str):
    spec = _case(case)
    cap = load_capture(FIXTURES / f"{case}.capture.yaml")
    assert cap.source == spec["source"]["url"]
    report = diagnose(cap)
    errors = report.codes("error")
    wanted = {spec["category"], spec.get("secondary_category")} - {None}
    if spec["category"] in CODES:
        assert errors & wanted, f"{case}: expected {wanted} among errors, got {errors}"
        unrelated = errors - wanted
        assert not unrelated, f"{case}: unrelated errors {unrelated}"
        for f in report.errors:
            assert f.evidence, f"{case}: {f.code} without evidence"
            assert f.plan, f"{case}: {f.code} without a repair plan"
    else:
        # "other" / "out_of_memory_or_other": no false error from the shared vocabulary
        assert not (errors & SHARED_CODES), f"{case}: false errors {errors & SHARED_CODES}"


def test_fabric_manager_case_gets_its_own_code():
    report = diagnose(load_capture(FIXTURES / "real_26.capture.yaml"))
    assert report.codes("error") == {"fabric_manager_not_running"}
    (f,) = report.errors
    assert any("802" in e for e in f.evidence)
    assert f.confidence == "likely"


def test_stated_facts_are_marked_in_evidence():
    report = diagnose(load_capture(FIXTURES / "real_06.capture.yaml"))
    (f,) = report.errors
    assert "driver: 470.182.03 (stated in the report, not observed)" in f.evidence
    assert any("525.60.13" in e for e in f.evidence)  # the KB floor for CUDA 12.1


def test_plan_uses_the_facts():
    # real_01: running kernel 3.13.0-116-generic, no DKMS: headers for that kernel, then .run --dkms
    report = diagnose(load_capture(FIXTURES / "real_01.capture.yaml"))
    steps = report.plan()
    assert steps[0].argv == ["apt-get", "install", "-y", "linux-headers-3.13.0-116-generic", "dkms"]
    assert any("--dkms" in s.command and s.manual for s in steps)
    # real_03: the stale DKMS tree is removed before rebuilding (an argument vector, no shell)
    steps = diagnose(load_capture(FIXTURES / "real_03.capture.yaml")).plan()
    assert steps[0].argv == ["rm", "-rf", "--", "/var/lib/dkms/nvidia/390.48"]
    # real_06: a torch wheel for a CUDA the 470 driver runs, OR a driver upgrade (on the host: a container)
    steps = diagnose(load_capture(FIXTURES / "real_06.capture.yaml")).plan()
    assert steps[0].argv[-3:] == ["torch==2.1.0", "--index-url", "https://download.pytorch.org/whl/cu118"]
    assert not steps[0].needs_root and steps[0].alternative == 1
    later = [s for s in steps if s.group == steps[0].group and s.alternative == 2]
    assert later and any(s.needs_reboot for s in later)


def test_history_is_tied_to_the_mismatch():
    report = diagnose(load_capture(FIXTURES / "shine_cluster_30.capture.yaml"))
    (f,) = report.errors
    assert f.code == "driver_library_mismatch_needs_reboot"
    assert f.history[0] == (
        "2021-04-24 06:50 upgrade libnvidia-common-460 460.56-0ubuntu0.20.04.1 → "
        "460.73.01-0ubuntu0.20.04.1 by /usr/bin/unattended-upgrade"
    )
    assert report.timeline == [f.history[0]]
    # prevention is offered, optional
    assert any(s.optional and "Unattended-Upgrade::Package-Blacklist" in s.command for s in report.plan())


def test_devbox_capture_replays_to_no_error(fixtures):
    cap = load_capture(fixtures / "devbox.capture.yaml")
    report = diagnose(cap)
    assert report.exit_code == 0
    assert report.codes() == {"no_nvidia_gpu"}
    assert report.findings[0].severity == "info"
    assert report.summary["CUDA toolkit"].startswith("13.0")
    assert "torch 2.13.0+cpu [CPU]" in report.summary["frameworks"]
    assert report.plan() == []
