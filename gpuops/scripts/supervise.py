"""Supervising a user's training script from the outside: its argv, its environment variables, its
output lines and its exit code. Nothing here imports MLflow, torch or the script's framework.

This is the part of ``task: script`` that does not care where the script runs: the local target
runs the script as a child process (``gpuops.scripts.runner``); the docker and aws targets run it
in the environment's image, where gpuops is not installed (its Python may be 3.8), and supervise it
on the host from the container's log lines and exit code with these same functions:

    argv = fill_argv(spec.entrypoint, params=spec.params, data=container_data, outputs=..., seed=spec.seed)
    env = script_environment(tracking_uri=..., run_id=..., experiment_id=..., data=..., outputs=..., ...)
    metrics = OutputMetrics(spec.metrics)      # then, for every output line:
    for point in metrics.feed(line): ...       #   MetricPoint(name, value, step) to log
    for event in metrics.events(points): ...   #   progress/eval events for ``gpuops run``
    tail = LineTail()                          # tail.add(stderr_line)
    outcome = exit_outcome(returncode, stopped_by=None or "SIGINT", stderr_tail=tail.text())
    # outcome.status (FINISHED / KILLED / FAILED), outcome.exit_code (0 / 130 / 1), outcome.error
"""

from __future__ import annotations

import json
import math
import re
import signal
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# What the script finds in its environment, beside MLflow's own variables.
DATA_ENV_PREFIX = "GPUOPS_DATA_"  # GPUOPS_DATA_TRAIN=/path/to/T91 for data: {train: ...}
OUTPUTS_ENV = "GPUOPS_OUTPUTS"
PARAMS_ENV = "GPUOPS_PARAMS"  # the params as one JSON object
SEED_ENV = "GPUOPS_SEED"
RESUME_ENV = "GPUOPS_RESUME"  # "1" under `gpuops run --resume`: the script may continue from its checkpoint
RUN_ID_ENV = "MLFLOW_RUN_ID"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ID_ENV = "MLFLOW_EXPERIMENT_ID"

STDERR_TAIL_LINES = 30

_PLACEHOLDER = re.compile(r"\{(params|data)\.([A-Za-z_][A-Za-z0-9_]*)\}|\{(outputs|seed)\}")


