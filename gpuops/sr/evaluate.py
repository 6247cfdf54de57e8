"""Evaluation of SR models the way the SR papers report it.

Metrics are PSNR and SSIM on the BT.601 Y channel rounded to 8 bit, with ``scale`` pixels cropped
from every border, the HR image first cropped to a multiple of the scale. With this recipe the
bicubic baseline on Set5 is 33.65 / 30.39 / 28.42 dB at x2 / x3 / x4 (published: 33.66 / 30.39 /
28.42, SRCNN TPAMI 2016).

Models with valid padding produce a smaller output than their input; here the input is padded by
edge replication first so that every model yields a full-size image comparable with the bicubic
baseline on the same pixels.

A one-channel (greyscale) image is its own Y (as in the papers' MATLAB code): its PSNR/SSIM are
computed on the image itself, not on an RGB conversion squeezed into [16, 235].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuops.sr.color import as_rgb, is_grey, luma8, rgb_to_y8, rgb_to_ycbcr, to_uint8, ycbcr_to_rgb
from gpuops.sr.data import Colour, degrade, modcrop, to_channels
from gpuops.sr.imresize import imresize
from gpuops.sr.metrics import psnr, ssim

PANEL_GAP = 4  # white pixels between the panels of a side-by-side image


@dataclass
class EvalResult:
    """Means over the images, per-image figures and side-by-side panels."""

    psnr: float
    ssim: float
    psnr_bicubic: float
    ssim_bicubic: float
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    panels: dict[str, np.ndarray] = field(default_factory=dict)
    # name -> (bicubic, model, ground truth) uint8 images, kept when panels are asked for
    images: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {
            "psnr": self.psnr,
            "ssim": self.ssim,
            "psnr_bicubic": self.psnr_bicubic,
            "ssim_bicubic": self.ssim_bicubic,
        }


def _scores(sr_y8: np.ndarray, hr_y8: np.ndarray, scale: int) -> tuple[float, float]:
    return psnr(sr_y8, hr_y8, border=scale), ssim(sr_y8, hr_y8, border=scale)


def bicubic_baseline(images, scale: int) -> dict[str, Any]:
    """PSNR/SSIM of the bicubic enlargement of each image's own LR version."""
    per: dict[str, dict[str, float]] = {}
    for name, img in images:
        hr = modcrop(np.asarray(img), scale)
        _, up = degrade(hr, scale)
        p, s = _scores(luma8(up), luma8(hr), scale)
        per[name] = {"psnr": p, "ssim": s}
    if not per:
        raise ValueError("bicubic_baseline: no images")
    return {
        "psnr": float(np.mean([v["psnr"] for v in per.values()])),
        "ssim": float(np.mean([v["ssim"] for v in per.values()])),
        "per_image": per,
    }


def _device(device: Any):
    import torch

    return device if isinstance(device, torch.device) else torch.device(device or "cpu")


def _run_full(model, x_chw: np.ndarray, out_hw: tuple[int, int], device) -> np.ndarray:
    """Model output for one image, padded at the input so that the output is ``out_hw``."""
    import torch
    import torch.nn.functional as F

    param = next(model.parameters())
    grid = 1 if model.pre_upsample else model.scale
    pad = math.ceil(model.shave / grid)
    t = torch.from_numpy(np.ascontiguousarray(x_chw))[None].to(device=_device(device), dtype=param.dtype)
    if pad:
        t = F.pad(t, (pad, pad, pad, pad), mode="replicate")
    out = model(t)[0].float().cpu().numpy()
    h, w = out_hw
    if out.shape[1] < h or out.shape[2] < w:
        raise ValueError(f"model output {out.shape[1:]} is smaller than the expected {out_hw}")
    top, left = (out.shape[1] - h) // 2, (out.shape[2] - w) // 2
    return out[:, top : top + h, left : left + w]


def _check(model, scale: int, colour: Colour) -> None:
    if colour not in ("y", "rgb"):
        raise ValueError(f"colour must be 'y' or 'rgb', got {colour!r}")
    want = 1 if colour == "y" else 3
    if getattr(model, "channels", want) != want:
        raise ValueError(f"model outputs {model.channels} channel(s) but colour {colour!r} needs {want}")
    if not model.pre_upsample and model.scale != scale:
        raise ValueError(f"model was built for x{model.scale}, asked for x{scale}")


