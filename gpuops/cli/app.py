"""The CLI's ``Application``: owns the output object, turns library errors into exit codes.

Every command module does three things: parse its options, call one library function,
render the result through ``app.out``. Use it like this::

    def doctor(json_: JsonOpt = False, quiet: QuietOpt = False, no_color: NoColorOpt = False):
        app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
        with app.guard():
            report = core_function(...)
            app.out.result(report.model_dump(mode="json"), render=render(report))
        raise typer.Exit(app.exit_code)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from gpuops.errors import GpuopsError
from gpuops.output import Output

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")]
NoColorOpt = Annotated[
    bool, typer.Option("--no-color", help="No colour (also when NO_COLOR is set).", envvar="NO_COLOR")
]


class Application:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False, no_color: bool = False,
                 out: Output | None = None) -> None:
        no_color = no_color or bool(os.environ.get("NO_COLOR"))
        self.out = out or Output(json_mode=json_mode, quiet=quiet, color=False if no_color else None)
        self.exit_code = 0

    @contextmanager
    def guard(self) -> Iterator[Application]:
        """Turn a ``GpuopsError`` into one clear line and its exit code; Ctrl-C into 130."""
        try:
            yield self
        except GpuopsError as err:
            self.out.error(str(err))
            self.exit_code = err.exit_code
        except KeyboardInterrupt:
            self.out.error("interrupted")
            self.exit_code = 130

    def exit(self) -> None:
        raise typer.Exit(self.exit_code)
