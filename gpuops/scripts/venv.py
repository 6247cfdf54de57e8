"""A script's ``env:`` on the local target: a virtual environment made from the environment's lock.

The venv is made once and kept under ``$GPUOPS_VENV_DIR`` (default: ``<gpuops cache>/venvs``), in a
folder named by the environment and a hash of what goes into it (the lock file's text, the
framework pins, the Python version): an edited lock gets a new venv, an unchanged one is reused.
MLflow's ``python_env`` does the same for MLflow Projects (a virtualenv per environment hash).

What goes in, in the order the Dockerfile installs it (``gpuops/templates/Dockerfile.in``): the
lock (``pip install --require-hashes --no-deps``), then the framework at its exact pin
(``gpuops.envs.render.framework_requirements``), then ``pip check``. Chainer 7.8.1 is published as
a source archive only, and its ``setup.py`` imports ``pkg_resources``: it is built without build
isolation, with the setuptools that the lock pins (a current setuptools in an isolated build has no
``pkg_resources``).

The interpreter: this one when the environment's Python is this Python's major.minor, else
``pythonX.Y`` on PATH; a clear ``UsageError`` when neither exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gpuops.errors import ExternalError, UsageError

VENV_DIR_ENV = "GPUOPS_VENV_DIR"
DONE_MARKER = ".gpuops-venv-complete"
VENV_FORMAT = "1"  # bump when the way a venv is made changes
INSTALL_TIMEOUT = 3600.0


def venv_root() -> Path:
    value = os.environ.get(VENV_DIR_ENV, "").strip()
    if value:
        return Path(value)
    from gpuops.cache import cache_dir

    return Path(cache_dir()) / "venvs"


def find_python(version: str) -> str:
    """An interpreter for Python ``version`` (major.minor): this one, or ``pythonX.Y`` on PATH."""
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version == mine:
        return sys.executable
    found = shutil.which(f"python{version}")
    if found:
        return found
    raise UsageError(f"the environment needs Python {version}; this is Python {mine} and there is no "
                     f"python{version} on PATH",
                     hint=f"install Python {version} (e.g. apt-get install python{version} "
                     f"python{version}-venv), or run it in its image: --target docker")


def framework_pins(env: object) -> list[str]:
    from gpuops.envs.render import framework_requirements

    return framework_requirements(env)  # type: ignore[arg-type]


def venv_key(env: object, lock_text: str) -> str:
    """The content hash that names the venv."""
    doc = "\0".join([VENV_FORMAT, getattr(env, "python", ""), lock_text, *framework_pins(env)])
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def venv_python(folder: Path) -> Path:
    return folder / "bin" / "python"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One maker at a time per venv (two runs of the same env started together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pip(python: Path, args: list[str], log: Callable[[str], None], what: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *args]
    log(f"gpuops: {what}")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ExternalError(f"pip did not finish {what} in {INSTALL_TIMEOUT:.0f} s") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip()
                 and not ln.startswith("WARNING: Location")]
        raise ExternalError(f"pip failed {what}: " + " | ".join(lines[-6:]))


def ensure_venv(env_file: str | Path, log: Callable[[str], None] = lambda _line: None) -> Path:
    """The Python of the venv for ``env_file`` (an ``environments/*.yaml``), made first if needed.
    ``log`` gets one line per step (the trainer log shows them)."""
    from gpuops.envs import load_environment
    from gpuops.envs.lock import require_lock

    env = load_environment(Path(env_file))
    state = require_lock(env)
    base_python = find_python(env.python)
    folder = venv_root() / f"{env.name}-{venv_key(env, state.text)}"
    python = venv_python(folder)
    if (folder / DONE_MARKER).is_file() and python.exists():
        return python
    with _locked(folder.with_name(folder.name + ".lock")):
        if (folder / DONE_MARKER).is_file() and python.exists():  # made by another run meanwhile
            return python
        shutil.rmtree(folder, ignore_errors=True)  # a half-made one (a run stopped while installing)
        began = time.monotonic()
        log(f"gpuops: making the {env.name} environment in {folder} (once; later runs reuse it)")
        r = subprocess.run([base_python, "-m", "venv", str(folder)], capture_output=True, text=True,
                           timeout=600, check=False)
        if r.returncode != 0:
            raise ExternalError(f"python{env.python} -m venv failed: {(r.stderr or r.stdout).strip()[-500:]}",
                                hint=f"install python{env.python}-venv")
        lock = env.lock_path
        if state.text.strip() and lock is not None:
            _pip(python, ["--require-hashes", "--no-deps", "-r", str(lock)], log,
                 f"installing {state.packages} locked packages from {lock.name}")
        pins = framework_pins(env)
        extra = ["--no-build-isolation"] if env.framework == "chainer" else []
        _pip(python, [*extra, *pins], log, f"installing {' '.join(pins)}")
        check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True,
                               timeout=600, check=False)
        if check.returncode != 0:
            raise ExternalError(f"the {env.name} environment is inconsistent (pip check): "
                                + " | ".join(check.stdout.strip().splitlines()[-5:]))
        (folder / DONE_MARKER).write_text(f"{env.name} {time.monotonic() - began:.0f} s\n")
        log(f"gpuops: the {env.name} environment is ready ({time.monotonic() - began:.0f} s)")
    return python
