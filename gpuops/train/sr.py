"""The super-resolution loop: patches held on the device, MSE, periodic evaluation on the whole
evaluation set (PSNR/SSIM on Y beside the bicubic baseline), panels, learning curve, model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpuops.train.common import LoopResult, RunContext, fit, generator, iterations_for, learning_curve, unwrap


def model_config(spec: Any) -> dict[str, Any]:
    """What ``predict`` needs to rebuild the network (stored as ``model/config.json``)."""
    return {
        "task": "sr",
        "arch": spec.model.arch,
        "layers": spec.model.layers,
        "channels": 1 if spec.data.colour == "y" else 3,
        "scale": spec.data.scale,
        "colour": spec.data.colour,
        "activation": spec.model.activation,
        "padding": spec.model.padding,
        "batch_norm": spec.model.batch_norm,
    }


def build_from_config(cfg: dict[str, Any]) -> torch.nn.Module:
    from gpuops.sr.models import build_sr_model

    return build_sr_model(cfg["arch"], layers=cfg.get("layers"), channels=int(cfg["channels"]),
                          scale=int(cfg["scale"]), activation=cfg.get("activation", "relu"),
                          padding=cfg.get("padding", "valid"), batch_norm=bool(cfg.get("batch_norm")))


def centre_crop(img: np.ndarray, size: int, scale: int) -> np.ndarray:
    """The centre ``size`` x ``size`` region (a multiple of ``scale``; smaller images stay whole)."""
    h, w = img.shape[:2]
    ch, cw = min(h, size) // scale * scale, min(w, size) // scale * scale
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def shaved_mse(shave: int):
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if out.shape[-2:] != target.shape[-2:]:
            dh = (target.shape[-2] - out.shape[-2]) // 2 if shave == 0 else shave
            dw = (target.shape[-1] - out.shape[-1]) // 2 if shave == 0 else shave
            target = target[..., dh:dh + out.shape[-2], dw:dw + out.shape[-1]]
        return F.mse_loss(out, target)

    return loss


def train_sr(ctx: RunContext) -> LoopResult:
    from gpuops.sr.data import load_images, make_patches, random_patches
    from gpuops.sr.evaluate import evaluate

    spec = ctx.resolved.spec
    d, t = spec.data, spec.train
    cfg = model_config(spec)
    model = build_from_config(cfg).to(ctx.device)

    train_images = load_images(d.train)
    if d.train_images:
        train_images = train_images[: d.train_images]
    eval_images = load_images(d.eval)
    full_baseline: dict[str, float] = {}
    if spec.eval.crop:
        from gpuops.sr.evaluate import bicubic_baseline

        base = bicubic_baseline(eval_images, d.scale)
        full_baseline = {"val/psnr_bicubic_full": float(base["psnr"]),
                         "val/ssim_bicubic_full": float(base["ssim"])}
        eval_images = [(name, centre_crop(img, spec.eval.crop, d.scale)) for name, img in eval_images]
    if d.sampling == "grid":
        xs, ys = make_patches(train_images, d.scale, d.colour, patch=d.patch, stride=d.stride,
                              pre_upsample=model.pre_upsample)
    else:
        rng = np.random.default_rng([spec.seed, ctx.rank])
        xs, ys = random_patches(train_images, d.scale, d.colour, d.patch, d.patches, rng,
                                pre_upsample=model.pre_upsample, augment=d.augment)
    x_all = torch.from_numpy(xs).to(ctx.device)
    y_all = torch.from_numpy(ys).to(ctx.device)
    n = x_all.shape[0]
    total = iterations_for(t, n, t.batch_size * ctx.world)

    def batch(it: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(n, (t.batch_size,), generator=generator(spec.seed, ctx.rank, it))
        idx = idx.to(ctx.device)
        return x_all.index_select(0, idx), y_all.index_select(0, idx)

    last_panels: dict[str, np.ndarray] = {}

    def run_eval(it: int, final: bool) -> dict[str, float]:
        net = unwrap(model)
        net.eval()
        with torch.no_grad():
            r = evaluate(net, eval_images, d.scale, d.colour, ctx.device)
        if final:
            last_panels.update(r.panels)
        return {"val/psnr": float(r.psnr), "val/ssim": float(r.ssim),
                "val/psnr_bicubic": float(r.psnr_bicubic), "val/ssim_bicubic": float(r.ssim_bicubic),
                **full_baseline}

    def on_end() -> None:
        tr = ctx.tracker
        if tr is None:
            return
        if spec.eval.panels:
            for name, panel in last_panels.items():
                tr.log_image(panel, f"panels/{name}.png")
        save_model(ctx, unwrap(model), cfg)
        png = learning_curve(tr, ["val/psnr"], "val/psnr_bicubic", ctx.workdir / "learning_curve.png")
        if png is not None:
            tr.log_artifact(png)

    ctx.events.emit("data", train_patches=int(n), eval_images=len(eval_images),
                    parameters=sum(p.numel() for p in model.parameters()))
    return fit(ctx, model, batch=batch, loss_fn=shaved_mse(model.shave), total=total,
               samples_per_iter=t.batch_size * ctx.world, evaluate=run_eval, eval_every=spec.eval.every,
               on_end=on_end)


def save_model(ctx: RunContext, model: torch.nn.Module, cfg: dict[str, Any]) -> None:
    """``model/state_dict.pt`` + ``model/config.json``: enough for ``gpuops predict`` to rebuild it."""
    if ctx.tracker is None:
        return
    out = ctx.workdir / "model"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "state_dict.pt")
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    ctx.tracker.log_artifact(out / "state_dict.pt", "model")
    ctx.tracker.log_artifact(out / "config.json", "model")
