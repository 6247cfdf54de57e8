"""The one output object: everything the CLI shows goes through here.

Modes: normal (rich, colour when the terminal supports it), ``--json`` (one JSON document on
stdout, nothing else there), ``--quiet`` (errors only). Progress bars and status lines go to
stderr so that stdout stays clean for scripts. Tests build an ``Output`` over a ``StringIO``
and assert on exact text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table


def _default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
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
        out = stdout if stdout is not None else sys.stdout
        err = stderr if stderr is not None else sys.stderr
        no_color = color is False
        force = True if color is True else None
        self.console = Console(file=out, no_color=no_color, force_terminal=force, width=width,
                               highlight=False, soft_wrap=False)
        self.err_console = Console(file=err, no_color=no_color, force_terminal=force, width=width,
                                   highlight=False, soft_wrap=False)

    # -- plain messages -------------------------------------------------------------------
    def print(self, *renderables: RenderableType | str) -> None:
        """Human output on stdout (suppressed in --json and --quiet)."""
        if self.json_mode or self.quiet:
            return
        self.console.print(*renderables)

    # Messages are plain text: never interpreted as rich markup or emoji codes, so that
    # "[source: x]" or "gpuops:x:" print as written. Errors are never wrapped (one line).
    def info(self, message: str) -> None:
        """A status line on stderr (suppressed in --quiet)."""
        if self.quiet:
            return
        self.err_console.print(Text(message))

    def warn(self, message: str) -> None:
        if self.quiet:
            return
        self.err_console.print(Text.assemble(("warning:", "yellow"), " ", message))

    def error(self, message: str) -> None:
        """Errors always show, on stderr, in every mode."""
        self.err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)

    def json(self, obj: Any) -> None:
        """The one JSON document of a --json run."""
        self.console.file.write(to_json(obj) + "\n")
        self.console.file.flush()

    def result(self, obj: Any, render: RenderableType | str | None = None) -> None:
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
