"""Running a ``task: script`` on this machine: the trainer side of the local target.

``run_script_worker`` is what ``python -m gpuops.train.worker`` does for a script spec (the parent,
``gpuops run``, has created and tagged the MLflow run already). It

* logs the script's source files (``code/``), then makes or reuses the ``env:`` venv
  (``gpuops.scripts.venv``) and starts the script in a fresh working folder, in a process group of
  its own, with ``MLFLOW_TRACKING_URI``/``MLFLOW_RUN_ID``/``MLFLOW_EXPERIMENT_ID`` set (so that
  ``mlflow.autolog()`` or ``mlflow.log_metric`` in the script log into gpuops's run), its data folders
  and outputs folder as placeholders and ``GPUOPS_DATA_*``/``GPUOPS_OUTPUTS``;
* tees its stdout and stderr, line by line, to the trainer log and to ``logs/stdout.txt`` and
  ``logs/stderr.txt`` (artifacts), reads metrics out of them by the spec's patterns and logs them,
  and emits the progress events ``gpuops run`` shows;
* passes a Ctrl-C, SIGTERM or SIGHUP on to the script (then SIGTERM, then SIGKILL if it does not
  stop) and ends the run KILLED; a non-zero exit is FAILED with the end of stderr in ``gpuops.error``;
* logs the outputs folder (``outputs/``) in every case.

What does not depend on running locally (argv, environment, output lines to metrics, exit code to
status) is in ``gpuops.scripts.supervise`` for the other targets.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from gpuops.scripts.supervise import LineTail, MetricPoint, Outcome, OutputMetrics, exit_outcome, fill_argv
from gpuops.train.events import Events

# After passing a Ctrl-C on, how long the script gets before SIGTERM, and then before SIGKILL. Both
# together stay under the 30 s that ``LocalTarget.stop`` waits before it signals the trainer again.
STOP_GRACE = 12.0
TERM_GRACE = 5.0
# After a SIGTERM/SIGHUP the trainer itself has ``gpuops.train.worker.STOP_DEADLINE_S`` (7 s, then
# SIGALRM ends it): the script gets this long before SIGKILL, so that the run is still ended KILLED.
TERM_STOP_GRACE = 3.0
METRIC_FLUSH_SECONDS = 1.0
PIPE_GRACE = 5.0
MAX_PATTERN_LINE = 10_000  # the patterns see this much of a line (a progress bar redrawn with \r is one line)
MAX_CODE_FILES = 200
MAX_CODE_BYTES = 2_000_000
CODE_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".json", ".toml", ".cfg", ".txt", ".md", ".ipynb"}
_WORKER_ONLY_ENV = ("GPUOPS_PARENT_PID", "GPUOPS_JOBDIR")


EventWriter = Events  # the trainer's progress events (gpuops.train.events), torch-free


def absolute_tracking_uri(uri: str, cwd: Path) -> str:
    """The script runs in another folder: a relative ``sqlite:///x.db`` or plain path URI is made
    absolute against ``cwd`` so that it names the same store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rest = uri[len("sqlite:///"):]
        path, sep, query = rest.partition("?")
        if path and path != ":memory:":
            return f"sqlite:///{(cwd / path).resolve()}{sep}{query}"
        return uri
    if "://" not in uri and not uri.startswith("/"):
        return str((cwd / uri).resolve())
    if uri.startswith("file:") and not uri.startswith(("file:/", "file://")):
        return "file://" + str((cwd / uri[len("file:"):]).resolve())
    return uri


def code_files(items: list[str]) -> list[tuple[Path, str]]:
    """(file, artifact folder) for the script's sources: each file, and the source-like files of each
    folder (recursively, without hidden and ``__pycache__`` folders), at most ``MAX_CODE_FILES``."""
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for item in items:
        p = Path(item)
        if p.is_file():
            candidates = [(p, "code")]
        elif p.is_dir():
            candidates = []
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                    continue
                if f.is_file() and f.suffix.lower() in CODE_SUFFIXES:
                    candidates.append((f, "/".join(("code", p.name, *rel.parts[:-1]))))
        else:
            continue
        for f, folder in candidates:
            real = f.resolve()
            if real in seen or f.stat().st_size > MAX_CODE_BYTES:
                continue
            seen.add(real)
            out.append((f, folder))
            if len(out) >= MAX_CODE_FILES:
                return out
    return out


