"""What both training loops share: device, seeding, optimiser, schedule, the train step, the
loop itself with logging / evaluation / checkpoints, and the progress events for the parent.

Randomness per iteration comes from generators seeded with ``(seed, rank, iteration)``, so a run
resumed from a checkpoint sees exactly the batches it would have seen, and the same spec on the
CPU gives the same metrics twice.

The instance contract (what the docker and aws targets set up, see ``gpuops/cloud/bootstrap.sh.tmpl``):

* ``$GPUOPS_CHECKPOINT_DIR``: checkpoints are also written there as ``last.pt`` (the instance syncs
  the folder to S3), and ``--resume`` prefers the one found there (same run only) to the MLflow
  artifact. When ``$GPUOPS_CHECKPOINT_DIR/INTERRUPT`` appears (a spot interruption notice), the loop
  checkpoints at the next iteration and stops with ``Interrupted``; the worker ends the run KILLED,
  tagged ``gpuops.interrupted_at``, so that ``gpuops run --resume RUN_ID`` continues it.
* ``$GPUOPS_OUTPUT_DIR``: the run's artifacts (model, panels, learning curve, spec, a summary) are
  mirrored there, in the layout they have in MLflow (the host keeps the folder; the instance
  uploads it to S3).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gpuops.tracking.tracker import Tracker
from gpuops.train.events import Events

if TYPE_CHECKING:
    from gpuops.experiments.spec import ResolvedExperiment, TrainSpec

CHECKPOINT_ARTIFACT = "checkpoints/last.pt"
CHECKPOINT_FILE = "last.pt"
CHECKPOINT_DIR_ENV = "GPUOPS_CHECKPOINT_DIR"
OUTPUT_DIR_ENV = "GPUOPS_OUTPUT_DIR"
INTERRUPT_FILE = "INTERRUPT"  # created by the instance's watcher on a spot interruption notice
INTERRUPT_POLL_DDP = 5  # under DDP the ranks agree on stopping every this many iterations


def env_dir(name: str) -> Path | None:
    """The folder named by environment variable ``name``; None when unset or empty."""
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


class Interrupted(Exception):
    """The run saw a spot interruption notice, checkpointed at ``iteration`` and stopped."""

    def __init__(self, iteration: int) -> None:
        super().__init__(f"spot interruption notice: checkpointed at iteration {iteration} and stopped")
        self.iteration = iteration


# --------------------------------------------------------------------------- outputs
class MirroredTracker(Tracker):
    """A ``Tracker`` that also writes every artifact it logs into ``out_dir`` (``$GPUOPS_OUTPUT_DIR``),
    at the path it has in MLflow. Checkpoints are left out: they have ``$GPUOPS_CHECKPOINT_DIR``.
    A copy that cannot be written never fails the run (MLflow has the artifact); the first such
    error goes to the tag ``gpuops.output_dir_error``."""

    def __init__(self, tracking_uri: str | None, out_dir: Path) -> None:
        super().__init__(tracking_uri)
        self.out_dir = out_dir
        self._error_tagged = False

    def _copy(self, artifact_file: str, write: Callable[[Path], Any]) -> None:
        rel = PurePosixPath(artifact_file)
        if rel.is_absolute() or ".." in rel.parts or rel.parts[:1] == ("checkpoints",):
            return
        try:
            dest = self.out_dir.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            write(dest)
        except Exception as e:
            if not self._error_tagged and self.run_id:
                self._error_tagged = True
                self.set_tags({"gpuops.output_dir_error": f"{type(e).__name__}: {e}"})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        super().log_artifact(path, artifact_path)
        name = Path(path).name
        self._copy(f"{artifact_path.strip('/')}/{name}" if artifact_path else name,
                   lambda dest: shutil.copyfile(path, dest))

    def log_text(self, text: str, artifact_file: str) -> None:
        super().log_text(text, artifact_file)
        self._copy(artifact_file, lambda dest: dest.write_text(text, encoding="utf-8"))

    def log_image(self, image: Any, artifact_file: str) -> None:
        super().log_image(image, artifact_file)

        def write(dest: Path) -> None:
            if hasattr(image, "save"):  # a PIL image
                image.save(dest)
                return
            import numpy as np
            from PIL import Image

            Image.fromarray(np.asarray(image)).save(dest)

        self._copy(artifact_file, write)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        super().log_figure(figure, artifact_file)
        self._copy(artifact_file, lambda dest: figure.savefig(dest))

    def write_outputs(self, name: str, text: str) -> None:
        """A file for the output folder only (not an MLflow artifact), e.g. the run's summary."""
        self._copy(name, lambda dest: dest.write_text(text, encoding="utf-8"))


