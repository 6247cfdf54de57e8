"""Fixtures for the safety tests: the real-store and real-data fixtures of the run tests, and a
folder of fake tools (real executables on PATH) that misbehave the way broken hosts do."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.run.conftest import data_dir, store, store_template  # noqa: F401 (fixtures)


def make_tool(folder: Path, name: str, body: str) -> Path:
    """An executable shell script ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return p


@pytest.fixture
def jobs_tmp(tmp_path: Path) -> Path:
    """A TMPDIR of its own for a gpuops process, so that its /tmp/gpuops-job-* folders can be counted."""
    d = tmp_path / "tmpdir"
    d.mkdir()
    return d


def job_folders(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.glob("gpuops-job-*"))


def env_with_tmp(tmpdir: Path) -> dict[str, str]:
    return {"TMPDIR": str(tmpdir), "PATH": os.environ.get("PATH", "")}
