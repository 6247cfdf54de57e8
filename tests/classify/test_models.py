from __future__ import annotations

import pytest
import torch

from gpuops.classify.data import load_digits
from gpuops.classify.models import CLASSIFIERS, build_classifier


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_shapes_on_cifar_and_digit_sizes(name: str) -> None:
    m = build_classifier(name, num_classes=10, in_channels=3).eval()
    with torch.no_grad():
        assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        small = build_classifier(name, num_classes=7, in_channels=1).eval()
        assert small(torch.zeros(3, 1, 8, 8)).shape == (3, 7)
        x = torch.zeros(2, 3, 32, 32).to(memory_format=torch.channels_last)
        assert m.to(memory_format=torch.channels_last)(x).shape == (2, 10)


def test_resnet20_parameter_count() -> None:
    # He et al. 2016, CIFAR ResNet-20 (0.27M parameters), counted layer by layer:
    conv = lambda cin, cout: cin * cout * 9  # noqa: E731  3x3, no bias
    bn = lambda c: 2 * c  # noqa: E731  scale and shift
    stem = conv(3, 16) + bn(16)
    stage1 = 3 * (2 * conv(16, 16) + 2 * bn(16))
    stage2 = (conv(16, 32) + conv(32, 32) + 2 * bn(32)) + 2 * (2 * conv(32, 32) + 2 * bn(32))
    stage3 = (conv(32, 64) + conv(64, 64) + 2 * bn(64)) + 2 * (2 * conv(64, 64) + 2 * bn(64))
    head = 64 * 10 + 10
    want = stem + stage1 + stage2 + stage3 + head
    got = sum(p.numel() for p in build_classifier("resnet20").parameters())
    assert got == want
    assert round(got / 1e6, 2) == 0.27


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown classifier"):
        build_classifier("vgg16")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_a_few_steps_reduce_the_loss_on_digits(name: str) -> None:
    torch.manual_seed(0)
    d = load_digits()
    x = torch.from_numpy(d.x_train[:24]).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(d.y_train[:24])
    m = build_classifier(name, num_classes=10, in_channels=1)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.7 * losses[0], losses
