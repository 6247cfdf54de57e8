"""Pinned framework environments: ``environments/<name>.yaml`` → ``EnvSpec``.

An environment names one framework build and the stack under it: framework and exact version,
the CUDA variant (``None`` = CPU only), cuDNN, Python, the base image (chosen from a sourced tag
table when not given, see ``gpuops.envs.base_image``), extra pip packages (locked with hashes in
``environments/<name>.lock.txt``) and apt packages.

Public API (other modules code against these names)::

    load_environments(dir: Path) -> list[EnvSpec]          # every *.yaml in dir, sorted by name
    load_environment(name_or_path, dir) -> EnvSpec         # "pytorch" or "path/to/env.yaml"

Loading validates the schema only; ``gpuops.envs.validate.check_env`` checks a spec against the
knowledge base (and refuses known-broken combinations).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gpuops.errors import SpecError, UsageError
from gpuops.specs import load_spec

Framework = Literal["pytorch", "tensorflow", "chainer"]

DEFAULT_ENV_DIR = Path("environments")

_VERSION = re.compile(r"^\d+(\.\d+)*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class EnvSpec(BaseModel):
    """One pinned environment. Versions are strings ("12.10" is not "12.1")."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="environment name; the image is gpuops/<name>:<hash>")
    description: str = ""
    framework: Framework
    framework_version: str = Field(description="exact release, e.g. 2.13.0")
    cuda: str | None = Field(default=None, description="CUDA variant (major.minor); null = CPU only")
    cudnn: str | None = Field(default=None, description="cuDNN the build expects (major.minor or full)")
    python: str = Field(description="Python major.minor inside the image, e.g. 3.11")
    base_image: str | None = Field(default=None, description="FROM image; chosen from the KB when null")
    cupy: str | None = Field(default=None, description="chainer: the CuPy wheel, cupy-cuda110==7.8.0")
    pip: list[str] = Field(default_factory=list, description="extra pip requirements (locked with hashes)")
    apt: list[str] = Field(default_factory=list, description="extra Debian/Ubuntu packages")
    gpu_archs: list[str] = Field(
        default_factory=list,
        description="compute capabilities the image must run on (e.g. ['6.1']); checked against the KB",
    )

    # Where the spec was read from (not part of the file).
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("a lower-case name of letters, digits, '.', '_' or '-'")
        return v

    @field_validator("framework_version", "python")
    @classmethod
    def _version(cls, v: str) -> str:
        v = str(v)
        if not _VERSION.match(v):
            raise ValueError("a dotted version such as 2.13.0")
        return v

    @field_validator("cuda", "cudnn")
    @classmethod
    def _opt_version(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = str(v)
        if v.lower().startswith("cu") and v[2:].isdigit():  # "cu126" -> "12.6"
            digits = v[2:]
            v = f"{digits[:-1]}.{digits[-1]}"
        if not _VERSION.match(v):
            raise ValueError("a dotted version such as 12.6, or null")
        return v

    @field_validator("gpu_archs")
    @classmethod
    def _archs(cls, v: list[str]) -> list[str]:
        out = []
        for a in v:
            a = str(a).lower().removeprefix("sm_")
            if "." not in a and a.isdigit() and len(a) >= 2:
                a = f"{a[:-1]}.{a[-1]}"
            if not _VERSION.match(a):
                raise ValueError("compute capabilities such as '6.1' or 'sm_61'")
            out.append(a)
        return out

    @property
    def is_cpu(self) -> bool:
        return self.cuda is None

    @property
    def cuda_variant(self) -> str:
        """PyTorch's wheel-index name: ``cu126`` or ``cpu``."""
        if self.cuda is None:
            return "cpu"
        major, minor = self.cuda.split(".")[:2]
        return f"cu{major}{minor}"

    @property
    def lock_path(self) -> Path | None:
        if self.path is None:
            return None
        return self.path.with_name(f"{self.name}.lock.txt")


def _read(path: Path) -> EnvSpec:
    from gpuops.specs import read_yaml, validate

    data = read_yaml(path)
    if isinstance(data, dict) and "name" not in data:
        data = {**data, "name": path.stem}
    spec = validate(path, data, EnvSpec)
    if spec.name != path.stem:
        raise SpecError(path, "name", f"the file name {path.stem!r}", spec.name)
    spec.path = path.resolve()
    return spec


def load_environments(dir: Path = DEFAULT_ENV_DIR) -> list[EnvSpec]:
    """Every ``*.yaml`` environment in ``dir``, sorted by name. A missing dir gives ``[]``."""
    d = Path(dir)
    if not d.is_dir():
        return []
    return sorted((_read(p) for p in sorted(d.glob("*.yaml"))), key=lambda s: s.name)


def load_environment(name_or_path: str | Path, dir: Path = DEFAULT_ENV_DIR) -> EnvSpec:
    """An environment by name (``pytorch`` → ``dir/pytorch.yaml``) or by path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.is_file():
        return _read(p)
    candidate = Path(dir) / f"{name_or_path}.yaml"
    if candidate.is_file():
        return _read(candidate)
    known = ", ".join(s.stem for s in sorted(Path(dir).glob("*.yaml"))) or "none"
    raise UsageError(f"unknown environment {str(name_or_path)!r} (in {dir}: {known})")


__all__ = ["DEFAULT_ENV_DIR", "EnvSpec", "Framework", "load_environment", "load_environments", "load_spec"]
