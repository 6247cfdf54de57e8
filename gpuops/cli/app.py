"""typer's side of the CLI: the option aliases every typer command shares, and ``Application``
(from ``gpuops.cli.application``, which has no typer in it)."""

from __future__ import annotations

from typing import Annotated

import typer

from gpuops.cli.application import JSON_HELP, NO_COLOR_HELP, QUIET_HELP, Application

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help=NO_COLOR_HELP, envvar="NO_COLOR")]

__all__ = ["Application", "JsonOpt", "NoColorOpt", "QuietOpt"]
