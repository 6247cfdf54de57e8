"""EnvSpec → Dockerfile text, and the content hash that names the image.

``render(spec, ...)`` fills ``gpuops/templates/Dockerfile.in``. ``image_hash(...)`` covers everything
that decides the image's content: the resolved spec, the chosen base image, the lock file, the
template, the wheelhouse's file names, and the gpuops source when gpuops goes into the image. The
tag is ``gpuops/<env>:<first 12 hex digits>``.

gpuops is installed into images whose Python can run it (>= 3.11); the Chainer (3.8) and TensorFlow
(3.10) images get the framework only, and ``gpuops run --target docker`` refuses them.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from packaging.version import Version

from gpuops import __version__
from gpuops.envs import EnvSpec
from gpuops.envs.base_image import BaseChoice, choose_base_image

GPUOPS_MIN_PYTHON = "3.11"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
PYPI_SIMPLE = "https://pypi.org/simple"


def template_text() -> str:
    return resources.files("gpuops.templates").joinpath("Dockerfile.in").read_text(encoding="utf-8")


def installs_gpuops(spec: EnvSpec) -> bool:
    return Version(spec.python) >= Version(GPUOPS_MIN_PYTHON)


def framework_requirements(spec: EnvSpec) -> list[str]:
    """The exact framework pins installed in the image (the KB-checked versions)."""
    v = spec.framework_version
    if spec.framework == "pytorch":
        return [f"torch=={v}+{spec.cuda_variant}"]
    if spec.framework == "tensorflow":
        return [f"tensorflow=={v}"]
    reqs = [f"chainer=={v}"]
    if spec.cupy:
        reqs.append(spec.cupy)
    return reqs


def framework_pip_options(spec: EnvSpec) -> list[str]:
    """pip options of the framework step. Chainer 7.8.1 is a source release whose ``setup.py`` imports
    ``pkg_resources``: pip's isolated build environment gets a current setuptools, which no longer has
    it, so Chainer is built with the setuptools the lock pins (``--no-build-isolation``)."""
    return ["--no-build-isolation"] if spec.framework == "chainer" else []


def index_args(spec: EnvSpec, wheelhouse: bool) -> list[str]:
    """pip index options: PyTorch's own index for its +cuXYZ/+cpu wheels, unless a wheelhouse has them."""
    if spec.framework == "pytorch" and not wheelhouse:
        return ["--index-url", f"{PYTORCH_INDEX}/{spec.cuda_variant}", "--extra-index-url", PYPI_SIMPLE]
    return []


@dataclass
class Rendered:
    dockerfile: str
    base: BaseChoice
    framework_reqs: list[str]
    with_gpuops: bool


def render(spec: EnvSpec, *, base_image: str | None = None, wheelhouse: bool = False,
           extra_labels: dict[str, str] | None = None) -> Rendered:
    """The Dockerfile. ``extra_labels`` (spec hash, versions) are added to its one LABEL instruction;
    the content hash is taken over the text rendered without them."""
    base = choose_base_image(spec, base_image)
    reqs = framework_requirements(spec)
    values = {
        "ENV": spec.name,
        "FRAMEWORK": spec.framework,
        "FRAMEWORK_VERSION": spec.framework_version,
        "CUDA": spec.cuda or "none",
        "CUDNN": spec.cudnn or "none",
        "PYTHON": spec.python,
        "BASE_IMAGE": base.image,
        "BASE_REASON": base.reason,
        "APT": " ".join(shlex.quote(p) for p in spec.apt),
        "INDEX_ARGS": " ".join(shlex.quote(a) for a in index_args(spec, wheelhouse)),
        # the framework's pip options go in front of its pins, so that the other images' text (and
        # hash) stays as it was
        "FRAMEWORK_REQS": " ".join(shlex.quote(r) for r in [*framework_pip_options(spec), *reqs]),
        "EXTRA_LABELS": "".join(f' \\\n      {k}="{v}"' for k, v in sorted((extra_labels or {}).items())),
    }
    text = template_text()
    for key, val in values.items():
        text = text.replace(f"@@{key}@@", val)
    return Rendered(text, base, reqs, installs_gpuops(spec))


@lru_cache(maxsize=1)
def gpuops_source_hash() -> str:
    """sha256 over the gpuops package files (what the wheel in the image is built from)."""
    import gpuops

    root = Path(gpuops.__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts or p.suffix in {".pyc", ".pyo"}:
            continue
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    pyproject = root.parent / "pyproject.toml"
    if pyproject.is_file():
        h.update(pyproject.read_bytes())
    return h.hexdigest()


def image_hash(spec: EnvSpec, rendered: Rendered, lock_text: str, wheel_names: list[str]) -> str:
    doc = {
        "spec": spec.model_dump(mode="json"),
        "base": rendered.base.image,
        "dockerfile": rendered.dockerfile,
        "lock": lock_text,
        "wheelhouse": sorted(wheel_names),
        "gpuops": gpuops_source_hash() if rendered.with_gpuops else None,
        "gpuops_version": __version__,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def image_repo(spec: EnvSpec) -> str:
    return f"gpuops/{spec.name}"
