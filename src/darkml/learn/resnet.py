"""The one ResNet builder: torchvision ResNets from scratch (no weights can be downloaded)
with an ``in_channels`` stem, as a classifier/regressor or as a feature encoder.

The stem is torchvision's (7×7 stride-2 conv + max-pool), so a 64×64 image reaches the last
stage at 2×2 pixels, as in the papers' use of a stock ResNet.
"""

from __future__ import annotations

from torch import nn

from .registry import register_model

__all__ = ["resnet", "resnet18", "resnet50", "narrow_resnet", "narrow_resnet18"]


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


@register_model("resnet18", description="ResNet18 (width 64; width=w scales every stage: w, 2w, 4w, 8w channels)")
def resnet18(in_channels: int = 1, num_outputs: int = 3, width: int = 64) -> nn.Module:
    """torchvision ResNet-18 from scratch, ``in_channels`` input channels; ``width`` < 64 gives
    :func:`narrow_resnet18` (same topology, fewer channels) for CPU-sized runs."""
    if width == 64:
        return resnet(18, in_channels, num_outputs)
    return narrow_resnet18(in_channels, num_outputs, width)


def narrow_resnet18(in_channels: int = 1, num_outputs: int = 3, width: int = 16) -> nn.Module:
    """ResNet-18 with stage widths (w, 2w, 4w, 8w) instead of (64, 128, 256, 512).

    Same topology as torchvision's: 7x7 stride-2 stem, max-pool, four stages of two
    torchvision ``BasicBlock``s (stride 2 and a 1x1 projection shortcut at the start of stages
    2-4), global average pool, linear head; torchvision's initialisation (Kaiming normal
    convolutions, unit/zero batch norm). Parameters scale as width^2 (w = 16: 0.70 M vs 11.2 M).
    """
    return narrow_resnet(18, in_channels, num_outputs, width)


def narrow_resnet(depth: int, in_channels: int = 1, num_outputs: int = 3, width: int = 16) -> nn.Module:
    """ResNet-18 or -50 with every stage's width scaled by ``width``/64 (same topology).

    ResNet-18: two ``BasicBlock``s per stage, stage widths (w, 2w, 4w, 8w). ResNet-50: (3, 4,
    6, 3) torchvision ``Bottleneck`` blocks, inner widths (w, 2w, 4w, 8w), outputs 4x those.
    Stem, pooling, projection shortcuts and initialisation as torchvision's."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    if not 4 <= width <= 64:
        raise ValueError(f"width = {width}: must be in [4, 64]")
    if depth not in (18, 50):
        raise ValueError(f"depth = {depth}: narrow ResNets are 18 or 50")
    block, counts = (BasicBlock, (2, 2, 2, 2)) if depth == 18 else (Bottleneck, (3, 4, 6, 3))
    w = width
    layers: list[nn.Module] = [nn.Conv2d(in_channels, w, kernel_size=7, stride=2, padding=3, bias=False),
                               nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2, padding=1)]
    cin = w
    for i, n_blocks in enumerate(counts):
        planes, stride = w * 2**i, 1 if i == 0 else 2
        cout = planes * block.expansion
        for k in range(n_blocks):
            down = None
            if k == 0 and (stride != 1 or cin != cout):
                down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            layers.append(block(cin, planes, stride if k == 0 else 1, down))
            cin = cout
    m = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_outputs))
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
    return m


@register_model("resnet50", description="ResNet50 (width 64; width=w scales every stage: w, 2w, 4w, 8w bottleneck widths)")
def resnet50(in_channels: int = 1, num_outputs: int = 3, width: int = 64) -> nn.Module:
    """torchvision ResNet-50 from scratch, ``in_channels`` input channels; ``width`` < 64 gives
    :func:`narrow_resnet` (same topology, fewer channels) for CPU-sized runs."""
    if width == 64:
        return resnet(50, in_channels, num_outputs)
    return narrow_resnet(50, in_channels, num_outputs, width)
