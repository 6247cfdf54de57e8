"""A content-addressed JSON cache for data that is slow to parse or validate.

Reading YAML (and importing PyYAML), or validating specs with pydantic, costs more than a whole
``gpuops doctor`` run. What such work produces from a set of input files is kept as JSON in the
user's cache directory (``$XDG_CACHE_HOME/gpuops`` or ``~/.cache/gpuops``), named by the SHA-256 of
the inputs' names and bytes: an edited file gets a new digest and is parsed afresh. A failure to
read or write the cache only means the work is done again; it never changes a result.

    rows = cached_json("environments", {"pytorch.yaml": b"..."}, compute)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

# Bump when the meaning of a cached document changes without its inputs changing.
CACHE_FORMAT = "2"


def cache_dir() -> str:
    """gpuops' folder in the user's cache: ``$XDG_CACHE_HOME/gpuops``, else ``~/.cache/gpuops`` (a
    relative ``XDG_CACHE_HOME`` is ignored, as the XDG base-directory rules say)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gpuops")


def digest(kind: str, parts: Mapping[str, bytes]) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}\0{kind}".encode())
    for name, blob in parts.items():
        h.update(f"\0{name}\0{len(blob)}\0".encode())
        h.update(blob)
    return h.hexdigest()


def cache_path(kind: str, parts: Mapping[str, bytes]) -> str:
    return os.path.join(cache_dir(), f"{kind}-{digest(kind, parts)}.json")


def _load(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _store(path: str, data: Any) -> None:
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        if json.loads(text) != data:
            return  # a type JSON does not keep (a date, a tuple): no cache
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".gpuops-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, TypeError, ValueError):
        return


def cached_json(
    kind: str,
    parts: Mapping[str, bytes],
    compute: Callable[[], T],
    valid: Callable[[Any], bool] = lambda _: True,
) -> T:
    """``compute()``, or what it returned before for the same ``parts``.

    ``compute`` must be a pure function of ``parts`` and return JSON data; an exception from it
    propagates and nothing is cached. ``valid`` vets a cached document (a damaged or foreign file
    is recomputed)."""
    path = cache_path(kind, parts)
    data = _load(path)
    if data is not None and valid(data):
        return data  # type: ignore[no-any-return]
    out = compute()
    _store(path, out)
    return out
