"""Errors that the CLI turns into one clear line and an exit code.

The library raises these; it never prints and never calls ``sys.exit``. The CLI's
``Application`` catches ``GpuopsError`` and renders ``str(err)`` with ``err.exit_code``.
"""

from __future__ import annotations

from pathlib import Path


class GpuopsError(Exception):
    """Base class: a failure the user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(GpuopsError):
    """Bad input from the user: a missing file, a malformed capture, a bad option. Exit code 2."""

    exit_code = 2


class SpecError(UsageError):
    """An invalid spec file: names the file, the field path and what was expected."""

    def __init__(self, path: str | Path, field: str, expected: str, got: object = None) -> None:
        self.path = str(path)
        self.field = field
        self.expected = expected
        self.got = got
        where = f"{self.path}: {field}" if field else self.path
        msg = f"{where}: expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        super().__init__(msg)


class ExternalError(GpuopsError):
    """A component outside gpuops failed (Docker Engine, AWS, MLflow server). Exit code 1."""

    exit_code = 1
