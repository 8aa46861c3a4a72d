"""Deflection, velocity and acceleration (eqs. 1, 3, 6) against finite differences and limits."""

import math

import numpy as np
import pytest
import torch

from darkml.astrometry import lensing
from darkml.physics import constants as k
from darkml.physics.nfw import projected_mass

RHO_S, R_S = 2.0e7, 0.8  # Msun/kpc^3, kpc
# impact parameters [kpc] spanning x < 1, the series band around x = 1, and x > 1
B0 = torch.tensor([[0.3, -0.2], [1.0, 0.5], [5.0, 3.0], [0.79, 0.05], [0.0, 0.8], [0.78, 0.0], [0.02, -0.01],
                   [-40.0, 10.0]], dtype=torch.float64)
V = torch.tensor([[100.0, 250.0], [-300.0, 20.0], [50.0, -80.0], [10.0, 200.0], [200.0, 5.0], [-150.0, 90.0],
                  [30.0, 30.0], [120.0, -60.0]], dtype=torch.float64)


def defl(b):
    return torch.stack(lensing.deflection(b[:, 0], b[:, 1], RHO_S, R_S), -1)


def vel(b, v=V):
    return torch.stack(lensing.velocity(b[:, 0], b[:, 1], v[:, 0], v[:, 1], RHO_S, R_S), -1)


def acc(b, v=V):
    return torch.stack(lensing.acceleration(b[:, 0], b[:, 1], v[:, 0], v[:, 1], RHO_S, R_S), -1)


def test_eq3_is_time_derivative_of_eq1():
    h = 50.0  # yr; b(t) = b0 + v_il t
    step = V * k.KPC_PER_YR_PER_KMS * h
    fd = (defl(B0 + step) - defl(B0 - step)) / (2 * h)
    mu = vel(B0)
    torch.testing.assert_close(mu, fd, rtol=1e-6, atol=1e-9 * mu.abs().max().item())


def test_eq6_is_time_derivative_of_eq3():
    h = 50.0
    step = V * k.KPC_PER_YR_PER_KMS * h
    fd = (vel(B0 + step) - vel(B0 - step)) / (2 * h)
    a = acc(B0)
    torch.testing.assert_close(a, fd, rtol=1e-6, atol=1e-9 * a.abs().max().item())


def test_velocity_fast_path_matches_literal_eq3():
    """The map kernel (arccos branch + careful re-evaluation) vs eq. (3) written out with projected_mass."""
    g = torch.Generator().manual_seed(0)
    b = torch.randn(4000, 2, generator=g, dtype=torch.float64) * torch.logspace(-2, 1.5, 4000, dtype=torch.float64)[:, None]
    v = torch.randn(4000, 2, generator=g, dtype=torch.float64) * 200
    r_s = torch.full((4000,), R_S, dtype=torch.float64)
    bn = b.norm(dim=-1)
    bhat = b / bn[:, None]
    M, M1 = projected_mass(bn, RHO_S, r_s, order=1)
    bdot = (bhat * v).sum(-1)
    kk = 4 * k.G * k.M_SUN / (k.C**2 * k.KPC) * k.MUAS_PER_RAD * k.KPC_PER_YR_PER_KMS
    literal = -kk * ((M1 * bdot / bn)[:, None] * bhat + (M / bn**2)[:, None] * (v - 2 * bdot[:, None] * bhat))
    got = vel(b, v)
    torch.testing.assert_close(got, literal, rtol=1e-11, atol=1e-14 * literal.abs().max().item())


