"""Super-resolution models: SRCNN, FSRCNN, ESPCN and VDSR, built from a layer string.

Every model carries ``pre_upsample`` (True: its input is the bicubic-enlarged image on the HR grid;
False: its input is the LR image and it enlarges by ``scale`` itself), ``shave`` (HR pixels lost
at each border with valid padding, 0 with same padding), ``scale``, ``channels``, ``arch`` and
``layers`` (the resolved layer string).

How the layer string is read per family (the last group's filter count is always the number of
image channels, 1 for Y and 3 for RGB):

* ``srcnn``: every group is a convolution (Dong et al., "Image Super-Resolution Using Deep
  Convolutional Networks", TPAMI 2016; preset 9-5-5 ``64x9x9_32x5x5_Cx5x5``).
* ``vdsr``: every group is a convolution, and the network predicts the residual that is added to
  its input (Kim et al., "Accurate Image Super-Resolution Using Very Deep Convolutional
  Networks", CVPR 2016; preset 20 layers of 3x3, 64 filters).
* ``espcn``: convolutions on the LR grid; the last one gets ``C * scale**2`` filters and a pixel
  shuffle rearranges them onto the HR grid (Shi et al., CVPR 2016; preset ``64x5x5_32x3x3_Cx3x3``).
* ``fsrcnn``: convolutions on the LR grid, the last group is a transposed convolution with stride
  ``scale`` (Dong et al., "Accelerating the Super-Resolution Convolutional Neural Network", ECCV
  2016; preset d=56, s=12, m=4).

torch is imported at module level so that the model classes can be pickled by name (MLflow's model
logging); import this module lazily from CLI code. Layer-string parsing lives in
:mod:`gpuops.sr.layers`, which has no torch dependency.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpuops.sr.layers import ConvSpec, format_layers, parse_layers

__all__ = [
    "ARCHS",
    "ConvSpec",
    "SRModel",
    "build_sr_model",
    "count_parameters",
    "format_layers",
    "parse_layers",
    "preset_layers",
]

ARCHS = ("srcnn", "fsrcnn", "espcn", "vdsr")
ACTIVATIONS = ("relu", "leaky_relu", "prelu", "tanh")
PADDINGS = ("valid", "same")


def preset_layers(arch: str, channels: int = 1) -> str:
    """The default layer string of each family, ending in ``channels`` filters."""
    c = channels
    if arch == "srcnn":
        return f"64x9x9_32x5x5_{c}x5x5"
    if arch == "fsrcnn":
        return "_".join(["56x5x5", "12x1x1", *(["12x3x3"] * 4), "56x1x1", f"{c}x9x9"])
    if arch == "espcn":
        return f"64x5x5_32x3x3_{c}x3x3"
    if arch == "vdsr":
        return "_".join([*(["64x3x3"] * 19), f"{c}x3x3"])
    raise ValueError(f"unknown SR architecture {arch!r}; expected one of {', '.join(ARCHS)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _activation(name: str, channels: int) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


def _valid_loss(specs: list[ConvSpec]) -> tuple[int, int]:
    return sum(s.kh - 1 for s in specs), sum(s.kw - 1 for s in specs)


def _shave_of(specs: list[ConvSpec], padding: str, layers: str) -> int:
    """Pixels lost per border by a stack of valid convolutions (on the grid they run on)."""
    if padding == "same":
        return 0
    lh, lw = _valid_loss(specs)
    if lh != lw or lh % 2:
        raise ValueError(
            f"layers {layers!r} with padding 'valid' lose {lh} rows and {lw} columns; the loss must be "
            "equal on both axes and even (use odd, square kernels, or padding 'same')"
        )
    return lh // 2


class SRModel(nn.Module):
    """Base class: a conv stack ``body`` and the attributes the trainer and evaluator use."""

    arch = "sr"

    def __init__(
        self,
        specs: list[ConvSpec],
        *,
        channels: int,
        scale: int,
        activation: str,
        padding: str,
        batch_norm: bool,
        pre_upsample: bool,
    ) -> None:
        super().__init__()
        self.layers = format_layers(specs)
        self.channels = channels
        self.scale = scale
        self.activation = activation
        self.padding = padding
        self.batch_norm = batch_norm
        self.pre_upsample = pre_upsample
        self.shave = 0

    @staticmethod
    def _stack(
        specs: list[ConvSpec], in_ch: int, activation: str, padding: str, batch_norm: bool, last_act: bool
    ) -> nn.Sequential:
        mods: list[nn.Module] = []
        c = in_ch
        for k, s in enumerate(specs):
            last = k == len(specs) - 1
            norm = batch_norm and not last
            mods.append(nn.Conv2d(c, s.filters, (s.kh, s.kw), padding=padding, bias=not norm))
            if norm:
                mods.append(nn.BatchNorm2d(s.filters))
            if not last or last_act:
                mods.append(_activation(activation, s.filters))
            c = s.filters
        return nn.Sequential(*mods)

    def _init_weights(self) -> None:
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
        for m in convs[:-1]:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        # Output layer starts near zero (as the SRCNN paper's 1e-3 Gaussian for its last layer).
        nn.init.normal_(convs[-1].weight, std=1e-3)
        if convs[-1].bias is not None:
            nn.init.zeros_(convs[-1].bias)

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch}, layers={self.layers}, channels={self.channels}, scale={self.scale}, "
            f"padding={self.padding}, shave={self.shave}, pre_upsample={self.pre_upsample}"
        )


class _PreUpsampled(SRModel):
    """A plain stack of convolutions on the bicubic-upscaled image (SRCNN and VDSR share it)."""

    def __init__(self, specs: list[ConvSpec], **kw) -> None:
        super().__init__(specs, pre_upsample=True, **kw)
        self.shave = _shave_of(specs, self.padding, self.layers)
        self.body = self._stack(specs, self.channels, self.activation, self.padding, self.batch_norm, False)
        self._init_weights()


class SRCNN(_PreUpsampled):
    arch = "srcnn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class VDSR(_PreUpsampled):
    arch = "vdsr"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        s = self.shave
        skip = x[..., s : x.shape[-2] - s, s : x.shape[-1] - s] if s else x
        return skip + out


def bicubic_up(x: torch.Tensor, scale: int, shave: int = 0) -> torch.Tensor:
    """``x`` enlarged by ``scale`` with torch's bicubic (the skip of the residual LR-grid models),
    ``shave`` pixels cropped from every border to match a valid-padding body."""
    up = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    return up[..., shave : up.shape[-2] - shave, shave : up.shape[-1] - shave] if shave else up


class ESPCN(SRModel):
    arch = "espcn"

    def __init__(self, specs: list[ConvSpec], *, residual: bool = False, **kw) -> None:
        super().__init__(specs, pre_upsample=False, **kw)
        self.residual = residual
        self.shave = _shave_of(specs, self.padding, self.layers) * self.scale
        r2 = self.scale * self.scale
        widened = [*specs[:-1], ConvSpec(specs[-1].filters * r2, specs[-1].kh, specs[-1].kw)]
        self.body = self._stack(widened, self.channels, self.activation, self.padding, self.batch_norm, False)
        self.shuffle = nn.PixelShuffle(self.scale)
        self._init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.body(x))
        return out + bicubic_up(x, self.scale, self.shave) if self.residual else out


class FSRCNN(SRModel):
    arch = "fsrcnn"

    def __init__(self, specs: list[ConvSpec], *, residual: bool = False, **kw) -> None:
        super().__init__(specs, pre_upsample=False, **kw)
        self.residual = residual
        if len(specs) < 2:
            raise ValueError("fsrcnn needs at least one convolution and the final deconvolution")
        convs, deconv = specs[:-1], specs[-1]
        if deconv.kh % 2 == 0 or deconv.kw % 2 == 0:
            raise ValueError(f"fsrcnn: the deconvolution kernel {deconv} must have odd sizes")
        self.shave = _shave_of(convs, self.padding, self.layers) * self.scale
        self.body = self._stack(convs, self.channels, self.activation, self.padding, self.batch_norm, True)
        s = self.scale
        pad = ((deconv.kh - 1) // 2, (deconv.kw - 1) // 2)
        # Output exactly scale x the input: (n - 1) * s - 2 * pad + k + (s - 1) = n * s for odd k.
        self.deconv = nn.ConvTranspose2d(
            convs[-1].filters,
            deconv.filters,
            (deconv.kh, deconv.kw),
            stride=s,
            padding=pad,
            output_padding=s - 1,
        )
        self._init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.deconv(self.body(x))
        return out + bicubic_up(x, self.scale, self.shave) if self.residual else out


_CLASSES: dict[str, type[SRModel]] = {"srcnn": SRCNN, "fsrcnn": FSRCNN, "espcn": ESPCN, "vdsr": VDSR}


def build_sr_model(
    arch: str,
    *,
    layers: str | None = None,
    channels: int = 1,
    scale: int = 3,
    activation: str = "relu",
    padding: str = "valid",
    batch_norm: bool = False,
    residual: bool = False,
) -> SRModel:
    """Build an SR model; ``layers=None`` takes the family's preset. ``ValueError`` on bad input."""
    if arch not in _CLASSES:
        raise ValueError(f"unknown SR architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
    text = layers if layers is not None else preset_layers(arch, channels)
    specs = parse_layers(text)
    if specs[-1].filters != channels:
        raise ValueError(
            f"layers {text!r}: the last layer has {specs[-1].filters} filters but the model outputs "
            f"{channels} channel{'s' if channels > 1 else ''} (1 for Y, 3 for RGB)"
        )
    kw: dict[str, object] = {}
    if residual:
        if arch not in ("espcn", "fsrcnn"):
            raise ValueError(
                f"residual: true is for the LR-grid families espcn and fsrcnn ({arch} "
                + ("is residual already)" if arch == "vdsr" else "has no residual variant; use vdsr)")
            )
        kw["residual"] = True
    return _CLASSES[arch](
        specs, channels=channels, scale=scale, activation=activation, padding=padding, batch_norm=batch_norm,
        **kw,
    )
