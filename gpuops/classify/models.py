"""Image classifiers for CIFAR-10-sized inputs (and anything down to 8 x 8, e.g. digits).

* ``cnn10``: nine Conv-BN-ReLU layers (64-64 | pool | 128-128 | pool | 256-256 | pool | 512-512-512)
  and a linear head: the plain "10-layer CNN" baseline.
* ``resnet20``: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), section 4.2:
  3 stages of 3 basic blocks with 16 / 32 / 64 filters; shortcuts that change shape subsample and
  pad the new channels with zeros (the paper's option A), so they add no parameters.
* ``resnet18``: the ImageNet ResNet-18 block layout ([2, 2, 2, 2] basic blocks, 64 to 512 filters,
  1x1 projection shortcuts) with the usual CIFAR stem: one 3x3 convolution, stride 1, no max-pool.
* ``fast``: a small residual VGG-like net in the spirit of the fast CIFAR-10 training recipes
  (David Page's "How to train your ResNet" series, 2018, and its successors): conv-pool-BN-ReLU
  stages of 64 / 128 / 256 / 512 filters, two residual pairs, global max-pool and a scaled linear
  head. Meant for channels_last and mixed precision; the trainer owns those.

Pooling is skipped once a feature map is 1 pixel high or wide and every head ends in adaptive
pooling, so all models accept any input of at least 8 x 8. torch is imported at module level so
that the classes pickle by name; import this module lazily from CLI code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLASSIFIERS = ("cnn10", "resnet20", "resnet18", "fast")


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SafePool(nn.Module):
    """2x2 max-pool that leaves maps of height or width 1 as they are (so tiny inputs work)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 2:
            return x
        return F.max_pool2d(x, 2, ceil_mode=True)


class CNN10(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        plan: list[int | str] = [64, 64, "P", 128, 128, "P", 256, 256, "P", 512, 512, 512]
        layers: list[nn.Module] = []
        c = in_channels
        for p in plan:
            if p == "P":
                layers.append(SafePool())
            else:
                assert isinstance(p, int)
                layers.append(conv_bn_relu(c, p))
                c = p
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """Two 3x3 Conv-BN with a shortcut; ``shortcut`` is "A" (zero-pad) or "B" (1x1 projection)."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.extra = cout - cin
        self.mode = shortcut
        self.proj: nn.Module | None = None
        if shortcut == "B" and (stride != 1 or cin != cout):
            self.proj = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            return self.proj(x)
        if self.stride != 1:
            x = x[..., :: self.stride, :: self.stride]
        if self.extra:
            half = self.extra // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.extra - half))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x), inplace=True)


class ResNet(nn.Module):
    def __init__(
        self, widths: list[int], blocks: list[int], shortcut: str, num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, widths[0])
        stages: list[nn.Module] = []
        c = widths[0]
        for k, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for b in range(n):
                stride = 2 if (k > 0 and b == 0) else 1
                stages.append(BasicBlock(c, w, stride, shortcut))
                c = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(c, c), conv_bn_relu(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FastNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, head_scale: float = 0.125) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                SafePool(),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            conv_bn_relu(in_channels, 64),
            stage(64, 128),
            Residual(128),
            stage(128, 256),
            stage(256, 512),
            Residual(512),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(512, num_classes, bias=False)
        self.head_scale = head_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1)) * self.head_scale


def build_classifier(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A classifier by name (see :data:`CLASSIFIERS`); ``ValueError`` for an unknown name."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if name == "cnn10":
        return CNN10(num_classes, in_channels)
    if name == "resnet20":
        return ResNet([16, 32, 64], [3, 3, 3], "A", num_classes, in_channels)
    if name == "resnet18":
        return ResNet([64, 128, 256, 512], [2, 2, 2, 2], "B", num_classes, in_channels)
    if name == "fast":
        return FastNet(num_classes, in_channels)
    raise ValueError(f"unknown classifier {name!r}; expected one of {', '.join(CLASSIFIERS)}")