def _predict(model, lr: np.ndarray, up: np.ndarray, colour: Colour, device) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 SR image, its uint8 Y)`` on the grid of ``up``.

    Y models: the Y is the model's own output rounded to 8 bit, Cb and Cr are taken from ``up``.
    RGB models: the Y of the rounded RGB output. A greyscale ``up`` (HxW) gives a greyscale SR
    image, which is its own Y (an RGB model sees it on three equal channels; its Y is then the
    mean of the three output channels).
    """
    x = to_channels(up if model.pre_upsample else lr, colour)
    out = _run_full(model, x, up.shape[:2], device) * 255.0
    grey = is_grey(up)
    if colour == "rgb":
        if grey:
            y8 = to_uint8(out.mean(axis=0))
            return y8, y8
        rgb = to_uint8(out.transpose(1, 2, 0))
        return rgb, rgb_to_y8(rgb)
    if grey:
        y8 = to_uint8(out[0])
        return y8, y8
    ycc = rgb_to_ycbcr(up)
    ycc[..., 0] = np.clip(out[0], 0.0, 255.0)
    return to_uint8(ycbcr_to_rgb(ycc)), to_uint8(out[0])


def _panel(*imgs: np.ndarray) -> np.ndarray:
    h = imgs[0].shape[0]
    gap = np.full((h, PANEL_GAP, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for k, im in enumerate(imgs):
        if k:
            parts.append(gap)
        parts.append(as_rgb(im))
    return np.concatenate(parts, axis=1)


def evaluate(model, images, scale: int, colour: Colour, device, *, panels: bool = True) -> EvalResult:
    """Evaluate ``model`` on ``(name, uint8 RGB)`` images; the model is left in its previous mode.

    Means over the images of PSNR/SSIM on 8-bit Y with ``scale`` border pixels cropped, for the
    model and for bicubic; ``panels`` maps each name to a bicubic | model | ground-truth image.
    """
    import torch

    _check(model, scale, colour)
    was_training = model.training
    model.eval()
    per: dict[str, dict[str, float]] = {}
    pans: dict[str, np.ndarray] = {}
    kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    try:
        with torch.inference_mode():
            for name, img in images:
                hr = modcrop(np.asarray(img), scale)
                lr, up = degrade(hr, scale)
                hr_y = luma8(hr)
                bp, bs = _scores(luma8(up), hr_y, scale)
                sr_rgb, sr_y = _predict(model, lr, up, colour, device)
                mp, ms = _scores(sr_y, hr_y, scale)
                per[name] = {"psnr": mp, "ssim": ms, "psnr_bicubic": bp, "ssim_bicubic": bs}
                if panels:
                    pans[name] = _panel(up, sr_rgb, hr)
                    kept[name] = (up, sr_rgb, hr)
    finally:
        model.train(was_training)
    if not per:
        raise ValueError("evaluate: no images")

    def mean(key: str) -> float:
        return float(np.mean([v[key] for v in per.values()]))

    return EvalResult(mean("psnr"), mean("ssim"), mean("psnr_bicubic"), mean("ssim_bicubic"), per, pans, kept)


def upscale(model, img_uint8_rgb: np.ndarray, scale: int, colour: Colour, device) -> np.ndarray:
    """Enlarge an image by ``scale`` with ``model``; uint8 of ``scale`` times the size (RGB for an
    RGB image, HxW for a greyscale one)."""
    import torch

    _check(model, scale, colour)
    lr = np.asarray(img_uint8_rgb)
    if lr.ndim == 3 and lr.shape[2] == 1:
        lr = lr[..., 0]
    if not (lr.ndim == 2 or (lr.ndim == 3 and lr.shape[2] == 3)):
        raise ValueError(f"upscale expects an HxWx3 RGB or HxW greyscale image, got shape {lr.shape}")
    h, w = lr.shape[:2]
    up = to_uint8(imresize(lr, output_shape=(h * scale, w * scale)))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return _predict(model, lr, up, colour, device)[0]
    finally:
        model.train(was_training)


PER_IMAGE_COLUMNS = ("iteration", "image", "psnr", "ssim", "psnr_bicubic", "ssim_bicubic")


def per_image_rows(result: EvalResult, iteration: int) -> list[dict[str, Any]]:
    """One row per image (and one ``mean`` row) of an evaluation, for the per-image table."""
    rows: list[dict[str, Any]] = [{"iteration": iteration, "image": name, **vals}
                                  for name, vals in result.per_image.items()]
    rows.append({"iteration": iteration, "image": "mean", **result.metrics()})
    return rows


def per_image_csv(rows: list[dict[str, Any]]) -> str:
    """The per-image table as CSV (PSNR in dB with 4 decimals, SSIM with 5)."""
    lines = [",".join(PER_IMAGE_COLUMNS)]
    for r in rows:
        lines.append(",".join([str(r["iteration"]), str(r["image"]),
                               f"{r['psnr']:.4f}", f"{r['ssim']:.5f}",
                               f"{r['psnr_bicubic']:.4f}", f"{r['ssim_bicubic']:.5f}"]))
    return "\n".join(lines) + "\n"
