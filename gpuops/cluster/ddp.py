"""Multi-node DDP through Ray Train (``ray.train.torch.TorchTrainer``), with gpuops's own trainer.

Each Ray Train worker runs ``gpuops.train.worker.run_worker``: the same loop, checkpoints and
logging as ``torchrun`` on one machine (``gpuops.train.common.fit``). What Ray Train gives it:

* the process group: TorchTrainer calls ``torch.distributed.init_process_group`` on every worker
  before the train function starts (gloo on CPU, nccl with GPUs), and sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK`` (``ray/train/torch/config.py`` in Ray 2.60). gpuops's worker reads
  those variables as it does under torchrun, and calls ``init_process_group`` itself when
  ``WORLD_SIZE > 1``, which would fail on a group that already exists. The clash is resolved here,
  in the Ray worker only: while ``run_worker`` runs, ``torch.distributed.init_process_group`` is
  wrapped so that it returns at once when a default group is already initialised (Ray Train's), and
  otherwise calls the real one. Ray's group is the one used; gpuops's ``destroy_process_group`` at
  the end is harmless (Ray's own shutdown checks ``is_initialized`` first).
* restarts: ``FailureConfig(max_failures=N)``: a worker that dies takes its group down and Ray
  Train starts a new group that calls the train function again.

Resume: rank 0 writes ``last.pt`` as the run's ``checkpoints/last.pt`` artifact (and into
``$GPUOPS_CHECKPOINT_DIR``) every ``train.checkpoint_every`` iterations, as always. Every attempt
runs with ``resume=True``: before training, the first worker of each node downloads the run's
checkpoint artifact into a node-local ``$GPUOPS_CHECKPOINT_DIR`` (the same path on every node), so
that ``load_checkpoint`` finds the same file on every rank, on any node, and a new group continues
from the last checkpoint (``gpuops.resumed_from`` on the run) rather than from iteration 0. A run
with no checkpoint yet starts at 0. Only rank 0 talks to MLflow, so each metric is logged once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DDP_TAG = "gpuops.ray.ddp"  # gpuops.ray.ddp.attempt / .workers / .error_previous


@dataclass
class DdpResult:
    run_id: str
    status: str  # the MLflow run's final status
    metrics: dict[str, float]
    attempts: int  # worker-group starts (1 + restarts)
    resumed_from: int | None  # the iteration the last attempt continued from (None: from 0)
    error: str | None
    storage_path: str
    previous_errors: list[str] = field(default_factory=list)


def checkpoint_dir_for(run_id: str) -> Path:
    """The node-local folder a run's checkpoint is staged in (the same path on every node)."""
    return Path(tempfile.gettempdir()) / "gpuops-ddp" / run_id


def _stage_checkpoint(run_id: str, tracking_uri: str, dest: Path) -> int | None:
    """Put the run's ``checkpoints/last.pt`` artifact at ``dest/last.pt``; its iteration, or None
    (and no file there) when the run has no checkpoint yet."""
    import torch
    from mlflow.tracking import MlflowClient

    from gpuops.train.common import CHECKPOINT_ARTIFACT, CHECKPOINT_FILE

    dest.mkdir(parents=True, exist_ok=True)
    target = dest / CHECKPOINT_FILE
    with contextlib.suppress(FileNotFoundError):
        target.unlink()  # whatever rank 0 wrote after the artifact is not trusted
    with tempfile.TemporaryDirectory(prefix="gpuops-ckpt-") as tmp:
        try:
            got = Path(MlflowClient(tracking_uri=tracking_uri).download_artifacts(run_id, CHECKPOINT_ARTIFACT,
                                                                                 tmp))
        except Exception:  # no checkpoint yet
            return None
        if not got.is_file():
            return None
        shutil.copyfile(got, dest / f".{CHECKPOINT_FILE}.tmp")
        (dest / f".{CHECKPOINT_FILE}.tmp").replace(target)
    state = torch.load(target, map_location="cpu", weights_only=True, mmap=True)
    return int(state["iteration"])


@contextlib.contextmanager
def _keep_existing_group() -> Any:
    """``torch.distributed.init_process_group`` as a no-op while a default group exists (Ray Train's)."""
    import torch.distributed as dist

    real = dist.init_process_group

    def init_once(*args: Any, **kwargs: Any) -> None:
        if dist.is_initialized():
            return None
        return real(*args, **kwargs)

    dist.init_process_group = init_once  # type: ignore[assignment]
    try:
        yield
    finally:
        dist.init_process_group = real  # type: ignore[assignment]


