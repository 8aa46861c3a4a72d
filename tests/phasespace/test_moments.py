"""Moment (Jeans) accelerations of a flow, against a rotating isothermal disc in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darkml.phasespace.moments import MomentField

SIG, VC, RD, Z0 = 30.0, 220.0, 2.5, 0.3  # km/s, km/s, kpc, kpc


class _RotatingIsothermal:
    """ν ∝ exp(−R/R_d) sech²(z/2z0); p(v|x) Gaussian, isotropic σ, streaming v_c φ̂ (flat curve).

    The Jeans equations give a = σ² ∇ln ν + (v̄·∇)v̄ = σ² ∇ln ν − v_c²/R R̂ exactly."""

    def log_nu(self, x):
        R = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2)
        return -R / RD + 2 * torch.log(1 / torch.cosh(x[:, 2] / (2 * Z0)))

    def sample_v(self, x, n, base):
        R = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2)
        mean = torch.stack([-VC * x[:, 1] / R, VC * x[:, 0] / R, torch.zeros_like(R)], -1)
        return mean[:, None, :] + SIG * base[None, :, :]


def _exact(x: np.ndarray) -> np.ndarray:
    R = np.hypot(x[:, 0], x[:, 1])
    aR = -SIG**2 / RD - VC**2 / R
    return np.stack([aR * x[:, 0] / R, aR * x[:, 1] / R, -(SIG**2 / Z0) * np.tanh(x[:, 2] / (2 * Z0))], -1)


def test_moment_field_is_exact_for_a_rotating_isothermal_disc():
    model = _RotatingIsothermal()
    f = MomentField(model, 4096, seed=0, batch_points=3)
    b = f.base.double()
    b = b - b.mean(0)
    L = torch.linalg.cholesky(b.T @ b / len(b))
    f.base = (b @ torch.linalg.inv(L).T).float()  # zero mean, identity covariance: the moments are exact
    x = torch.tensor([[8.0, 0.0, 0.0], [8.0, 0.0, 0.05], [7.0, 2.0, -0.2], [8.5, -1.0, 0.4]])
    a = f(x).numpy()
    exact = _exact(x.double().numpy())
    np.testing.assert_allclose(a, exact, rtol=2e-3, atol=0.05)
    assert a[0, 2] == pytest.approx(0.0, abs=0.05) and f.n_evaluations == 4 * 4096


def test_too_few_velocities_is_refused():
    with pytest.raises(ValueError, match="n_velocities"):
        MomentField(_RotatingIsothermal(), 8)
