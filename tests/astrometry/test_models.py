"""The three CNNs: shapes at the study's 64 x 128 input, channel adaptation, trainability."""

import pytest
import torch

from darkml.astrometry.models import MODELS, build_model


def test_registry_names():
    assert set(MODELS) == {"resnet18", "vgg11", "alexnet"}
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet50")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shapes(name):
    torch.manual_seed(0)
    with torch.no_grad():
        out = build_model(name).eval()(torch.randn(1, 2, 64, 128))  # the study's input: (mu_l, mu_b), 64 x 128
        assert out.shape == (1, 2) and torch.isfinite(out).all()
        net3 = build_model(name, in_channels=3, num_outputs=2).eval()  # + a count/mask channel, smaller image
        assert net3(torch.randn(1, 3, 32, 64)).shape == (1, 2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    net = build_model(name).train()
    loss = torch.nn.functional.cross_entropy(net(torch.randn(2, 2, 32, 64)), torch.tensor([0, 1]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert sum(float(p.grad.abs().sum()) > 0 for p in net.parameters()) == len(list(net.parameters()))


def _fits_tiny_batch(name: str) -> None:
    torch.manual_seed(0)
    net = build_model(name)
    x = torch.randn(4, 2, 32, 64)
    y = torch.tensor([0, 1, 0, 1])
    x[y == 1] += 0.5  # make the task learnable
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    net.eval()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(net(x), y).item()
    net.train()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(net(x), y).item()
    assert after < before


def test_resnet18_trains_on_a_tiny_batch():
    _fits_tiny_batch("resnet18")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11", "alexnet"])
def test_large_models_train_on_a_tiny_batch(name):
    _fits_tiny_batch(name)
