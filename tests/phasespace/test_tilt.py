"""The vertical tilt of ν (tilt.py): recovers a known tilt, finds none where there is none,
keeps ν normalised, and changes only ∂ ln ν/∂z."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from darkml.config import ConfigError
from darkml.phasespace import study
from darkml.phasespace.tilt import TiltedFlow, fit_vertical_tilt, tilt_basis

W, SIG = 0.3, 0.5  # basis width and the base density's vertical scale (kpc)


class GaussianSlab(nn.Module):
    """A stand-in for a trained flow: ν uniform in x, y ∈ [−1, 1] and Gaussian N(0, SIG²) in z."""

    def __init__(self):
        super().__init__()
        self.register_buffer("sig", torch.tensor(SIG))

    def log_nu(self, x):
        return -math.log(4.0) - 0.5 * (x[..., 2] / self.sig) ** 2 - torch.log(self.sig * math.sqrt(2 * math.pi))

    def sample_x(self, n):
        return torch.cat([2 * torch.rand(n, 2) - 1, self.sig * torch.randn(n, 1)], 1)


def _stars(n, coef, rng):
    """Stars from the slab tilted by exp(Σ coef_k φ_k(z)) (rejection sampling)."""
    out = []
    cmax = float(np.abs(coef).sum())  # max |u^k e^{-u²/2}| < 2 for k <= 3, so the acceptance exp(t − 2 cmax) <= 1
    while sum(len(o) for o in out) < n:
        z = rng.normal(0, SIG, 4 * n)
        t = tilt_basis(torch.as_tensor(z), len(coef), W).numpy() @ np.asarray(coef)
        keep = rng.random(len(z)) < np.exp(t - 2 * cmax)
        out.append(z[keep])
    z = np.concatenate(out)[:n]
    return np.column_stack([rng.uniform(-1, 1, (n, 2)), z])


def test_tilt_recovers_a_known_tilt_within_its_errors():
    truth = np.array([0.0, 0.15, -0.6, 0.1])
    rng = np.random.default_rng(1)
    x = _stars(60_000, truth, rng)
    fit = fit_vertical_tilt(GaussianSlab(), x, 4, W, n_samples=600_000, seed=3)
    se = np.asarray(fit.stderr)  # the stars' standard error plus the samples'
    # k = 0 trades off against the normalisation only through the finite ball of samples; all four are identified
    assert np.all(np.abs(np.asarray(fit.coef) - truth) < 4 * se), (fit.coef, se)
    assert fit.coef[2] < -0.3  # a real, significant curvature correction was found
    assert fit.train_gain > 0 and fit.p_value < 1e-6  # and it is significant


def test_no_tilt_where_the_base_is_right():
    rng = np.random.default_rng(2)
    x = _stars(40_000, np.zeros(3), rng)
    xv = _stars(20_000, np.zeros(3), rng)
    fit = fit_vertical_tilt(GaussianSlab(), x, 3, W, n_samples=400_000, seed=4, x_val=xv)
    se = np.asarray(fit.stderr)
    assert np.all(np.abs(fit.coef) < 4 * se), (fit.coef, se)
    assert fit.p_value > 1e-3  # "no tilt" is not rejected
    # a bootstrap resample's mean scatters twice as much about the population's: √2 wider errors, half the χ²
    boot = fit_vertical_tilt(GaussianSlab(), x, 3, W, n_samples=400_000, seed=4, resampled=True)
    np.testing.assert_allclose(boot.coef, fit.coef)
    r = (2 / 40_000 + 1 / 400_000) / (1 / 40_000 + 1 / 400_000)
    np.testing.assert_allclose(np.asarray(boot.stderr) / np.asarray(fit.stderr), math.sqrt(r), rtol=1e-9)
    assert boot.chi2 == pytest.approx(fit.chi2 / r)
    assert abs(fit.val_gain) < 5e-4  # held-out stars gain nothing beyond noise


def test_tilted_flow_is_normalised_and_changes_only_the_vertical_gradient():
    base = GaussianSlab()
    rng = np.random.default_rng(5)
    fit = fit_vertical_tilt(base, _stars(30_000, np.array([0.0, 0.0, -0.5]), rng), 3, W, n_samples=300_000, seed=6)
    tf = TiltedFlow(base, fit)
    torch.manual_seed(11)  # fresh samples of the base: E_ν[ν_t/ν] = 1
    xs = base.sample_x(400_000)
    assert float(torch.exp(tf.tilt(xs.double())).mean()) == pytest.approx(1.0, abs=5e-3)
    x = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.5, -0.25]], dtype=torch.float64, requires_grad=True)
    g_t = torch.autograd.grad(tf.log_nu(x).sum(), x)[0]
    g_b = torch.autograd.grad(base.log_nu(x).sum(), x)[0]
    torch.testing.assert_close(g_t[:, :2], g_b[:, :2])
    # the z-gradient changes by Σ c_k φ_k'(z), here by finite differences of the tilt
    h = 1e-5
    for i in range(2):
        up, dn = x[i].detach().clone(), x[i].detach().clone()
        up[2] += h
        dn[2] -= h
        d = (tf.tilt(up[None]) - tf.tilt(dn[None])) / (2 * h)
        assert float(g_t[i, 2] - g_b[i, 2]) == pytest.approx(float(d), rel=1e-6)


def test_bad_tilt_settings_are_refused():
    with pytest.raises(ValueError, match="tilt terms = 0"):
        fit_vertical_tilt(GaussianSlab(), np.zeros((100, 3)), 0, W)
    with pytest.raises(ValueError, match="too few"):
        fit_vertical_tilt(GaussianSlab(), np.zeros((20, 3)), 4, W)
    with pytest.raises(ConfigError, match="flow.nu_tilt_terms"):
        study.load("quick", ["flow.nu_tilt_terms=40"])
    with pytest.raises(ConfigError, match="flow.nu_tilt_width_kpc"):
        study.load("quick", ["flow.nu_tilt_width_kpc=0"])
