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

from gpuops.targets.base import Job, JobState, LaunchPlan, LaunchRequest, RunEvent, RunOutcome

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

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        """Checks that need no run: a resumed run's trainer must be gone; a new run's device and GPU
        count must exist on this machine."""
        from gpuops.tracking.tracker import Tracker

        if request.resume and request.run_id:
            refuse_if_trainer_alive(Tracker(request.tracking_uri), request.run_id)
        if not request.resume:
            check_host_resources(request.resolved.spec.resources)
        spec = request.resolved.spec
        if spec.task == "script" and getattr(spec, "env", None):  # its venv needs that Python here
            from gpuops.envs import load_environment
            from gpuops.scripts.venv import find_python

            find_python(load_environment(Path(spec.env)).python)
        res = request.resolved.spec.resources
        return LaunchPlan(request, rows=[("target", "local"), ("device", f"{res.device} x {res.gpus}")])

    def launch(self, plan: LaunchPlan) -> LocalRun:
        """Set up the MLflow run and start the trainer."""
        from gpuops.tracking.runs import prepare_run
        from gpuops.tracking.tracker import Tracker

        request = plan.request
        resolved = request.resolved
        tracker = Tracker(request.tracking_uri)
        run_id = prepare_run(tracker, resolved, target=request.target, run_id=request.run_id,
                             parent_run_id=request.parent_run_id, tags=request.tags)
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
                                 resume=request.resume, gpus=resolved.spec.resources.gpus,
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
        job = Job(target=self.name, job_id=str(proc.pid), run_id=run_id,
                  details={"jobdir": str(jobdir), "events": str(events), "log": str(log), "command": cmd})
        return LocalRun(job, proc, tracker.tracking_uri, resolved.experiment_name)


TRAINER_LOG = "trainer.log"


class LocalRun:
    """The handle of a trainer running on this machine."""

    def __init__(self, job: Job, proc: subprocess.Popen[bytes], tracking_uri: str, experiment: str) -> None:
        self.job, self.proc = job, proc
        self.run_id = job.run_id or ""
        self.tracking_uri, self.experiment = tracking_uri, experiment

    def status(self) -> JobState:
        if self.proc.poll() is None:
            return JobState.RUNNING
        from gpuops.tracking.tracker import Tracker

        tr = Tracker(self.tracking_uri)
        tr.run_id = self.run_id
        return _STATE.get(tr.status(), JobState.UNKNOWN)

    def logs(self, follow: bool = False) -> Iterator[str]:
        """The trainer's stdout/stderr, line by line (``follow``: until it exits)."""
        with open(str(self.job.details["log"]), encoding="utf-8", errors="replace") as f:
            while True:
                line = f.readline()
                if line:
                    yield line.rstrip("\n")
                    continue
                if not follow or self.proc.poll() is not None:
                    yield from f.read().splitlines()
                    return
                time.sleep(0.2)

    def events(self, poll: float = 0.2) -> Iterator[RunEvent]:
        """Progress events from the trainer until it exits."""
        with open(str(self.job.details["events"]), encoding="utf-8") as f:
            buf = ""
            while True:
                chunk = f.read()
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split("\n")
                    for line in lines:
                        if line.strip():
                            try:
                                ev = RunEvent.from_trainer(json.loads(line))
                            except (json.JSONDecodeError, AttributeError):
                                continue
                            if ev is not None:
                                yield ev
                    continue
                if self.proc.poll() is not None:
                    return
                time.sleep(poll)

    def wait(self) -> RunOutcome:
        """Wait for the trainer. A run the trainer could not end (killed, crashed before it could)
        is marked here; a run that did not finish keeps the trainer's output as ``trainer.log``."""
        rc = self.proc.wait()
        if rc == 0:
            status = self._mark("FAILED", "the trainer exited without ending its run")
        elif rc in (130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGHUP):
            status = self._mark("KILLED", f"the trainer was stopped (exit code {rc})")
        else:
            status = self._mark("FAILED", f"the trainer exited with code {rc}:\n{self.tail()}")
        if status != "FINISHED":
            self.keep_log()
        return RunOutcome(status=status, exit_code=_exit_code(status),
                          state=_STATE.get(status, JobState.UNKNOWN))

    def stop(self, reason: str = "stopped by gpuops", *, signalled: bool = False,
             grace: float = 30.0) -> None:
        """Interrupt the trainer (SIGINT, then SIGTERM, then SIGKILL) and make sure the run is KILLED.
        ``signalled``: the trainer got the same signal (a Ctrl-C at the terminal reaches both)."""
        proc = self.proc
        if proc.poll() is None:
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
        self._mark("KILLED", reason)

    def interrupt(self, *, signalled: bool, reason: str) -> RunOutcome:
        """Ctrl-C (``signalled``: it reached the trainer too) or a SIGTERM/SIGHUP of gpuops alone."""
        self.stop(reason, signalled=signalled)
        self.keep_log()
        return RunOutcome(status="KILLED", exit_code=130, state=JobState.KILLED, error=reason)

    def close(self) -> None:
        """Remove the job folder (resolved spec, events, trainer log)."""
        import shutil

        shutil.rmtree(str(self.job.details["jobdir"]), ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        try:
            text = Path(str(self.job.details["log"])).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def keep_log(self) -> bool:
        """Log the trainer's output as the run's ``trainer.log`` artifact (once)."""
        if self.job.details.get("log_kept"):
            return True
        from gpuops.tracking.tracker import Tracker, redact_text

        try:
            text = Path(str(self.job.details["log"])).read_text(errors="replace")
            if not text.strip() or not self.run_id:
                return False
            tr = Tracker(self.tracking_uri)
            tr.run_id = self.run_id
            tr.log_text(redact_text(text[-1_000_000:]), TRAINER_LOG)
            self.job.details["log_kept"] = True
            return True
        except Exception:  # the run's status matters more than its log
            return False

    def _mark(self, status: str, error: str) -> str:
        from gpuops.tracking.tracker import Tracker, mark_if_running

        mark_if_running(self.tracking_uri, self.run_id, status, error)
        tr = Tracker(self.tracking_uri)
        tr.run_id = self.run_id
        return tr.status()


def _exit_code(status: str) -> int:
    return {"FINISHED": 0, "KILLED": 130}.get(status, 1)
