from __future__ import annotations

import numpy as np
import pytest

from gpuops.sr.color import rgb_to_y, rgb_to_y8, rgb_to_ycbcr, to_uint8, ycbcr_to_rgb


def test_bt601_reference_points() -> None:
    # BT.601 studio swing: black -> (16, 128, 128), white -> (235, 128, 128); full red has
    # Y = 16 + 65.481, Cb = 128 - 37.797, Cr = 128 + 112 (the matrix's first column).
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    ycc = rgb_to_ycbcr(px)
    np.testing.assert_allclose(ycc[0, 0], [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 1], [235, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 2], [81.481, 90.203, 240.0], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 3], [16 + 24.966, 240.0, 128 - 18.214], atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(px), ycc[..., 0])


def test_round_trip() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(9, 7, 3)).astype(np.float64)
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-9)


def test_to_uint8_rounds_half_up_and_clips() -> None:
    x = np.array([-3.0, 0.49, 0.5, 1.5, 2.5, 254.5, 300.0])
    # numpy's own rounding would give 2 for 2.5 (half to even); MATLAB's uint8 gives 3.
    assert to_uint8(x).tolist() == [0, 0, 1, 2, 3, 255, 255]
    assert to_uint8(x).dtype == np.uint8


def test_y8_is_the_rounded_y() -> None:
    px = np.array([[[255, 0, 0], [10, 20, 30]]], dtype=np.uint8)
    # 81.481 -> 81; 16 + (65.481*10 + 128.553*20 + 24.966*30) / 255 = 32.5... -> 33
    y = 16 + (65.481 * 10 + 128.553 * 20 + 24.966 * 30) / 255
    assert rgb_to_y8(px).tolist() == [[81, int(np.floor(y + 0.5))]]


def test_rejects_non_rgb() -> None:
    with pytest.raises(ValueError):
        rgb_to_y(np.zeros((4, 4)))
