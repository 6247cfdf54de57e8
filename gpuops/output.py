"""The one output object: everything the CLI shows goes through here.

Modes: normal (colour when the terminal supports it), ``--json`` (one JSON document on stdout,
nothing else there), ``--quiet`` (errors only). Progress bars and status lines go to stderr so
that stdout stays clean for scripts. Tests build an ``Output`` over a ``StringIO`` and assert on
exact text.

Two kinds of human output:

- ``Lines``: lines of styled text (the doctor report, messages, errors), written with plain ANSI
  codes. Importing rich costs more than a whole ``gpuops doctor`` run, and doctor must work when
  the Python environment is half broken, so this path imports nothing beyond the standard library.
  On a terminal, long lines wrap at word boundaries with a hanging indent; in a pipe they do not.
- rich renderables (tables, progress bars): rich is imported on first use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

# A span is (text, style); a style is space-separated words from _SGR ("bold red"), or "".
Span = tuple[str, str]

_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "magenta": "35", "cyan": "36"}


class Lines(list[list[Span]]):
    """Human output as lines of styled spans: ``Lines().add("title", "bold").add("  plain")``."""

    def add(self, *parts: str | Span) -> Lines:
        """Append one line made of ``parts``: strings (unstyled) or (text, style) pairs."""
        self.append([(p, "") if isinstance(p, str) else p for p in parts])
        return self


def _sgr(text: str, style: str) -> str:
    codes = ";".join(_SGR[w] for w in style.split() if w in _SGR)
    return f"\x1b[{codes}m{text}\x1b[0m" if codes and text else text


def wrap_spans(spans: Sequence[Span], width: int) -> list[list[Span]]:
    """Break a styled line at spaces so that each piece fits ``width`` columns (continuation lines
    indented, see below). A word longer than a line stays whole, and so does a word that runs from
    one span (style) into the next."""
    plain = "".join(t for t, _ in spans)
    if len(plain) <= width:
        return [list(spans)]
    # Tokens: runs of spaces, and words, each word a list of its styled pieces.
    tokens: list[tuple[bool, list[Span]]] = []  # (is_space, pieces)
    for text, style in spans:
        for tok in re.findall(r"\s+|\S+", text):
            space = tok.isspace()
            if tokens and not space and not tokens[-1][0]:
                tokens[-1][1].append((tok, style))  # the same word, in another style
            else:
                tokens.append((space, [(tok, style)]))
    # Continuation lines: under the text of a bullet ("• ", "↳ "), level with an indented
    # paragraph, four columns in for a line that starts at the margin (a finding's title).
    body = plain.lstrip(" ")
    lead = len(plain) - len(body)
    extra = 2 if body[:2] in ("• ", "↳ ") else (4 if lead == 0 else 0)
    indent = " " * min(lead + extra, width // 2)
    out: list[list[Span]] = [[]]
    col, has_word = 0, False
    pending: list[Span] = []  # a space run, written only if a word follows on the same line
    for space, pieces in tokens:
        size = sum(len(t) for t, _ in pieces)
        if space:
            if has_word:
                pending = pending + pieces
            elif len(out) == 1:  # the first line's own indent
                out[-1].extend(pieces)
                col += size
            continue
        gap = sum(len(t) for t, _ in pending)
        if has_word and col + gap + size > width:
            out.append([(indent, "")])
            col, pending = len(indent), []
        out[-1].extend(pending + pieces)
        col += gap + size
        pending = []
        has_word = True
    return out


def _terminal_width(stream: IO[str]) -> int:
    """The terminal's width when ``stream`` is a terminal, else 0 (no wrapping)."""
    try:
        return shutil.get_terminal_size().columns if stream.isatty() else 0
    except (AttributeError, ValueError):
        return 0


def _wants_color(stream: IO[str], color: bool | None) -> bool:
    """Colour on ``stream``: forced on or off by ``color``; else the rules rich also follows."""
    if color is not None:
        return color
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed
        return False


def _default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    if hasattr(o, "__fspath__"):
        return str(o)
    if isinstance(o, set | frozenset):
        return sorted(o)
    return str(o)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_default)


