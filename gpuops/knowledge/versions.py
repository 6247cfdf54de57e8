"""Version strings of the GPU stack, compared as numbers.

Driver versions ("580.65.06"), CUDA toolkit labels ("12.1", "13.2 Update 2", "11.0.1 RC"), library
versions ("9.10.2.21") and framework versions ("2.13.0+cu130") are all dotted numbers with some
decoration. They are kept as strings everywhere (12.10 is not 12.1) and compared here:

* the numeric components are compared as integers, so "12.10" > "12.9";
* trailing zeros do not count: "12.1" == "12.1.0";
* "Update N" is the Nth patch release ("13.2 Update 2" == "13.2.2"; true of CUDA labels from 11.1 on);
* "GA", "RC", a "+local" part and a ".postN" part are ignored.
"""

from __future__ import annotations

import re
from functools import total_ordering

from gpuops.errors import UsageError

_VERSION_RX = re.compile(
    r"""^\s*v?(?P<num>\d+(?:\.\d+)*)           # 13.2 / 580.65.06 / 2.13.0
        (?:\s*\([^)]*\))?                     # '9.2 (9.2.88)' style remark
        (?:\s*(?:GA|RC|LTS))?                 # release kind
        (?:\s*Update\s*(?P<update>\d+))?      # '13.2 Update 2'
        (?:\.?post\d+)?                        # 7.8.1.post1
        (?:\+[\w.]+)?                          # 2.13.0+cu130
        \s*$""",
    re.IGNORECASE | re.VERBOSE,
)


def version_key(text: str) -> tuple[int, ...]:
    """The comparison key of a version string; raises ``UsageError`` when it is not one."""
    m = _VERSION_RX.match(str(text))
    if not m:
        raise UsageError(f"not a version number: {text!r}")
    parts = [int(p) for p in m.group("num").split(".")]
    if m.group("update") is not None:
        parts = parts[:2] + [0] * (2 - len(parts[:2])) + [int(m.group("update"))]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def is_version(text: str) -> bool:
    try:
        version_key(text)
    except UsageError:
        return False
    return True


@total_ordering
class Version:
    """A version string with numeric ordering; ``str()`` gives back the original text."""

    __slots__ = ("key", "text")

    def __init__(self, text: str) -> None:
        self.text = str(text).strip()
        self.key = version_key(self.text)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = Version(other)
        if not isinstance(other, Version):
            return NotImplemented
        return self.key == other.key

    def __lt__(self, other: Version | str) -> bool:
        if isinstance(other, str):
            other = Version(other)
        return self.key < other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Version({self.text!r})"

    def __str__(self) -> str:
        return self.text


def vcmp(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is lower than, equal to or higher than ``b``."""
    ka, kb = version_key(a), version_key(b)
    return (ka > kb) - (ka < kb)


def vge(a: str, b: str) -> bool:
    return version_key(a) >= version_key(b)


def components(text: str) -> list[int]:
    """The numeric components as written (no zero stripping): '12.6.3' -> [12, 6, 3]."""
    m = _VERSION_RX.match(str(text))
    if not m:
        raise UsageError(f"not a version number: {text!r}")
    return [int(p) for p in m.group("num").split(".")]


def major_minor(text: str) -> str:
    """'12.6.3' -> '12.6'; '13' -> '13.0'."""
    c = [*components(text), 0]
    return f"{c[0]}.{c[1]}"


def series(text: str) -> str:
    """A framework release series: '2.13.0+cu130' -> '2.13'."""
    return major_minor(text)


_CU_RX = re.compile(r"^\s*cu(\d{2,3})\s*$", re.IGNORECASE)
_CUDA_RX = re.compile(r"^\s*(?:cuda\s*)?(\d+(?:\.\d+){0,2}(?:\s*(?:GA|Update\s*\d+))?)\s*$", re.IGNORECASE)


def parse_cuda(text: str) -> str:
    """A CUDA version as given ('12.6', '12.6.3', '13.2 Update 2'), from 'cu126', 'CUDA 12.6' too.

    A wheel tag ('cu126', 'cu92', 'cu110') gives major.minor: the last digit is the minor.
    Raises ``UsageError`` for anything else.
    """
    m = _CU_RX.match(str(text))
    if m:
        d = m.group(1)
        return f"{int(d[:-1])}.{d[-1]}"
    m = _CUDA_RX.match(str(text))
    if not m:
        raise UsageError(f"not a CUDA version: {text!r} (expected e.g. 12.6, 12.6.3 or cu126)")
    return " ".join(m.group(1).split())


def cuda_variant(cuda: str) -> str:
    """'12.6' -> 'cu126' (the PyTorch / CuPy wheel tag)."""
    c = [*components(parse_cuda(cuda)), 0]
    return f"cu{c[0]}{c[1]}"


_CC_RX = re.compile(
    r"^\s*(?:(?:sm|compute)_?(\d+)(\d)([a-z]?)|(?:sm\s*|cc\s*)?(\d+)\.(\d)([a-z]?))\s*$", re.IGNORECASE
)


def parse_cc(text: str) -> str | None:
    """A compute capability as 'X.Y' (or 'X.Ya' for arch-specific targets), or None if ``text`` is not one.

    Accepts '5.2', 'sm_52', 'sm52', 'compute_86', 'sm_90a', 'sm_120', 'SM 8.6'.
    """
    m = _CC_RX.match(str(text))
    if not m:
        return None
    if m.group(1) is not None:
        major, minor, suffix = m.group(1), m.group(2), m.group(3)
    else:
        major, minor, suffix = m.group(4), m.group(5), m.group(6)
    return f"{int(major)}.{minor}{suffix.lower()}"


def cc_tuple(cc: str) -> tuple[int, int, str]:
    """'9.0a' -> (9, 0, 'a')."""
    norm = parse_cc(cc)
    if norm is None:
        raise UsageError(f"not a compute capability: {cc!r} (expected e.g. 8.6 or sm_86)")
    m = re.fullmatch(r"(\d+)\.(\d)([a-z]?)", norm)
    assert m is not None
    return int(m.group(1)), int(m.group(2)), m.group(3)
