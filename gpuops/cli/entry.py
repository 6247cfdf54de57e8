"""The ``gpuops`` console script.

``gpuops doctor`` goes straight to its own argparse front (``gpuops.cli.commands.doctor``) without
importing typer: it is the command people run when their environment is broken, and it should
answer in a fraction of a second and work even when typer, pydantic or rich are damaged. Every
other command (and ``gpuops --help``, which lists doctor too) goes through the typer app.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["doctor"]:
        from gpuops.cli.commands.doctor import main as doctor_main

        raise SystemExit(doctor_main(args[1:]))
    from gpuops.cli.main import app

    app(args=args, prog_name="gpuops")


if __name__ == "__main__":
    main()
