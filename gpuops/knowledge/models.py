"""The answers of the knowledge base. Each carries the ``SourceRef`` it rests on.

Frozen stdlib dataclasses, not pydantic models: ``gpuops doctor`` queries the knowledge base on
every GPU host and must start fast and work when pydantic is broken. Unknown keys in a data row
fail at construction (a dataclass takes no extra keywords); the types of every row are checked with
pydantic in ``tests/knowledge/test_answer_types.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from gpuops.knowledge.versions import version_key

Status = Literal["official", "secondary", "inferred"]


class _Model:
    def to_dict(self) -> dict[str, Any]:
        """The answer as plain data (for ``--json``)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, kw_only=True)
class SourceRef(_Model):
    """Where a fact comes from: the key in sources.yaml, its URL, and how firm it is.

    ``status``: official (read in the vendor's own doc), secondary (a third party quoting it) or
    inferred (derived from a documented rule). ``also`` names further sources of the same table.
    """

    key: str
    url: str | None = None
    status: Status
    also: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class DriverFloor(_Model):
    """Minimum Linux x86_64 driver for a CUDA toolkit.

    ``full_feature_min``: the driver that ships with the toolkit. ``minor_compat_min``: the lower floor at
    which the toolkit still runs through minor-version compatibility (CUDA >= 11; limited feature set),
    None where there is none below the full-feature floor.
    """

    cuda: str
    label: str
    full_feature_min: str
    minor_compat_min: str | None = None
    windows_min: str | None = None
    source: SourceRef


@dataclass(frozen=True, kw_only=True)
class Verdict(_Model):
    """``ok`` True / False, or None when the knowledge base cannot tell; ``reason`` says why."""

    ok: bool | None
    reason: str
    source: SourceRef | None = None


@dataclass(frozen=True, kw_only=True)
class Arch(_Model):
    """A GPU architecture. ``sms`` are compute capabilities ('5.0', '5.2', ...)."""

    name: str
    family: str
    sms: list[str]
    arch_specific: list[str] = field(default_factory=list)
    former_sms: list[str] = field(default_factory=list)
    first_cuda: dict[str, str] = field(default_factory=dict)
    last_cuda: str | None = None
    removed_in: str | None = None
    deprecated_in: str | None = None
    cudnn_last_seen: str | None = None
    torch_note: str | None = None
    note: str | None = None
    source: SourceRef


@dataclass(frozen=True, kw_only=True)
class GpuMatch(_Model):
    """A GPU name resolved against gpus.yaml (``name`` is the table's row, ``query`` what was asked)."""

    query: str
    name: str | None
    cc: str
    arch: str | None
    source: SourceRef | None = None


@dataclass(frozen=True, kw_only=True)
class ArchList(_Model):
    """The compute capabilities a framework build carries SASS for (``sms``) and PTX for (``ptx``)."""

    torch: str
    cuda: str
    variant: str
    platform: str
    sms: list[str]
    ptx: list[str]
    matched: str
    source: SourceRef
    status: Status


@dataclass(frozen=True, kw_only=True)
class TorchBuild(_Model):
    """One PyTorch CUDA build of a release series (from RELEASE.md's compatibility matrix)."""

    torch: str
    variant: str
    cuda: str
    channel: Literal["stable", "experimental"]
    cudnn: str
    nccl: str | None = None
    python: str
    note: str | None = None
    source: SourceRef


@dataclass(frozen=True, kw_only=True)
class TorchVariantFit(_Model):
    """Whether a torch wheel variant carries kernels for a GPU: ``runs`` True/False, None if unknown."""

    torch: str
    variant: str
    cuda: str
    runs: bool | None
    via: str | None = None
    sms: list[str] = field(default_factory=list)
    ptx: list[str] = field(default_factory=list)
    planned: bool = False
    source: SourceRef | None = None


@dataclass(frozen=True, kw_only=True)
class TFBuild(_Model):
    """A TensorFlow tested GPU build configuration."""

    version: str
    package: str
    platform: Literal["linux", "windows"]
    cuda: str
    cudnn: str
    python: str
    compiler: str
    build_tools: str
    source: SourceRef


@dataclass(frozen=True, kw_only=True)
class CudaRange(_Model):
    """The CUDA versions a CuPy wheel package is for. ``cuda_max`` may be 'N.x' (any N minor)."""

    package: str
    cuda_min: str
    cuda_max: str
    cupy_from: str
    cupy_until: str | None = None
    source: SourceRef

    def contains(self, cuda: str) -> bool:
        key = version_key(cuda)
        if key < version_key(self.cuda_min):
            return False
        if self.cuda_max.endswith(".x"):
            return key[0] <= int(self.cuda_max.split(".")[0])
        return key[:2] <= version_key(self.cuda_max)[:2]


@dataclass(frozen=True, kw_only=True)
class CupyPairing(_Model):
    cuda_min: str
    cuda_max: str
    cupy: str
    packages: str
    in_spec: bool
    status: Status
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChainerInfo(_Model):
    version: str
    cupy_specifier: str
    cupy_recommended: str
    cupy_packages_checked: list[str]
    python_requires: str
    enforcement: str
    pairings: list[CupyPairing]
    source: SourceRef


@dataclass(frozen=True, kw_only=True)
class CudnnCC(_Model):
    """The newest cuDNN support matrix read that lists a GPU (by the cubin rule), and the first later one
    that does not."""

    cc: str
    last_listed: str | None
    first_unlisted: str | None
    source: SourceRef | None = None


@dataclass(frozen=True, kw_only=True)
class ErrorSignature(_Model):
    """A known error message of the stack, what it means and the fix."""

    id: str
    text: str
    needles: list[str]
    meaning: str
    fix: str
    api_code: str | None = None
    variants: dict[str, str] = field(default_factory=dict)
    source: SourceRef

    def matches(self, log: str) -> bool:
        """True if ``log`` contains this message (case-insensitive on the stable parts of its text)."""
        low = log.lower()
        return any(n.lower() in low for n in self.needles)
