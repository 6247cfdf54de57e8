"""SRCNN (Dong et al., 2014: https://arxiv.org/abs/1501.00092) in Chainer, on the Y channel.

A user's own script as `gpuops run experiments/chainer_srcnn.yaml` runs it: it knows nothing of
gpuops or MLflow. It prints one line per logged iteration and per evaluation, and the spec's
`metrics:` patterns turn those lines into MLflow metrics:

    iter 100 loss 0.001234
    eval iter 100 psnr 30.1234 bicubic 28.4321

Data: HR images (T91 to train, Set5 to evaluate). Low-resolution inputs are made the usual way
(downscale by --scale with bicubic, then bicubic back up to the HR size; PIL's bicubic, not MATLAB's
imresize), so the network learns the residual detail on the Y channel (ITU-R BT.601, the formula
of MATLAB's rgb2ycbcr). PSNR is on Y in [0, 1], with a border of --scale pixels left out.

Runs on Python 3.8+ with Chainer 7.8.1, NumPy < 2 and Pillow (environments/chainer-cpu.yaml).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


def load_y(path: str) -> np.ndarray:
    """The Y channel of an image, float32 in [0, 1] (16..235 in 8-bit terms, as rgb2ycbcr)."""
    img = Image.open(path)
    if img.mode in ("L", "I;16", "I"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    y = 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]
    return (y / 255.0).astype(np.float32)


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic down by ``scale`` and back up to the HR size."""
    h, w = hr.shape
    img = Image.fromarray(hr, mode="F")
    small = img.resize((w // scale, h // scale), Image.BICUBIC)
    return np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.float32)


def images(folder: str, first: int) -> list:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
    if first > 0:
        names = names[:first]
    if not names:
        raise SystemExit(f"no images in {folder}")
    return [os.path.join(folder, n) for n in names]


def pairs(folder: str, scale: int, first: int = 0) -> list:
    """(LR-upscaled, HR) Y images cropped to a multiple of the scale."""
    out = []
    for path in images(folder, first):
        hr = load_y(path)
        h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
        hr = hr[:h, :w]
        out.append((degrade(hr, scale), hr))
    return out


def psnr(a: np.ndarray, b: np.ndarray, border: int) -> float:
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    mse = float(np.mean((np.clip(a, 0, 1) - b) ** 2))
    return 99.0 if mse == 0 else 10.0 * math.log10(1.0 / mse)


def build(chainer, filters: tuple):
    import chainer.functions as F
    import chainer.links as L

    n1, n2 = filters

    class SRCNN(chainer.Chain):
        """9-5-5 SRCNN with zero padding, so that the output has the input's size."""

        def __init__(self) -> None:
            super().__init__()
            with self.init_scope():
                self.c1 = L.Convolution2D(1, n1, 9, pad=4)
                self.c2 = L.Convolution2D(n1, n2, 5, pad=2)
                self.c3 = L.Convolution2D(n2, 1, 5, pad=2)

        def forward(self, x):
            return self.c3(F.relu(self.c2(F.relu(self.c1(x)))))

    return SRCNN()


def predict(chainer, model, lr: np.ndarray, tile: int = 128, context: int = 8) -> np.ndarray:
    """The model on a whole image, in tiles (with ``context`` pixels around each, more than the
    network's reach of 8), so that memory stays small on the CPU."""
    h, w = lr.shape
    out = np.zeros_like(lr)
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                a0, b0 = max(y0 - context, 0), max(x0 - context, 0)
                a1, b1 = min(y1 + context, h), min(x1 + context, w)
                got = model(lr[None, None, a0:a1, b0:b1]).array[0, 0]
                out[y0:y1, x0:x1] = got[y0 - a0:y0 - a0 + (y1 - y0), x0 - b0:x0 - b0 + (x1 - x0)]
    return out


def evaluate(chainer, model, data: list, scale: int, crop: int) -> tuple:
    ours, base = [], []
    for lr, hr in data:
        if crop:
            h, w = hr.shape
            top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
            lr, hr = lr[top:top + crop, left:left + crop], hr[top:top + crop, left:left + crop]
        ours.append(psnr(predict(chainer, model, lr), hr, scale))
        base.append(psnr(lr, hr, scale))
    return float(np.mean(ours)), float(np.mean(base))


def main(argv: list) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="folder of HR training images (T91)")
    p.add_argument("--eval", required=True, help="folder of HR evaluation images (Set5)")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=33)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--filters", default="64,32", help="filters of the first two layers")
    p.add_argument("--train-images", type=int, default=0, help="use the first N training images (0: all)")
    p.add_argument("--eval-crop", type=int, default=0, help="evaluate on centre crops of N pixels (0: whole)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=0, help="0: only at the end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="folder for the trained model (model.npz)")
    a = p.parse_args(argv)

    import chainer
    import chainer.functions as F

    versions = f"chainer {chainer.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}"
    print(versions, flush=True)
    rng = np.random.RandomState(a.seed)
    np.random.seed(a.seed)  # Chainer's initialisers draw from NumPy's global generator
    train = pairs(a.train, a.scale, a.train_images)
    val = pairs(a.eval, a.scale)
    model = build(chainer, tuple(int(f) for f in a.filters.split(",")))
    opt = chainer.optimizers.Adam(alpha=a.lr)
    opt.setup(model)
    print(f"{len(train)} training images, {len(val)} evaluation images, scale x{a.scale}", flush=True)

    began, window, seen = time.time(), [], 0
    for it in range(1, a.iterations + 1):
        xs, ys = [], []
        for _ in range(a.batch_size):
            lr, hr = train[rng.randint(len(train))]
            top = rng.randint(hr.shape[0] - a.patch + 1)
            left = rng.randint(hr.shape[1] - a.patch + 1)
            xs.append(lr[top:top + a.patch, left:left + a.patch])
            ys.append(hr[top:top + a.patch, left:left + a.patch])
        x = np.stack(xs)[:, None]
        y = np.stack(ys)[:, None]
        loss = F.mean_squared_error(model(x), y)
        model.cleargrads()
        loss.backward()
        opt.update()
        window.append(float(loss.array))
        seen += a.batch_size
        if it % a.log_every == 0 or it == a.iterations:
            rate = seen / max(time.time() - began, 1e-9)
            print(f"iter {it} loss {np.mean(window):.6f} throughput {rate:.1f}", flush=True)
            window, seen, began = [], 0, time.time()
        if it == a.iterations or (a.eval_every and it % a.eval_every == 0):
            ours, base = evaluate(chainer, model, val, a.scale, a.eval_crop)
            print(f"eval iter {it} psnr {ours:.4f} bicubic {base:.4f}", flush=True)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        chainer.serializers.save_npz(os.path.join(a.out, "model.npz"), model)
        print(f"saved {os.path.join(a.out, 'model.npz')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
