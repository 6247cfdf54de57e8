"""The artifacts explain themselves: panels carry bicubic | model | ground truth, each tile's
PSNR/SSIM and the crop; the learning curve names the data set, the scale, the unit and bicubic.
Checked on the figure objects and on the PNG text chunks written beside the pixels."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpuops.sr.data import degrade, modcrop
from gpuops.sr.evaluate import evaluate, per_image_csv, per_image_rows
from gpuops.sr.figures import CROP, choose_crop, labelled_panel, learning_curve_figure, save_figure
from gpuops.sr.models import build_sr_model


def _trained_a_little(scale: int = 3):
    """A tiny residual ESPCN after 30 real training steps: better than bicubic, not equal to it."""
    from gpuops.sr.data import load_images, random_patches
    from tests.sr.conftest import set5_folder

    torch.manual_seed(0)
    model = build_sr_model("espcn", layers="16x3x3_1x3x3", scale=scale, padding="same", residual=True)
    train = load_images(set5_folder().parent / "T91")[:3]
    xs, ys = random_patches(train, scale, "y", 36, 256, np.random.default_rng(0), pre_upsample=False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for i in range(30):
        idx = slice((i * 16) % 256, (i * 16) % 256 + 16)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(torch.from_numpy(xs[idx])), torch.from_numpy(ys[idx])).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def result(set5):
    images = [(name, img[:150, :150].copy()) for name, img in set5[:3]]
    return evaluate(_trained_a_little(), images, 3, "y", "cpu")


def test_panel_is_labelled_with_tiles_scores_and_crop(result, tmp_path: Path) -> None:
    name = "baby"
    up, sr_img, hr = result.images[name]
    scores = result.per_image[name]
    panel = labelled_panel(f"Set5/{name}", up, sr_img, hr, scale=3, scores=scores, model_name="espcn")
    path = panel.save(tmp_path / "panel.png")
    with Image.open(path) as im:
        im.load()
        text = dict(im.text)
        size = im.size
    assert text["tile 1"].startswith("bicubic") and text["tile 2"].startswith("espcn")
    assert text["tile 3"].startswith("ground truth")
    assert f"PSNR {scores['psnr_bicubic']:.2f} dB, SSIM {scores['ssim_bicubic']:.4f}" in text["tile 1"]
    assert f"PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f}" in text["tile 2"]
    assert "Set5/baby" in text["Title"] and "x3" in text["Title"] and "crop rows" in text["Title"]
    assert "bicubic | model | ground truth" in text["Description"]
    crop = choose_crop(up, hr, border=3)
    assert f"rows {crop.top}-{crop.top + crop.size}" in text["crop"]
    assert f"of {hr.shape[0]}x{hr.shape[1]}" in text["crop"]
    # three tiles of the zoomed crop side by side, with a title bar and captions
    assert size[0] >= 3 * crop.size * 2 + 2 * 6 and size[1] > crop.size * 2
    # the middle tile shows the model's pixels of that crop (zoomed by pixel repetition)
    rgb = np.asarray(panel.image)
    tile = rgb[24 : 24 + 2 * crop.size : 2, crop.size * 2 + 6 : crop.size * 4 + 6 : 2]
    want = sr_img[crop.top : crop.top + crop.size, crop.left : crop.left + crop.size]
    np.testing.assert_array_equal(tile, want)


def test_crop_goes_where_bicubic_is_worst(set5) -> None:
    hr = modcrop(set5[0][1], 3)
    _, up = degrade(hr, 3)
    spoiled = up.copy()
    spoiled[300:340, 40:80] = 0  # a black square: by far the worst bicubic error
    c = choose_crop(spoiled, hr, border=3)
    assert c.size == CROP
    assert c.top <= 300 and c.top + c.size >= 340 and c.left <= 40 and c.left + c.size >= 80


def test_per_image_table_has_every_image_and_the_mean(result) -> None:
    rows = per_image_rows(result, 500)
    table = list(csv.DictReader(io.StringIO(per_image_csv(rows))))
    assert [r["image"] for r in table] == [*result.per_image, "mean"]
    for r in table[:-1]:
        got = result.per_image[r["image"]]
        assert float(r["psnr"]) == pytest.approx(got["psnr"], abs=1e-4)
        assert float(r["ssim_bicubic"]) == pytest.approx(got["ssim_bicubic"], abs=1e-5)
        assert r["iteration"] == "500"
    mean = np.mean([float(r["psnr"]) for r in table[:-1]])
    assert float(table[-1]["psnr"]) == pytest.approx(mean, abs=2e-4)
    assert float(table[-1]["psnr"]) > float(table[-1]["psnr_bicubic"])  # trained: beats bicubic


def test_learning_curve_names_data_scale_unit_and_bicubic(tmp_path: Path) -> None:
    psnr = [(500.0, 31.9), (1000.0, 32.4), (1500.0, 32.6)]
    loss = [(50.0, 0.004), (500.0, 0.0015), (1500.0, 0.0011)]
    fig = learning_curve_figure(psnr, bicubic=30.39, dataset="Set5", scale=3, loss=loss, label="sr_fast",
                                refs={"SRCNN 9-1-5 (T91)": 32.39})
    ax = fig.axes[-1]
    assert ax.get_title() == "Set5 x3: PSNR on Y (dB)" and ax.get_ylabel() == "PSNR (dB)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["sr_fast", "bicubic 30.39 dB", "SRCNN 9-1-5 (T91) 32.39 dB"]
    bicubic_line = next(ln for ln in ax.get_lines() if ln.get_label() == "bicubic 30.39 dB")
    assert list(bicubic_line.get_ydata()) == [30.39, 30.39]
    assert fig.axes[0].get_yscale() == "log"
    path = save_figure(fig, tmp_path / "curve.png")
    with Image.open(path) as im:
        text = dict(im.text)
    assert "Set5 x3" in text["Title"] and "(dB)" in text["Title"]
    for word in ("data set Set5", "scale x3", "unit dB", "bicubic baseline 30.39 dB"):
        assert word in text["Description"]
