"""The lensing model registry: names, shapes, options, errors, gradients."""

from __future__ import annotations

import pytest
import torch

from darkml.equivariant.models import (
    DESCRIPTIONS,
    EQUIVARIANT,
    MODELS,
    build_model,
    count_parameters,
)

SMALL = {name: {"width": 0.125} for name in ("cnn", "c8", "d8", "hnet", "etn")}
PAPER_MODELS = ("resnet50", "c8", "hnet", "etn")


def test_registry_has_the_papers_models_and_variants():
    assert set(PAPER_MODELS) <= set(MODELS)
    assert {"resnet18", "d8", "cnn"} <= set(MODELS)
    assert set(DESCRIPTIONS) == set(MODELS)
    assert EQUIVARIANT == {"c8", "d8", "hnet", "etn"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_classification_and_regression(name):
    x = torch.randn(2, 1, 32, 32)
    for n_out in (3, 1):
        torch.manual_seed(0)
        m = build_model(name, in_channels=1, num_outputs=n_out, **SMALL.get(name, {})).eval()
        with torch.no_grad():
            y = m(x)
        assert y.shape == (2, n_out)
        assert torch.isfinite(y).all()


def test_resnet50_is_torchvision_with_one_input_channel():
    import torchvision

    m = build_model("resnet50", num_outputs=3)
    assert isinstance(m, torchvision.models.ResNet)
    assert m.conv1.in_channels == 1 and m.fc.out_features == 3
    assert build_model("resnet18", in_channels=2).conv1.in_channels == 2
    # ResNet50: 23.5 M parameters with a 1-channel stem and 3 outputs (25.6 M for ImageNet)
    assert 23.4e6 < count_parameters(m) < 23.6e6


def test_width_scales_the_equivariant_models():
    small = count_parameters(build_model("c8", width=0.125))
    large = count_parameters(build_model("c8", width=0.25))
    assert 2.5 < large / small < 4.5  # conv weights grow ~quadratically with width


@pytest.mark.parametrize("name", ["c8", "hnet", "etn"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    m = build_model(name, num_outputs=3, **SMALL[name]).train()
    x = torch.randn(4, 1, 32, 32)
    loss = torch.nn.functional.cross_entropy(m(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, missing
    nonzero = [n for n, p in m.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0]
    assert len(nonzero) >= 0.9 * len([p for p in m.parameters() if p.requires_grad])


def test_bad_names_options_and_inputs_fail_with_one_line():
    with pytest.raises(ValueError, match="unknown model.*resnet50"):
        build_model("resnet51")
    with pytest.raises(ValueError, match=r"width = 0.5: must be in \[4, 64\]"):
        build_model("resnet50", width=0.5)  # the narrow ResNet50's channel width, not a multiplier
    with pytest.raises(ValueError, match="bad option"):
        build_model("resnet50", depth=34)
    with pytest.raises(ValueError, match="bad option"):
        build_model("c8", widht=0.5)
    with pytest.raises(ValueError, match="width"):
        build_model("etn", width=0)
    with pytest.raises(ValueError, match="odd"):
        build_model("c8", kernel_sizes=(4, 5, 5, 5, 5, 5))
    m = build_model("etn", width=0.125)
    with pytest.raises(ValueError, match="square"):
        m(torch.zeros(1, 1, 32, 40))
    with pytest.raises(ValueError, match="expected"):
        m(torch.zeros(1, 3, 32, 32))


def test_multichannel_input():
    for name in ("cnn", "etn", "c8"):
        m = build_model(name, in_channels=2, num_outputs=3, **SMALL.get(name, {})).eval()
        with torch.no_grad():
            assert m(torch.randn(2, 2, 32, 32)).shape == (2, 3)


def test_etn_backbone_is_the_cnn():
    """The ETN is the plain CNN behind a canonicalising front end (the ``cnn`` ablation)."""
    from darkml.equivariant.models import ConvNet

    etn = build_model("etn", width=0.125)
    cnn = build_model("cnn", width=0.125)
    assert isinstance(etn.backbone, ConvNet)
    assert count_parameters(etn) - count_parameters(cnn) == count_parameters(etn.pose)