# --------------------------------------------------------------------------- set-up
def pick_device(want: str, local_rank: int = 0) -> torch.device:
    if want == "cpu":
        return torch.device("cpu")
    if want == "cuda" or torch.cuda.is_available():
        if not torch.cuda.is_available():
            from gpuops.errors import UsageError

            raise UsageError("resources.device is cuda but torch sees no CUDA device (run gpuops doctor)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def seed_everything(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True


def generator(seed: int, *salt: int) -> torch.Generator:
    """A CPU generator seeded from the run seed and a salt (rank, iteration, ...)."""
    g = torch.Generator()
    h = seed & 0xFFFFFFFF
    for s in salt:
        h = (h * 1_000_003 + int(s) + 0x9E3779B9) % (2**63 - 1)
    g.manual_seed(h)
    return g


def build_optimizer(model: nn.Module, t: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adam":
        if t.weight_decay:
            return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        return torch.optim.Adam(params, lr=t.lr)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0,
                           weight_decay=t.weight_decay)


def lr_factor(t: TrainSpec, total: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at iteration ``i`` (warm-up, then the schedule)."""

    def f(i: int) -> float:
        if t.warmup and i < t.warmup:
            return (i + 1) / t.warmup
        if t.schedule == "constant":
            return 1.0
        if t.schedule == "step":
            return t.gamma ** (i // (t.step_every or total))
        done = (i - t.warmup) / max(1, total - t.warmup)
        if t.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        # onecycle-like: linear ramp to the peak over 25%, then linear decay to zero
        return done / 0.25 if done < 0.25 else max(0.0, (1 - done) / 0.75)

    return f


# --------------------------------------------------------------------------- the step
class TrainStep:
    """One optimisation step: zero grads, forward (autocast on CUDA when asked), loss, backward,
    optional clipping, optimiser and schedule step. Returns the loss as a detached tensor (no
    device sync; the caller decides when to read it)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[..., Any],
                 *, scheduler: Any = None, precision: str = "fp32", grad_clip: float | None = None,
                 device: torch.device | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.scheduler = scheduler
        self.grad_clip = grad_clip
        dev = device or next(model.parameters()).device
        self.autocast = dev.type == "cuda" and precision in {"bf16", "fp16"}
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        self.device_type = dev.type
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast and precision == "fp16" else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        if self.autocast:
            with torch.autocast(self.device_type, dtype=self.dtype):
                loss = self.loss_fn(self.model(x), y)
        else:
            loss = self.loss_fn(self.model(x), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()


# --------------------------------------------------------------------------- run context
@dataclass
class RunContext:
    resolved: ResolvedExperiment
    tracker: Tracker | None  # None on ranks other than 0
    events: Events
    device: torch.device
    rank: int = 0
    world: int = 1
    resume: bool = False
    workdir: Path = field(default_factory=lambda: Path("."))
    run_id: str | None = None  # known on every rank (the tracker only exists on rank 0)
    checkpoint_dir: Path | None = field(default_factory=lambda: env_dir(CHECKPOINT_DIR_ENV))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def maybe_ddp(model: nn.Module, ctx: RunContext) -> nn.Module:
    if ctx.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if ctx.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[ctx.device.index])
    return DistributedDataParallel(model)


# --------------------------------------------------------------------------- checkpoints
def _atomic_save(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # same folder: the rename is atomic
    torch.save(state, tmp)
    tmp.replace(path)


def save_checkpoint(ctx: RunContext, it: int, model: nn.Module, optimizer: Any, scheduler: Any,
                    extra: dict[str, Any] | None = None) -> None:
    """Rank 0 writes ``last.pt`` into ``$GPUOPS_CHECKPOINT_DIR`` first (what survives the instance),
    then logs it as the run's ``checkpoints/last.pt`` artifact."""
    if not ctx.is_main or (ctx.tracker is None and ctx.checkpoint_dir is None):
        return
    state = {"iteration": it, "run_id": ctx.run_id or (ctx.tracker.run_id if ctx.tracker else None),
             "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "extra": extra or {}}
    if ctx.checkpoint_dir is not None:
        _atomic_save(state, ctx.checkpoint_dir / CHECKPOINT_FILE)
    if ctx.tracker is not None:
        path = ctx.workdir / "checkpoints" / CHECKPOINT_FILE
        _atomic_save(state, path)
        ctx.tracker.log_artifact(path, "checkpoints")
        ctx.tracker.set_tags({"gpuops.checkpoint_iteration": str(it)})


def _dir_checkpoint(ctx: RunContext) -> Path | None:
    """``$GPUOPS_CHECKPOINT_DIR/last.pt`` when it belongs to this run."""
    if ctx.checkpoint_dir is None:
        return None
    path = ctx.checkpoint_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        owner = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("run_id")
    except Exception:  # a torn or foreign file: fall back to the MLflow artifact
        return None
    run_id = ctx.run_id or (ctx.tracker.run_id if ctx.tracker else None)
    return path if owner is not None and owner == run_id else None


def load_checkpoint(ctx: RunContext, model: nn.Module, optimizer: Any, scheduler: Any) -> int:
    """Restore the run's last checkpoint: ``$GPUOPS_CHECKPOINT_DIR/last.pt`` when it is this run's,
    else the run's ``checkpoints/last.pt`` artifact. Returns the iteration to start from (0 when
    the run has none). Rank 0 picks the file; under DDP every rank loads that same file."""
    if not ctx.resume:
        return 0
    path: Path | None = None
    if ctx.is_main:
        path = _dir_checkpoint(ctx)
        if path is None and ctx.tracker is not None:
            try:
                got = ctx.tracker.download(CHECKPOINT_ARTIFACT, ctx.workdir / "resume")
                path = got if got.is_file() else None
            except Exception:  # no checkpoint yet: start again from zero, in the same run
                path = None
    if ctx.world > 1:  # single node (torchrun --standalone): the ranks share the file system
        import torch.distributed as dist

        box = [str(path) if path else None]
        dist.broadcast_object_list(box, src=0)
        path = Path(box[0]) if box[0] else None
    if path is None or not path.is_file():
        return 0
    state = torch.load(path, map_location=ctx.device, weights_only=True)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["iteration"])


def interrupt_requested(ctx: RunContext, done: int) -> bool:
    """True when ``$GPUOPS_CHECKPOINT_DIR/INTERRUPT`` exists. Under DDP the ranks agree (every
    ``INTERRUPT_POLL_DDP`` iterations, the same on all ranks) so that they stop together."""
    if ctx.checkpoint_dir is None:
        return False
    if ctx.world <= 1:
        return (ctx.checkpoint_dir / INTERRUPT_FILE).exists()
    if done % INTERRUPT_POLL_DDP:
        return False
    import torch.distributed as dist

    flag = torch.tensor([1.0 if (ctx.checkpoint_dir / INTERRUPT_FILE).exists() else 0.0], device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# --------------------------------------------------------------------------- the loop
@dataclass
class LoopResult:
    iterations: int
    start: int
    final: dict[str, float]
    seconds: float


# Set by the trainer's SIGTERM/SIGHUP handler (gpuops.train.worker). The handler also raises
# KeyboardInterrupt at once, but one that lands inside a library that catches BaseException (an
# MLflow or SQLAlchemy write, say) is lost; the loop checks this at every step, so the stop holds.
STOP_REQUESTED: str | None = None


def fit(ctx: RunContext, model: nn.Module, *, batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
        loss_fn: Callable[..., Any], total: int, samples_per_iter: int,
        evaluate: Callable[[int, bool], dict[str, float]], eval_every: int | None,
        on_end: Callable[[], None] | None = None) -> LoopResult:
    """The training loop: ``batch(i)`` gives iteration ``i``'s inputs/targets (already on the
    device); ``evaluate(i, final)`` returns validation metrics (rank 0 only)."""
    t = ctx.resolved.spec.train
    tr = ctx.tracker
    optimizer = build_optimizer(model, t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(t, total))
    ddp_model = maybe_ddp(model, ctx)
    step = TrainStep(ddp_model, optimizer, loss_fn, scheduler=scheduler,
                     precision=ctx.resolved.spec.resources.precision, grad_clip=t.grad_clip,
                     device=ctx.device)
    start = load_checkpoint(ctx, model, optimizer, scheduler)
    if start and tr is not None:
        tr.set_tags({"gpuops.resumed_from": str(start)})
    ctx.events.emit("start", total=total, start=start, run_id=tr.run_id if tr else None,
                    device=ctx.device.type)

    final: dict[str, float] = {}
    began = time.perf_counter()
    window_start, window_loss, window_n = time.perf_counter(), torch.zeros((), device=ctx.device), 0
    model.train()
    for it in range(start, total):
        if STOP_REQUESTED is not None:
            raise KeyboardInterrupt(STOP_REQUESTED)
        x, y = batch(it)
        window_loss += step(x, y)
        window_n += 1
        done = it + 1
        if done % t.log_every == 0 or done == total:
            loss = float(window_loss) / window_n  # one device sync per log interval
            elapsed = time.perf_counter() - window_start
            thr = window_n * samples_per_iter / max(elapsed, 1e-9)
            if ctx.is_main:
                if tr is not None:
                    tr.log_metrics({"train/loss": loss, "train/throughput": thr}, step=done)
                ctx.events.emit("progress", it=done, total=total, loss=loss, throughput=thr)
            final.update({"train/loss": loss, "train/throughput": thr})
            window_start, window_loss, window_n = time.perf_counter(), torch.zeros((), device=ctx.device), 0
        if eval_every and done % eval_every == 0 and done != total and ctx.is_main:
            metrics = evaluate(done, False)
            model.train()
            if tr is not None:
                tr.log_metrics(metrics, step=done)
            ctx.events.emit("eval", it=done, metrics=metrics)
            final.update(metrics)
        saved = False
        if t.checkpoint_every and done % t.checkpoint_every == 0 and done != total:
            save_checkpoint(ctx, done, model, optimizer, scheduler)
            ctx.events.emit("checkpoint", it=done)
            saved = True
        if done != total and interrupt_requested(ctx, done):
            if not saved:
                save_checkpoint(ctx, done, model, optimizer, scheduler)
                ctx.events.emit("checkpoint", it=done)
            if tr is not None:
                tr.set_tags({"gpuops.interrupted_at": str(done)})
            raise Interrupted(done)
    seconds = time.perf_counter() - began
    if ctx.is_main:
        metrics = evaluate(total, True)
        if tr is not None:
            tr.log_metrics(metrics, step=total)
        ctx.events.emit("eval", it=total, metrics=metrics)
        final.update(metrics)
        if on_end is not None:
            on_end()
    return LoopResult(iterations=total, start=start, final=final, seconds=seconds)


def iterations_for(t: TrainSpec, examples: int, batch: int) -> int:
    if t.iterations is not None:
        return t.iterations
    return int(t.epochs or 1) * max(1, math.ceil(examples / batch))


def learning_curve(tracker: Tracker, keys: list[str], baseline: str | None, path: Path) -> Path | None:
    """A PNG of train/loss and the validation metric against iterations, from the run's history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = {k: tracker.client.get_metric_history(tracker.run_id, k) for k in ["train/loss", *keys]}
    if not hist["train/loss"]:
        return None
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(5 * (1 + len(keys)), 3.6))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    for ax, k in zip(axes, ["train/loss", *keys], strict=True):
        pts = sorted((m.step, m.value) for m in hist[k])
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None, label=k)
        if k != "train/loss" and baseline:
            base = tracker.client.get_metric_history(tracker.run_id, baseline)
            if base:
                ax.axhline(base[-1].value, color="grey", linestyle="--", label=baseline)
        if k == "train/loss":
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(k)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
