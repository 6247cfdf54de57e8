"""Layer-string parsing, property-based."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuops.sr.layers import MAX_FILTERS, MAX_KERNEL, ConvSpec, format_layers, parse_layers

conv = st.builds(
    ConvSpec,
    filters=st.integers(1, MAX_FILTERS),
    kh=st.integers(1, MAX_KERNEL),
    kw=st.integers(1, MAX_KERNEL),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(conv, min_size=1, max_size=12))
def test_round_trip(specs: list[ConvSpec]) -> None:
    text = "_".join(f"{s.filters}x{s.kh}x{s.kw}" for s in specs)
    assert parse_layers(text) == specs
    assert format_layers(parse_layers(text)) == text


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(alphabet="0123456789x_ -", max_size=30)))
def test_garbage_raises_value_error_with_a_message(text: str) -> None:
    try:
        specs = parse_layers(text)
    except ValueError as exc:
        assert str(exc)
    else:
        # Whatever parses must be a faithful, valid reading of the text.
        assert format_layers(specs) == "_".join(
            f"{int(f)}x{int(h)}x{int(w)}" for f, h, w in (g.split("x") for g in text.strip().split("_"))
        )
        assert all(s.filters >= 1 and s.kh >= 1 and s.kw >= 1 for s in specs)


@given(st.one_of(st.none(), st.integers(), st.lists(st.integers()), st.binary()))
def test_non_strings_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        parse_layers(value)  # type: ignore[arg-type]


def test_messages_name_the_bad_layer() -> None:
    with pytest.raises(ValueError, match=r"layer 2 '32x5' must be FILTERSxKHxKW"):
        parse_layers("64x9x9_32x5_1x5x5")
    with pytest.raises(ValueError, match=r"layer 1 '0x3x3': filters"):
        parse_layers("0x3x3")
    with pytest.raises(ValueError, match=r"layer 3 '1x5x0': kernel"):
        parse_layers("64x9x9_32x5x5_1x5x0")
    with pytest.raises(ValueError, match="empty"):
        parse_layers("   ")
    with pytest.raises(ValueError, match=r"layer 2 ''"):
        parse_layers("64x9x9__1x5x5")
    assert parse_layers("64x9x9_32x5x5_1x5x5") == [ConvSpec(64, 9, 9), ConvSpec(32, 5, 5), ConvSpec(1, 5, 5)]
