"""``LocalTarget``: train on this machine, in a child process.

``launch`` creates (or attaches to) the MLflow run in this process, then starts
``python -m gpuops.train.worker`` (through ``python -m torch.distributed.run`` when
``resources.gpus > 1``). The child writes progress events (JSON lines) to a file in the job
folder; ``follow`` reads them while it runs. Whatever happens to the child (a crash, Ctrl-C, a
kill), ``wait`` makes sure the run does not stay RUNNING.

The child stays in the caller's process group, so a Ctrl-C at the terminal reaches both; the
child ends its run as KILLED, and the parent checks. A SIGTERM or SIGHUP of the parent alone is
passed on (``stop``). The child gets SIGTERM from the kernel when the parent dies, even by SIGKILL
(``PR_SET_PDEATHSIG``, set between fork and exec), and ends its run KILLED itself. Its pid, host and
start time are tagged on the run (``gpuops.trainer.*``), so that ``--resume`` refuses a run whose
trainer still lives.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpuops.targets.base import Job, JobState, LaunchRequest

_STATE = {"FINISHED": JobState.SUCCEEDED, "FAILED": JobState.FAILED, "KILLED": JobState.KILLED,
          "RUNNING": JobState.RUNNING, "SCHEDULED": JobState.PENDING}


def worker_command(resolved_file: Path, run_id: str, tracking_uri: str | None, events: Path, *, resume: bool,
                   gpus: int, device: str) -> list[str]:
    """The trainer's command line. ``tracking_uri`` None: the trainer reads ``MLFLOW_TRACKING_URI``
    (used for a URI with a password, which must not show in ``ps``)."""
    args = ["-m", "gpuops.train.worker", "--resolved", str(resolved_file), "--run-id", run_id,
            "--events", str(events)]
    if tracking_uri is not None:
        args += ["--tracking-uri", tracking_uri]
    if resume:
        args.append("--resume")
    if gpus > 1:
        nproc = gpus
        if device != "cpu":
            try:
                import torch

                if torch.cuda.is_available():
                    nproc = min(gpus, torch.cuda.device_count())
            except Exception:
                pass
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                *args]
    return [sys.executable, *args]


PARENT_ENV = "GPUOPS_PARENT_PID"
JOBDIR_ENV = "GPUOPS_JOBDIR"
TRAINER_TAG = "gpuops.trainer"  # gpuops.trainer.pid / .host / .start


def refuse_if_trainer_alive(tracker: Any, run_id: str) -> None:
    """``--resume`` of a run whose trainer still runs would put two trainers on one run: refuse."""
    from gpuops.errors import UsageError
    from gpuops.tracking.procs import same_process_alive

    try:
        tags = tracker.client.get_run(run_id).data.tags
    except Exception:  # no such run: Tracker.start says so in its own words
        return
    ident = {k[len(TRAINER_TAG) + 1:]: v for k, v in tags.items() if k.startswith(TRAINER_TAG + ".")}
    if "pid" in ident and same_process_alive(ident):
        raise UsageError(f"run {run_id} is still being trained (pid {ident['pid']} on {ident.get('host')}); "
                         "not starting a second trainer on it",
                         hint=f"wait for it, or stop it first (kill {ident['pid']}), then --resume")


def visible_gpus(timeout: float = 120.0) -> tuple[int | None, str]:
    """How many CUDA devices the trainer's interpreter sees (``torch.cuda.device_count()``, asked
    in a child process: the same Python and environment the trainer gets), and a note when it
    could not be asked (torch missing or broken)."""
    code = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"could not ask torch ({type(e).__name__})"
    out = r.stdout.strip().splitlines()
    if r.returncode != 0 or not out or not out[-1].isdigit():
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"torch could not be imported: {last[:200]}"
    return int(out[-1]), ""


def check_host_resources(resources: Any) -> None:
    """Before a run exists: a spec that asks for CUDA, or for more GPUs than this machine has, is
    refused (one line, exit 2) instead of starting a run that fails or silently uses the CPU."""
    from gpuops.errors import UsageError

    wants_cuda = resources.device == "cuda"
    wants_many = resources.gpus > 1 and resources.device != "cpu"
    if not (wants_cuda or wants_many):
        return
    n, note = visible_gpus()
    if n is None:
        raise UsageError(f"resources.device={resources.device}, resources.gpus={resources.gpus}: "
                         f"cannot tell whether this machine has GPUs: {note}",
                         hint="run gpuops doctor")
    if wants_cuda and n == 0:
        raise UsageError("resources.device is cuda, but torch sees no CUDA device on this machine",
                         hint="run gpuops doctor, or --set resources.device=auto to train on the CPU")
    if wants_many and resources.gpus > max(n, 1) and (n > 0 or resources.device == "cuda"):
        raise UsageError(f"resources.gpus is {resources.gpus}, but this machine has {n} CUDA device(s)",
                         hint=f"--set resources.gpus={max(n, 1)}")
    if wants_many and n == 0:
        raise UsageError(f"resources.gpus is {resources.gpus}, but this machine has no CUDA device",
                         hint="--set resources.device=cpu trains that many CPU processes (gloo) instead")


class LocalTarget:
    name = "local"

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- launch -----------------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> Job:
        """Resolve the spec (unless given in ``options['resolved']``), set up the MLflow run and
        start the trainer. Options: ``resolved``, ``resume`` (bool), ``parent_run_id``."""
        from gpuops.experiments.spec import load_experiment
        from gpuops.tracking.runs import load_run_spec, prepare_run
        from gpuops.tracking.tracker import Tracker

        opts = request.options
        tracker = Tracker(request.tracking_uri)
        resume = bool(opts.get("resume"))
        if resume and request.run_id:
            refuse_if_trainer_alive(tracker, request.run_id)
        resolved = opts.get("resolved")
        if resolved is None:
            if resume and request.run_id:
                resolved = load_run_spec(tracker, request.run_id)
            else:
                resolved = load_experiment(request.spec_path, request.overrides, smoke=request.smoke,
                                           download=bool(opts.get("download")))
        if not resume:
            check_host_resources(resolved.spec.resources)
        run_id = prepare_run(tracker, resolved, target=str(opts.get("target_tag", "local")),
                             run_id=request.run_id, parent_run_id=opts.get("parent_run_id"))  # type: ignore[arg-type]
        jobdir: Path | None = None
        proc: subprocess.Popen[bytes] | None = None
        try:
            jobdir = Path(tempfile.mkdtemp(prefix="gpuops-job-"))
            resolved_file = jobdir / "resolved.json"
            resolved_file.write_text(json.dumps(resolved.to_dict()))
            events, log = jobdir / "events.jsonl", jobdir / "worker.log"
            events.touch()
            from gpuops.tracking.tracker import redact_uri

            secret_uri = redact_uri(tracker.tracking_uri) != tracker.tracking_uri
            cmd = worker_command(resolved_file, run_id, None if secret_uri else tracker.tracking_uri, events,
                                 resume=resume, gpus=resolved.spec.resources.gpus,
                                 device=resolved.spec.resources.device)
            env = dict(os.environ)
            if secret_uri:
                env["MLFLOW_TRACKING_URI"] = tracker.tracking_uri
            env.setdefault("PYTHONUNBUFFERED", "1")
            # The worker removes the job folder itself when it finds this process gone at its end.
            env.update({PARENT_ENV: str(os.getpid()), JOBDIR_ENV: str(jobdir)})
            from gpuops.tracking.procs import child_dies_with_parent, process_identity

            with open(log, "wb") as logf:
                proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=child_dies_with_parent())
            self._procs[str(proc.pid)] = proc
            ident = process_identity(proc.pid)
            with contextlib.suppress(Exception):  # only --resume's safety check reads these
                tracker.set_tags({f"{TRAINER_TAG}.{k}": v for k, v in ident.items()})
        except BaseException as e:  # the run exists: never leave it RUNNING without a trainer
            from gpuops.tracking.tracker import mark_if_running, redact_text

            with contextlib.suppress(Exception):
                mark_if_running(tracker.tracking_uri, run_id,
                                "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED",
                                redact_text(f"the trainer could not be started: {type(e).__name__}: {e}"))
            if proc is not None and proc.poll() is None:
                proc.terminate()
            if jobdir is not None:
                import shutil

                shutil.rmtree(jobdir, ignore_errors=True)
            raise
        return Job(target=self.name, job_id=str(proc.pid), run_id=run_id,
                   details={"jobdir": str(jobdir), "events": str(events), "log": str(log),
                            "tracking_uri": tracker.tracking_uri, "experiment": resolved.experiment_name,
                            "command": cmd})

    # -- status / logs / stop ---------------------------------------------------------------
    def _proc(self, job: Job) -> subprocess.Popen[bytes] | None:
        return self._procs.get(job.job_id)

    def status(self, job: Job) -> JobState:
        proc = self._proc(job)
        if proc is not None and proc.poll() is None:
            return JobState.RUNNING
        if job.run_id:
            from gpuops.tracking.tracker import Tracker

            tr = Tracker(str(job.details["tracking_uri"]))
            tr.run_id = job.run_id
            return _STATE.get(tr.status(), JobState.UNKNOWN)
        return JobState.UNKNOWN

    def logs(self, job: Job, follow: bool = False) -> Iterator[str]:
        """The trainer's stdout/stderr, line by line (``follow``: until it exits)."""
        path = Path(str(job.details["log"]))
        proc = self._proc(job)
        with open(path, encoding="utf-8", errors="replace") as f:
            while True:
                line = f.readline()
                if line:
                    yield line.rstrip("\n")
                    continue
                if not follow or proc is None or proc.poll() is not None:
                    rest = f.read()
                    yield from rest.splitlines()
                    return
                time.sleep(0.2)

    def stop(self, job: Job, *, signalled: bool = False, grace: float = 30.0,
             reason: str = "stopped by gpuops (Ctrl-C)") -> None:
        """Interrupt the trainer (SIGINT, then SIGTERM, then SIGKILL) and make sure the run is KILLED.
        ``signalled``: the trainer got the same signal (a Ctrl-C at the terminal reaches both)."""
        proc = self._proc(job)
        if proc is not None and proc.poll() is None:
            if signalled:
                # The terminal's Ctrl-C reached the trainer too, and it is ending its run (summary,
                # MLflow status). A second SIGINT now would cut that short, so give it the grace time
                # first; on a loaded 2-core machine 5 s was sometimes not enough.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    proc.send_signal(sig)
                try:
                    proc.wait(timeout=grace if sig is None else 10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._mark(job, "KILLED", reason)

    # -- following a run --------------------------------------------------------------------
    def follow(self, job: Job, poll: float = 0.2) -> Iterator[dict[str, Any]]:
        """Progress events from the trainer until it exits."""
        proc = self._proc(job)
        with open(str(job.details["events"]), encoding="utf-8") as f:
            buf = ""
            while True:
                chunk = f.read()
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split("\n")
                    for line in lines:
                        if line.strip():
                            try:
                                yield json.loads(line)
                            except json.JSONDecodeError:
                                continue
                    continue
                if proc is None or proc.poll() is not None:
                    return
                time.sleep(poll)

    def wait(self, job: Job) -> tuple[int, str]:
        """Wait for the trainer; return (exit code, final MLflow status). A run the trainer could
        not end (killed, crashed before it could) is marked here."""
        proc = self._proc(job)
        rc = proc.wait() if proc is not None else 1
        if rc == 0:
            status = self._mark(job, "FAILED", "the trainer exited without ending its run")
        elif rc in (130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGHUP):
            status = self._mark(job, "KILLED", f"the trainer was stopped (exit code {rc})")
        else:
            status = self._mark(job, "FAILED", f"the trainer exited with code {rc}:\n{self.tail(job)}")
        return rc, status

    def cleanup(self, job: Job) -> None:
        """Remove the job folder (resolved spec, events, trainer log)."""
        import shutil

        shutil.rmtree(str(job.details["jobdir"]), ignore_errors=True)
        self._procs.pop(job.job_id, None)

    def tail(self, job: Job, lines: int = 40) -> str:
        try:
            text = Path(str(job.details["log"])).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _mark(self, job: Job, status: str, error: str) -> str:
        if not job.run_id:
            return "UNKNOWN"
        from gpuops.tracking.tracker import Tracker, mark_if_running

        uri = str(job.details["tracking_uri"])
        mark_if_running(uri, job.run_id, status, error)
        tr = Tracker(uri)
        tr.run_id = job.run_id
        return tr.status()
