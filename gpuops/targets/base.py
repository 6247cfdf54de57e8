"""The ``Target`` interface: launch / status / logs / stop.

A target takes a resolved experiment (spec file + overrides + tracking URI) and runs it
somewhere: ``local`` (a child process on this machine), ``docker`` (in the environment's
image), ``aws`` (on an EC2 GPU instance that shuts itself down). The CLI picks one by name
through ``get_target``; implementations import their heavy clients lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    UNKNOWN = "unknown"


@dataclass
class LaunchRequest:
    spec_path: Path
    overrides: list[str] = field(default_factory=list)  # "train.lr=1e-4" style
    tracking_uri: str | None = None
    run_id: str | None = None  # an MLflow run to log into (resume, or created by the caller)
    smoke: bool = False
    env_name: str | None = None  # environments/<env>.yaml (docker, aws)
    options: dict[str, object] = field(default_factory=dict)  # target-specific (instance type, ...)


@dataclass
class Job:
    target: str
    job_id: str  # pid, container id, instance id
    run_id: str | None = None
    details: dict[str, object] = field(default_factory=dict)


class Target(Protocol):
    name: str

    def launch(self, request: LaunchRequest) -> Job: ...

    def status(self, job: Job) -> JobState: ...

    def logs(self, job: Job, follow: bool = False) -> Iterator[str]: ...

    def stop(self, job: Job) -> None: ...
