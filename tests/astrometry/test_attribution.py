"""Integrated gradients (completeness) and the localisation score on synthetic attribution maps."""

import numpy as np
import pytest
import torch
from torch import nn

from darkml.astrometry import attribution, population, sky

H, W, NSIDE = 32, 64, 16


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 16, 2)

    def forward(self, x):
        h = torch.tanh(self.conv(x))
        return self.fc(nn.functional.avg_pool2d(h, 4).flatten(1))


def test_integrated_gradients_completeness():
    torch.manual_seed(0)
    net = Small()
    x = torch.randn(3, 2, H, W)
    attr = attribution.integrated_gradients(net, x, target=1, steps=64)
    assert attr.shape == x.shape
    with torch.no_grad():
        f = attribution.log_odds(net(x), 1) - attribution.log_odds(net(torch.zeros_like(x)), 1)
    np.testing.assert_allclose(attr.reshape(3, -1).sum(1), f.numpy(), rtol=1e-4, atol=1e-5)


def test_positive_smoothed():
    a = np.random.default_rng(0).normal(size=(2, 2, H, W))
    raw = attribution.positive_smoothed(a, sigma_px=0)
    np.testing.assert_array_equal(raw, np.clip(a.sum(1), 0, None))
    sm = attribution.positive_smoothed(a, sigma_px=3.0)
    assert sm.shape == (2, H, W) and np.all(sm >= 0)
    np.testing.assert_allclose(sm.sum((1, 2)), raw.sum((1, 2)), rtol=1e-6)  # wrap + reflect keep the total


@pytest.fixture(scope="module")
def catalogue():
    return population.draw_population(None, np.random.default_rng(4))


def test_strongest_lenses_by_own_signal_power(catalogue):
    """subhalo_power ranks as the power of single-subhalo maps computed one by one."""
    small = {c: v[:25] for c, v in catalogue.items()}
    power = [np.sum(sky.signal_map({c: v[i:i + 1] for c, v in small.items()}, nside=NSIDE) ** 2) for i in range(25)]
    order = attribution.strongest_lenses(small, 5, nside=NSIDE)
    assert list(order) == list(np.argsort(power)[::-1][:5])
    rows, cols = attribution.strongest_lens_pixels(small, H, W, 5, nside=NSIDE)
    assert len(rows) == 5 and np.all((rows >= 0) & (rows < H)) and np.all((cols >= 0) & (cols < W))


def test_localisation_score_random_map_is_about_one(catalogue):
    scores = []
    for seed in range(5):
        noise = np.random.default_rng(seed).uniform(size=(H, W))
        scores.append(attribution.localisation_score(noise, catalogue, H, W, n_lenses=5, nside=NSIDE, seed=seed)["score"])
    assert 0.85 < np.mean(scores) < 1.15


def test_localisation_score_concentrated_map_is_high(catalogue):
    rows, cols = attribution.strongest_lens_pixels(catalogue, H, W, 5, nside=NSIDE)
    rr, cc = np.mgrid[0:H, 0:W]
    blob = np.zeros((H, W))
    for r, c in zip(rows, cols):
        dc = np.minimum(np.abs(cc - c), W - np.abs(cc - c))
        blob += np.exp(-((rr - r) ** 2 + dc**2) / (2 * 1.5**2))
    res = attribution.localisation_score(blob + 1e-3, catalogue, H, W, n_lenses=5, nside=NSIDE)
    assert res["score"] > 3 and res["p_value"] < 0.05
    assert res["rows"] == rows.tolist()
    nothing = attribution.localisation_score(np.zeros((H, W)), catalogue, H, W, nside=NSIDE)
    assert np.isnan(nothing["score"])
    with pytest.raises(ValueError, match="shape"):
        attribution.localisation_score(np.zeros((H, W + 1)), catalogue, H, W, nside=NSIDE)
