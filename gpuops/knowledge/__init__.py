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


def read_data() -> dict[str, dict[str, Any]]:
    """The knowledge files as parsed YAML, read from the installed package.

    Parsing the YAML (and importing PyYAML) costs more than the rest of a ``gpuops doctor`` run, so
    the parsed form is kept in the user's cache (``gpuops.cache``) under the digest of the files'
    bytes: edited or upgraded files are parsed afresh.
    """
    from gpuops.cache import cached_json

    pkg = resources.files("gpuops.knowledge")
    raw = {name: (pkg / f"{name}.yaml").read_bytes() for name in FILES}

    def parse() -> dict[str, dict[str, Any]]:
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return {name: yaml.load(blob.decode("utf-8"), Loader=loader) for name, blob in raw.items()}

    out = cached_json("knowledge", raw, parse, valid=lambda d: isinstance(d, dict) and list(d) == list(FILES))
    versions = {d.get("kb_version") for d in out.values()}
    if len(versions) != 1:
        raise RuntimeError(f"knowledge files disagree on kb_version: {sorted(map(str, versions))}")
    return out


@lru_cache(maxsize=1)
def load_kb() -> KnowledgeBase:
    """The knowledge base (read once per process)."""
    return KnowledgeBase(read_data())
