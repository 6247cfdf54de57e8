"""The layer-string notation of the SR experiments, e.g. ``64x9x9_32x5x5_1x5x5``.

One ``FILTERSxKHxKW`` group per convolution, joined by ``_``: the number of output channels and
the kernel height and width. This module has no dependency beyond the standard library, so that
spec validation can use it without importing torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_FILTERS = 4096
MAX_KERNEL = 63
_GROUP = re.compile(r"([0-9]+)x([0-9]+)x([0-9]+)")


@dataclass(frozen=True)
class ConvSpec:
    """One convolution: output channels and kernel size."""

    filters: int
    kh: int
    kw: int

    def __str__(self) -> str:
        return f"{self.filters}x{self.kh}x{self.kw}"


def format_layers(specs: list[ConvSpec]) -> str:
    """The inverse of :func:`parse_layers`."""
    return "_".join(str(s) for s in specs)


def parse_layers(s: str) -> list[ConvSpec]:
    """Parse ``"64x9x9_32x5x5_1x5x5"``; ``ValueError`` with a message naming the bad group."""
    if not isinstance(s, str):
        raise ValueError(f"layers must be a string like '64x9x9_32x5x5_1x5x5', got {type(s).__name__}")
    text = s.strip()
    if not text:
        raise ValueError("layers is empty; expected e.g. '64x9x9_32x5x5_1x5x5'")
    out: list[ConvSpec] = []
    for n, group in enumerate(text.split("_"), start=1):
        m = _GROUP.fullmatch(group)
        if m is None:
            raise ValueError(f"layer {n} {group!r} must be FILTERSxKHxKW (e.g. 64x9x9)")
        filters, kh, kw = (int(g) for g in m.groups())
        if not 1 <= filters <= MAX_FILTERS:
            raise ValueError(f"layer {n} {group!r}: filters must be between 1 and {MAX_FILTERS}")
        if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
            raise ValueError(f"layer {n} {group!r}: kernel sizes must be between 1 and {MAX_KERNEL}")
        out.append(ConvSpec(filters, kh, kw))
    return out
