"""ESPCN (Shi et al., 2016: https://arxiv.org/abs/1609.05158) in plain PyTorch, on the Y channel.

A user's own PyTorch script that logs to MLflow itself: under `gpuops run`, MLFLOW_TRACKING_URI and
MLFLOW_RUN_ID are set, so `mlflow.start_run()` attaches to the run gpuops made (params, tags,
environment fingerprint already there) and `mlflow.log_metric` lands in it. Run alone, the same
script makes a run of its own in ./mlruns.

ESPCN works on the low-resolution image and enlarges at the end with a sub-pixel convolution
(PixelShuffle): 5x5 conv (64), 3x3 conv (32), 3x3 conv to scale^2 channels, pixel shuffle. The LR
image is the HR image downscaled with PIL's bicubic; PSNR is on Y in [0, 1] with a border of
--scale pixels left out, against PIL's bicubic enlargement as the baseline.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
from PIL import Image

SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")


def y_channel(path: str) -> np.ndarray:
    """Y of ITU-R BT.601 (MATLAB's rgb2ycbcr), float32 in [0, 1]."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return ((16.0 + rgb @ np.array([65.481, 128.553, 24.966], dtype=np.float32)) / 255.0).astype(np.float32)


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img, mode="F").resize((w, h), Image.BICUBIC), dtype=np.float32)


def load_pairs(folder: str, scale: int, first: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR, HR) Y images; HR cropped to a multiple of the scale."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(SUFFIXES))
    names = names[:first] if first else names
    out = []
    for n in names:
        hr = y_channel(os.path.join(folder, n))
        h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
        hr = hr[:h, :w]
        out.append((resize(hr, w // scale, h // scale), hr))
    return out


def psnr(a: np.ndarray, b: np.ndarray, border: int) -> float:
    a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    mse = float(np.mean((np.clip(a, 0.0, 1.0) - b) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(1 / mse)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--iterations", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patch", type=int, default=17, help="LR patch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-images", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)

    import mlflow
    import torch
    from torch import nn

    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    train, val = load_pairs(a.train, a.scale, a.train_images), load_pairs(a.eval, a.scale)
    s = a.scale
    model = nn.Sequential(nn.Conv2d(1, 64, 5, padding=2), nn.Tanh(),
                          nn.Conv2d(64, 32, 3, padding=1), nn.Tanh(),
                          nn.Conv2d(32, s * s, 3, padding=1), nn.PixelShuffle(s))
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)

    def evaluate(step: int) -> None:
        model.eval()
        ours, base = [], []
        with torch.no_grad():
            for lr, hr in val:
                sr = model(torch.from_numpy(lr)[None, None]).numpy()[0, 0]
                ours.append(psnr(sr, hr, s))
                base.append(psnr(resize(lr, hr.shape[1], hr.shape[0]), hr, s))
        mlflow.log_metrics({"val/psnr": float(np.mean(ours)), "val/psnr_bicubic_pil": float(np.mean(base))},
                           step=step)
        print(f"step {step}: Set5 PSNR {np.mean(ours):.3f} dB (bicubic {np.mean(base):.3f} dB)", flush=True)
        model.train()

    with mlflow.start_run():  # gpuops's run when MLFLOW_RUN_ID is set
        mlflow.set_tag("script.framework", f"torch {torch.__version__}")
        mlflow.log_param("script.model_parameters", sum(t.numel() for t in model.parameters()))
        window, began = [], time.time()
        for it in range(1, a.iterations + 1):
            xs, ys = [], []
            for _ in range(a.batch_size):
                lr, hr = train[rng.integers(len(train))]
                top, left = rng.integers(lr.shape[0] - a.patch + 1), rng.integers(lr.shape[1] - a.patch + 1)
                xs.append(lr[top:top + a.patch, left:left + a.patch])
                ys.append(hr[top * s:(top + a.patch) * s, left * s:(left + a.patch) * s])
            x, y = torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            window.append(loss.item())
            if it % a.log_every == 0 or it == a.iterations:
                rate = len(window) * a.batch_size / max(time.time() - began, 1e-9)
                mlflow.log_metrics({"train/loss": float(np.mean(window)), "train/throughput": rate}, step=it)
                print(f"step {it}: loss {np.mean(window):.6f} ({rate:.1f} samples/s)", flush=True)
                window, began = [], time.time()
            if it == a.iterations or (a.eval_every and it % a.eval_every == 0):
                evaluate(it)
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            torch.save(model.state_dict(), os.path.join(a.out, "espcn.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
