"""The training child process: ``python -m gpuops.train.worker --resolved FILE --run-id ID ...``.

Started by ``gpuops.targets.local.LocalTarget`` (directly, or through ``torchrun`` for DDP). It
logs into an MLflow run that the parent already created, writes progress events for the parent,
and always ends the run: FINISHED, KILLED on Ctrl-C / SIGTERM, FAILED with the traceback on an
exception. Under DDP only rank 0 talks to MLflow.

On an instance (see ``gpuops.train.common``): a spot interruption notice
(``$GPUOPS_CHECKPOINT_DIR/INTERRUPT``) ends the run KILLED with exit code 130 after a checkpoint, and
the run's artifacts plus ``summary.json`` are mirrored into ``$GPUOPS_OUTPUT_DIR`` when it is set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

STOP_DEADLINE_S = 7  # after SIGTERM/SIGHUP the trainer is gone within this, whatever it is doing


def _sigterm(signo: int, _frame: Any) -> None:
    name = signal.Signals(signo).name
    common = sys.modules.get("gpuops.train.common")  # loaded once training is under way
    if common is not None:
        common.STOP_REQUESTED = name  # the training loop re-raises it if this one gets swallowed
    # Ending the run KILLED takes a moment (a checkpoint is not written; the MLflow status is).
    # Should that hang (a store that does not answer, a library that swallows the interrupt), the
    # kernel ends the process: SIGALRM's default action. The run is then left RUNNING, which
    # `gpuops runs --clean` finds (the trainer's pid is tagged on it).
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(STOP_DEADLINE_S)
    raise KeyboardInterrupt(name)


def _parent_pid() -> int | None:
    try:
        return int(os.environ.get("GPUOPS_PARENT_PID", ""))
    except ValueError:
        return None


def _guard_parent() -> None:
    """End with the parent: SIGTERM from the kernel when it dies (gpuops run killed, even by
    SIGKILL). gpuops sets this already between fork and exec; set here too for the ranks that
    torchrun starts (their parent is torchrun, which passes its own SIGTERM on)."""
    from gpuops.tracking.procs import die_with_parent

    die_with_parent(signal.SIGTERM)


def _orphan_cleanup() -> None:
    """The job folder is the parent's to remove; when the parent died first, the worker does it."""
    import shutil

    from gpuops.tracking.procs import pid_alive

    parent, jobdir = _parent_pid(), os.environ.get("GPUOPS_JOBDIR")
    if parent is None or not jobdir or pid_alive(parent):
        return
    if Path(jobdir).name.startswith("gpuops-job-"):
        shutil.rmtree(jobdir, ignore_errors=True)


def _system_metrics(spec: Any, device: Any, run_id: str, uri: str) -> Any:
    from gpuops.tracking.sysmetrics import start_system_metrics

    want = spec.tracking.system_metrics
    if want is None:
        want = device.type == "cuda" and _nvml_ok()
    return start_system_metrics(run_id, uri, bool(want))


