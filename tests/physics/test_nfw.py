"""NFW closed forms against numerical quadrature of their definitions, finite differences and limits.

The untruncated NFW profile has no finite total mass: the cylinder mass grows like ln b. We test
the far field against its asymptotic expansion M(b)/A = ln(x/2) + pi/(2x) - 1/x^2 + O(x^-3)
(A = 4 pi rho_s r_s^3, x = b/r_s, derived independently from arccos(1/x) = pi/2 - 1/x - ...), and
that M_cyl(b) / M_3D(b) decreases towards 1 (both ~ A ln b).
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from darkml.physics import nfw
from darkml.physics.cosmology import critical_density

RHO_S, R_S = 1.3e7, 1.7  # Msun/kpc^3, kpc
A = 4 * math.pi * RHO_S * R_S**3


def rho(r):
    x = r / R_S
    return RHO_S / (x * (1 + x) ** 2)


def sigma(R):
    """Surface density 2 ∫_0^inf rho(sqrt(z^2 + R^2)) dz by quadrature."""
    return 2 * integrate.quad(lambda z: rho(math.hypot(z, R)), 0, np.inf, epsabs=0, epsrel=1e-12, limit=400)[0]


def cylinder_mass_quad(b):
    """Eq. (2) by nested quadrature: ∫_0^b 2 pi b' Sigma(b') db'."""
    pts = [R_S] if b > R_S else None
    return integrate.quad(lambda R: 2 * math.pi * R * sigma(R), 0, b, epsabs=0, epsrel=1e-11, limit=200, points=pts)[0]


X_VALUES = [1e-3, 0.2, 0.7, 0.9486, 0.95, 0.999, 1 - 1e-7, 1.0, 1 + 1e-7, 1.001, 1.0488, 1.05, 1.6, 8.0, 60.0]


@pytest.mark.parametrize("x", X_VALUES)
def test_projected_mass_matches_quadrature_of_eq2(x):
    b = x * R_S
    M, M1 = nfw.projected_mass(b, RHO_S, R_S, order=1)
    assert M == pytest.approx(cylinder_mass_quad(b), rel=1e-9)
    assert M1 == pytest.approx(2 * math.pi * b * sigma(b), rel=1e-9)  # dM/db = 2 pi b Sigma(b)


@pytest.mark.parametrize("x", [0.01, 0.5, 0.96, 1.0, 1.0 + 1e-9, 1.03, 1.2, 4.0, 300.0])
def test_derivatives_match_finite_differences(x):
    b = x * R_S
    h = 1e-5 * b
    M, M1, M2 = nfw.projected_mass(b, RHO_S, R_S, order=2)
    fd1 = (nfw.projected_mass(b + h, RHO_S, R_S) - nfw.projected_mass(b - h, RHO_S, R_S)) / (2 * h)
    fd2 = (nfw.projected_mass(b + h, RHO_S, R_S, 1)[1] - nfw.projected_mass(b - h, RHO_S, R_S, 1)[1]) / (2 * h)
    assert M1 == pytest.approx(fd1, rel=1e-8)
    assert M2 == pytest.approx(fd2, rel=1e-7, abs=1e-9 * abs(M1) / b)


@pytest.mark.parametrize("x0", [1.0, math.sqrt(0.9), math.sqrt(1.1)])
def test_continuity_at_x1_and_series_boundaries(x0):
    eps = 1e-12
    lo = nfw.projected_mass(np.array([x0 * (1 - eps)]) * R_S, RHO_S, R_S, order=2)
    hi = nfw.projected_mass(np.array([x0 * (1 + eps)]) * R_S, RHO_S, R_S, order=2)
    for a, b in zip(lo, hi):
        assert a[0] == pytest.approx(b[0], rel=1e-10)
    # known values at x = 1: M'(r_s) = 4 pi rho_s r_s^2 / 3, M(r_s) = A (1 - ln 2)
    M, M1, _ = nfw.projected_mass(R_S, RHO_S, R_S, order=2)
    assert M == pytest.approx(A * (1 - math.log(2)), rel=1e-14)
    assert M1 == pytest.approx(A / R_S / 3, rel=1e-14)


@pytest.mark.parametrize("x", [1e2, 1e3, 1e4, 1e6])
def test_far_field_asymptotics(x):
    M = nfw.projected_mass(x * R_S, RHO_S, R_S)
    assert abs(M / A - (math.log(x / 2) + math.pi / (2 * x) - 1 / x**2)) < 5 / x**3
    M3 = nfw.enclosed_mass_3d(x * R_S, RHO_S, R_S)
    assert M > M3  # the cylinder contains the sphere


def test_cylinder_over_sphere_mass_tends_to_one():
    x = np.logspace(1, 8, 8)
    ratio = nfw.projected_mass(x * R_S, RHO_S, R_S) / nfw.enclosed_mass_3d(x * R_S, RHO_S, R_S)
    assert np.all(np.diff(ratio) < 0) and np.all(ratio > 1)
    assert ratio[-1] < 1.05  # (ln x - ln 2) / (ln x - 1) -> 1 only logarithmically


@pytest.mark.parametrize("x", [1e-4, 1e-6, 1e-9])
def test_near_field_and_b_zero(x):
    # small x: M/A = x^2/2 [ln(2/x) - 1/2] + O(x^4 ln x), free of the ln(x/2) + F cancellation
    M = nfw.projected_mass(x * R_S, RHO_S, R_S)
    assert M / A == pytest.approx(x**2 / 2 * (math.log(2 / x) - 0.5), rel=10 * x**2 * abs(math.log(x)) + 1e-13)
    M0, M10, M20 = nfw.projected_mass(0.0, RHO_S, R_S, order=2)
    assert M0 == pytest.approx(0.0, abs=1e-20 * A) and abs(M10) < 1e-9 * A / R_S and math.isfinite(M20)


def test_nfw_params_satisfy_eq13_by_quadrature():
    m200, c200, h = 3e9, 12.0, 0.7
    rho_s, r_s, r200 = nfw.nfw_params(m200, c200, h=h)
    assert r200 == pytest.approx(c200 * r_s, rel=1e-14)
    shell = integrate.quad(lambda r: 4 * math.pi * r**2 * rho_s / ((r / r_s) * (1 + r / r_s) ** 2), 0, r200,
                           epsrel=1e-12, limit=200)[0]
    assert shell == pytest.approx(m200, rel=1e-10)
    assert m200 / (4 / 3 * math.pi * r200**3) == pytest.approx(200 * critical_density(h), rel=1e-12)


def test_torch_and_numpy_agree_and_broadcast():
    b = np.array([[0.1], [1.7], [20.0]])
    rs = np.array([0.5, 1.7, 3.0])
    Mn = nfw.projected_mass(b, RHO_S, rs, order=2)
    Mt = nfw.projected_mass(torch.tensor(b), torch.tensor(RHO_S), torch.tensor(rs), order=2)
    for a, t in zip(Mn, Mt):
        assert a.shape == (3, 3) and isinstance(t, torch.Tensor)
        np.testing.assert_allclose(t.numpy(), a, rtol=1e-15)
    with pytest.raises(ValueError, match="order"):
        nfw.projected_mass(1.0, RHO_S, R_S, order=3)
