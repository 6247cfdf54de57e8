"""imresize against values derived by hand from the definition of MATLAB's bicubic resize."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpuops.sr.imresize import cubic, imresize

# Keys' kernel (a = -0.5) evaluated by hand at the offsets an x2 resize uses:
#   |t| <= 1: 1.5|t|^3 - 2.5|t|^2 + 1        |t| in (1, 2]: -0.5|t|^3 + 2.5|t|^2 - 4|t| + 2
K_025 = 1.5 / 64 - 2.5 / 16 + 1  # 0.8671875
K_075 = 1.5 * 27 / 64 - 2.5 * 9 / 16 + 1  # 0.2265625
K_125 = -0.5 * 125 / 64 + 2.5 * 25 / 16 - 5 + 2  # -0.0703125
K_175 = -0.5 * 343 / 64 + 2.5 * 49 / 16 - 7 + 2  # -0.0234375


def test_kernel_values() -> None:
    t = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5, -0.25, -1.75])
    want = [1.0, K_025, K_075, 0.0, K_125, K_175, 0.0, 0.0, K_025, K_175]
    np.testing.assert_allclose(cubic(t), want, atol=1e-15)
    assert abs(K_025 + K_075 + K_125 + K_175 - 1.0) < 1e-15


def test_upscale_x2_impulse_response_is_the_keys_weights() -> None:
    # x2: output pixel x (1-based) samples input u = x/2 + 1/4, so its nearest inputs lie at
    # distances 1/4, 3/4, 5/4, 7/4: an impulse at input j spreads over outputs 2j-4 .. 2j+3.
    img = np.zeros((16, 16))
    img[7, 8] = 1.0  # 0-based; 1-based (8, 9)
    out = imresize(img, 2)
    assert out.shape == (32, 32)
    w = np.array([K_175, K_125, K_075, K_025, K_025, K_075, K_125, K_175])
    rows = slice(2 * 8 - 4 - 1, 2 * 8 + 3)  # 1-based 2j-4 .. 2j+3 with j = 8
    cols = slice(2 * 9 - 4 - 1, 2 * 9 + 3)
    np.testing.assert_allclose(out[rows, cols], np.outer(w, w), atol=1e-12)
    outside = out.copy()
    outside[rows, cols] = 0
    assert np.abs(outside).max() < 1e-12


def test_shrink_x2_impulse_response_is_the_stretched_kernel() -> None:
    # x1/2 with antialiasing: kernel 0.5 * k(t / 2) over 8 taps; output x (1-based) samples input
    # 2x - 1/2. An impulse at input 10 is seen by outputs 4, 5, 6, 7 at distances 2.5, 0.5, 1.5,
    # 3.5, i.e. with weights 0.5 * k(1.25), 0.5 * k(0.25), 0.5 * k(0.75), 0.5 * k(1.75).
    img = np.zeros((20, 20))
    img[9, 9] = 1.0
    out = imresize(img, 0.5)
    assert out.shape == (10, 10)
    w = np.zeros(10)
    w[3:7] = 0.5 * np.array([K_125, K_025, K_075, K_175])
    np.testing.assert_allclose(out, np.outer(w, w), atol=1e-12)


def test_constant_image_stays_constant() -> None:
    img = np.full((23, 17, 3), 200, dtype=np.uint8)
    for kw in ({"scale": 3}, {"scale": 0.5}, {"scale": 1 / 3}, {"output_shape": (40, 11)}):
        out = imresize(img, **kw)
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, 200.0, atol=1e-9)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_quadratic_surface_is_reproduced_in_the_interior(scale: int) -> None:
    # Keys' kernel reproduces polynomials up to degree 2, so enlarging samples of
    # f(i, j) = a + b i + c j + d i^2 gives f at the coordinate each output pixel maps to.
    n = 20
    i, j = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float), indexing="ij")

    def f(i, j):
        return 5.0 + 3.0 * i + 2.0 * j + 0.25 * i * i

    out = imresize(f(i, j), scale)
    x = np.arange(1, n * scale + 1)
    u = x / scale + 0.5 * (1 - 1 / scale) - 1  # 0-based input coordinate of each output pixel
    ui, uj = np.meshgrid(u, u, indexing="ij")
    m = 3 * scale  # keep taps away from the mirrored border
    np.testing.assert_allclose(out[m:-m, m:-m], f(ui, uj)[m:-m, m:-m], atol=1e-9)


def test_shrinking_a_checkerboard_averages_it() -> None:
    # Without antialiasing, a x1/2 resize of a one-pixel checkerboard aliases; with the stretched
    # kernel every output pixel weighs the two colours equally: the mean, 127.5.
    board = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = imresize(board, 0.5)
    assert out.shape == (16, 16)
    np.testing.assert_allclose(out[2:-2, 2:-2], 127.5, atol=1e-9)


def test_output_sizes_and_types() -> None:
    img = np.arange(10 * 7, dtype=np.uint8).reshape(10, 7)
    assert imresize(img, 0.5).shape == (5, math.ceil(3.5))
    assert imresize(img, 1 / 3).shape == (4, 3)
    assert imresize(img, output_shape=(3, 9)).shape == (3, 9)
    out = imresize(np.dstack([img, img, img]), 2.5)
    assert out.shape == (25, 18, 3) and out.dtype == np.float64
    # Per channel: each channel is resized on its own.
    np.testing.assert_allclose(out[..., 1], imresize(img, 2.5))
    # Not rounded: an x3 ramp has non-integer values.
    assert not np.allclose(imresize(img, 3), np.round(imresize(img, 3)))


def test_bad_arguments() -> None:
    img = np.zeros((4, 4))
    for kw in ({}, {"scale": 2, "output_shape": (8, 8)}, {"scale": 0}, {"output_shape": (0, 3)}):
        with pytest.raises(ValueError):
            imresize(img, **kw)
    with pytest.raises(ValueError):
        imresize(np.zeros(5), 2)


# Bicubic baseline on Set5, PSNR on Y: SRCNN (Dong et al., TPAMI 2016), table of Set5 results.
PUBLISHED_BICUBIC = {2: 33.66, 3: 30.39, 4: 28.42}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_bicubic_baseline_matches_the_published_table(set5, scale: int) -> None:
    from gpuops.sr.evaluate import bicubic_baseline

    result = bicubic_baseline(set5, scale)
    assert sorted(result["per_image"]) == ["baby", "bird", "butterfly", "head", "woman"]
    assert abs(result["psnr"] - PUBLISHED_BICUBIC[scale]) <= 0.02, result["psnr"]
    assert 0.0 < result["ssim"] < 1.0
