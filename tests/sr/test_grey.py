"""A one-channel image is its own Y (the papers' MATLAB code converts only three-channel images),
not an RGB conversion squeezed into [16, 235]."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpuops.sr.color import as_rgb, luma8, rgb_to_y8
from gpuops.sr.data import degrade, load_images, modcrop, to_channels
from gpuops.sr.evaluate import bicubic_baseline, evaluate
from gpuops.sr.metrics import psnr, ssim
from gpuops.sr.models import build_sr_model


@pytest.fixture(scope="module")
def grey_butterfly(set5, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    """Set5's butterfly turned greyscale by PIL, written as a one-channel PNG and read back."""
    rgb = dict(set5)["butterfly"]
    folder = tmp_path_factory.mktemp("grey")
    Image.fromarray(rgb).convert("L").save(folder / "butterfly_grey.png")
    [(name, img)] = load_images(folder)
    return name, img


def test_a_greyscale_file_loads_as_one_channel(grey_butterfly, set5) -> None:
    name, img = grey_butterfly
    want = np.asarray(Image.fromarray(dict(set5)["butterfly"]).convert("L"))
    assert name == "butterfly_grey" and img.ndim == 2 and img.dtype == np.uint8
    np.testing.assert_array_equal(img, want)
    np.testing.assert_array_equal(luma8(img), img)  # its own Y, values untouched
    assert img.min() < 16 or img.max() > 235  # real greyscale uses the full range
    np.testing.assert_allclose(to_channels(img, "y")[0], img / 255.0, rtol=0, atol=1e-7)
    assert to_channels(img, "rgb").shape == (3, *img.shape)


def test_grey_metrics_use_the_image_as_y(grey_butterfly) -> None:
    name, img = grey_butterfly
    scale = 3
    hr = modcrop(img, scale)
    _, up = degrade(hr, scale)
    assert up.ndim == 2
    base = bicubic_baseline([(name, img)], scale)
    assert base["psnr"] == pytest.approx(psnr(up, hr, border=scale))
    assert base["ssim"] == pytest.approx(ssim(up, hr, border=scale))
    # Going through RGB and BT.601 Y would scale every error by 219/255 (and round again):
    # about 20*log10(255/219) = 1.32 dB too optimistic.
    squeezed = psnr(rgb_to_y8(as_rgb(up)), rgb_to_y8(as_rgb(hr)), border=scale)
    assert squeezed - base["psnr"] == pytest.approx(20 * math.log10(255 / 219), abs=0.05)


def test_a_model_on_a_grey_image_scores_on_the_grey_pixels(grey_butterfly) -> None:
    name, img = grey_butterfly
    crop = [(name, img[60:180, 60:180].copy())]
    scale = 3
    # a one-layer network that passes its input through: must score exactly bicubic
    model = build_sr_model("srcnn", layers="1x3x3", padding="same")
    with torch.no_grad():
        model.body[0].weight.zero_()
        model.body[0].weight[0, 0, 1, 1] = 1.0
        model.body[0].bias.zero_()
    r = evaluate(model, crop, scale, "y", "cpu")
    assert r.psnr == pytest.approx(r.psnr_bicubic, abs=1e-9)
    assert r.psnr_bicubic == pytest.approx(bicubic_baseline(crop, scale)["psnr"])
    up, sr_img, hr = r.images[name]
    assert sr_img.ndim == 2 and sr_img.shape == hr.shape
    np.testing.assert_array_equal(sr_img, up)
    assert r.panels[name].shape == (120, 3 * 120 + 8, 3)  # shown as RGB in the plain panel
    # an RGB model sees the grey image on three channels and is scored on the grey pixels too
    rgb_model = build_sr_model("espcn", layers="3x3x3", channels=3, scale=scale, padding="same",
                               residual=True)
    with torch.no_grad():
        for p in rgb_model.parameters():
            p.zero_()  # the residual branch adds nothing: the output is torch's bicubic
    r2 = evaluate(rgb_model, crop, scale, "rgb", "cpu", panels=False)
    assert r2.psnr_bicubic == pytest.approx(r.psnr_bicubic)
    assert abs(r2.psnr - r2.psnr_bicubic) < 1.0  # torch's bicubic (a = -0.75) against MATLAB's


def test_upscale_keeps_a_grey_image_grey(grey_butterfly, tmp_path: Path) -> None:
    from gpuops.sr.evaluate import upscale

    _, img = grey_butterfly
    out = upscale(build_sr_model("espcn", scale=2), img[:20, :30], 2, "y", "cpu")
    assert out.shape == (40, 60) and out.dtype == np.uint8
