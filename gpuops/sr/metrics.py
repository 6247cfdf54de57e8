"""PSNR and SSIM as the SR papers compute them.

SSIM follows Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error visibility
to structural similarity", IEEE TIP 2004: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, local statistics with population (not sample) covariance, and the mean of the SSIM map
over the positions where the window lies wholly inside the image.
"""

from __future__ import annotations

import math

import numpy as np


def _pair(a: np.ndarray, b: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border:
        if min(x.shape[:2]) <= 2 * border:
            raise ValueError(f"border {border} leaves nothing of a {x.shape[:2]} image")
        x = x[border:-border, border:-border]
        y = y[border:-border, border:-border]
    return x, y


def psnr(a: np.ndarray, b: np.ndarray, border: int = 0, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, after cropping ``border`` pixels from every side."""
    x, y = _pair(a, b, border)
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian taps (the 2-D window is their outer product)."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable correlation with ``taps`` on both axes, 'valid' region only."""
    k = taps.size
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ taps
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ taps


def ssim(a: np.ndarray, b: np.ndarray, border: int = 0, data_range: float = 255.0) -> float:
    """Mean structural similarity of two 2-D images (Wang et al. 2004, Gaussian window)."""
    x, y = _pair(a, b, border)
    if x.ndim != 2:
        raise ValueError(f"ssim expects 2-D images, got shape {x.shape}")
    taps = gaussian_window(11, 1.5)
    if min(x.shape) < taps.size:
        raise ValueError(f"ssim needs images of at least 11x11, got {x.shape}")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x = _filter_valid(x, taps)
    mu_y = _filter_valid(y, taps)
    var_x = _filter_valid(x * x, taps) - mu_x * mu_x
    var_y = _filter_valid(y * y, taps) - mu_y * mu_y
    cov = _filter_valid(x * y, taps) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return float(np.mean(num / den))
