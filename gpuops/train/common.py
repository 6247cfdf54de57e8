"""What both training loops share: device, seeding, optimiser, schedule, the train step, the
loop itself with logging / evaluation / checkpoints, and the progress events for the parent.

Randomness per iteration comes from generators seeded with ``(seed, rank, iteration)``, so a run
resumed from a checkpoint sees exactly the batches it would have seen, and the same spec on the
CPU gives the same metrics twice.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from gpuops.experiments.spec import ResolvedExperiment, TrainSpec
    from gpuops.tracking.tracker import Tracker

CHECKPOINT_ARTIFACT = "checkpoints/last.pt"


# --------------------------------------------------------------------------- events
class Events:
    """Progress events for the parent process: one JSON object per line, appended to a file."""

    def __init__(self, path: str | Path | None) -> None:
        self._f = open(path, "a", buffering=1, encoding="utf-8") if path else None  # noqa: SIM115

    def emit(self, event: str, **data: Any) -> None:
        if self._f is not None:
            self._f.write(json.dumps({"event": event, "time": time.time(), **data}) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


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
def save_checkpoint(ctx: RunContext, it: int, model: nn.Module, optimizer: Any, scheduler: Any,
                    extra: dict[str, Any] | None = None) -> None:
    if not ctx.is_main or ctx.tracker is None:
        return
    path = ctx.workdir / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"iteration": it, "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "extra": extra or {}}, tmp)
    tmp.replace(path)
    ctx.tracker.log_artifact(path, "checkpoints")
    ctx.tracker.set_tags({"gpuops.checkpoint_iteration": str(it)})


def load_checkpoint(ctx: RunContext, model: nn.Module, optimizer: Any, scheduler: Any) -> int:
    """Restore the run's last checkpoint (downloaded from its artifacts); the iteration to start
    from, 0 when the run has none. Every rank loads it (rank 0 downloads first)."""
    if not ctx.resume:
        return 0
    path = ctx.workdir / "resume" / "last.pt"
    if ctx.is_main and ctx.tracker is not None:
        try:
            got = ctx.tracker.download(CHECKPOINT_ARTIFACT, ctx.workdir / "resume")
            if got != path and got.is_file():
                path = got
        except Exception:  # no checkpoint yet: start again from zero, in the same run
            pass
    if ctx.world > 1:
        import torch.distributed as dist

        dist.barrier()
    if not path.is_file():
        return 0
    state = torch.load(path, map_location=ctx.device, weights_only=True)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["iteration"])


# --------------------------------------------------------------------------- the loop
@dataclass
class LoopResult:
    iterations: int
    start: int
    final: dict[str, float]
    seconds: float


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
    ctx.events.emit("start", total=total, start=start, run_id=tr.run_id if tr else None)

    final: dict[str, float] = {}
    began = time.perf_counter()
    window_start, window_loss, window_n = time.perf_counter(), torch.zeros((), device=ctx.device), 0
    model.train()
    for it in range(start, total):
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
        if t.checkpoint_every and done % t.checkpoint_every == 0 and done != total:
            save_checkpoint(ctx, done, model, optimizer, scheduler)
            ctx.events.emit("checkpoint", it=done)
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
