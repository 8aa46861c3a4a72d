"""CNN classifiers of the astrometric-lensing study (Sec. III B, Fig. 5): ResNet-18, VGG-11, AlexNet.

Built from torchvision's definitions with random initialisation (no pretrained weights) and
adapted to the study's input — a (C, 64, 128) plate carrée image of the proper-motion map with
C = 2 channels (mu_l, mu_b; optionally a third count/mask channel: ``in_channels``) — and to
``num_outputs`` = 2 logits (no-signal, signal):

* ``resnet18``: the shared ResNet builder (:mod:`darkml.learn.resnet`), first convolution taking ``in_channels``; the
  global average pool already handles any input size (a 64 x 128 input reaches layer4 at 2 x 4).
* ``vgg11``: torchvision's VGG-11 convolutional body (8 conv layers, 5 max-pools: 64 x 128 ->
  2 x 4) with the first convolution taking ``in_channels``; the classifier's adaptive pool is
  set to (2, 4) — the body's natural output at 64 x 128 — instead of ImageNet's (7, 7), so the
  first fully connected layer has 512 * 8 inputs instead of 25,088 (43 M instead of 129 M
  parameters; the rest of the classifier, 4096-4096-classes with dropout, is unchanged).
* ``alexnet``: torchvision's AlexNet with the first convolution (11 x 11) taking
  ``in_channels`` with stride 2 and padding 5 instead of stride 4 and padding 2 (at 64 x 128
  the ImageNet stem would leave a 1 x 3 map after the last pool); the body then ends at 3 x 7
  for a 64 x 128 input and the adaptive pool is (3, 7) instead of (6, 6), so the first fully
  connected layer has 256 * 21 inputs (the rest, 4096-4096-classes with dropout, is unchanged).

All three accept other input sizes down to 32 x 64 (adaptive pooling); models return logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from ..learn.modules import count_parameters
from ..learn.registry import create_model, register_model
from ..learn.resnet import resnet18  # noqa: F401 (registers resnet18: the one ResNet builder)

__all__ = ["MODELS", "build_model", "vgg11", "alexnet"]


def _replace_first_conv(conv: nn.Conv2d, in_channels: int, stride: int | None = None, padding: int | None = None) -> nn.Conv2d:
    return nn.Conv2d(in_channels, conv.out_channels, kernel_size=conv.kernel_size,
                     stride=conv.stride if stride is None else stride,
                     padding=conv.padding if padding is None else padding, bias=conv.bias is not None)


@register_model("vgg11", description="VGG-11 (64 x 128 inputs)", options=False)
def vgg11(in_channels: int = 2, num_outputs: int = 2) -> nn.Module:
    """VGG-11 (Simonyan & Zisserman 2014, configuration A) adapted to 64 x 128 inputs (see module docstring)."""
    m = tvm.vgg11(weights=None, num_classes=num_outputs)
    m.features[0] = _replace_first_conv(m.features[0], in_channels)
    m.avgpool = nn.AdaptiveAvgPool2d((2, 4))
    m.classifier[0] = nn.Linear(512 * 2 * 4, m.classifier[0].out_features)
    nn.init.normal_(m.classifier[0].weight, 0, 0.01)
    nn.init.zeros_(m.classifier[0].bias)
    return m


@register_model("alexnet", description="AlexNet (64 x 128 inputs)", options=False)
def alexnet(in_channels: int = 2, num_outputs: int = 2) -> nn.Module:
    """AlexNet (Krizhevsky et al. 2012) adapted to 64 x 128 inputs (see module docstring)."""
    m = tvm.alexnet(weights=None, num_classes=num_outputs)
    m.features[0] = _replace_first_conv(m.features[0], in_channels, stride=2, padding=5)
    m.avgpool = nn.AdaptiveAvgPool2d((3, 7))
    m.classifier[1] = nn.Linear(256 * 3 * 7, m.classifier[1].out_features)
    nn.init.normal_(m.classifier[1].weight, 0, 0.01)
    nn.init.zeros_(m.classifier[1].bias)
    return m


#: the study's architectures (all from the shared registry, :mod:`darkml.learn.registry`)
MODELS: tuple[str, ...] = ("resnet18", "vgg11", "alexnet")


def build_model(name: str, in_channels: int = 2, num_outputs: int = 2, width: int = 64) -> nn.Module:
    """A freshly initialised study model (the caller seeds torch for reproducibility); ``width``
    scales ResNet-18's stages (64: the paper's network; e.g. 16 for CPU-sized runs)."""
    if name not in MODELS:
        raise ValueError(f"model = {name!r}: unknown architecture (allowed: {', '.join(sorted(MODELS))})")
    if in_channels < 1 or num_outputs < 2:
        raise ValueError(f"in_channels = {in_channels}, num_outputs = {num_outputs}: need in_channels >= 1 and num_outputs >= 2")
    if name == "resnet18":
        return create_model(name, in_channels=in_channels, num_outputs=num_outputs, width=width)
    if width != 64:
        raise ValueError(f"train.width = {width}: only resnet18 has a width option (model = {name!r})")
    return create_model(name, in_channels=in_channels, num_outputs=num_outputs)


if __name__ == "__main__":  # pragma: no cover - quick shape check
    for name in MODELS:
        net = build_model(name)
        print(name, count_parameters(net), net(torch.zeros(2, 2, 64, 128)).shape)