# --------------------------------------------------------------------------- argv and environment
def format_param(value: Any) -> str:
    """A parameter as it goes into argv: ``true``/``false`` for booleans (YAML's spelling), floats
    as Python prints them (``0.001``), the rest as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fill_argv(argv: Iterable[str], *, params: Mapping[str, Any], data: Mapping[str, str],
              outputs: str | None, seed: int) -> list[str]:
    """``argv`` with ``{params.x}``, ``{data.x}``, ``{outputs}`` and ``{seed}`` replaced. Other
    braces are left alone. A placeholder with no value is a ``KeyError`` (the spec loader has
    already refused those, with the file and field)."""

    def sub(m: re.Match[str]) -> str:
        kind = m.group(1) or m.group(3)
        if kind == "params":
            return format_param(params[m.group(2)])
        if kind == "data":
            return str(data[m.group(2)])
        if kind == "outputs":
            if outputs is None:
                raise KeyError("outputs")
            return outputs
        return str(seed)

    return [_PLACEHOLDER.sub(sub, arg) for arg in argv]


def script_environment(*, tracking_uri: str, run_id: str, experiment_id: str, data: Mapping[str, str],
                       outputs: str | None, params: Mapping[str, Any], seed: int,
                       device: str = "auto", threads: int | None = None,
                       resume: bool = False) -> dict[str, str]:
    """The variables gpuops adds to the script's environment. With ``MLFLOW_RUN_ID`` set,
    ``mlflow.start_run()`` (and ``mlflow.autolog()``, ``mlflow.log_metric``) in the script attach to
    gpuops's run instead of making a new one. ``device == "cpu"`` hides the GPUs
    (``CUDA_VISIBLE_DEVICES`` empty); ``threads`` caps the usual thread-pool variables."""
    env = {
        TRACKING_URI_ENV: tracking_uri,
        RUN_ID_ENV: run_id,
        EXPERIMENT_ID_ENV: experiment_id,
        PARAMS_ENV: json.dumps(dict(params), sort_keys=True),
        SEED_ENV: str(seed),
        "PYTHONUNBUFFERED": "1",  # lines as they are printed, not when a buffer fills
    }
    if outputs is not None:
        env[OUTPUTS_ENV] = outputs
    if resume:
        env[RESUME_ENV] = "1"
    for name, folder in data.items():
        env[DATA_ENV_PREFIX + name.upper()] = str(folder)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            env[var] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


# --------------------------------------------------------------------------- output lines -> metrics
@dataclass(frozen=True)
class MetricPoint:
    name: str
    value: float
    step: int
    log: bool = True  # False: shown as progress only; the script logs the metric itself


@dataclass(frozen=True)
class MetricRule:
    name: str
    pattern: re.Pattern[str]
    log: bool = True

    @classmethod
    def of(cls, spec: Any) -> MetricRule:
        """From a ``MetricPatternSpec``, a ``{"name": ..., "regex": ..., "log": ...}`` mapping or a
        ``(name, regex)`` pair."""
        if isinstance(spec, Mapping):
            name, regex, log = spec["name"], spec["regex"], spec.get("log", True)
        elif isinstance(spec, tuple):
            (name, regex), log = spec, True
        else:
            name, regex, log = spec.name, spec.regex, getattr(spec, "log", True)
        return cls(str(name), re.compile(str(regex)), bool(log))

    def match(self, line: str) -> tuple[float, int | None] | None:
        m = self.pattern.search(line)
        if m is None:
            return None
        raw = m.group("value") if "value" in self.pattern.groupindex else m.group(1)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return None
        step: int | None = None
        if "step" in self.pattern.groupindex and m.group("step") is not None:
            try:
                step = int(float(m.group("step")))
            except ValueError:
                step = None
        return value, step


@dataclass
class OutputMetrics:
    """Reads metrics out of output lines by the spec's patterns. One line may give several
    metrics (one per pattern that matches). A pattern without a ``step`` group numbers its own
    matches 1, 2, 3, ...; infinite values are dropped (MLflow refuses them), NaN is kept."""

    rules: list[MetricRule]
    counts: dict[str, int] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    last_step: int = 0

    def __init__(self, specs: Iterable[Any]) -> None:
        self.rules = [MetricRule.of(s) for s in specs]
        self.counts = {}
        self.last = {}
        self.last_step = 0

    def feed(self, line: str) -> list[MetricPoint]:
        points = []
        for rule in self.rules:
            got = rule.match(line)
            if got is None:
                continue
            value, step = got
            if math.isinf(value):
                continue
            self.counts[rule.name] = self.counts.get(rule.name, 0) + 1
            if step is None:
                step = self.counts[rule.name]
            self.last[rule.name] = value
            self.last_step = max(self.last_step, step)
            points.append(MetricPoint(rule.name, value, step, rule.log))
        return points

    @staticmethod
    def events(points: Iterable[MetricPoint]) -> list[dict[str, Any]]:
        """The progress events (``gpuops.train.events.Events`` format, without the time) that
        ``gpuops run`` renders: ``progress`` for a ``train/loss`` value, ``eval`` for ``val/*``."""
        out: list[dict[str, Any]] = []
        vals: dict[str, float] = {}
        step = 0
        throughput = 0.0
        for p in points:
            if p.name == "train/throughput":
                throughput = p.value
        for p in points:
            if p.name == "train/loss":
                out.append({"event": "progress", "it": p.step, "total": None, "loss": p.value,
                            "throughput": throughput})
            elif p.name.startswith("val/"):
                vals[p.name] = p.value
                step = max(step, p.step)
        if vals:
            out.append({"event": "eval", "it": step, "metrics": vals})
        return out


class LineTail:
    """The last ``n`` lines seen (the end of the script's stderr, for ``gpuops.error``)."""

    def __init__(self, n: int = STDERR_TAIL_LINES) -> None:
        self._lines: deque[str] = deque(maxlen=n)

    def add(self, line: str) -> None:
        self._lines.append(line.rstrip("\r\n"))

    def text(self) -> str:
        return "\n".join(self._lines)


# --------------------------------------------------------------------------- exit code -> status
# Exit statuses that mean "stopped by a signal meant to stop it": a Python killed by SIGINT/SIGTERM/
# SIGHUP (negative in subprocess), and the 128+N that shells and containers report for the same.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_CODES = frozenset({130, *(-s for s in _STOP_SIGNALS), *(128 + s for s in _STOP_SIGNALS)})


@dataclass(frozen=True)
class Outcome:
    status: str  # FINISHED, KILLED, FAILED (MLflow run statuses)
    exit_code: int  # what gpuops's trainer exits with: 0, 130, 1
    error: str | None  # for gpuops.error: the first line says what happened


def describe_exit(returncode: int) -> str:
    """``exit code 3``; ``killed by SIGSEGV`` for a negative (signal) status."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def exit_outcome(returncode: int, *, stopped_by: str | None = None, stderr_tail: str = "") -> Outcome:
    """The run's status from the script's exit status. ``stopped_by``: the signal gpuops passed on
    (Ctrl-C, SIGTERM); the run is then KILLED whatever the script exited with. Otherwise 0 is
    FINISHED, a SIGINT/SIGTERM/SIGHUP death (or 130, 143, 129) is KILLED, anything else FAILED with
    the end of stderr."""
    if stopped_by is not None:
        return Outcome("KILLED", 130, f"interrupted ({stopped_by}): the script was stopped "
                                      f"({describe_exit(returncode)})")
    if returncode == 0:
        return Outcome("FINISHED", 0, None)
    if returncode in STOP_CODES:
        return Outcome("KILLED", 130, f"the script was stopped ({describe_exit(returncode)})")
    msg = f"the script failed ({describe_exit(returncode)})"
    if stderr_tail.strip():
        msg += "; the end of its stderr:\n" + stderr_tail
    return Outcome("FAILED", 1, msg)
