"""The strong-lensing model registry: ``MODELS[name](in_channels=1, num_outputs=3, **kw)``.

* ``resnet18`` / ``resnet50`` — torchvision ResNets, trained from scratch (no weights can be
  downloaded), first convolution replaced for ``in_channels`` input channels. The stem is
  torchvision's (7×7 stride-2 conv + max-pool), so a 64×64 image reaches the last stage at
  2×2 pixels, as in the paper's use of a stock ResNet50.
* ``c8``, ``d8``, ``hnet``, ``etn`` — the rotation-equivariant networks of
  :mod:`darkml.lensing.equivariant`; each takes ``width`` (a multiplier of the channel
  counts) and further architecture keywords.
* ``cnn`` — a plain CNN, the ETN's backbone without its canonicalising front end: the
  ETN's ablation and a cheap non-equivariant baseline for quick runs and tests.

Every model returns ``(batch, num_outputs)``: class logits (``num_outputs=3``: no
substructure / CDM / axion) or regression values (``num_outputs=1``: log10 of the axion mass).
Training logic lives in :mod:`darkml.learn`, not here.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from torch import nn

from ..learn.modules import count_parameters  # noqa: F401 (re-exported)
from . import equivariant

__all__ = ["MODELS", "DESCRIPTIONS", "EQUIVARIANT", "build_model", "resnet18", "resnet50", "count_parameters"]


def _resnet(depth: int, in_channels: int, num_outputs: int) -> nn.Module:
    import torchvision

    if in_channels < 1 or num_outputs < 1:
        raise ValueError(f"in_channels = {in_channels}, num_outputs = {num_outputs}: both must be >= 1")
    ctor = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth]
    m = ctor(weights=None, num_classes=num_outputs)
    m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
    return m


def resnet18(in_channels: int = 1, num_outputs: int = 3) -> nn.Module:
    """torchvision ResNet-18 from scratch, ``in_channels`` input channels."""
    return _resnet(18, in_channels, num_outputs)


def resnet50(in_channels: int = 1, num_outputs: int = 3) -> nn.Module:
    """torchvision ResNet-50 from scratch, ``in_channels`` input channels."""
    return _resnet(50, in_channels, num_outputs)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "cnn": equivariant.cnn,
    "c8": equivariant.c8,
    "d8": equivariant.d8,
    "hnet": equivariant.hnet,
    "etn": equivariant.etn,
}

#: names as the paper's tables print them
DESCRIPTIONS: dict[str, str] = {
    "resnet18": "ResNet18",
    "resnet50": "ResNet50",
    "cnn": "plain CNN",
    "c8": "C8 steerable CNN",
    "d8": "D8 steerable CNN",
    "hnet": "Harmonic Net",
    "etn": "Equivariant Transformer",
}

#: models invariant (exactly for 90° grid rotations) to rotations about the image centre
EQUIVARIANT = frozenset({"c8", "d8", "hnet", "etn"})


def build_model(name: str, in_channels: int = 1, num_outputs: int = 3, **kwargs: Any) -> nn.Module:
    """Instantiate registry model ``name``; unknown names and keywords fail with one line."""
    if name not in MODELS:
        raise ValueError(f"model = {name!r}: unknown model (choose from {', '.join(sorted(MODELS))})")
    if name.startswith("resnet") and kwargs:
        raise ValueError(f"model {name!r} takes no architecture options; got {sorted(kwargs)}")
    with warnings.catch_warnings():  # e2cnn's basis sampling warns about uint8 indexing (harmless)
        warnings.filterwarnings("ignore", message=".*dtype torch.uint8.*")
        try:
            return MODELS[name](in_channels=in_channels, num_outputs=num_outputs, **kwargs)
        except TypeError as exc:
            raise ValueError(f"model {name!r}: bad option ({exc})") from None
