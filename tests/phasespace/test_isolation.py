"""The exact pieces used to isolate the density bias: differentiable exact ν and hybrid models."""

import math

import numpy as np
import pytest
import torch

from darkml.phasespace import isolation, study
from darkml.phasespace.dataset import truth_model


@pytest.fixture(scope="module")
def df():
    cfg = study.load("quick")
    return truth_model(cfg)[1]


def test_exact_log_nu_matches_the_df_density_and_its_gradient(df):
    rng = np.random.default_rng(0)
    x = torch.as_tensor(np.array(df.observer) + rng.uniform(-1.5, 1.5, size=(20, 3)) * [1, 1, 0.5], dtype=torch.float64)
    ln = df.log_nu(x)
    np.testing.assert_allclose(ln.numpy(), np.log(df.number_density(x).numpy()), rtol=0, atol=1e-9)
    xg = x.clone().requires_grad_(True)
    g = torch.autograd.grad(df.log_nu(xg).sum(), xg)[0]
    h = 1e-5
    for k in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[k] = h
        fd = (df.log_nu(x + e) - df.log_nu(x - e)) / (2 * h)
        np.testing.assert_allclose(g[:, k].numpy(), fd.numpy(), rtol=1e-5, atol=1e-6)


def test_exact_conditional_integrates_to_one(df):
    """exp(log f − log ν) over velocities is p(v|x): it integrates to one (importance sampling)."""
    x = torch.tensor([df.observer], dtype=torch.float64)
    rng = np.random.default_rng(1)
    # sample a broad Gaussian around the rotation velocity (either sense of rotation)
    sig = 80.0
    n = 200_000
    for sign in (-1.0, 1.0):
        v = rng.normal(0, sig, size=(n, 3)) + np.array([0.0, sign * 220.0, 0.0])
        vt = torch.as_tensor(v)
        lp = df.log_df(x.expand(n, 3), vt) - df.log_nu(x.expand(n, 3))
        lq = -0.5 * (((v - [0.0, sign * 220.0, 0.0]) / sig) ** 2).sum(1) - 3 * math.log(sig * math.sqrt(2 * math.pi))
        est = float(np.mean(np.exp(lp.numpy() - lq)))
        if est > 0.5:
            assert est == pytest.approx(1.0, abs=0.02)
            break
    else:
        raise AssertionError("p(v|x) not found around either rotation direction")


def test_midplane_curvature_of_a_gaussian_layer():
    s = 0.3
    k = isolation.midplane_curvature(lambda p: -0.5 * (p[:, 2] / s) ** 2, 8.0)
    assert k == pytest.approx(-1 / s**2, rel=1e-6)


class _ExactAsFlow:
    """The exact DF behind the flow interface, with velocities from a broad Gaussian: the
    Boltzmann least squares is exact for any velocity sample when f is exact."""

    def __init__(self, df):
        self.df = df

    def log_nu(self, x):
        return self.df.log_nu(x.to(torch.float64)).to(x.dtype)

    def log_p_v(self, v, x):
        x64, v64 = x.to(torch.float64), v.to(torch.float64)
        return (self.df.log_df(x64, v64) - self.df.log_nu(x64)).to(v.dtype)

    def sample_v(self, x, n, generator=None):
        z = torch.randn(x.shape[0], n, 3, generator=generator)
        return (z * 40.0 + torch.tensor([0.0, 220.0, 0.0])).to(x.dtype)


def test_gradient_swap_recovers_the_exact_field_when_nothing_is_learned():
    cfg = study.load("quick")
    pot, df = truth_model(cfg)
    flow = _ExactAsFlow(df)
    # the sense of rotation of the mock: pick the one where p(v|x) has mass
    x0 = torch.tensor([df.observer], dtype=torch.float64)
    if float(flow.log_p_v(torch.tensor([[0.0, 220.0, 0.0]], dtype=torch.float64), x0)) < -30:
        flow.sample_v = lambda x, n, generator=None: (torch.randn(x.shape[0], n, 3, generator=generator) * 40.0
                                                      + torch.tensor([0.0, -220.0, 0.0])).to(x.dtype)
    pts = torch.tensor([[df.observer[0], df.observer[1], z] for z in (0.05, 0.2)], dtype=torch.float64)
    sw = isolation.gradient_swap(flow, df, pot, pts, n_velocities=500, seed=0)
    for k in ("learned", "learned_x", "learned_v", "exact"):
        np.testing.assert_allclose(sw[k][:, 2].double().numpy(), sw["truth"][:, 2].numpy(), rtol=2e-3)
        np.testing.assert_allclose(sw[k][:, 0].double().numpy(), sw["truth"][:, 0].numpy(), rtol=2e-3)
