"""The output object's styled lines: colour only where asked for, wrapping that keeps every word."""

from __future__ import annotations

import io
import json

from hypothesis import given
from hypothesis import strategies as st

from gpuops.output import Lines, Output, wrap_spans

STYLES = st.sampled_from(["", "bold", "dim", "red", "bold red", "green", "yellow", "magenta", "cyan"])
WORDS = st.text(alphabet="abcdefghij.:/-•", min_size=1, max_size=30)
SPANS = st.lists(
    st.tuples(st.lists(WORDS, min_size=1, max_size=8).map(" ".join), STYLES), min_size=1, max_size=6
)


@given(indent=st.integers(0, 8), spans=SPANS, width=st.integers(21, 120))
def test_wrapping_keeps_every_word_in_order_and_fits_where_it_can(indent, spans, width):
    spans = [(" " * indent + spans[0][0], spans[0][1]), *spans[1:]]
    lines = wrap_spans(spans, width)
    words = "".join(t for t, _ in spans).split()
    assert " ".join("".join(t for t, _ in line) for line in lines).split() == words
    for line in lines:
        text = "".join(t for t, _ in line)
        assert len(text) <= width or len(text.split()) == 1  # only a single over-long word overflows
    for line in lines[1:]:  # continuation lines: at least as indented as the first line
        assert "".join(t for t, _ in line).startswith(" " * min(indent, width // 2))


@given(spans=SPANS, width=st.integers(21, 60))
def test_every_character_keeps_its_style_and_place(spans, width):
    def chars(line_spans):
        return [(c, style) for text, style in line_spans for c in text if not c.isspace()]

    assert [c for line in wrap_spans(spans, width) for c in chars(line)] == chars(spans)


def _out(color: bool | None, **kw) -> tuple[Output, io.StringIO, io.StringIO]:
    o, e = io.StringIO(), io.StringIO()
    return Output(stdout=o, stderr=e, color=color, **kw), o, e


def test_colour_codes_only_when_colour_is_on(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    lines = Lines().add(("ERROR  ", "bold red"), "plain")
    out, o, _ = _out(None)  # a StringIO is not a terminal
    out.print(lines)
    assert o.getvalue() == "ERROR  plain\n"
    out, o, _ = _out(True)
    out.print(lines)
    assert o.getvalue() == "\x1b[1;31mERROR  \x1b[0mplain\n"
    monkeypatch.setenv("FORCE_COLOR", "1")
    out, o, _ = _out(None)
    out.print(lines)
    assert "\x1b[1;31m" in o.getvalue()
    out, o, _ = _out(False)  # --no-color wins
    out.print(lines)
    assert "\x1b" not in o.getvalue()


def test_modes_errors_and_markup_free_messages():
    out, o, e = _out(False, width=40)
    out.info("[source: x] gpuops:x: stays as written")
    out.error("one long line that is never wrapped, whatever the width of the terminal is")
    assert e.getvalue().splitlines() == [
        "[source: x] gpuops:x: stays as written",
        "error: one long line that is never wrapped, whatever the width of the terminal is",
    ]
    out.print(Lines().add("    • " + "a " * 30))  # human output wraps at the given width, under the bullet
    assert o.getvalue().splitlines()[1].startswith("      a")
    assert all(len(x) <= 40 for x in o.getvalue().splitlines()) and len(o.getvalue().splitlines()) == 2
    out, o, e = _out(False, json_mode=True)
    out.result({"a": 1}, render=Lines().add("not shown"))
    assert json.loads(o.getvalue()) == {"a": 1}
    out, o, e = _out(False, quiet=True)
    out.info("hidden")
    out.print(Lines().add("hidden"))
    out.error("shown")
    assert o.getvalue() == "" and e.getvalue() == "error: shown\n"
