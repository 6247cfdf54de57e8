"""PSNR and SSIM against scikit-image, an independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gpuops.sr.color import rgb_to_y8
from gpuops.sr.data import degrade, modcrop
from gpuops.sr.metrics import psnr, ssim


def _pairs(set5):
    rng = np.random.default_rng(0)
    for _, img in set5[:3]:
        hr = modcrop(img, 3)
        _, up = degrade(hr, 3)
        yield rgb_to_y8(up), rgb_to_y8(hr)
    a = rng.integers(0, 256, size=(64, 48)).astype(np.float64)
    yield a, np.clip(a + rng.normal(0, 12, a.shape), 0, 255)


@pytest.mark.parametrize("border", [0, 3, 4])
def test_psnr_and_ssim_match_scikit_image(set5, border: int) -> None:
    for a, b in _pairs(set5):
        ca = a[border : a.shape[0] - border, border : a.shape[1] - border].astype(np.float64)
        cb = b[border : b.shape[0] - border, border : b.shape[1] - border].astype(np.float64)
        want_p = peak_signal_noise_ratio(cb, ca, data_range=255)
        want_s = structural_similarity(
            ca, cb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        assert psnr(a, b, border=border) == pytest.approx(want_p, abs=1e-6)
        assert ssim(a, b, border=border) == pytest.approx(want_s, abs=1e-4)


def test_edge_cases() -> None:
    a = np.full((20, 20), 100.0)
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0)
    # One grey level of error everywhere: 10 log10(255^2 / 1).
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))
    with pytest.raises(ValueError):
        psnr(a, a[:10])
    with pytest.raises(ValueError):
        psnr(a, a, border=10)
    with pytest.raises(ValueError):
        ssim(a[:8, :8], a[:8, :8])
