from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

LABEL_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread: None) -> None:
    """Every test in this folder runs torch on one thread (tests/conftest.py)."""


def cifar_row(red: int, green: int, blue_seed: int) -> np.ndarray:
    """One image row in the CIFAR-10 layout, written out from its description: 1024 red values,
    then 1024 green, then 1024 blue, each plane row-major over 32 x 32 pixels. Red and green are
    constant; blue pixel (r, c) is (r * 32 + c + blue_seed) % 256."""
    blue = (np.arange(1024) + blue_seed) % 256
    return np.concatenate([np.full(1024, red), np.full(1024, green), blue]).astype(np.uint8)


def batch_bytes(n: int, first_label: int, seed: int) -> bytes:
    rows = np.stack([cifar_row(10 + k, 200 - k, seed + k) for k in range(n)])
    labels = [(first_label + k) % 10 for k in range(n)]
    d = {b"batch_label": b"testing batch", b"labels": labels, b"data": rows, b"filenames": [b"x.png"] * n}
    return pickle.dumps(d, protocol=2)  # Python 2's cPickle wrote protocol 2 with byte-string keys


def meta_bytes() -> bytes:
    return pickle.dumps(
        {b"num_cases_per_batch": 4, b"label_names": LABEL_NAMES, b"num_vis": 3072}, protocol=2
    )


def cifar_files() -> dict[str, bytes]:
    files = {f"data_batch_{i}": batch_bytes(4, i, 7 * i) for i in range(1, 6)}
    files["test_batch"] = batch_bytes(3, 5, 99)
    files["batches.meta"] = meta_bytes()
    files["readme.html"] = b"<html>small test copy</html>"
    return files


def write_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in cifar_files().items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.fixture()
def cifar_archive(tmp_path: Path) -> Path:
    return write_archive(tmp_path / "cifar-10-python.tar.gz")
