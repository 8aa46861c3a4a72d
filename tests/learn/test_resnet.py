"""The narrow ResNets keep torchvision's topology."""

import pytest
import torch

from darkml.learn.resnet import narrow_resnet, resnet, resnet18, resnet50


def _n(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("depth", [18, 50])
def test_narrow_resnet_at_full_width_has_torchvisions_parameters(depth):
    assert _n(narrow_resnet(depth, 1, 3, 64)) == _n(resnet(depth, 1, 3))


def test_width_scales_the_network_and_keeps_shapes():
    x = torch.randn(2, 1, 64, 64)
    for build in (resnet18, resnet50):
        small = build(in_channels=1, num_outputs=3, width=8)
        assert small(x).shape == (2, 3)
        assert _n(small) < _n(build(in_channels=1, num_outputs=3, width=16)) < _n(build(in_channels=1, num_outputs=3))
    with pytest.raises(ValueError, match="width = 2"):
        resnet50(width=2)
