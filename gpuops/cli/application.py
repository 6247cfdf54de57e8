"""The CLI's ``Application``: owns the output object, turns library errors into exit codes.

No typer here: ``gpuops doctor`` runs without typer (``gpuops.cli.entry``), and uses this too.
Every command does three things: parse its options, call one library function, render the
result through ``app.out``::

    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        report = core_function(...)
        app.out.result(report.to_dict(), render=render(report))
    app.exit()          # typer commands; an argparse front returns app.exit_code
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from gpuops.errors import GpuopsError
from gpuops.output import Output

# The help of the options every command has (typer aliases in gpuops.cli.app, argparse in doctor).
JSON_HELP = "Print one JSON document on stdout instead of tables."
QUIET_HELP = "Print errors only."
NO_COLOR_HELP = "No colour (also when NO_COLOR is set)."


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
            self._json_error(type(err).__name__, err.message, err.hint)
        except KeyboardInterrupt:
            self.out.error("interrupted")
            self.exit_code = 130
            self._json_error("Interrupted", "interrupted", None)

    def _json_error(self, code: str, message: str, hint: str | None) -> None:
        """With --json, a script reads the failure on stdout too: one JSON object, unless the
        command already wrote its document."""
        if self.out.json_mode and not getattr(self.out, "json_written", False):
            self.out.json({"error": {"code": code, "exit_code": self.exit_code, "message": message,
                                     "hint": hint}})

    def exit(self) -> None:
        """End a typer command with ``exit_code``."""
        import typer

        raise typer.Exit(self.exit_code)
