"""The typer app (the console script is ``gpuops.cli.entry``). Commands live one group per module
in ``gpuops.cli.commands``; each module exposes ``register(app: typer.Typer) -> None`` and keeps
heavy imports inside its functions, so that ``gpuops --help`` stays fast and works when torch is
broken.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from gpuops import __version__

HELP = """gpuops: keep an NVIDIA GPU workstation's stack working, and run comparable experiments on it.

\b
  gpuops doctor                 what is broken in the driver/CUDA/cuDNN/framework stack, and the fix
  gpuops compat --driver 535    what this driver, GPU or framework build fits with
  gpuops build pytorch          build a pinned framework image, tagged by content hash
  gpuops run experiments/srcnn_y.yaml --target local|docker|aws
  gpuops compare                put MLflow runs side by side: metrics and what differed
"""

app = typer.Typer(
    name="gpuops",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpuops {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """gpuops command line."""


def _register_all() -> None:
    from gpuops.cli import commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"gpuops.cli.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()
