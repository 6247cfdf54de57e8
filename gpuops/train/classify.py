"""The classification loop (CIFAR-10, or scikit-learn's digits for ``--smoke``): the whole data
set held on the device as normalised tensors, random crop + flip done on the device, label
smoothing, channels_last and autocast on CUDA, flip test-time augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpuops.train.common import LoopResult, RunContext, fit, generator, iterations_for, learning_curve, unwrap


def load_data(spec: Any) -> Any:
    from gpuops.classify import data as cdata

    if spec.data.dataset == "digits":
        return cdata.load_digits()
    return cdata.load_cifar10(Path(spec.data.root))


def _nchw(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:  # N,H,W grey
        x = x[..., None]
    return x.transpose(0, 3, 1, 2)


def model_config(spec: Any, in_channels: int, num_classes: int, mean: list[float], std: list[float],
                 classes: list[str]) -> dict[str, Any]:
    return {"task": "classify", "arch": spec.model.arch, "in_channels": in_channels,
            "num_classes": num_classes, "mean": mean, "std": std, "classes": classes}


def random_crop_flip(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Per-example random crop (reflect padding ``pad``) and horizontal flip, vectorised."""
    n, _, h, w = x.shape
    dev = x.device
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.to(dev)[:, None, None, None], x.flip(3), x)
    if pad <= 0:
        return x
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
    bi = torch.arange(n, device=dev)[:, None, None, None]
    ci = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    return xp[bi, ci, rows, cols]


def train_classify(ctx: RunContext) -> LoopResult:
    from gpuops.classify.models import build_classifier

    spec = ctx.resolved.spec
    t, d = spec.train, spec.data
    data = load_data(spec)
    x_train = _nchw(data.x_train)
    y_train = np.asarray(data.y_train, dtype=np.int64)
    x_test = _nchw(data.x_test)
    y_test = np.asarray(data.y_test, dtype=np.int64)
    if t.subset:
        order = np.random.default_rng(spec.seed).permutation(len(y_train))[: t.subset]
        x_train, y_train = x_train[order], y_train[order]
    if ctx.tracker is not None and ctx.is_main:  # the N actually trained on (a smoke run caps subset)
        ctx.tracker.log_params({"data.train_examples": len(y_train)})
    if d.test_subset:
        x_test, y_test = x_test[: d.test_subset], y_test[: d.test_subset]

    xf = x_train.astype(np.float32) / 255.0
    mean = xf.mean(axis=(0, 2, 3))
    std = xf.std(axis=(0, 2, 3)) + 1e-6
    mem = torch.channels_last if (spec.resources.channels_last and ctx.device.type == "cuda") else None

    def to_dev(x: np.ndarray) -> torch.Tensor:
        tx = torch.from_numpy(((x.astype(np.float32) / 255.0 - mean[None, :, None, None])
                               / std[None, :, None, None]).astype(np.float32)).to(ctx.device)
        return tx.contiguous(memory_format=mem) if mem is not None else tx

    xtr, ytr = to_dev(x_train), torch.from_numpy(y_train).to(ctx.device)
    xte, yte = to_dev(x_test), torch.from_numpy(y_test).to(ctx.device)
    classes = list(data.classes)
    model = build_classifier(spec.model.arch, num_classes=len(classes), in_channels=xtr.shape[1])
    model = model.to(ctx.device)
    if mem is not None:
        model = model.to(memory_format=mem)

    n = xtr.shape[0]
    per_rank = max(1, n // ctx.world)
    bs = min(t.batch_size, per_rank)
    steps_per_epoch = max(1, per_rank // bs)
    total = iterations_for(t, per_rank, bs) if t.iterations else int(t.epochs or 1) * steps_per_epoch
    pad = max(1, xtr.shape[-1] // 8) if d.augment else 0
    perms: dict[int, torch.Tensor] = {}

    def batch(it: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, k = divmod(it, steps_per_epoch)
        if epoch not in perms:
            perms.clear()
            perm = torch.randperm(n, generator=generator(spec.seed, 7, epoch))
            perms[epoch] = perm[ctx.rank::ctx.world].to(ctx.device)
        idx = perms[epoch][k * bs:(k + 1) * bs]
        x = xtr.index_select(0, idx)
        if d.augment:
            x = random_crop_flip(x, pad, generator(spec.seed, ctx.rank, it))
        return x, ytr.index_select(0, idx)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=t.label_smoothing)

    def run_eval(it: int, final: bool) -> dict[str, float]:
        net = unwrap(model)
        net.eval()
        correct, loss_sum = 0, 0.0
        with torch.no_grad():
            for i in range(0, xte.shape[0], spec.eval.batch_size):
                xb, yb = xte[i:i + spec.eval.batch_size], yte[i:i + spec.eval.batch_size]
                with torch.autocast(ctx.device.type, dtype=torch.bfloat16,
                                    enabled=ctx.device.type == "cuda" and spec.resources.precision != "fp32"):
                    logits = net(xb).float()
                    if spec.eval.tta_flip:
                        logits = 0.5 * (logits + net(xb.flip(3)).float())
                loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(1) == yb).sum())
        m = xte.shape[0]
        return {"val/accuracy": correct / m, "val/loss": loss_sum / m}

    cfg = model_config(spec, int(xtr.shape[1]), len(classes), [float(v) for v in mean],
                       [float(v) for v in std], classes)

    def on_end() -> None:
        from gpuops.train.sr import save_model

        tr = ctx.tracker
        if tr is None:
            return
        save_model(ctx, unwrap(model), cfg)
        png = learning_curve(tr, ["val/accuracy"], None, ctx.workdir / "learning_curve.png")
        if png is not None:
            tr.log_artifact(png)

    ctx.events.emit("data", train_examples=int(n), test_examples=int(xte.shape[0]), dataset=d.dataset,
                    parameters=sum(p.numel() for p in model.parameters()))
    return fit(ctx, model, batch=batch, loss_fn=loss_fn, total=total, samples_per_iter=bs * ctx.world,
               evaluate=run_eval, eval_every=spec.eval.every, on_end=on_end)
