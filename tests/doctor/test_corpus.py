"""Doctor on machines its checks were not written from: every real case of the corpus
(``tests/doctor/corpus/``: public issue threads, each with its source and the cause the thread
established) is diagnosed with its category as an error, with no unrelated error; working machines
(bug reports whose bug lay elsewhere) get no error; and no capture that holds failure evidence is
ever called healthy. The corpus's set-aside third (``holdout/``) was not read while the checks were
written; ``scripts/doctor-corpus-report`` prints the figures per family."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpuops.doctor import diagnose, load_capture
from gpuops.doctor.findings import CODES

CORPUS = Path(__file__).parent / "corpus"
FIXTURES = Path(__file__).parent / "fixtures"


def _cases() -> list[dict]:
    out: list[dict] = []
    for index in sorted(CORPUS.glob("index_*.yaml")):
        for entry in yaml.safe_load(index.read_text(encoding="utf-8")) or []:
            entry["index"] = index.name
            out.append(entry)
    return out


CASES = _cases()
BROKEN = [c for c in CASES if not c.get("working") and not c.get("doctor_gap")]
WORKING = [c for c in CASES if c.get("working")]
# Cases whose capture does not hold what the cause needs (the report said it in words, or the
# knowledge base lacks the row): each says why in `doctor_gap`. doctor must not call them healthy,
# and their number may only go down.
GAPS = [c for c in CASES if c.get("doctor_gap")]
MAX_GAPS = 7


def test_the_corpus_is_large_enough():
    assert len(BROKEN) + len(GAPS) >= 60, len(BROKEN)
    assert len({c["family"] for c in BROKEN}) >= 20
    assert len(GAPS) <= MAX_GAPS, [c["id"] for c in GAPS]
    assert len(WORKING) >= 10
    for c in CASES:
        assert c["source"].startswith("http"), c["id"]
        assert (CORPUS / c["file"]).is_file(), c["file"]
        assert c.get("working") or c["category"] in CODES, (c["id"], c["category"])


@pytest.mark.parametrize("case", BROKEN, ids=[c["id"] for c in BROKEN])
def test_broken_case_is_diagnosed(case: dict):
    cap = load_capture(CORPUS / case["file"])
    assert cap.source == case["source"]
    report = diagnose(cap)
    errors = report.codes("error")
    wanted = {case["category"], case.get("secondary_category")} - {None}
    assert errors & wanted, f"{case['id']} ({case['family']}): expected {wanted}, got {errors}"
    assert not errors - wanted, f"{case['id']}: unrelated errors {errors - wanted}"
    for f in report.errors:
        assert f.evidence, f"{case['id']}: {f.code} without evidence"
        assert f.plan, f"{case['id']}: {f.code} without a plan"


@pytest.mark.parametrize("case", GAPS, ids=[c["id"] for c in GAPS])
def test_a_case_doctor_cannot_tell_is_not_called_healthy(case: dict):
    report = diagnose(load_capture(CORPUS / case["file"]))
    assert len(case["doctor_gap"]) > 20
    assert report.verdict != "healthy", f"{case['id']}: '{report.verdict_line}'"
    assert not report.codes("error") - {case["category"], "unexplained_gpu_error",
                                         "cudnn_missing_or_wrong_version"}


@pytest.mark.parametrize("case", WORKING, ids=[c["id"] for c in WORKING])
def test_working_machine_stays_clean(case: dict):
    report = diagnose(load_capture(CORPUS / case["file"]))
    assert not report.errors, f"{case['id']}: false errors {report.codes('error')}"


def _all_captures() -> list[Path]:
    return sorted(FIXTURES.glob("*.capture.yaml")) + sorted(CORPUS.glob("**/*.capture.yaml"))


@pytest.mark.parametrize("path", _all_captures(), ids=lambda p: p.name)
def test_failure_evidence_is_never_healthy(path: Path):
    from gpuops.doctor.facts import facts_from_capture

    cap = load_capture(path)
    report = diagnose(cap)
    if facts_from_capture(cap).evidence:
        assert report.verdict != "healthy", f"{path.name}: evidence, yet '{report.verdict_line}'"
        assert report.verdict_line != "No problems found."
