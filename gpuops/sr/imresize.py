"""MATLAB-compatible bicubic ``imresize``.

The SR literature (SRCNN, FSRCNN, VDSR, ...) makes its low-resolution inputs and its bicubic
baselines with MATLAB's ``imresize(img, scale, 'bicubic')``. PIL and OpenCV use a different cubic
kernel / no antialiasing, which shifts PSNR by tenths of a dB, so the published tables are only
reproduced by the same recipe. What that recipe is (documented behaviour of MATLAB's imresize,
re-derived here):

* the cubic convolution kernel of Keys (1981) with a = -0.5, support [-2, 2];
* output size ``ceil(in * scale)`` when a scale is given;
* output pixel ``x`` (1-based) samples input coordinate ``u = x / s + 0.5 * (1 - 1 / s)``;
* when shrinking (s < 1) the kernel is stretched to ``s * k(s * t)`` (antialiasing), so it
  covers ``4 / s`` input pixels;
* the weights of each output pixel are normalised to sum to 1;
* out-of-range input indices are mirrored (symmetric padding: ..., 2, 1, 1, 2, ...);
* each axis is resized separately, the axis with the smaller scale first.

Each axis is a banded (out x in) weight matrix, applied as a few weighted gathers per axis.
"""

from __future__ import annotations

import math

import numpy as np


def cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5."""
    a = np.abs(t)
    a2 = a * a
    a3 = a2 * a
    near = (1.5 * a3 - 2.5 * a2 + 1.0) * (a <= 1)
    far = (-0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0) * ((a > 1) & (a <= 2))
    return near + far


def contributions(
    in_len: int, out_len: int, scale: float, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel, its input taps: ``(weights, indices)``, both ``(out_len, taps)``.

    Indices are 0-based and already mirrored into ``[0, in_len)``; each row of weights sums to 1.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"cannot resize an axis of length {in_len} to {out_len}")
    shrink = scale < 1 and antialias
    width = 4.0 / scale if shrink else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    w = scale * cubic(scale * dist) if shrink else cubic(dist)
    w /= w.sum(axis=1, keepdims=True)
    # Symmetric (mirror) boundary: index sequence 1..n, n..1 repeated.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)  # taps that are zero for every output pixel
    return w[:, keep], cols[:, keep]


def weights_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The dense (out_len, in_len) matrix that resizes one axis: ``out = W @ in``."""
    w, cols = contributions(in_len, out_len, scale, antialias)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], cols.shape)
    np.add.at(mat, (rows, cols), w)
    return mat


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    # A weighted sum of a few gathered rows (or columns) per tap: the weight matrix is banded, so
    # this is much cheaper than a dense product.
    w, cols = contributions(img.shape[axis], out_len, scale)
    moved = np.moveaxis(img, axis, 0)
    shape = (out_len,) + (1,) * (moved.ndim - 1)
    out = np.zeros((out_len, *moved.shape[1:]), dtype=np.float64)
    for k in range(w.shape[1]):
        out += w[:, k].reshape(shape) * moved[cols[:, k]]
    return np.moveaxis(out, 0, axis)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize an HxW or HxWxC image like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Give ``scale`` (same factor on both axes, output ``ceil(H * scale) x ceil(W * scale)``) or
    ``output_shape`` ``(rows, cols)``. Accepts uint8 or float input; computes in float64 and
    returns float64 without rounding or clipping (round with :func:`gpuops.sr.color.to_uint8`).
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC image, got shape {arr.shape}")
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize needs exactly one of scale or output_shape")
    h, w = arr.shape[:2]
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
        scales = (float(scale), float(scale))
    else:
        assert output_shape is not None
        out_h, out_w = int(output_shape[0]), int(output_shape[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"output_shape must be positive, got {output_shape}")
        scales = (out_h / h, out_w / w)
    data = arr.astype(np.float64, copy=False)
    sizes = (out_h, out_w)
    # MATLAB resizes along the dimension with the smaller scale first (stable: rows on ties).
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        if data.shape[axis] == sizes[axis] and scales[axis] == 1.0:
            continue
        data = _resize_axis(data, axis, sizes[axis], scales[axis])
    return np.ascontiguousarray(data)