def _train_worker(config: dict[str, Any]) -> None:
    """The train function of each Ray Train worker."""
    import ray.train
    import torch.distributed as dist

    from gpuops.cluster.ray_cluster import SECRET_ENV
    from gpuops.train.common import CHECKPOINT_DIR_ENV
    from gpuops.train.worker import run_worker

    run_id, uri = config["run_id"], config["tracking_uri"]
    ctx = ray.train.get_context()
    rank, world, local_rank = ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local_rank)})
    for key in SECRET_ENV:  # the trainer needs no Ray token
        os.environ.pop(key, None)
    ckpt = checkpoint_dir_for(run_id)
    os.environ[CHECKPOINT_DIR_ENV] = str(ckpt)
    if local_rank == 0:
        _stage_checkpoint(run_id, uri, ckpt)
    if rank == 0:
        _start_attempt(run_id, uri, world)
    if dist.is_initialized():
        dist.barrier()  # every node has its copy before rank 0 picks the file
    with _keep_existing_group():
        code = run_worker(config["resolved"], run_id, uri, None, resume=True)
    if code != 0:
        raise RuntimeError(f"gpuops trainer on rank {rank} ended with exit code {code}")
    if local_rank == 0:  # done: the run's artifact keeps the checkpoint, the node's copy can go
        shutil.rmtree(ckpt, ignore_errors=True)


def _start_attempt(run_id: str, uri: str, world: int) -> None:
    """Rank 0, before training: count the attempt and move a previous attempt's error aside."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    tags = c.get_run(run_id).data.tags
    attempt = int(tags.get(f"{DDP_TAG}.attempt", "0")) + 1
    if tags.get("gpuops.error"):
        c.set_tag(run_id, f"{DDP_TAG}.previous_error", tags["gpuops.error"][:5000])
        with contextlib.suppress(Exception):
            c.delete_tag(run_id, "gpuops.error")
    if tags.get("gpuops.resumed_from"):
        with contextlib.suppress(Exception):
            c.delete_tag(run_id, "gpuops.resumed_from")  # set again by this attempt when it resumes
    c.set_tag(run_id, f"{DDP_TAG}.attempt", str(attempt))
    c.set_tag(run_id, f"{DDP_TAG}.workers", str(world))


def train_ddp(run_id: str, resolved_doc: dict[str, Any], tracking_uri: str, *, workers: int = 2,
              use_gpu: bool = False, storage_path: str, max_failures: int = 1,
              cpus_per_worker: float = 1.0, name: str | None = None) -> DdpResult:
    """Train the run ``run_id`` (created beforehand) with ``workers`` Ray Train workers on the Ray
    cluster this process is connected to (``ray_session``); gloo on CPU, nccl with ``use_gpu``.
    ``storage_path``: Ray Train's run folder (shared storage or a URI on a multi-node cluster).
    ``max_failures``: restarts of the worker group after a lost worker."""
    import ray
    from mlflow.tracking import MlflowClient
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from gpuops.cluster.ray_cluster import redact_token
    from gpuops.tracking.tracker import clip_error, mark_if_running

    if not ray.is_initialized():
        raise RuntimeError("train_ddp needs a connected Ray (gpuops.cluster.ray_cluster.ray_session)")
    if workers < 1 or max_failures < 0:
        raise ValueError("workers must be >= 1 and max_failures >= 0")
    resources = {"CPU": cpus_per_worker, **({"GPU": 1.0} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"run_id": run_id, "resolved": resolved_doc, "tracking_uri": tracking_uri},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=name or f"gpuops-{run_id[:12]}", storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    error = None
    try:
        result = trainer.fit()
        if getattr(result, "error", None) is not None:
            error = f"{type(result.error).__name__}: {result.error}"
    except Exception as e:  # TrainingFailedError once the restarts are spent
        error = f"{type(e).__name__}: {e}"
    if error:
        error = redact_token(clip_error(error, 2000))
        mark_if_running(tracking_uri, run_id, "FAILED", error)
    else:
        mark_if_running(tracking_uri, run_id, "FAILED", "Ray Train ended without the trainer ending its run")
    run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    tags = run.data.tags
    resumed = tags.get("gpuops.resumed_from")
    previous = [tags[f"{DDP_TAG}.previous_error"]] if tags.get(f"{DDP_TAG}.previous_error") else []
    if run.info.status != "FINISHED" and error is None:
        error = tags.get("gpuops.error")
    return DdpResult(run_id=run_id, status=run.info.status,
                     metrics={k: float(v) for k, v in run.data.metrics.items()},
                     attempts=int(tags.get(f"{DDP_TAG}.attempt", "0")),
                     resumed_from=int(resumed) if resumed else None, error=error,
                     storage_path=storage_path, previous_errors=previous)
