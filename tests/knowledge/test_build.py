"""The committed knowledge files are exactly what the build script makes of the reference."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from gpuops.knowledge import load_kb
from tests.conftest import REPO, SHARED, require

REFERENCE = SHARED / "reference" / "compat_reference.yaml"
KNOWLEDGE = REPO / "gpuops" / "knowledge"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_knowledge", REPO / "scripts" / "build_knowledge.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rebuilt(script: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(REFERENCE.is_file(), f"{REFERENCE} not found (the shared reference beside the checkout)")
    out = tmp_path_factory.mktemp("knowledge")
    assert script.main(["--reference", str(REFERENCE), "--out", str(out)]) == 0
    return out


def test_rebuilding_reproduces_the_committed_files(script: ModuleType, rebuilt: Path) -> None:
    built = sorted(p.name for p in rebuilt.glob("*.yaml"))
    assert built == sorted(f"{n}.yaml" for n in script.FILES)
    for name in built:
        assert (rebuilt / name).read_text() == (KNOWLEDGE / name).read_text(), f"{name} is out of date"


def test_check_mode_notices_a_stale_file(script: ModuleType, rebuilt: Path, tmp_path: Path) -> None:
    for p in rebuilt.glob("*.yaml"):
        shutil.copy(p, tmp_path / p.name)
    text = (tmp_path / "drivers.yaml").read_text()
    (tmp_path / "drivers.yaml").write_text(text.replace("530.30.02", "530.30.03"))
    assert script.main(["--reference", str(REFERENCE), "--out", str(tmp_path), "--check"]) == 1


def test_version_stamp_follows_the_reference() -> None:
    require(REFERENCE.is_file(), f"{REFERENCE} not found (the shared reference beside the checkout)")
    kb = load_kb()
    assert kb.reference_sha256 == hashlib.sha256(REFERENCE.read_bytes()).hexdigest()
    assert kb.kb_version.startswith(kb.compiled.replace("-", ".") + ".")
