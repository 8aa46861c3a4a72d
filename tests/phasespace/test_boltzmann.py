"""Boltzmann least squares: exact DFs give the exact acceleration (no learning involved)."""

import numpy as np
import pytest
import torch

from darkml.phasespace.boltzmann import least_squares_acceleration, solve_acceleration
from darkml.phasespace.mocks import OBSERVER_KPC


def _plummer_sampler(plummer, rng):
    """Exact draws from the isotropic Plummer p(v|x): speed q·v_esc with q ∝ q²(1−q²)^{7/2}."""

    def sample_v(x, n, generator=None, base=None):
        out = []
        for p in range(x.shape[0]):
            vesc = np.sqrt(-2 * plummer.potential(x[p]).item())
            q = []
            while len(q) < n:
                qq = rng.random(8 * n)
                keep = 0.1 * rng.random(8 * n) < qq**2 * (1 - qq**2) ** 3.5
                q.extend(qq[keep])
            d = rng.standard_normal((n, 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            out.append(d * (np.asarray(q[:n]) * vesc)[:, None])
        return torch.tensor(np.array(out))

    return sample_v


@pytest.mark.parametrize("weighting", ["f", "log"])
def test_exact_plummer_df_gives_exact_acceleration(plummer, weighting):
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(6, 3)) * 3.0)
    res = solve_acceleration(plummer.log_df, _plummer_sampler(plummer, rng), x, 500, weighting=weighting, batch_points=1000)
    truth = plummer.acceleration(x)
    assert torch.max(torch.abs(res.a - truth) / truth.norm(dim=-1, keepdim=True)).item() < 1e-3
    assert res.n_evaluations == 6 * 500
    assert res.residual.max().item() < 1e-6


def test_exact_disc_df_gives_exact_acceleration(mw, disc_df, disc_like_velocities):
    """Any f(E, Lz) solves the steady Boltzmann equation in its potential: the solver must find −∇Φ."""
    rng = np.random.default_rng(1)
    x = torch.tensor([OBSERVER_KPC, (7.0, 1.0, 0.5), (10.5, -1.0, -1.2)], dtype=torch.float64)
    res = solve_acceleration(disc_df.log_df, disc_like_velocities(rng, 40.0), x, 400, weighting="log")
    truth = mw.acceleration(x)
    assert torch.max(torch.abs(res.a - truth) / truth.norm(dim=-1, keepdim=True)).item() < 1e-3


def test_least_squares_recovers_planted_solution():
    g = torch.Generator().manual_seed(0)
    a_true = torch.tensor([[-6000.0, 30.0, -200.0], [100.0, 2.0, 5.0]], dtype=torch.float64)
    gv = torch.randn((2, 50, 3), generator=g, dtype=torch.float64)
    v = torch.randn((2, 50, 3), generator=g, dtype=torch.float64) * 50
    # choose gx so that v·gx = −gv·a exactly
    b = -(gv * a_true[:, None, :]).sum(-1)
    gx = v * (b / (v * v).sum(-1))[..., None]
    a, rel = least_squares_acceleration(v, gx, gv, torch.zeros(2, 50, dtype=torch.float64), weighting="f")
    np.testing.assert_allclose(a.numpy(), a_true.numpy(), rtol=1e-9, atol=1e-9)
    assert rel.max().item() < 1e-10
    with pytest.raises(ValueError, match="weighting"):
        least_squares_acceleration(v, gx, gv, weighting="abs")
