from __future__ import annotations

import hashlib
import http.server
import pickle
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from gpuops.classify.data import download_cifar10, load_cifar10, load_digits
from gpuops.errors import ExternalError, UsageError
from tests.classify.conftest import LABEL_NAMES, write_archive


def _check_small_cifar(data) -> None:
    assert data.name == "cifar10"
    assert data.classes == [n.decode() for n in LABEL_NAMES]
    assert data.x_train.shape == (20, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (3, 32, 32, 3)
    assert data.y_train.dtype == np.int64
    # Batch i has labels i, i+1, ... and image k of batch i has red 10 + k, green 200 - k.
    assert data.y_train[:4].tolist() == [1, 2, 3, 4]
    assert data.y_train[16:].tolist() == [5, 6, 7, 8]
    assert data.y_test.tolist() == [5, 6, 7]
    img = data.x_train[6]  # batch 2, image 2
    assert (img[..., 0] == 12).all() and (img[..., 1] == 198).all()
    r, c = np.indices((32, 32))
    np.testing.assert_array_equal(img[..., 2], (r * 32 + c + 14 + 2) % 256)


def test_load_from_archive_folder_and_parent(cifar_archive: Path, tmp_path: Path) -> None:
    _check_small_cifar(load_cifar10(cifar_archive))  # the archive itself
    _check_small_cifar(load_cifar10(cifar_archive.parent))  # a root holding the archive
    out = tmp_path / "extracted"
    with tarfile.open(cifar_archive) as tar:
        tar.extractall(out, filter="data")
    _check_small_cifar(load_cifar10(out))  # a root holding cifar-10-batches-py/
    _check_small_cifar(load_cifar10(out / "cifar-10-batches-py"))  # the folder itself


def test_missing_data_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        load_cifar10(tmp_path / "nothing-here")
    text = str(err.value)
    assert "nothing-here" in text and "cifar-10-python.tar.gz" in text and "--download" in text
    assert err.value.exit_code == 2


def test_refuses_code_in_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(UsageError, match="refusing"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_corrupt_archive_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UsageError, match="cannot read"):
        load_cifar10(tmp_path)


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder."""
    served = tmp_path / "www"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_md5_and_renames(http_root, tmp_path: Path) -> None:
    base, served = http_root
    archive = write_archive(served / "cifar-10-python.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    dest_root = tmp_path / "data"
    seen: list[tuple[int, int | None]] = []
    url = f"{base}/cifar-10-python.tar.gz"
    got = download_cifar10(dest_root, url, progress=lambda d, t: seen.append((d, t)), md5=md5)
    assert got == dest_root / "cifar-10-python.tar.gz"
    assert got.read_bytes() == archive.read_bytes()
    assert seen[-1] == (archive.stat().st_size, archive.stat().st_size)
    _check_small_cifar(load_cifar10(dest_root))
    assert [p.name for p in dest_root.iterdir()] == ["cifar-10-python.tar.gz"]
    # Present with the right MD5: kept, nothing fetched (the URL is now dead).
    assert download_cifar10(dest_root, f"{base}/gone.tar.gz", md5=md5) == got


def test_download_wrong_md5_keeps_nothing(http_root, tmp_path: Path) -> None:
    base, served = http_root
    write_archive(served / "cifar-10-python.tar.gz")
    dest_root = tmp_path / "data"
    with pytest.raises(ExternalError, match="MD5"):
        download_cifar10(dest_root, f"{base}/cifar-10-python.tar.gz", md5="0" * 32)
    assert list(dest_root.iterdir()) == []
    # md5=None: no check.
    assert download_cifar10(dest_root, f"{base}/cifar-10-python.tar.gz", md5=None).is_file()


def test_download_http_error(http_root, tmp_path: Path) -> None:
    base, _ = http_root
    with pytest.raises(ExternalError, match="cannot download"):
        download_cifar10(tmp_path / "d", f"{base}/missing.tar.gz", md5=None)
    assert list((tmp_path / "d").iterdir()) == []


def test_digits_are_scikit_learns() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    sk = sk_load_digits()
    d = load_digits()
    # Same images and labels as scikit-learn's own loader, 0..16 scaled to 0..255.
    x = np.concatenate([d.x_train, d.x_test])[..., 0].astype(np.int64)
    y = np.concatenate([d.y_train, d.y_test])
    want = sorted(
        (int(t), np.rint(img * 255 / 16).astype(np.int64).tobytes())
        for img, t in zip(sk.images, sk.target, strict=True)
    )
    assert sorted((int(t), img.tobytes()) for img, t in zip(x, y, strict=True)) == want
    assert d.name == "digits" and d.classes == [str(i) for i in range(10)]
    assert d.x_train.shape[1:] == (8, 8, 1) and d.x_train.dtype == np.uint8
    assert len(d.x_train) + len(d.x_test) == 1797  # the size of scikit-learn's digits
    assert d.x_train.max() == 255 and d.x_train.min() == 0
    # Stratified 80/20: every class about a fifth in the test set.
    for c in range(10):
        n_test, n_all = (d.y_test == c).sum(), (d.y_test == c).sum() + (d.y_train == c).sum()
        assert abs(n_test - 0.2 * n_all) <= 1
    again = load_digits()
    np.testing.assert_array_equal(again.y_test, d.y_test)
    assert d.in_channels == 1 and d.num_classes == 10


def test_subset_is_balanced() -> None:
    d = load_digits()
    s = d.subset(100, seed=1)
    assert len(s.y_train) == 100 and len(s.x_test) == len(d.x_test)
    assert np.bincount(s.y_train, minlength=10).tolist() == [10] * 10
    with pytest.raises(UsageError):
        d.subset(0)
