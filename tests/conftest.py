"""Shared test plumbing.

Real components (MLflow server, Docker Engine, moto, Chromium) are set up by fixtures in the
test folders that need them. ``require`` is the one place that decides what happens when a
component cannot be had: outside CI the test is skipped with the reason; with ``CI=true`` the
test fails, because in CI these tests must run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(ok: bool, why: str) -> None:
    """Skip (locally) or fail (in CI) when a real component is not available."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required component missing in CI: {why}")
    pytest.skip(why)  # only outside CI: with CI=true the line above fails the test instead


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared() -> Path:
    require(SHARED.is_dir(), f"{SHARED} not found (the shared/ folder beside the checkout)")
    return SHARED


@pytest.fixture()
def torch_one_thread() -> Iterator[None]:
    """Torch on one thread for the test, restored afterwards so that other test folders keep their
    own setting. The test machine's cores are shared: one thread keeps wall time predictable. A
    folder whose tests all train or run models asks for it from an autouse fixture of its own."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Fixtures that start real components, shared by several test folders.
pytest_plugins = ["tests.infra.docker_engine", "tests.infra.mlflow_server"]