def _pump(stream: IO[bytes], name: str, q: queue.Queue[tuple[str, str | None]]) -> None:
    """Read one of the script's pipes line by line into ``q``; ``(name, None)`` at its end."""
    try:
        for raw in iter(stream.readline, b""):
            q.put((name, raw.decode("utf-8", errors="replace")))
    finally:
        q.put((name, None))


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class ScriptOutput:
    """Where a script's output lines go, wherever the script runs: ``line("stdout"|"stderr", text)``
    writes the line to ``logs/<stream>.txt`` under ``folder`` and to ``log`` (the trainer log),
    keeps the end of stderr, reads metrics by the spec's patterns, logs them to the run in batches
    and emits the progress events. ``flush()`` now and then, ``close()`` at the end, then
    ``log_logs()`` to log the two files as artifacts. The docker target feeds it the container's
    log lines."""

    def __init__(self, metric_specs: Any, tracker: Any, events: EventWriter, folder: Path,
                 log: Callable[[str, str], None]) -> None:
        self.tracker = tracker
        self.events = events
        self.log = log
        self.metrics = OutputMetrics(metric_specs)
        self.tail = LineTail()
        self.pending: list[MetricPoint] = []
        self.last_flush = time.monotonic()
        self.paths = {"stdout": folder / "logs" / "stdout.txt", "stderr": folder / "logs" / "stderr.txt"}
        for path in self.paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[str]] = {
            n: open(path, "w", encoding="utf-8") for n, path in self.paths.items()}  # noqa: SIM115

    def line(self, stream: str, line: str) -> None:
        f = self._files.get(stream)
        if f is not None and not f.closed:
            f.write(line)
            f.flush()
        self.log(stream, line)
        if stream == "stderr":
            self.tail.add(line)
        points = self.metrics.feed(line[:MAX_PATTERN_LINE])
        if points:
            self.pending.extend(pt for pt in points if pt.log)
            for ev in OutputMetrics.events(points):
                kind = ev.pop("event")
                self.events.emit(kind, **ev)
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Log the metrics read so far (one batch; MLflow takes up to 1,000 metrics in one)."""
        if not self.pending or (not force and time.monotonic() - self.last_flush < METRIC_FLUSH_SECONDS):
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        for i in range(0, len(batch), 1000):
            chunk = [Metric(p.name, p.value, now, p.step) for p in batch[i:i + 1000]]
            try:
                self.tracker.client.log_batch(self.tracker.run_id, metrics=chunk)
            except Exception as e:  # a metric the store refuses must not stop the script
                self.log("stderr", f"gpuops: could not log {len(chunk)} metric value(s): {type(e).__name__}: "
                         f"{str(e)[:200]}\n")

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self.flush(force=True)

    def log_logs(self) -> None:
        from gpuops.tracking.tracker import redact_text

        for name, path in self.paths.items():
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                self.tracker.log_text(redact_text(text[-20_000_000:]), f"logs/{name}.txt")


class ScriptSupervisor:
    """One script run: start, follow, stop. ``log`` writes a line to the trainer log."""

    def __init__(self, resolved: Any, tracker: Any, events: EventWriter, workdir: Path,
                 log: Callable[[str, str], None], resume: bool = False) -> None:
        self.resume = resume
        self.resolved = resolved
        self.spec = resolved.spec
        self.tracker = tracker
        self.events = events
        self.workdir = workdir
        self.log = log
        self.output: ScriptOutput | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped_by: str | None = None
        self.outputs = (workdir / self.spec.outputs) if self.spec.outputs else None
        self.began = time.monotonic()

    # -- set-up -----------------------------------------------------------------------------
    def python(self) -> str:
        if self.spec.env is None:
            return sys.executable
        from gpuops.envs import load_environment
        from gpuops.scripts.venv import ensure_venv, framework_pins

        python = str(ensure_venv(self.spec.env, lambda line: self.log("stdout", line + "\n")))
        with contextlib.suppress(Exception):  # the host's fingerprint (env.*) is not the venv's
            pins = framework_pins(load_environment(Path(self.spec.env)))
            self.tracker.set_tags({"gpuops.script.framework": " ".join(pins)})
        return python

    def command(self, python: str) -> list[str]:
        from gpuops.experiments.spec import PYTHON_NAMES

        argv = fill_argv(self.spec.entrypoint, params=self.spec.params, data=self.spec.data,
                         outputs=str(self.outputs) if self.outputs else None, seed=self.spec.seed)
        if PYTHON_NAMES.match(argv[0]):
            argv[0] = python
        return argv

    def environment(self, python: str) -> dict[str, str]:
        from gpuops.scripts.supervise import script_environment

        tr = self.tracker
        uri = absolute_tracking_uri(tr.tracking_uri, Path.cwd())
        exp_id = tr.client.get_run(tr.run_id).info.experiment_id
        env = {k: v for k, v in os.environ.items() if k not in _WORKER_ONLY_ENV}
        outputs = str(self.outputs) if self.outputs else None
        env.update(script_environment(tracking_uri=uri, run_id=tr.run_id, experiment_id=str(exp_id),
                                      data=self.spec.data, outputs=outputs, params=self.spec.params,
                                      seed=self.spec.seed, device=self.spec.resources.device,
                                      threads=self.spec.resources.threads, resume=self.resume))
        if self.spec.env is not None:  # the venv's tools first, as `activate` would put them
            bin_dir = str(Path(python).parent)
            env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
            env["VIRTUAL_ENV"] = str(Path(python).parent.parent)
            env.pop("PYTHONHOME", None)
        return env

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> Outcome:
        from gpuops.tracking.procs import child_dies_with_parent
        from gpuops.tracking.tracker import redact_text

        self.log_code()
        python = self.python()
        argv = self.command(python)
        env = self.environment(python)
        if self.outputs is not None:
            self.outputs.mkdir(parents=True, exist_ok=True)
        self.output = out = ScriptOutput(self.spec.metrics, self.tracker, self.events, self.workdir, self.log)
        self.tracker.set_tags({
            "gpuops.script.command": redact_text(json.dumps(argv)),
            "gpuops.script.python": python,
            "gpuops.script.env": Path(self.spec.env).stem if self.spec.env else "(this interpreter)",
            "gpuops.device": self.spec.resources.device,
        })
        self.events.emit("start", total=None, start=0, run_id=self.tracker.run_id,
                         device=self.spec.resources.device)
        q: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.proc = proc = subprocess.Popen(argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            start_new_session=True, preexec_fn=child_dies_with_parent())
        assert proc.stdout is not None and proc.stderr is not None
        threads = [threading.Thread(target=_pump, args=(s, n, q), daemon=True)
                   for s, n in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
        for t in threads:
            t.start()
        try:
            try:
                self.tracker.set_tags({"gpuops.script.pid": str(proc.pid)})
                self._follow(q, proc, out)
            except KeyboardInterrupt as e:
                self.stopped_by = str(e) if str(e) in ("SIGTERM", "SIGHUP") else "SIGINT"
                self._stop(proc, getattr(signal, self.stopped_by))
            rc = proc.wait()
            _signal_group(proc, signal.SIGKILL)  # what it left behind in its group (loader workers)
            for t in threads:
                t.join(timeout=5)
            self._drain(q, out)
        finally:
            out.close()
        self.tracker.set_tags({"gpuops.script.exit_code": str(rc)})
        return exit_outcome(rc, stopped_by=self.stopped_by, stderr_tail=out.tail.text())

    @staticmethod
    def _follow(q: queue.Queue[tuple[str, str | None]], proc: subprocess.Popen[bytes],
                out: ScriptOutput) -> None:
        """Until both pipes close; or, once the script has exited, until a process it left in
        the background (which holds the pipes open) has had ``PIPE_GRACE`` seconds."""
        open_streams = 2
        exited_at: float | None = None
        while open_streams:
            try:
                name, line = q.get(timeout=0.2)
            except queue.Empty:
                out.flush()
                if proc.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > PIPE_GRACE:
                        return
                continue
            if line is None:
                open_streams -= 1
                continue
            out.line(name, line)

    @staticmethod
    def _drain(q: queue.Queue[tuple[str, str | None]], out: ScriptOutput) -> None:
        while True:
            try:
                name, line = q.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                out.line(name, line)

    def _stop(self, proc: subprocess.Popen[bytes], sig: int) -> None:
        """Pass the stop on to the script's process group, then SIGTERM, then SIGKILL. Another
        Ctrl-C or SIGTERM meanwhile goes straight to the next step. After SIGTERM/SIGHUP (the
        trainer's own deadline is running) the script gets ``TERM_STOP_GRACE``, then SIGKILL."""
        if sig == signal.SIGINT:
            steps = [(sig, STOP_GRACE), (signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 10.0)]
        else:
            steps = [(sig, TERM_STOP_GRACE), (signal.SIGKILL, 1.0)]
        for step_sig, grace in steps:
            if proc.poll() is not None:
                return
            _signal_group(proc, step_sig)
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
            except KeyboardInterrupt:
                continue

    # -- artifacts --------------------------------------------------------------------------
    def log_code(self) -> None:
        from gpuops.experiments.spec import script_file_index

        items: list[str] = []
        idx = script_file_index(self.spec.entrypoint)
        if idx is not None and Path(self.spec.entrypoint[idx]).is_file():
            items.append(self.spec.entrypoint[idx])
        items += list(self.spec.code)
        for f, folder in code_files(items):
            self.tracker.log_artifact(f, folder)

    def log_results(self) -> None:
        if self.output is not None:
            self.output.log_logs()
        if self.outputs is not None and self.outputs.is_dir() and any(self.outputs.iterdir()):
            self.tracker.client.log_artifacts(self.tracker.run_id, str(self.outputs), "outputs")

    def summary(self) -> dict[str, Any]:
        try:
            metrics = dict(self.tracker.client.get_run(self.tracker.run_id).data.metrics)
        except Exception:
            metrics = dict(self.output.metrics.last) if self.output else {}
        last_step = self.output.metrics.last_step if self.output else 0
        return {"metrics": metrics, "iterations": last_step or None, "start": 0,
                "seconds": round(time.monotonic() - self.began, 3)}


def _trainer_log(name: str, line: str) -> None:
    """The worker's stdout and stderr are the trainer log (``LocalTarget`` sends both to one file)."""
    out = sys.stderr if name == "stderr" else sys.stdout
    out.write(line)
    out.flush()


def run_script_worker(resolved_doc: dict[str, Any], run_id: str | None, tracking_uri: str | None,
                      events_path: str | None = None, *, resume: bool = False,
                      log: Callable[[str, str], None] = _trainer_log) -> int:
    """Run one resolved script experiment into run ``run_id``; return the trainer's exit code
    (0 FINISHED, 1 FAILED, 130 KILLED). Always ends the run. ``resume`` (``gpuops run --resume``)
    starts the script again into the same run with ``GPUOPS_RESUME=1``: continuing from its own
    checkpoint is the script's business."""
    from gpuops.experiments.spec import resolved_from_dict
    from gpuops.tracking.tracker import Tracker

    resolved = resolved_from_dict(resolved_doc)
    tracker = Tracker(tracking_uri)
    if run_id:
        tracker.start(run_id=run_id)
    else:
        tracker.start(resolved.experiment_name)
    events = EventWriter(events_path)
    outcome = Outcome("FAILED", 1, "the script did not start")
    workdir = Path(tempfile.mkdtemp(prefix="gpuops-script-"))
    sup = ScriptSupervisor(resolved, tracker, events, workdir, log, resume=resume)
    monitor = _system_metrics(resolved.spec, tracker)
    try:
        outcome = sup.run()
    except KeyboardInterrupt as e:  # before the script started (making the venv, say)
        why = str(e) or "SIGINT"
        outcome = Outcome("KILLED", 130, f"interrupted ({why}) before the script started")
    except BaseException as e:
        from gpuops.errors import GpuopsError

        text = str(e) if isinstance(e, GpuopsError) else "".join(traceback.format_exception(e))
        outcome = Outcome("FAILED", 1, f"the script could not be run: {text}")
        events.emit("error", message=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.finish()
        # A stopped run gets its status first (the trainer may have seconds left, see _stop), then
        # its logs and outputs (MLflow takes artifacts on an ended run); the others the other way round.
        killed = outcome.status == "KILLED"
        for attempt in range(2):  # a second Ctrl-C here must not leave the run RUNNING
            try:
                if attempt == 0:
                    if not killed:
                        with contextlib.suppress(Exception):
                            sup.log_results()
                    doc = sup.summary()
                    if outcome.status == "FINISHED":
                        events.emit("summary", **doc)
                    elif outcome.error:
                        events.emit("error", message=outcome.error)
                tracker.finish(outcome.status, outcome.error)
                if killed:
                    with contextlib.suppress(Exception):
                        sup.log_results()
                break
            except KeyboardInterrupt:
                continue
            except Exception:  # the parent marks the run when this could not
                break
        events.emit("end", status=outcome.status)
        events.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return outcome.exit_code


def _system_metrics(spec: Any, tracker: Any) -> Any:
    """MLflow's system metrics (CPU, memory, GPU through NVML) from this side, as the built-in
    trainer logs them: on when asked, or by default when an NVIDIA GPU answers."""
    want = spec.tracking.system_metrics
    if want is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            pynvml.nvmlShutdown()
            want = spec.resources.device != "cpu"
        except Exception:
            want = False
    if not want:
        return None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        mon = SystemMetricsMonitor(tracker.run_id, sampling_interval=5, samples_before_logging=1,
                                   tracking_uri=tracker.tracking_uri)
        mon.start()
        return mon
    except Exception:
        return None
