"""Evaluation: an identity network must score exactly the bicubic baseline, through every path
(Y and RGB, valid padding with its input padding, LR-grid models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpuops.sr.color import to_uint8
from gpuops.sr.data import degrade, modcrop
from gpuops.sr.evaluate import PANEL_GAP, bicubic_baseline, evaluate, upscale
from gpuops.sr.imresize import imresize
from gpuops.sr.models import build_sr_model


def _identity(layers: str, channels: int, padding: str):
    """A one-layer SRCNN whose kernel passes the centre pixel of each channel through."""
    m = build_sr_model("srcnn", layers=layers, channels=channels, padding=padding)
    conv = m.body[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        kh, kw = conv.weight.shape[-2:]
        for c in range(channels):
            conv.weight[c, c, kh // 2, kw // 2] = 1.0
    return m


@pytest.mark.parametrize(
    ("layers", "channels", "padding", "colour"),
    [("1x1x1", 1, "same", "y"), ("1x5x5", 1, "valid", "y"), ("3x3x3", 3, "valid", "rgb")],
)
def test_identity_model_scores_the_bicubic_baseline(small_set, layers, channels, padding, colour) -> None:
    scale = 3
    model = _identity(layers, channels, padding)
    model.train()
    result = evaluate(model, small_set, scale, colour, "cpu")
    assert model.training  # mode restored
    base = bicubic_baseline(small_set, scale)
    assert result.psnr_bicubic == pytest.approx(base["psnr"])
    assert result.psnr == pytest.approx(result.psnr_bicubic, abs=1e-9)
    assert result.ssim == pytest.approx(result.ssim_bicubic, abs=1e-9)
    for name, img in small_set:
        hr = modcrop(img, scale)
        _, up = degrade(hr, scale)
        panel = result.panels[name]
        w = hr.shape[1]
        assert panel.shape == (hr.shape[0], 3 * w + 2 * PANEL_GAP, 3) and panel.dtype == np.uint8
        np.testing.assert_array_equal(panel[:, :w], up)
        np.testing.assert_array_equal(panel[:, -w:], hr)
        middle = panel[:, w + PANEL_GAP : 2 * w + PANEL_GAP].astype(int)
        # Y models rebuild RGB from their Y and the bicubic Cb/Cr: within rounding of bicubic.
        assert np.abs(middle - up).max() <= (0 if colour == "rgb" else 2)
        assert set(result.per_image[name]) == {"psnr", "ssim", "psnr_bicubic", "ssim_bicubic"}


def test_untrained_model_is_worse_than_bicubic(small_set) -> None:
    torch.manual_seed(0)
    model = build_sr_model("espcn", layers="8x3x3_1x3x3", scale=2, padding="valid")
    result = evaluate(model, small_set, 2, "y", "cpu", panels=False)
    assert result.psnr < result.psnr_bicubic - 10
    assert result.panels == {}


def test_upscale_sizes_and_identity(set5) -> None:
    lr = set5[3][1][:31, :23]
    model = _identity("3x3x3", 3, "valid")
    out = upscale(model, lr, 3, "rgb", "cpu")
    assert out.shape == (93, 69, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, to_uint8(imresize(lr, output_shape=(93, 69))))
    espcn = build_sr_model("espcn", scale=2)
    assert upscale(espcn, lr, 2, "y", "cpu").shape == (62, 46, 3)
    fsrcnn = build_sr_model("fsrcnn", scale=4, channels=3, padding="same")
    assert upscale(fsrcnn, lr, 4, "rgb", "cpu").shape == (124, 92, 3)


def test_mismatches_are_value_errors(small_set) -> None:
    with pytest.raises(ValueError, match="x2"):
        evaluate(build_sr_model("espcn", scale=2), small_set, 3, "y", "cpu")
    with pytest.raises(ValueError, match="channel"):
        evaluate(build_sr_model("srcnn", channels=1), small_set, 3, "rgb", "cpu")
