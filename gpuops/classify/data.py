"""Classification data: CIFAR-10 from its standard python archive, and scikit-learn's digits.

CIFAR-10 (Krizhevsky, 2009; https://www.cs.toronto.edu/~kriz/cifar.html) ships as
``cifar-10-python.tar.gz`` holding ``cifar-10-batches-py/`` with five training batches, one test
batch and ``batches.meta``. Each batch is a pickled dict: ``data`` is an N x 3072 uint8 array
(the 1024 red, then green, then blue values of a 32 x 32 image, row-major), ``labels`` a list of
ints, and ``batches.meta`` has ``label_names``. The pickles come from Python 2, so their keys load
as bytes. They are read with an unpickler that only resolves the few numpy names an array needs,
so an archive from elsewhere cannot run code.

The digits set (1,797 8 x 8 greyscale images, 0..16) is installed with scikit-learn, so it works
offline; it is the data of ``--smoke`` runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gpuops.errors import ExternalError, UsageError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# Published on the CIFAR page beside the download link.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"


@dataclass
class ClassifyData:
    """Images as uint8 ``N, H, W, C``; labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[3])

    def subset(self, n: int, seed: int = 0) -> ClassifyData:
        """The first ``n`` of a seeded, class-interleaved shuffle of the training set (so that every
        class is as equally represented as ``n`` allows); the test set is unchanged."""
        total = len(self.y_train)
        if not 1 <= n <= total:
            raise UsageError(f"subset {n} is outside 1..{total} (the {self.name} training set)")
        rng = np.random.default_rng(seed)
        per_class = [rng.permutation(np.flatnonzero(self.y_train == c)) for c in range(self.num_classes)]
        # Round-robin over classes: rank within class first, then class order.
        rank = np.concatenate([np.arange(len(ix)) for ix in per_class])
        idx = np.concatenate(per_class)
        order = idx[np.lexsort((rng.random(len(idx)), rank))][:n]
        order.sort()
        return replace(self, x_train=self.x_train[order], y_train=self.y_train[order])

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation of the training images, in [0, 1] units."""
        x = self.x_train.reshape(-1, self.in_channels).astype(np.float64) / 255.0
        return x.mean(axis=0), x.std(axis=0)


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only what a pickled numpy array needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        if module in {"numpy.core.multiarray", "numpy._core.multiarray"} and name == "_reconstruct":
            # Whatever module this numpy keeps it in, ndarray's own pickle names it.
            return np.ndarray.__reduce__(np.zeros(1))[0]
        if module == "numpy" and name in {"ndarray", "dtype"}:
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _unpickle(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # a corrupt or foreign file: one clear error
        raise UsageError(f"cannot read {what}: {exc}") from exc
    if not isinstance(obj, dict):
        raise UsageError(f"cannot read {what}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _batch(raw: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(raw, what)
    if "data" not in d or "labels" not in d:
        raise UsageError(f"{what} is not a CIFAR-10 batch (no 'data' / 'labels')")
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UsageError(f"{what}: expected N x 3072 image rows, got shape {data.shape}")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    y = np.asarray(d["labels"], dtype=np.int64)
    if len(y) != len(x):
        raise UsageError(f"{what}: {len(x)} images but {len(y)} labels")
    return x, y


def _assemble(read: Callable[[str], bytes], where: str) -> ClassifyData:
    parts = [_batch(read(n), f"{where}/{n}") for n in TRAIN_BATCHES]
    x_test, y_test = _batch(read(TEST_BATCH), f"{where}/{TEST_BATCH}")
    meta = _unpickle(read(META), f"{where}/{META}")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
    if not names:
        raise UsageError(f"{where}/{META} has no label_names")
    return ClassifyData(
        x_train=np.concatenate([p[0] for p in parts]),
        y_train=np.concatenate([p[1] for p in parts]),
        x_test=x_test,
        y_test=y_test,
        classes=names,
        name="cifar10",
    )


def _from_folder(folder: Path) -> ClassifyData:
    def read(name: str) -> bytes:
        p = folder / name
        if not p.is_file():
            raise UsageError(f"CIFAR-10 folder {folder} lacks {name}")
        return p.read_bytes()

    return _assemble(read, str(folder))


def _from_archive(archive: Path) -> ClassifyData:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                m = members.get(name)
                f = tar.extractfile(m) if m is not None else None
                if f is None:
                    raise UsageError(f"CIFAR-10 archive {archive} lacks {name}")
                return f.read()

            return _assemble(read, str(archive))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UsageError(f"cannot read CIFAR-10 archive {archive}: {exc}") from exc


def load_cifar10(root: Path) -> ClassifyData:
    """Load CIFAR-10 from ``root``: the archive, the extracted folder, or either inside ``root``."""
    root = Path(root)
    if root.is_file():
        return _from_archive(root)
    if (root / TRAIN_BATCHES[0]).is_file():
        return _from_folder(root)
    if (root / CIFAR10_FOLDER / TRAIN_BATCHES[0]).is_file():
        return _from_folder(root / CIFAR10_FOLDER)
    if (root / CIFAR10_ARCHIVE).is_file():
        return _from_archive(root / CIFAR10_ARCHIVE)
    raise UsageError(
        f"CIFAR-10 not found at {root}",
        hint=(
            f"put {CIFAR10_ARCHIVE} (from https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted "
            f"{CIFAR10_FOLDER}/ folder in {root}, or run again with --download to fetch it (about 163 MB)"
        ),
    )


def _md5_of(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_cifar10(
    root: Path,
    url: str = CIFAR10_URL,
    progress: Callable[[int, int | None], None] | None = None,
    md5: str | None = CIFAR10_MD5,
    timeout: float = 60.0,
) -> Path:
    """Fetch the archive into ``root`` and return its path.

    Streams to a temporary file in ``root`` while hashing, checks the MD5 (skipped when ``md5`` is
    None), then renames it into place, so an interrupted download never leaves a partial archive
    under the final name. An archive already present with the right MD5 is kept. ``progress`` is
    called with (bytes so far, total bytes or None).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dest = root / CIFAR10_ARCHIVE
    if dest.is_file() and (md5 is None or _md5_of(dest) == md5):
        return dest
    fd, tmp_name = tempfile.mkstemp(prefix=f".{CIFAR10_ARCHIVE}.", suffix=".part", dir=root)
    tmp = Path(tmp_name)
    h = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if total is not None and done != total:
            raise ExternalError(f"download of {url} stopped at {done} of {total} bytes")
        if md5 is not None and h.hexdigest() != md5:
            raise ExternalError(
                f"download of {url} has MD5 {h.hexdigest()}, expected {md5}",
                hint="the file is corrupt or not the CIFAR-10 python archive; it was not kept",
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ExternalError(f"cannot download {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images 0..16 float N x 8 x 8, labels) from the CSV file scikit-learn ships.

    Reads ``sklearn/datasets/data/digits.csv.gz`` (64 pixel values and the label per row) directly,
    which saves the seconds that importing ``sklearn.datasets`` costs; falls back to
    ``sklearn.datasets.load_digits`` if the file is not where this scikit-learn keeps it.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "scikit-learn is not installed; it provides the digits data set (pip install scikit-learn)"
        )
    csv = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        with gzip.open(csv, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
        return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    return np.asarray(d.images, dtype=np.float64), np.asarray(d.target, dtype=np.int64)


# CIFAR-10 has 50,000 training and 10,000 test images (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_TRAIN_SIZE = 50_000


def train_size(dataset: str) -> int:
    """How many training examples ``dataset`` has (what ``train.subset`` may take at most)."""
    if dataset == "cifar10":
        return CIFAR10_TRAIN_SIZE
    if dataset == "digits":
        return len(load_digits().y_train)
    raise ValueError(f"unknown data set {dataset!r}")


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ClassifyData:
    """scikit-learn's digits (1,797 images) as uint8 ``N, 8, 8, 1`` (0..16 scaled to 0..255),
    split by a seeded, class-stratified shuffle."""
    images, y = _digits_arrays()
    x = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for c in np.unique(y):
        ix = rng.permutation(np.flatnonzero(y == c))
        test_idx.append(ix[: round(len(ix) * test_fraction)])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    return ClassifyData(
        x_train=x[~is_test],
        y_train=y[~is_test],
        x_test=x[is_test],
        y_test=y[is_test],
        classes=[str(i) for i in range(10)],
        name="digits",
    )