def _nvml_ok() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def run_worker(resolved_doc: dict[str, Any], run_id: str | None, tracking_uri: str | None,
               events_path: str | None = None, resume: bool = False) -> int:
    """Train one experiment; return the process exit code (0, 1 failed, 130 interrupted)."""
    if (resolved_doc.get("spec") or {}).get("task") == "script":  # the user's own code: gpuops.scripts
        from gpuops.scripts.runner import run_script_worker

        return run_script_worker(resolved_doc, run_id, tracking_uri, events_path, resume=resume)
    import torch

    from gpuops.experiments.spec import resolved_from_dict
    from gpuops.tracking.tracker import Tracker
    from gpuops.train.common import (
        OUTPUT_DIR_ENV,
        Events,
        Interrupted,
        MirroredTracker,
        RunContext,
        env_dir,
        env_int,
        pick_device,
        seed_everything,
    )

    resolved = resolved_from_dict(resolved_doc)
    spec = resolved.spec
    rank, world, local_rank = env_int("RANK", 0), env_int("WORLD_SIZE", 1), env_int("LOCAL_RANK", 0)
    out_dir = env_dir(OUTPUT_DIR_ENV)
    tracker: Tracker | None = None
    if rank == 0:
        tracker = MirroredTracker(tracking_uri, out_dir) if out_dir is not None else Tracker(tracking_uri)
        tracker.start(run_id=run_id) if run_id else None
    events = Events(events_path if rank == 0 else None)
    monitor = None
    backend = "none"
    status, error, code = "FINISHED", None, 0
    result = None
    interrupted_at: int | None = None
    try:
        if spec.resources.threads:
            torch.set_num_threads(spec.resources.threads)
        device = pick_device(spec.resources.device, local_rank)
        if world > 1:
            import torch.distributed as dist

            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)
        seed_everything(spec.seed + rank, device)
        if tracker is not None and tracker.run_id:
            tracker.set_tags({"gpuops.device": str(device), "gpuops.world_size": str(world),
                              "gpuops.ddp_backend": backend})
            monitor = _system_metrics(spec, device, tracker.run_id, tracker.tracking_uri)
        with tempfile.TemporaryDirectory(prefix="gpuops-train-") as tmp:
            ctx = RunContext(resolved=resolved, tracker=tracker if tracker and tracker.run_id else None,
                             events=events, device=device, rank=rank, world=world, resume=resume,
                             workdir=Path(tmp), run_id=run_id)
            if spec.task == "sr":
                from gpuops.train.sr import train_sr

                result = train_sr(ctx)
            else:
                from gpuops.train.classify import train_classify

                result = train_classify(ctx)
        events.emit("summary", metrics=result.final, iterations=result.iterations, start=result.start,
                    seconds=result.seconds)
    except KeyboardInterrupt as e:
        why = str(e) or "SIGINT"
        status, error, code = "KILLED", f"interrupted ({why}: Ctrl-C, SIGTERM or SIGHUP)", 130
    except Interrupted as e:  # a spot notice: checkpointed; `gpuops run --resume RUN_ID` continues
        status, code, interrupted_at = "KILLED", 130, e.iteration
        error = f"{e}; continue with: gpuops run --resume {run_id or '<run id>'} (same --target)"
        events.emit("error", message=error)
    except BaseException as e:
        status, error, code = "FAILED", "".join(traceback.format_exception(e)), 1
        if isinstance(e, SystemExit):
            code = int(e.code) if isinstance(e.code, int) else 1
        events.emit("error", message=f"{type(e).__name__}: {e}")
    finally:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.finish()
        if world > 1:
            try:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()
            except Exception:
                pass
        if isinstance(tracker, MirroredTracker):
            summary = {"run_id": tracker.run_id, "status": status, "exit_code": code,
                       "error": ((error or "").strip().splitlines() or [None])[-1],
                       "iterations": result.iterations if result else None,
                       "resumed_from": result.start if result else None,
                       "interrupted_at": interrupted_at,
                       "metrics": result.final if result else {}}
            with contextlib.suppress(Exception):  # ending the run below matters more
                tracker.write_outputs("summary.json", json.dumps(summary, indent=2))
                _write_spec(tracker, resolved)
        if tracker is not None and tracker.run_id:
            try:
                tracker.finish(status, error)
            except Exception:  # the parent marks the run if this did not
                code = code or 1
        events.emit("end", status=status)
        events.close()
    if error and status == "FAILED":
        sys.stderr.write(error)
    return code


def _write_spec(tracker: Any, resolved: Any) -> None:
    """The resolved spec beside the other outputs, as the parent logged it to MLflow."""
    import yaml

    from gpuops.tracking.runs import SPEC_ARTIFACT

    tracker.write_outputs(SPEC_ARTIFACT, yaml.safe_dump(resolved.to_dict(), sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpuops.train.worker",
                                description="Train one resolved gpuops experiment (started by gpuops run).")
    p.add_argument("--resolved", required=True, help="JSON file with the resolved experiment")
    p.add_argument("--run-id", help="the MLflow run to log into")
    p.add_argument("--tracking-uri")
    p.add_argument("--events", help="file to append progress events to (JSON lines)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    a = p.parse_args(argv)
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import faulthandler

    faulthandler.enable()  # a crash in native code (SIGSEGV, SIGABRT) leaves its Python stack in the log
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)  # a closed SSH session: end the run KILLED, as SIGTERM does
    try:
        doc = json.loads(Path(a.resolved).read_text())
        _guard_parent()
        code = run_worker(doc, a.run_id, a.tracking_uri, a.events, a.resume)
    except KeyboardInterrupt:  # before training began: the parent marks the run
        code = 130
    _orphan_cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())
