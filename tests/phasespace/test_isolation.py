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
