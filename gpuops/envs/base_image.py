"""Which base image an environment starts FROM when its spec names none.

The tag table is data (``gpuops/templates/base_images.yaml``, with its sources and the choice
rule); this module only reads it and applies the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from gpuops.envs import EnvSpec
from gpuops.errors import SpecError


@dataclass(frozen=True)
class BaseChoice:
    image: str
    os: str | None  # "ubuntu24.04", "debian12"; None when the user gave the image
    os_python: str | None  # the OS's own python3 ("3.12"); None when unknown
    reason: str


@lru_cache(maxsize=1)
def base_table() -> dict[str, Any]:
    import yaml

    text = resources.files("gpuops.templates").joinpath("base_images.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _major_minor(v: str) -> str:
    return ".".join(v.split(".")[:2])


def choose_base_image(spec: EnvSpec, override: str | None = None) -> BaseChoice:
    table = base_table()
    os_python: dict[str, str] = table["os_python"]
    if override or spec.base_image:
        image = override or spec.base_image or ""
        return BaseChoice(image, None, None, "given by --base-image" if override else "given in the spec")
    if spec.cuda is None:
        for row in table["cpu_images"]:
            if os_python.get(row["os"]) == spec.python:
                return BaseChoice(row["image"], row["os"], spec.python,
                                  f"CPU env: {row['os']} ships python{spec.python}")
        raise SpecError(spec.path or spec.name, "python",
                        f"a Python that a known CPU base image ships ({sorted(set(os_python.values()))}),"
                        " or base_image: set in the spec", spec.python)
    cudnn_major = spec.cudnn.split(".")[0] if spec.cudnn else None
    rows = [r for r in table["cuda_images"] if r["cuda"] == _major_minor(spec.cuda)
            and (cudnn_major is None or r["cudnn_major"] == cudnn_major)]
    for row in rows:
        if os_python.get(row["os"]) == spec.python:
            return BaseChoice(row["image"], row["os"], spec.python,
                              f"CUDA {row['cuda']} + cuDNN {row['cudnn_major']} runtime on {row['os']}, "
                              f"whose python3 is {spec.python} ({table['kb_source']})")
    have = ", ".join(f"{r['image']} (python {os_python.get(r['os'])})" for r in rows) or "none"
    raise SpecError(spec.path or spec.name, "base_image",
                    f"a base image for CUDA {spec.cuda}/cuDNN {cudnn_major} with python {spec.python} "
                    f"(known: {have}); set base_image: in the spec or pass --base-image")
