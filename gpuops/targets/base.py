"""What every target shares: the typed launch request, the plan, the run handle.

A target runs a resolved experiment somewhere: ``local`` (a child process on this machine),
``docker`` (in the environment's image), ``aws`` (on an EC2 GPU instance that shuts itself down).
``gpuops run`` makes the same calls for each (``gpuops.launch``):

1. ``target.plan(request) -> LaunchPlan``: read-only checks, and what the launch will do (rows to
   show; ``consent`` when it costs money and must be confirmed first);
2. ``target.launch(plan) -> RunHandle``: the MLflow run is created (``tracking.runs.prepare_run``, the
   same experiment rule and tags for every target) and the work started;
3. the handle, modelled on MLflow Projects' ``SubmittedRun``: ``events()`` while it runs, ``wait()``
   for the outcome, ``status()``, ``logs()``, ``stop()``, ``interrupt()`` for Ctrl-C, ``close()``.

No target reads the spec file: the request carries the validated, resolved experiment, and its
options are a typed model per target. Implementations import their heavy clients lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from gpuops.experiments.spec import ResolvedExperiment


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    UNKNOWN = "unknown"


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalOptions(_Options):
    kind: Literal["local"] = "local"


class DockerOptions(_Options):
    """``--target docker``: which environment's image, and the build inputs that find it."""

    kind: Literal["docker"] = "docker"
    env: str = "pytorch"
    image: str | None = None  # an existing image to run in, as given (no build)
    env_dir: Path = Path("environments")
    base_image: str | None = None  # build inputs: GPUOPS_BASE_IMAGE / _WHEELHOUSE / _CA_CERT otherwise
    wheelhouse: Path | None = None
    ca_cert: Path | None = None
    allow_untested: bool = False


class AwsOptions(_Options):
    """``--target aws``: the instance and its limits."""

    kind: Literal["aws"] = "aws"
    env: str | None = None
    instance_type: str = "g5.xlarge"
    spot: bool = False
    max_hours: float = 4.0  # checked by the plan: more than 0, at most 168
    region: str | None = None
    ami: str | None = None
    image: str | None = None
    bucket: str | None = None
    instance_profile: str = "gpuops-instance"
    detach: bool = False  # return once launched instead of following the log


class RayOptions(_Options):
    """``--target ray``: the cluster (``--ray-address``, else ``RAY_ADDRESS``, else a Ray instance
    started on this machine for the command), the GPUs each trial holds (None: the spec's
    ``resources.gpus``; fractions share a GPU), and how often a failed trial is tried again."""

    kind: Literal["ray"] = "ray"
    address: str | None = None
    gpus_per_trial: float | None = None
    max_failures: int = 1
    dashboard: str | None = None  # the Jobs API's address (http://HEAD:8265): with it, the run is a job
    gpuops_cmd: str = "gpuops"  # how the cluster's nodes start gpuops (a job's entrypoint)

    @property
    def detach(self) -> bool:
        """A job on a shared cluster is submitted and left to run (gpuops ps/logs/stop --target ray)."""
        return self.dashboard is not None


TargetOptions = LocalOptions | DockerOptions | AwsOptions | RayOptions


@dataclass
class LaunchRequest:
    """One run to start: the resolved experiment, where, and how it is tracked."""

    resolved: ResolvedExperiment
    options: TargetOptions = field(default_factory=LocalOptions)
    tracking_uri: str | None = None
    run_id: str | None = None  # an existing MLflow run to log into (--run-id, or the one resumed)
    resume: bool = False  # continue ``run_id`` from its last checkpoint
    parent_run_id: str | None = None  # a sweep's parent run
    tags: dict[str, str] = field(default_factory=dict)  # extra run tags (gpuops.reproduces=...)

    @property
    def target(self) -> str:
        return self.options.kind


@dataclass
class LaunchPlan:
    """What ``launch`` will do, for the user to see first. ``consent``: a question that must be
    answered yes (or ``--yes``) before launching, because it costs money."""

    request: LaunchRequest
    rows: list[tuple[str, str]] = field(default_factory=list)
    consent: str | None = None
    detail: Any = None  # the target's own plan (AwsPlan), for its launch and for --json
    doc: dict[str, Any] = field(default_factory=dict)  # the plan for --json output


EventKind = Literal["start", "progress", "eval", "log", "summary", "error"]


@dataclass(frozen=True)
class RunEvent:
    """Something a running job reported: the trainer's progress events (local), or one line of a
    container's or instance's log (``log``)."""

    kind: EventKind
    it: int | None = None
    total: int | None = None
    start: int | None = None
    device: str | None = None
    loss: float | None = None
    throughput: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    text: str | None = None  # a log line, or an error message
    iterations: int | None = None
    seconds: float | None = None

    @classmethod
    def from_trainer(cls, ev: dict[str, Any]) -> RunEvent | None:
        """A JSON line from ``gpuops.train.worker``'s events file; None for kinds not shown."""
        kind = ev.get("event")
        if kind == "start":
            return cls("start", total=ev.get("total"), start=ev.get("start"), device=ev.get("device"))
        if kind == "progress":
            return cls("progress", it=ev.get("it"), total=ev.get("total"), loss=ev.get("loss"),
                       throughput=ev.get("throughput"))
        if kind == "eval":
            return cls("eval", metrics=dict(ev.get("metrics") or {}))
        if kind == "summary":
            return cls("summary", metrics=dict(ev.get("metrics") or {}), iterations=ev.get("iterations"),
                       start=ev.get("start"), seconds=ev.get("seconds"))
        if kind == "error":
            return cls("error", text=str(ev.get("message") or ""))
        return None


@dataclass
class RunOutcome:
    """How a run ended: its MLflow status (FINISHED, FAILED, KILLED; RUNNING when detached or
    still going) and the exit code ``gpuops run`` gives for it."""

    status: str
    exit_code: int
    state: JobState = JobState.UNKNOWN
    error: str | None = None


@dataclass
class Job:
    """Where a launched run lives: pid, container id or instance id, and target details."""

    target: str
    job_id: str
    run_id: str | None = None
    details: dict[str, object] = field(default_factory=dict)


class RunHandle(Protocol):
    job: Job
    run_id: str
    tracking_uri: str
    experiment: str

    def events(self) -> Iterator[RunEvent]: ...

    def wait(self) -> RunOutcome: ...

    def status(self) -> JobState: ...

    def logs(self, follow: bool = False) -> Iterator[str]: ...

    def stop(self, reason: str = "stopped by gpuops") -> None: ...

    def interrupt(self, *, signalled: bool, reason: str) -> RunOutcome: ...

    def close(self) -> None: ...


def data_folders(resolved: ResolvedExperiment) -> list[Path]:
    """The existing folders a resolved experiment reads its data from (absolute after resolving)."""
    data = resolved.spec.data
    values = data.values() if isinstance(data, dict) else dict(data).values()
    return sorted({Path(v).resolve() for v in values
                   if isinstance(v, str) and Path(v).is_absolute() and Path(v).is_dir()})


class Target(Protocol):
    name: str

    def plan(self, request: LaunchRequest) -> LaunchPlan: ...

    def launch(self, plan: LaunchPlan) -> RunHandle: ...