class Output:
    def __init__(
        self,
        *,
        json_mode: bool = False,
        quiet: bool = False,
        color: bool | None = None,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        width: int | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self._color = color
        self._width = width
        self._consoles: dict[str, Console] = {}

    # -- rich, on first use ---------------------------------------------------------------
    def _console(self, which: str) -> Console:
        if which not in self._consoles:
            from rich.console import Console

            self._consoles[which] = Console(
                file=self.stdout if which == "out" else self.stderr,
                no_color=self._color is False,
                force_terminal=True if self._color is True else None,
                width=self._width,
                highlight=False,
                soft_wrap=False,
            )
        return self._consoles[which]

    @property
    def console(self) -> Console:
        """A rich console on stdout."""
        return self._console("out")

    @property
    def err_console(self) -> Console:
        """A rich console on stderr."""
        return self._console("err")

    # -- styled lines (no rich) -------------------------------------------------------------
    def write_lines(self, lines: Iterable[Sequence[Span]], *, err: bool = False, wrap: bool = True) -> None:
        """Write styled lines: coloured when the stream is a colour terminal; on a terminal, wrapped."""
        stream = self.stderr if err else self.stdout
        color = _wants_color(stream, self._color)
        width = (self._width or _terminal_width(stream)) if wrap else 0
        chunks = []
        for line in lines:
            for piece in wrap_spans(line, width) if width > 20 else [line]:
                chunks.append("".join(_sgr(t, st) if color else t for t, st in piece).rstrip(" ") + "\n")
        stream.write("".join(chunks))
        stream.flush()

    def print(self, *renderables: RenderableType | str) -> None:
        """Human output on stdout (suppressed in --json and --quiet)."""
        if self.json_mode or self.quiet:
            return
        if len(renderables) == 1 and isinstance(renderables[0], Lines):
            self.write_lines(renderables[0])
            return
        self.console.print(*renderables)

    # Messages are plain text (never rich markup or emoji codes: "[source: x]" prints as written).
    # Errors are never wrapped: one line.
    def info(self, message: str) -> None:
        """A status line on stderr (suppressed in --quiet)."""
        if self.quiet:
            return
        self.write_lines([[(message, "")]], err=True)

    def warn(self, message: str) -> None:
        if self.quiet:
            return
        self.write_lines([[("warning:", "yellow"), (" " + message, "")]], err=True)

    def error(self, message: str) -> None:
        """Errors always show, on stderr, in every mode."""
        self.write_lines([[("error:", "bold red"), (" " + message, "")]], err=True, wrap=False)

    def json(self, obj: Any) -> None:
        """The one JSON document of a --json run."""
        self.json_written = True
        self.stdout.write(to_json(obj) + "\n")
        self.stdout.flush()

    def result(self, obj: Any, render: RenderableType | Lines | str | None = None) -> None:
        """Emit a command's result: JSON in --json mode, else ``render`` (if any)."""
        if self.json_mode:
            self.json(obj)
        elif render is not None:
            self.print(render)

    # -- structured -----------------------------------------------------------------------
    @staticmethod
    def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
        from rich.table import Table  # imported here: rich.table (and fractions, decimal) costs start-up

        t = Table(title=title, show_lines=False, header_style="bold")
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        return t

    @contextmanager
    def progress(self, description: str, total: float | None = None) -> Iterator[Any]:
        """A rich progress bar on stderr; a no-op object in --json/--quiet mode.

        Yields an object with ``update(advance=..., completed=..., description=..., **fields)``.
        """
        if self.json_mode or self.quiet:
            yield _NullProgress()
            return
        if not _stderr_is_terminal():
            # a log file, a pipe, nohup, CI: a bar redrawn in place shows nothing until the end;
            # one plain line per update instead (the trainer sends one per train.log_every)
            yield _LineProgress(self, description, total)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.err_console,
            transient=False,
        ) as prog:
            task = prog.add_task(description, total=total, status="")
            yield _TaskProgress(prog, task)


def _stderr_is_terminal() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _LineProgress:
    """Progress as plain lines: ``training 500/3000 (17%) · loss 0.0123 · 412 samples/s · ETA 4m10s``."""

    def __init__(self, out: Any, description: str, total: float | None) -> None:
        import time

        self._out, self._desc, self._total = out, description, total
        self._completed = 0.0
        self._status = ""
        self._start = time.monotonic()
        self._first: tuple[float, float] | None = None  # (time, completed) of the first update

    def update(self, **kwargs: Any) -> None:
        import sys
        import time

        if "total" in kwargs and kwargs["total"] is not None:
            self._total = kwargs["total"]
        if "description" in kwargs:
            self._desc = kwargs["description"]
        if kwargs.get("status") is not None:
            self._status = str(kwargs["status"])
        before = self._completed
        if "completed" in kwargs and kwargs["completed"] is not None:
            self._completed = float(kwargs["completed"])
        self._completed += float(kwargs.get("advance") or 0)
        now = time.monotonic()
        if self._first is None:
            self._first = (now, self._completed)
            if "completed" in kwargs and kwargs.get("status") is None:
                return  # the start position (a resume), not progress yet
        if self._completed == before and kwargs.get("status") is None:
            return
        parts = [f"{self._desc} {int(self._completed)}"]
        if self._total:
            parts[0] += f"/{int(self._total)} ({100 * self._completed / self._total:.0f}%)"
        if self._status:
            parts.append(self._status)
        t0, c0 = self._first
        if self._total and self._completed > c0 and now > t0:
            rate = (self._completed - c0) / (now - t0)
            left = (self._total - self._completed) / rate
            parts.append(f"ETA {_duration(left)}")
        sys.stderr.write(" · ".join(parts) + "\n")
        sys.stderr.flush()


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class _NullProgress:
    def update(self, **_: Any) -> None:
        return None


class _TaskProgress:
    def __init__(self, prog: Any, task: Any) -> None:
        self._prog = prog
        self._task = task

    def update(self, **kwargs: Any) -> None:
        status = kwargs.pop("status", None)
        if status is not None:
            kwargs["status"] = status
        self._prog.update(self._task, **kwargs)
