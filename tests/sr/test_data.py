from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpuops.errors import UsageError
from gpuops.sr.color import rgb_to_y
from gpuops.sr.data import degrade, load_images, make_patches, modcrop, random_patches, to_channels


def test_load_images_sorted_rgb(tmp_path: Path, set5) -> None:
    assert [n for n, _ in set5] == ["baby", "bird", "butterfly", "head", "woman"]
    assert all(img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 for _, img in set5)
    # Greyscale files stay one channel (they are their own Y); other files are ignored.
    Image.fromarray(np.full((5, 6), 77, np.uint8), "L").save(tmp_path / "b.png")
    Image.fromarray(set5[1][1][:7, :9]).save(tmp_path / "a.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    got = load_images(tmp_path)
    assert [n for n, _ in got] == ["a", "b"]
    np.testing.assert_array_equal(got[0][1], set5[1][1][:7, :9])
    assert got[1][1].shape == (5, 6) and (got[1][1] == 77).all()


def test_load_images_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_images(tmp_path / "missing")
    with pytest.raises(UsageError, match="no images"):
        load_images(tmp_path)


def test_modcrop_and_degrade_shapes(set5) -> None:
    img = set5[2][1][:101, :77]
    hr = modcrop(img, 3)
    assert hr.shape == (99, 75, 3)
    np.testing.assert_array_equal(hr, img[:99, :75])
    lr, up = degrade(hr, 3)
    assert lr.shape == (33, 25, 3) and up.shape == hr.shape
    assert lr.dtype == np.uint8 and up.dtype == np.uint8
    with pytest.raises(ValueError, match="modcrop"):
        degrade(img, 3)
    flat = np.full((30, 30, 3), 123, np.uint8)
    lr, up = degrade(flat, 2)
    assert (lr == 123).all() and (up == 123).all()


def test_make_patches_grid_and_alignment(small_set) -> None:
    scale, patch, stride = 3, 33, 14
    x, y = make_patches(small_set, scale, "y", patch=patch, stride=stride)
    # Each 72x60 image: rows 0, 14, 28 (0+33 <= 72, 28+33 = 61 <= 72, 42+33 > 72), cols 0, 14.
    assert x.shape == y.shape == (2 * 3 * 2, 1, 33, 33)
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    # The 4th patch of the first image sits at row 14, col 14 of its HR Y / 255.
    hr = modcrop(small_set[0][1], scale)
    np.testing.assert_allclose(y[3, 0], rgb_to_y(hr)[14:47, 14:47] / 255.0, atol=1e-6)
    _, up = degrade(hr, scale)
    np.testing.assert_allclose(x[3, 0], rgb_to_y(up)[14:47, 14:47] / 255.0, atol=1e-6)


def test_make_patches_lr_inputs(small_set) -> None:
    scale = 3
    x, y = make_patches(small_set, scale, "rgb", patch=33, stride=14, pre_upsample=False)
    # LR image 24x20, LR patch 11 at LR stride 4: rows 0, 4, 8, 12; cols 0, 4, 8.
    assert x.shape == (2 * 4 * 3, 3, 11, 11) and y.shape == (2 * 4 * 3, 3, 33, 33)
    hr = modcrop(small_set[1][1], scale)
    lr, _ = degrade(hr, scale)
    k = 12 + 1 * 3 + 2  # second image, row index 1 (LR row 4), col index 2 (LR col 8)
    np.testing.assert_allclose(x[k], to_channels(lr[4:15, 8:19], "rgb"), atol=1e-7)
    np.testing.assert_allclose(y[k], to_channels(hr[12:45, 24:57], "rgb"), atol=1e-7)


def _find(big: np.ndarray, small: np.ndarray) -> list[tuple[int, int]]:
    h, w = small.shape[-2:]
    return [
        (i, j)
        for i in range(big.shape[-2] - h + 1)
        for j in range(big.shape[-1] - w + 1)
        if np.array_equal(big[..., i : i + h, j : j + w], small)
    ]


def test_random_patches_pairs_stay_aligned_under_augmentation(small_set) -> None:
    scale, patch = 2, 12
    images = small_set[:1]
    hr = to_channels(modcrop(images[0][1], scale), "rgb")
    lr = to_channels(degrade(modcrop(images[0][1], scale), scale)[0], "rgb")
    x, y = random_patches(images, scale, "rgb", patch, 6, np.random.default_rng(3), pre_upsample=False)
    assert x.shape == (6, 3, 6, 6) and y.shape == (6, 3, 12, 12)
    for px, py in zip(x, y, strict=True):
        # Undo the augmentation that makes the target a crop of the HR image: the same
        # transform must make the input the LR crop at the matching position.
        found = False
        for rot in range(4):
            for flip in (False, True):
                ty = py[:, :, ::-1] if flip else py
                tx = px[:, :, ::-1] if flip else px
                ty, tx = np.rot90(ty, -rot, axes=(1, 2)), np.rot90(tx, -rot, axes=(1, 2))
                for i, j in _find(hr, ty):
                    if i % scale == 0 and j % scale == 0:
                        li, lj = i // scale, j // scale
                        found |= np.array_equal(lr[:, li : li + 6, lj : lj + 6], tx)
        assert found
    again = random_patches(images, scale, "rgb", patch, 6, np.random.default_rng(3), pre_upsample=False)
    np.testing.assert_array_equal(again[0], x)


def test_patch_errors(small_set) -> None:
    with pytest.raises(ValueError, match="fits"):
        make_patches(small_set, 3, "y", patch=200)
    with pytest.raises(ValueError, match="colour"):
        make_patches(small_set, 3, "lab")  # type: ignore[arg-type]
