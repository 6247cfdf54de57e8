"""The super-resolution loop: patches held on the device, MSE, periodic evaluation on the whole
evaluation set (PSNR/SSIM on Y beside the bicubic baseline), panels, learning curve, model.

Artifacts of an SR run:

* ``eval/per_image.csv``: per image (and the mean) PSNR/SSIM of the model and of bicubic, one block
  of rows per evaluation (rewritten at every evaluation, so it is there while the run goes on);
* ``panels/<image>.png``: bicubic | model | ground truth on the crop where bicubic is worst, each
  tile captioned with its PSNR/SSIM, the crop named in the title (and in the PNG text chunks);
* ``learning_curve.png``: training loss, and PSNR in dB on the named data set and scale with the
  bicubic baseline as a labelled line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpuops.train.common import LoopResult, RunContext, fit, generator, iterations_for, unwrap


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
        "residual": spec.model.residual,
    }


def build_from_config(cfg: dict[str, Any]) -> torch.nn.Module:
    from gpuops.sr.models import build_sr_model

    return build_sr_model(cfg["arch"], layers=cfg.get("layers"), channels=int(cfg["channels"]),
                          scale=int(cfg["scale"]), activation=cfg.get("activation", "relu"),
                          padding=cfg.get("padding", "valid"), batch_norm=bool(cfg.get("batch_norm")),
                          residual=bool(cfg.get("residual")))


def centre_crop(img: np.ndarray, size: int, scale: int) -> np.ndarray:
    """The centre ``size`` x ``size`` region (a multiple of ``scale``; smaller images stay whole)."""
    h, w = img.shape[:2]
    ch, cw = min(h, size) // scale * scale, min(w, size) // scale * scale
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


class CpuBf16(torch.nn.Module):
    """Runs the wrapped model's forward under CPU bf16 autocast and returns float32.

    ``fit``'s ``TrainStep`` autocasts on CUDA only; on a CPU with bf16 instructions (AVX512-BF16,
    AMX) the SR convolutions run about twice as fast this way (bench/results/sr_cpu_levers.md).
    The wrapped model is ``.module``, so ``unwrap`` (checkpoints, evaluation, the saved model)
    sees the plain float32 network; evaluation never runs under autocast."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.module(x).float()


def cpu_bf16_native() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX); elsewhere bf16 is
    emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def shaved_mse(shave: int):
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if out.shape[-2:] != target.shape[-2:]:
            dh = (target.shape[-2] - out.shape[-2]) // 2 if shave == 0 else shave
            dw = (target.shape[-1] - out.shape[-1]) // 2 if shave == 0 else shave
            target = target[..., dh:dh + out.shape[-2], dw:dw + out.shape[-1]]
        return F.mse_loss(out.float(), target)

    return loss


def train_sr(ctx: RunContext) -> LoopResult:
    from gpuops.sr.data import load_images, make_patches, random_patches
    from gpuops.sr.evaluate import evaluate, per_image_csv, per_image_rows
    from gpuops.sr.figures import labelled_panel

    spec = ctx.resolved.spec
    d, t = spec.data, spec.train
    cfg = model_config(spec)
    model = build_from_config(cfg).to(ctx.device)
    # channels_last pays on the CPU as well as on CUDA for these convolution stacks (measured in
    # bench/results/sr_cpu_levers.md), so the SR loop honours it on every device.
    mem = torch.channels_last if spec.resources.channels_last else torch.contiguous_format
    model = model.to(memory_format=mem)

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
        return x_all.index_select(0, idx).contiguous(memory_format=mem), y_all.index_select(0, idx)

    last: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    dataset = Path(str(d.eval)).name or str(d.eval)
    model_name = f"{cfg['arch']}{' (residual)' if cfg.get('residual') else ''}"

    def run_eval(it: int, final: bool) -> dict[str, float]:
        net = unwrap(model)
        net.eval()
        with torch.no_grad():
            r = evaluate(net, eval_images, d.scale, d.colour, ctx.device, panels=final and spec.eval.panels)
        if final:
            last["result"] = r
        table.extend(per_image_rows(r, it))
        if ctx.tracker is not None:
            ctx.tracker.log_text(per_image_csv(table), "eval/per_image.csv")
        return {"val/psnr": float(r.psnr), "val/ssim": float(r.ssim),
                "val/psnr_bicubic": float(r.psnr_bicubic), "val/ssim_bicubic": float(r.ssim_bicubic),
                **full_baseline}

    def on_end() -> None:
        tr = ctx.tracker
        if tr is None:
            return
        r = last.get("result")
        if spec.eval.panels and r is not None:
            for name, (up, sr_img, hr) in r.images.items():
                panel = labelled_panel(f"{dataset}/{name}", up, sr_img, hr, scale=d.scale,
                                       scores=r.per_image[name], model_name=model_name)
                tr.log_artifact(panel.save(ctx.workdir / "panels" / f"{name}.png"), "panels")
        save_model(ctx, unwrap(model), cfg)
        png = sr_learning_curve(tr, dataset, d.scale, ctx.workdir / "learning_curve.png", spec.name)
        if png is not None:
            tr.log_artifact(png)

    ctx.events.emit("data", train_patches=int(n), eval_images=len(eval_images),
                    parameters=sum(p.numel() for p in model.parameters()))
    net: torch.nn.Module = model
    if ctx.device.type == "cpu" and spec.resources.precision == "bf16":
        if cpu_bf16_native():
            net = CpuBf16(model)
        elif ctx.tracker is not None:  # emulated bf16 is slower than fp32: train in fp32, say so
            ctx.tracker.set_tags({"gpuops.precision_fallback": "fp32: this CPU has no native bf16"})
    return fit(ctx, net, batch=batch, loss_fn=shaved_mse(model.shave), total=total,
               samples_per_iter=t.batch_size * ctx.world, evaluate=run_eval, eval_every=spec.eval.every,
               on_end=on_end)


def sr_learning_curve(tracker: Any, dataset: str, scale: int, path: Path, label: str) -> Path | None:
    """``learning_curve.png`` from the run's history (loss and PSNR against iterations)."""
    from gpuops.sr.figures import learning_curve_figure, save_figure

    def hist(key: str) -> list[tuple[float, float]]:
        got = tracker.client.get_metric_history(tracker.run_id, key)
        return [(float(m.step), float(m.value)) for m in got]

    loss, psnr, base = hist("train/loss"), hist("val/psnr"), hist("val/psnr_bicubic")
    if not loss and not psnr:
        return None
    fig = learning_curve_figure(psnr, bicubic=base[-1][1] if base else None, dataset=dataset, scale=scale,
                                loss=loss or None, label=label)
    return save_figure(fig, path)


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
