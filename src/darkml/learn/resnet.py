"""The one ResNet builder: torchvision ResNets from scratch (no weights can be downloaded)
with an ``in_channels`` stem, as a classifier/regressor or as a feature encoder.

The stem is torchvision's (7×7 stride-2 conv + max-pool), so a 64×64 image reaches the last
stage at 2×2 pixels, as in the papers' use of a stock ResNet.
"""

from __future__ import annotations

from torch import nn

from .registry import register_model

__all__ = ["resnet", "resnet18", "resnet50"]


def resnet(depth: int, in_channels: int = 1, num_outputs: int | None = 1, stem_init: bool = True) -> nn.Module:
    """torchvision ResNet-``depth`` with an ``in_channels`` stem.

    ``num_outputs=None`` drops the classifier (``fc`` = identity) and sets ``out_dim`` to the
    feature size. ``stem_init`` re-initialises the new stem as torchvision initialises its
    other convolutions (Kaiming normal, fan-out); without it the stem keeps PyTorch's default.
    """
    import torchvision

    if depth not in (18, 34, 50, 101):
        raise ValueError(f"resnet depth = {depth}: must be 18, 34, 50 or 101")
    if in_channels < 1 or (num_outputs is not None and num_outputs < 1):
        raise ValueError(f"in_channels = {in_channels}, num_outputs = {num_outputs}: both must be >= 1")
    m = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_outputs or 1000)
    m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if stem_init:
        nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
    if num_outputs is None:
        m.out_dim = m.fc.in_features
        m.fc = nn.Identity()
    return m


@register_model("resnet18", description="ResNet18", options=False)
def resnet18(in_channels: int = 1, num_outputs: int = 3) -> nn.Module:
    """torchvision ResNet-18 from scratch, ``in_channels`` input channels."""
    return resnet(18, in_channels, num_outputs)


@register_model("resnet50", description="ResNet50", options=False)
def resnet50(in_channels: int = 1, num_outputs: int = 3) -> nn.Module:
    """torchvision ResNet-50 from scratch, ``in_channels`` input channels."""
    return resnet(50, in_channels, num_outputs)
