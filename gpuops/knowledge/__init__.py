"""The compatibility knowledge base: NVIDIA driver / CUDA / cuDNN / GPU / framework facts with sources.

The data are the YAML files in this package, compiled by ``scripts/build_knowledge.py`` from the shared
compatibility reference; every table says where it comes from (``source``, a key of sources.yaml) and
how firm it is (``status``: official / secondary / inferred). Every answer carries a ``SourceRef``.

    from gpuops.knowledge import load_kb
    kb = load_kb()
    kb.min_driver_for_cuda("12.1").full_feature_min    # '530.30.02'
    kb.driver_supports_cuda("470.182.03", "12.1").ok   # False
    kb.gpu_cc("NVIDIA GeForce GTX 980 Ti")    # '5.2'
    kb.torch_arch_list("2.13.0", "cu126").sms # ['5.0', '6.0', '7.0', '7.5', '8.0', '8.6', '9.0']
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from gpuops.knowledge.kb import FILES, KnowledgeBase
from gpuops.knowledge.models import (
    Arch,
    ArchList,
    ChainerInfo,
    CudaRange,
    CudnnCC,
    CupyPairing,
    DriverFloor,
    ErrorSignature,
    GpuMatch,
    SourceRef,
    TFBuild,
    TorchBuild,
    TorchVariantFit,
    Verdict,
)
from gpuops.knowledge.versions import Version, parse_cc, parse_cuda, vcmp, version_key

__all__ = [
    "Arch",
    "ArchList",
    "ChainerInfo",
    "CudaRange",
    "CudnnCC",
    "CupyPairing",
    "DriverFloor",
    "ErrorSignature",
    "GpuMatch",
    "KnowledgeBase",
    "SourceRef",
    "TFBuild",
    "TorchBuild",
    "TorchVariantFit",
    "Verdict",
    "Version",
    "load_kb",
    "parse_cc",
    "parse_cuda",
    "read_data",
    "vcmp",
    "version_key",
]


_CACHE_FORMAT = "1"


def _cache_path(digest: str) -> str | None:
    """Where the parsed form of knowledge files with this digest is kept (the user's cache dir)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    return os.path.join(base, "gpuops", f"knowledge-{digest}.json")


def _cache_load(path: str | None) -> dict[str, dict[str, Any]] | None:
    if path is None:
        return None
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and list(data) == list(FILES)):
        return None
    return data


def _cache_store(path: str | None, data: dict[str, dict[str, Any]]) -> None:
    """Keep ``data`` as JSON when it survives the round trip unchanged; any failure only means
    that the next run parses the YAML again."""
    if path is None:
        return
    import json
    import os
    import tempfile

    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        if json.loads(text) != data:
            return  # a type JSON does not keep (a date, a tuple): no cache
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".knowledge-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, TypeError, ValueError):
        return


def read_data() -> dict[str, dict[str, Any]]:
    """The knowledge files as parsed YAML, read from the installed package.

    Parsing the YAML (and importing PyYAML) costs more than the rest of a ``gpuops doctor`` run, so
    the parsed form is kept as JSON in the user's cache directory under the SHA-256 of the files'
    bytes: edited or upgraded files get a new digest and are parsed afresh.
    """
    import hashlib

    pkg = resources.files("gpuops.knowledge")
    raw = {name: (pkg / f"{name}.yaml").read_bytes() for name in FILES}
    h = hashlib.sha256(_CACHE_FORMAT.encode())
    for name, blob in raw.items():
        h.update(f"\0{name}\0{len(blob)}\0".encode())
        h.update(blob)
    cache = _cache_path(h.hexdigest())
    out = _cache_load(cache)
    if out is None:
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        out = {name: yaml.load(blob.decode("utf-8"), Loader=loader) for name, blob in raw.items()}
        _cache_store(cache, out)
    versions = {d.get("kb_version") for d in out.values()}
    if len(versions) != 1:
        raise RuntimeError(f"knowledge files disagree on kb_version: {sorted(map(str, versions))}")
    return out


@lru_cache(maxsize=1)
def load_kb() -> KnowledgeBase:
    """The knowledge base (read once per process)."""
    return KnowledgeBase(read_data())
