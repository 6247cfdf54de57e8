"""The version comparator: a total order on dotted numbers, numeric per component."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuops.errors import UsageError
from gpuops.knowledge.versions import Version, major_minor, parse_cc, parse_cuda, vcmp, version_key

parts = st.lists(st.integers(min_value=0, max_value=999), min_size=1, max_size=4)
versions = parts.map(lambda p: ".".join(map(str, p)))


def _stripped(p: list[int]) -> tuple[int, ...]:
    t = list(p)
    while len(t) > 1 and t[-1] == 0:
        t.pop()
    return tuple(t)


@given(versions, versions)
def test_exactly_one_relation_holds(a: str, b: str) -> None:
    relations = [Version(a) < Version(b), Version(a) == Version(b), Version(a) > Version(b)]
    assert relations.count(True) == 1
    assert vcmp(a, b) == -vcmp(b, a)


@given(versions, versions, versions)
def test_transitive(a: str, b: str, c: str) -> None:
    x, y, z = sorted([Version(a), Version(b), Version(c)])
    assert x <= y <= z
    assert x <= z


@given(parts, parts)
def test_order_is_numeric_per_component(p: list[int], q: list[int]) -> None:
    a, b = ".".join(map(str, p)), ".".join(map(str, q))
    # Padding with zeros makes the integer tuples comparable the way releases are.
    n = max(len(p), len(q))
    pp, qq = tuple(p + [0] * (n - len(p))), tuple(q + [0] * (n - len(q)))
    assert (Version(a) < Version(b)) == (pp < qq)
    assert (Version(a) == Version(b)) == (_stripped(p) == _stripped(q))


@given(parts)
def test_trailing_zeros_and_hash(p: list[int]) -> None:
    a = ".".join(map(str, p))
    assert Version(a) == Version(a + ".0")
    assert hash(Version(a)) == hash(Version(a + ".0"))


def test_stack_versions() -> None:
    assert Version("12.10") > Version("12.9")
    assert Version("580.65.06") > Version("580.9.99")
    assert Version("535.104.05") > Version("535.54.03")
    assert Version("13.2 Update 2") == Version("13.2.2")
    assert Version("13.2 Update 2") > Version("13.2 GA") == Version("13.2")
    assert Version("11.0.2 GA") > Version("11.0.1 RC")
    assert Version("2.13.0+cu130") == Version("2.13")
    assert version_key("9.10.2.21") == (9, 10, 2, 21)
    assert major_minor("12.6.3") == "12.6"


def test_cuda_and_cc_parsing() -> None:
    assert parse_cuda("cu126") == "12.6"
    assert parse_cuda("cu92") == "9.2"
    assert parse_cuda("cu110") == "11.0"
    assert parse_cuda("CUDA 12.2 Update 2") == "12.2 Update 2"
    assert parse_cc("sm_52") == "5.2"
    assert parse_cc("sm_120") == "12.0"
    assert parse_cc("compute_86") == "8.6"
    assert parse_cc("sm_90a") == "9.0a"
    assert parse_cc("GTX 980") is None


@pytest.mark.parametrize("bad", ["", "abc", "12..1", "v", "1.2.3-beta"])
def test_not_a_version(bad: str) -> None:
    with pytest.raises(UsageError):
        version_key(bad)
