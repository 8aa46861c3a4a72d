"""Kernel-smoothed Gauss's law: exact accelerations give the exact smoothed density."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from darkml.phasespace.gauss import (
    Kernel,
    density_divergence,
    density_fast,
    density_paper,
    gauss_rule,
    smoothed_density,
)
from darkml.phasespace.mocks import OBSERVER_KPC
from darkml.physics import constants as const


def test_gauss_rule_is_exact_for_polynomials():
    w = lambda r: r**2 * np.exp(-r * r / 2)  # noqa: E731
    nodes, weights = gauss_rule(w, 0.0, 2.0, 4)
    for k in range(8):  # a 4-point Gauss rule is exact to degree 7
        exact = integrate.quad(lambda r: w(r) * r**k, 0, 2)[0]
        assert (weights * nodes**k).sum() == pytest.approx(exact, rel=1e-10)


def test_cubature_moments_match_truncated_normal():
    k = Kernel(truncation=2.0)
    vol, wv, dirs, wd = k.cubature(3, 4, 8)
    assert wv.sum() == pytest.approx(1) and wd.sum() == pytest.approx(1)
    np.testing.assert_allclose((wd[:, None] * dirs**2).sum(0), 1 / 3, rtol=1e-12)
    # E|s|^2 for a standard normal truncated at c, by quadrature
    num = integrate.quad(lambda r: r**4 * np.exp(-r * r / 2), 0, 2)[0]
    den = integrate.quad(lambda r: r**2 * np.exp(-r * r / 2), 0, 2)[0]
    assert (wv * (vol**2).sum(1)).sum() == pytest.approx(num / den, rel=1e-10)
    np.testing.assert_allclose((wv[:, None] * vol).sum(0), 0, atol=1e-14)  # antipodal symmetry


def test_harmonic_field_gives_uniform_density():
    k_ = 3000.0  # a = −k x  ->  ρ = 3k / (4πG) everywhere
    rho = 3 * k_ / (4 * math.pi * const.G_KPC_KMS2_MSUN)
    accel = lambda x: -k_ * x  # noqa: E731
    for kern in (Kernel(), Kernel((0.5, 0.7, 0.3), 1.5)):
        assert density_fast(accel, OBSERVER_KPC, kern).rho == pytest.approx(rho, rel=1e-10)
        r = density_paper(accel, OBSERVER_KPC, kern, n_volume=3000, n_surface=1000, seed=1)
        assert abs(r.rho - rho) < 4 * r.error + 1e-6 * rho


def test_plummer_smoothed_density(plummer):
    kern = Kernel((1.0, 1.0, 0.2), 2.0)
    for x0 in ((2.0, 0.0, 0.5), (0.0, 3.0, -1.0)):
        # smoothed truth: cubature of ρ, checked against plain Monte Carlo of ρ over the kernel
        truth = smoothed_density(plummer.density, x0, kern)
        g = torch.Generator().manual_seed(0)
        s = kern.sample_volume(200_000, g)
        mc = plummer.density(torch.tensor(x0) + s * torch.tensor(kern.bandwidth)).mean().item()
        assert truth == pytest.approx(mc, rel=5e-3)
        assert density_fast(plummer.acceleration, x0, kern, 4, 6, 12).rho == pytest.approx(truth, rel=1e-3)
        r = density_paper(plummer.acceleration, x0, kern, seed=2)
        assert abs(r.rho - truth) < 4 * r.error
        assert r.n_points == 3200


def test_mw_smoothed_density_at_the_sun(mw):
    kern = Kernel()
    truth = smoothed_density(mw.density, OBSERVER_KPC, kern)
    fine = smoothed_density(mw.density, OBSERVER_KPC, kern, 24, 48, 96)
    assert truth == pytest.approx(fine, rel=1e-5)
    fast = density_fast(mw.acceleration, OBSERVER_KPC, kern)
    assert fast.rho == pytest.approx(truth, rel=1e-3)
    assert fast.n_points == 192
    # the smoothing matters: the point density in the thin MN disc is well above the smoothed one
    point = mw.density(torch.tensor([OBSERVER_KPC], dtype=torch.float64)).item()
    assert point / truth > 1.1


def test_divergence_of_analytic_field(plummer):
    x0 = (1.0, -2.0, 0.5)
    acc = lambda x: plummer.acceleration(x.double())  # noqa: E731
    r = density_divergence(acc, x0)
    assert r.rho == pytest.approx(plummer.density(torch.tensor([x0])).item(), rel=1e-4)


def test_kernel_validation():
    with pytest.raises(ValueError, match="bandwidth"):
        Kernel((1.0, 0.0, 0.2))
    with pytest.raises(ValueError, match="truncation"):
        Kernel(truncation=10)


def test_hybrid_density_splits_linearly(mw):
    """The evaluate stage's hybrid density (a_x, a_y from one field, a_z from another, the Sun's nodes
    evaluated once per field): Gauss's law is linear in a, so ρ(a1_xy, a2_z) + ρ(a2_xy, a1_z) = ρ(a1) + ρ(a2),
    and with a1 = a2 the hybrid is the field's own density."""
    from darkml.phasespace.measure import _LastCall, hybrid_field

    calls = []

    def exact(p):
        calls.append(len(p))
        return mw.acceleration(p.to(torch.float64))

    def tilted(p):  # a different field: the exact one, sheared and scaled
        a = mw.acceleration(p.to(torch.float64))
        return torch.stack([1.1 * a[:, 0] + 0.2 * a[:, 2], 0.9 * a[:, 1], 0.8 * a[:, 2] - 0.01 * a[:, 0]], 1)

    k = Kernel()
    f1, f2 = _LastCall(exact), _LastCall(tilted)
    rho1 = density_fast(f1, OBSERVER_KPC, k).rho
    rho2 = density_fast(f2, OBSERVER_KPC, k).rho
    h12 = density_fast(hybrid_field(f1, f2), OBSERVER_KPC, k).rho
    h21 = density_fast(hybrid_field(f2, f1), OBSERVER_KPC, k).rho
    assert len(calls) == 1  # the nodes were evaluated once
    assert h12 + h21 == pytest.approx(rho1 + rho2, rel=1e-12)
    assert abs(h12 - rho1) > 1e-3 * rho1  # the split is not trivial
    same = density_fast(hybrid_field(f1, f1), OBSERVER_KPC, k).rho
    assert same == pytest.approx(rho1, rel=1e-14)
