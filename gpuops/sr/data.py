"""Image folders, the SR degradation, and training patches.

Degradation (the SR papers' recipe): crop the HR image to a multiple of the scale (``modcrop``),
shrink it with MATLAB-compatible bicubic ``imresize`` and round to 8 bit (the LR image), then
enlarge the LR image back with the same ``imresize`` and round (the bicubic baseline, and the input
of pre-upsampling models such as SRCNN and VDSR).

Patches are float32 ``N, C, h, w`` in [0, 1]: C = 1 for ``colour="y"`` (the BT.601 Y channel / 255;
a greyscale image is its own Y) and 3 for ``"rgb"`` (a greyscale image on three equal channels).
Targets are always the full patch; a model with valid padding produces a smaller output, and the
trainer crops ``model.shave`` pixels from each border of the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from gpuops.sr.color import as_rgb, luma, to_uint8
from gpuops.sr.imresize import imresize

Colour = Literal["y", "rgb"]
IMAGE_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"}
GREY_MODES = ("1", "L", "LA")  # 8-bit greyscale files; anything else is read as RGB


def load_images(folder: Path) -> list[tuple[str, np.ndarray]]:
    """All images of a folder, sorted by file name, as ``(stem, uint8 array)``: HxWx3 RGB, or HxW
    for an 8-bit greyscale file (PIL modes ``1``, ``L``, ``LA``), which is evaluated as Y
    directly (see :mod:`gpuops.sr.color`)."""
    from PIL import Image

    from gpuops.errors import UsageError

    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"image folder not found: {root}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    out = []
    for p in files:
        with Image.open(p) as im:
            if im.mode in GREY_MODES:
                out.append((p.stem, np.asarray(im.convert("L"), dtype=np.uint8).copy()))
            else:
                out.append((p.stem, np.asarray(im.convert("RGB"), dtype=np.uint8).copy()))
    return out


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def degrade(hr_uint8: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lr, bicubic_up)``: both uint8, rounded; ``hr`` should already be modcropped."""
    hr = np.asarray(hr_uint8)
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"image {h}x{w} is not a multiple of scale {scale}; modcrop it first")
    lr = to_uint8(imresize(hr, output_shape=(h // scale, w // scale)))
    up = to_uint8(imresize(lr, output_shape=(h, w)))
    return lr, up


def to_channels(img_uint8: np.ndarray, colour: Colour) -> np.ndarray:
    """uint8 HxWx3 RGB (or HxW greyscale) -> float32 CxHxW in [0, 1] (Y/255 for ``"y"``)."""
    if colour == "y":
        return (luma(img_uint8) / 255.0)[None].astype(np.float32)
    if colour == "rgb":
        return (np.asarray(as_rgb(img_uint8), dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()
    raise ValueError(f"colour must be 'y' or 'rgb', got {colour!r}")


def _pairs(images, scale: int, colour: Colour, pre_upsample: bool):
    """Per image: (input CxHxW, target CxHxW) float32, after modcrop and degradation."""
    for _, img in images:
        hr = modcrop(np.asarray(img), scale)
        lr, up = degrade(hr, scale)
        yield to_channels(up if pre_upsample else lr, colour), to_channels(hr, colour)


def _grid(n: int, size: int, stride: int) -> range:
    return range(0, n - size + 1, stride)


def make_patches(
    images,
    scale: int,
    colour: Colour,
    patch: int = 33,
    stride: int = 14,
    pre_upsample: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Regular-grid patches, as in the SRCNN paper (33x33 at stride 14 on the HR grid).

    ``pre_upsample=True``: inputs are the bicubic-enlarged LR on the HR grid, ``patch`` square,
    same positions as the targets. ``False``: inputs are LR patches of ``patch // scale`` taken at
    LR stride ``max(1, stride // scale)``, targets the HR patches of ``scale`` times that size.
    """
    if patch < 1 or stride < 1:
        raise ValueError("patch and stride must be positive")
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    if pre_upsample:
        in_p, in_s, f = patch, stride, 1
    else:
        in_p, in_s, f = patch // scale, max(1, stride // scale), scale
        if in_p < 1:
            raise ValueError(f"patch {patch} is smaller than scale {scale}")
    for x, y in _pairs(images, scale, colour, pre_upsample):
        for i in _grid(x.shape[1], in_p, in_s):
            for j in _grid(x.shape[2], in_p, in_s):
                xs.append(x[:, i : i + in_p, j : j + in_p])
                ys.append(y[:, i * f : (i + in_p) * f, j * f : (j + in_p) * f])
    if not xs:
        raise ValueError(f"no {patch}x{patch} patch fits in the images")
    return np.stack(xs), np.stack(ys)


def random_patches(
    images,
    scale: int,
    colour: Colour,
    patch: int,
    n: int,
    rng: np.random.Generator,
    pre_upsample: bool = True,
    augment: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random crops (image chosen uniformly, position uniformly), with random flips and
    90-degree rotations when ``augment``. Same layout as :func:`make_patches`."""
    pairs = list(_pairs(images, scale, colour, pre_upsample))
    if not pairs:
        raise ValueError("no images")
    f = 1 if pre_upsample else scale
    in_p = patch if pre_upsample else patch // scale
    fits = [k for k, (x, _) in enumerate(pairs) if x.shape[1] >= in_p and x.shape[2] >= in_p]
    if in_p < 1 or not fits:
        raise ValueError(f"no {patch}x{patch} patch fits in the images")
    c = pairs[0][0].shape[0]
    xs = np.empty((n, c, in_p, in_p), dtype=np.float32)
    ys = np.empty((n, c, in_p * f, in_p * f), dtype=np.float32)
    for k in range(n):
        x, y = pairs[fits[int(rng.integers(len(fits)))]]
        i = int(rng.integers(x.shape[1] - in_p + 1))
        j = int(rng.integers(x.shape[2] - in_p + 1))
        px = x[:, i : i + in_p, j : j + in_p]
        py = y[:, i * f : (i + in_p) * f, j * f : (j + in_p) * f]
        if augment:
            rot = int(rng.integers(4))
            px, py = np.rot90(px, rot, axes=(1, 2)), np.rot90(py, rot, axes=(1, 2))
            if rng.integers(2):
                px, py = px[:, :, ::-1], py[:, :, ::-1]
        xs[k] = px
        ys[k] = py
    return xs, ys