def test_sign_conventions():
    # the lens lies along +e_l from the source (b points towards the lens): the image moves away, along -e_l
    d = defl(torch.tensor([[0.5, 0.0], [3.0, 0.0]], dtype=torch.float64))
    assert torch.all(d[:, 0] < 0) and torch.all(d[:, 1] == 0)
    # a lens moving along +y: the induced velocity at its position points opposite to its motion
    # (paper Fig. 2); with b perpendicular to v, eq. (3) reduces to -k M/b^2 v
    b = torch.tensor([[0.05, 0.0]], dtype=torch.float64)
    v = torch.tensor([[0.0, 200.0]], dtype=torch.float64)
    mu = vel(b, v)
    assert mu[0, 0].abs() < 1e-15 * mu.abs().max() and mu[0, 1] < 0
    M = projected_mass(0.05, RHO_S, R_S)
    expected = -4 * k.G * k.M_SUN / (k.C**2 * k.KPC) * M / 0.05**2 * 200 * k.KPC_PER_YR_PER_KMS * k.MUAS_PER_RAD
    assert mu[0, 1].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("x", [1e3, 1e4, 1e5])
def test_far_field_fall_off(x):
    """|Δθ| b -> k A [ln(x/2) + pi/(2x)]: 1/b up to the logarithmic growth of the untruncated NFW mass."""
    A = 4 * math.pi * RHO_S * R_S**3
    b = torch.tensor([[x * R_S, 0.0]], dtype=torch.float64)
    d = defl(b).norm().item()
    kk = 4 * k.G * k.M_SUN / (k.C**2 * k.KPC) * k.MUAS_PER_RAD
    assert d * x * R_S == pytest.approx(kk * A * (math.log(x / 2) + math.pi / (2 * x)), rel=2 / x**2)
    # velocity with b perpendicular to v falls as M(b)/b^2; with b parallel to v as (M' b - M)/b^2 ~ -M/b^2
    v_perp = vel(torch.tensor([[x * R_S, 0.0], [2 * x * R_S, 0.0]], dtype=torch.float64),
                 torch.tensor([[0.0, 100.0], [0.0, 100.0]], dtype=torch.float64)).norm(dim=-1)
    ratio_m = projected_mass(2 * x * R_S, RHO_S, R_S) / projected_mass(x * R_S, RHO_S, R_S)
    assert (v_perp[1] / v_perp[0]).item() == pytest.approx(ratio_m / 4, rel=1e-12)


def test_impact_geometry_is_perpendicular_offset():
    rng = np.random.default_rng(1)
    for _ in range(20):
        l0, b0 = rng.uniform(0, 2 * np.pi), rng.uniform(-1.4, 1.4)
        n = np.array([np.cos(b0) * np.cos(l0), np.cos(b0) * np.sin(l0), np.sin(b0)])
        e_l = np.array([-np.sin(l0), np.cos(l0), 0.0])
        e_b = np.cross(n, e_l)  # right-handed (n, e_l, e_b)
        pos = rng.normal(size=3) * 50
        pos = pos if pos @ n > 0 else -pos
        vel3 = rng.normal(size=3) * 200
        t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
        bl, bb, vl, vb = lensing.impact_geometry(t(e_l), t(e_b), t(pos), t(vel3))
        theta = np.arccos(np.clip(pos @ n / np.linalg.norm(pos), -1, 1))
        assert math.hypot(bl, bb) == pytest.approx(np.linalg.norm(pos) * np.sin(theta), rel=1e-9)
        perp_v = vel3 - (vel3 @ n) * n
        assert math.hypot(vl, vb) == pytest.approx(np.linalg.norm(perp_v), rel=1e-12)


def test_b_zero_is_finite_and_float32_runs():
    b = torch.zeros(1, 2, dtype=torch.float64)
    assert torch.all(torch.isfinite(vel(b, V[:1]))) and torch.all(defl(b) == 0)
    assert torch.all(torch.isfinite(acc(b, V[:1])))
    mu32 = lensing.velocity(B0[:, 0].float(), B0[:, 1].float(), V[:, 0].float(), V[:, 1].float(), RHO_S, R_S)
    torch.testing.assert_close(torch.stack(mu32, -1).double(), vel(B0), rtol=1e-4, atol=1e-6 * vel(B0).abs().max().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    mu = lensing.velocity(*(t.cuda() for t in (B0[:, 0], B0[:, 1], V[:, 0], V[:, 1])), RHO_S, R_S)
    torch.testing.assert_close(torch.stack(mu, -1).cpu(), vel(B0), rtol=1e-12, atol=0)
