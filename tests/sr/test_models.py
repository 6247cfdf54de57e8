from __future__ import annotations

import numpy as np
import pytest
import torch

from gpuops.sr.data import make_patches
from gpuops.sr.models import ARCHS, build_sr_model, count_parameters


def test_srcnn_955_parameter_count() -> None:
    m = build_sr_model("srcnn", layers="64x9x9_32x5x5_1x5x5", channels=1)
    # weights (out * in * kh * kw) + biases (out), layer by layer
    want = (64 * 1 * 9 * 9 + 64) + (32 * 64 * 5 * 5 + 32) + (1 * 32 * 5 * 5 + 1)
    assert want == 57_281
    assert count_parameters(m) == want
    assert build_sr_model("srcnn").layers == "64x9x9_32x5x5_1x5x5"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_matches_shave(arch: str, padding: str, channels: int) -> None:
    scale = 3
    m = build_sr_model(arch, channels=channels, scale=scale, padding=padding)
    assert isinstance(m.pre_upsample, bool) and isinstance(m.shave, int)
    assert m.pre_upsample == (arch in {"srcnn", "vdsr"})
    hr = 48  # vdsr with valid padding loses 20 pixels per border: 8 are left
    size_in = hr if m.pre_upsample else hr // scale
    with torch.no_grad():
        out = m(torch.zeros(2, channels, size_in, size_in))
    side = hr - 2 * m.shave
    assert tuple(out.shape) == (2, channels, side, side)
    assert (m.shave == 0) == (padding == "same")


def test_batch_norm_and_activations() -> None:
    m = build_sr_model("srcnn", layers="16x3x3_16x3x3_1x3x3", batch_norm=True, activation="leaky_relu")
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules()) == 2
    for act in ("relu", "leaky_relu", "prelu", "tanh"):
        build_sr_model("espcn", activation=act)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "srcnn", "layers": "64x9x9_32x5x5_3x5x5", "channels": 1}, "last layer has 3 filters"),
        ({"arch": "srcnn", "layers": "64x9x9_32x5x5_1x5x5", "channels": 3}, "last layer has 1 filters"),
        ({"arch": "srcnn", "layers": "64x9x9_32x5"}, "must be FILTERSxKHxKW"),
        ({"arch": "unet"}, "unknown SR architecture"),
        ({"arch": "srcnn", "padding": "full"}, "padding"),
        ({"arch": "srcnn", "activation": "gelu"}, "activation"),
        ({"arch": "srcnn", "layers": "8x4x4_1x3x3"}, "even"),
        ({"arch": "srcnn", "layers": "8x5x3_1x3x3"}, "both axes"),
        ({"arch": "fsrcnn", "layers": "8x3x3_1x4x4"}, "odd"),
        ({"arch": "espcn", "scale": 0}, "scale"),
    ],
)
def test_bad_configurations_raise_value_error(kwargs: dict, message: str) -> None:
    arch = kwargs.pop("arch")
    with pytest.raises(ValueError, match=message):
        build_sr_model(arch, **kwargs)


def _shave_crop(t: torch.Tensor, s: int) -> torch.Tensor:
    return t[..., s : t.shape[-2] - s, s : t.shape[-1] - s] if s else t


@pytest.mark.parametrize(
    ("arch", "layers"),
    [
        ("srcnn", "32x9x9_16x5x5_1x5x5"),
        ("fsrcnn", "16x5x5_8x1x1_8x3x3_16x1x1_1x9x9"),
        ("espcn", None),
        ("vdsr", "16x3x3_16x3x3_16x3x3_1x3x3"),
    ],
)
def test_a_few_steps_reduce_the_loss(small_set, arch: str, layers: str | None) -> None:
    torch.manual_seed(0)
    m = build_sr_model(arch, layers=layers, channels=1, scale=3)
    x, y = make_patches(small_set, 3, "y", patch=33, stride=14, pre_upsample=m.pre_upsample)
    xb, yb = torch.from_numpy(x[:8]), _shave_crop(torch.from_numpy(y[:8]), m.shave)
    # VDSR starts from the bicubic image (residual learning), so its loss is already small.
    opt = torch.optim.Adam(m.parameters(), lr=3e-4 if arch == "vdsr" else 1e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    first, last = losses[0], float(np.mean(losses[-3:]))
    assert last < (0.95 if arch == "vdsr" else 0.5) * first, losses


@pytest.mark.parametrize("arch", ["espcn", "fsrcnn"])
def test_residual_lr_grid_models_add_the_bicubic_enlargement(arch: str, small_set) -> None:
    import torch.nn.functional as F

    from gpuops.sr.data import to_channels

    model = build_sr_model(arch, scale=3, padding="same", residual=True)
    lr = torch.from_numpy(to_channels(small_set[0][1][:24, :21], "y"))[None]
    with torch.no_grad():
        plain = model(lr) - F.interpolate(lr, scale_factor=3, mode="bicubic", align_corners=False)
        model.residual = False
        np.testing.assert_allclose(plain.numpy(), model(lr).numpy(), atol=1e-6)
    assert plain.shape == (1, 1, 72, 63)


def test_residual_is_only_for_lr_grid_families() -> None:
    for arch in ("srcnn", "vdsr"):
        with pytest.raises(ValueError, match="residual"):
            build_sr_model(arch, residual=True)
