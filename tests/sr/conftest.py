from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, SHARED, require


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread: None) -> None:
    """Every test in this folder runs torch on one thread (tests/conftest.py)."""


def set5_folder() -> Path:
    for p in (REPO / "experiments" / "data" / "Set5", SHARED / "datasets" / "Set5"):
        if p.is_dir():
            return p
    require(False, "Set5 not found in experiments/data/ or ../shared/datasets/")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def set5() -> list[tuple[str, np.ndarray]]:
    from gpuops.sr.data import load_images

    return load_images(set5_folder())


@pytest.fixture(scope="session")
def small_set(set5) -> list[tuple[str, np.ndarray]]:
    """Two real images, cropped to 72x60 (a multiple of 2, 3 and 4) to keep model tests fast."""
    return [(name, img[100:172, 100:160].copy()) for name, img in set5[:2]]
