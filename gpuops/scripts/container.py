"""Where a ``task: script`` lives inside a container: the paths, the mounts and the argv.

The image does not carry gpuops (a Chainer image may have Python 3.8), so the script is started
directly by the container's own ``python`` (the image's ``/opt/venv`` is first on its PATH), with its
files mounted at fixed places:

    /gpuops/work          the run's working folder (writable; ``outputs:`` lives under it)
    /gpuops/data/<name>   each ``data:`` folder, read-only
    /gpuops/code          the folder of the script file, read-only (so its sibling modules import)

Nothing here talks to Docker or MLflow; ``gpuops.targets.docker`` turns the layout into a container.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuops.scripts.supervise import fill_argv

WORK_DIR = "/gpuops/work"
DATA_ROOT = "/gpuops/data"
CODE_DIR = "/gpuops/code"


@dataclass(frozen=True)
class Mount:
    host: Path
    container: str
    read_only: bool = True


@dataclass
class ContainerLayout:
    """The script's argv and paths as the container sees them, and the mounts that make them so."""

    argv: list[str]
    data: dict[str, str]  # data name -> folder in the container
    outputs: str | None  # the outputs folder in the container
    mounts: list[Mount] = field(default_factory=list)

    def volumes(self) -> list[str]:
        """The mounts in the Docker SDK's ``volumes=`` list form (``host:container:mode``; a list, so
        that one host folder may be mounted at two places)."""
        return [f"{m.host}:{m.container}:{'ro' if m.read_only else 'rw'}" for m in self.mounts]


def script_file(spec: Any) -> Path | None:
    """The script file the entrypoint names (absolute after resolving), if it names one."""
    from gpuops.experiments.spec import script_file_index

    idx = script_file_index(list(spec.entrypoint))
    if idx is None:
        return None
    p = Path(spec.entrypoint[idx])
    return p if p.is_absolute() and p.is_file() else None


def snapshot_code(script: Path, dest: Path) -> Path:
    """A copy, under ``dest``, of the source-like files of the script's folder (the files
    ``gpuops.scripts.runner.code_files`` would log), readable by everyone: the image's user (uid
    1000) may not be able to read the user's own folder (a home folder of mode 0750, a temp folder
    of 0700), and what runs is then exactly what is logged. Returns the copy's folder."""
    import shutil

    from gpuops.scripts.runner import code_files

    dest.mkdir(parents=True, exist_ok=True)
    folder = script.parent
    files = [(script, "")] + [(f, "") for f, _ in code_files([str(folder)])]
    for f, _ in files:
        rel = f.relative_to(folder) if f.is_relative_to(folder) else Path(f.name)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(f, target)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def container_layout(spec: Any, work_host: Path, code_host: Path | None = None) -> ContainerLayout:
    """The layout of a resolved ``ScriptExperiment`` (its script and data paths absolute on this host)
    whose working folder is ``work_host`` on the host. The script file named in the entrypoint is
    mapped into ``CODE_DIR``, which mounts ``code_host`` (a ``snapshot_code`` copy) or else the
    script's own folder; the placeholders get the container's paths."""
    from gpuops.experiments.spec import script_file_index

    mounts = [Mount(work_host, WORK_DIR, read_only=False)]
    data: dict[str, str] = {}
    for name, folder in spec.data.items():
        inside = posixpath.join(DATA_ROOT, name)
        data[name] = inside
        mounts.append(Mount(Path(folder), inside))
    outputs = posixpath.join(WORK_DIR, spec.outputs) if spec.outputs else None
    raw = list(spec.entrypoint)
    argv = fill_argv(raw, params=spec.params, data=data, outputs=outputs, seed=spec.seed)
    idx = script_file_index(raw)
    if idx is not None and Path(raw[idx]).is_absolute() and Path(raw[idx]).is_file():
        script = Path(raw[idx])
        mounts.append(Mount(code_host or script.parent, CODE_DIR))
        argv[idx] = posixpath.join(CODE_DIR, script.name)
    return ContainerLayout(argv=argv, data=data, outputs=outputs, mounts=mounts)
