"""Where an experiment runs. Each target has the same fixed verbs (see ``base.Target``).

``get_target(name)`` imports the implementation lazily, so that docker/boto3 are only loaded
when their target is used.
"""

from __future__ import annotations

import importlib

from gpuops.errors import UsageError
from gpuops.targets.base import Target

_TARGETS = {
    "local": ("gpuops.targets.local", "LocalTarget"),
    "docker": ("gpuops.targets.docker", "DockerTarget"),
    "aws": ("gpuops.targets.aws", "AwsTarget"),
    "ray": ("gpuops.targets.ray", "RayTarget"),
}

TARGET_NAMES = tuple(_TARGETS)


def get_target(name: str) -> Target:
    try:
        module_name, cls_name = _TARGETS[name]
    except KeyError:
        raise UsageError(f"unknown target {name!r}: expected one of {', '.join(_TARGETS)}") from None
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)()
