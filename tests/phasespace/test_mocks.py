"""Mock galaxies: closed forms against galpy, finite differences and quadrature; samplers against the DFs."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from darkml.phasespace.mocks import (
    OBSERVER_KPC,
    SUPPORT_RADIUS_KPC,
    smear,
    uniform_ball,
)
from darkml.physics import constants as const


def test_mw2014_matches_galpy(mw):
    from galpy.potential import (
        MWPotential2014,
        evaluateDensities,
        evaluatePotentials,
        evaluateRforces,
        evaluatezforces,
    )
    from galpy.util import conversion

    rng = np.random.default_rng(1)
    R = rng.uniform(0.3, 25, 400)
    z = rng.uniform(-6, 6, 400)
    ro, vo = 8.0, 220.0
    Rt, zt = torch.tensor(R), torch.tensor(z)
    aR, az = mw.acceleration_Rz(Rt, zt)
    np.testing.assert_allclose(aR.numpy(), evaluateRforces(MWPotential2014, R / ro, z / ro) * vo**2 / ro, rtol=1e-10)
    np.testing.assert_allclose(az.numpy(), evaluatezforces(MWPotential2014, R / ro, z / ro) * vo**2 / ro, rtol=1e-9, atol=1e-9)
    rho_galpy = evaluateDensities(MWPotential2014, R / ro, z / ro) * conversion.dens_in_msolpc3(vo, ro) * 1e9
    np.testing.assert_allclose(mw.density_Rz(Rt, zt).numpy(), rho_galpy, rtol=1e-10)
    # potentials agree up to galpy's choice of zero point for the bulge
    dphi = mw.potential_Rz(Rt, zt).numpy() - evaluatePotentials(MWPotential2014, R / ro, z / ro) * vo**2
    assert np.ptp(dphi) < 1e-8 * np.abs(dphi).max() + 1e-6


def test_mw_forces_are_minus_gradient_and_obey_poisson(mw):
    x = torch.tensor([[8.122, 0.0, 0.0208], [6.0, 2.0, 1.0], [10.0, -3.0, -0.4]], dtype=torch.float64)
    h = 1e-4
    grad = torch.stack([(mw.potential(x + h * e) - mw.potential(x - h * e)) / (2 * h) for e in torch.eye(3, dtype=torch.float64)], -1)
    np.testing.assert_allclose(mw.acceleration(x).numpy(), -grad.numpy(), rtol=1e-6, atol=1e-6)
    h = 1e-3
    div = sum((mw.acceleration(x + h * e)[:, i] - mw.acceleration(x - h * e)[:, i]) / (2 * h) for i, e in enumerate(torch.eye(3, dtype=torch.float64)))
    rho_fd = -div / (4 * math.pi * const.G_KPC_KMS2_MSUN)
    np.testing.assert_allclose(rho_fd.numpy(), mw.density(x).numpy(), rtol=1e-4)


def test_plummer_closed_forms(plummer):
    x = torch.tensor([[0.5, 0.2, -1.0], [4.0, 1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(plummer.potential(x).sum(), x)
    np.testing.assert_allclose(plummer.acceleration(x).detach().numpy(), -g.numpy(), rtol=1e-12)
    # total mass by quadrature of the density
    m = integrate.quad(lambda r: 4 * np.pi * r**2 * plummer.density(torch.tensor([[r, 0.0, 0.0]])).item(), 0, np.inf)[0]
    assert m == pytest.approx(plummer.M, rel=1e-6)


def test_plummer_df_integrates_to_density(plummer):
    for r in (0.5, 3.0, 9.0):
        x = torch.tensor([[r, 0.0, 0.0]], dtype=torch.float64)
        vesc = math.sqrt(-2 * plummer.potential(x).item())

        def f(s):
            v = torch.tensor([[s, 0.0, 0.0]], dtype=torch.float64)
            return 4 * math.pi * s * s * math.exp(plummer.log_df(x, v).item())

        nu = integrate.quad(f, 0, vesc, epsabs=0, epsrel=1e-10)[0]
        assert nu == pytest.approx(plummer.density(x).item() / plummer.M, rel=1e-7)


def test_plummer_sampler(plummer):
    x, v = plummer.sample(20000, np.random.default_rng(3))
    r = np.linalg.norm(x, axis=1)
    cdf = lambda rr: rr**3 / (rr**2 + plummer.b**2) ** 1.5  # noqa: E731
    assert stats.kstest(r, cdf).pvalue > 1e-3
    # isotropic Plummer: <v^2> at radius r is 3σ² = −Φ/2; check the ratio star by star in aggregate
    phi = plummer.potential(torch.tensor(x)).numpy()
    ratio = (v**2).sum(1) / (-phi / 2)
    assert ratio.mean() == pytest.approx(1.0, abs=4 * ratio.std() / np.sqrt(len(ratio)))


def test_disc_df_normalised_and_consistent(disc_df):
    rng = np.random.default_rng(4)
    pts = uniform_ball(100_000, OBSERVER_KPC, SUPPORT_RADIUS_KPC, rng)
    nu = disc_df.number_density(torch.tensor(pts)).numpy()
    vol = 4 / 3 * np.pi * SUPPORT_RADIUS_KPC**3
    integral = vol * nu.mean()
    assert integral == pytest.approx(1.0, abs=4 * vol * nu.std() / np.sqrt(len(nu)))
    # ∫ f d^3v = ν(x) by brute-force quadrature over a velocity grid at two positions
    for x0 in ((8.122, 0.0, 0.0208), (6.5, 1.5, 0.8)):
        R = math.hypot(x0[0], x0[1])
        vr = np.linspace(-260, 260, 41)
        vp = np.linspace(-100, 450, 111)
        VR, VP, VZ = np.meshgrid(vr, vp, vr, indexing="ij")
        c, s = x0[0] / R, x0[1] / R
        v = np.stack([VR * c - VP * s, VR * s + VP * c, VZ], -1).reshape(-1, 3)
        lf = disc_df.log_df(torch.tensor(np.broadcast_to(x0, v.shape).copy()), torch.tensor(v)).numpy().reshape(VR.shape)
        nu_q = integrate.simpson(integrate.simpson(integrate.simpson(np.exp(lf), x=vr, axis=2), x=vp, axis=1), x=vr)
        nu_x = disc_df.number_density(torch.tensor([x0], dtype=torch.float64)).item()
        assert nu_q == pytest.approx(nu_x, rel=2e-3)


def test_disc_sampler_follows_df(disc_df, disc_sample):
    x, v, comp = disc_sample
    assert np.all(np.linalg.norm(x - np.asarray(OBSERVER_KPC), axis=1) <= SUPPORT_RADIUS_KPC)
    # component shares and exact Gaussian v_z per component
    assert np.mean(comp == 0) == pytest.approx(0.8, abs=4 * np.sqrt(0.16 / len(comp)))
    for i, sig in ((0, 25.0), (1, 45.0)):
        vz = v[comp == i, 2]
        assert vz.std() == pytest.approx(sig, rel=4 / np.sqrt(2 * len(vz)))
    # spatial moments against the normalised ν(x) (Monte-Carlo integration over the ball)
    rng = np.random.default_rng(5)
    pts = uniform_ball(150_000, OBSERVER_KPC, SUPPORT_RADIUS_KPC, rng)
    w = disc_df.number_density(torch.tensor(pts)).numpy()
    w /= w.sum()
    for g in (lambda p: (p[:, 2] - OBSERVER_KPC[2]) ** 2, lambda p: np.hypot(p[:, 0], p[:, 1])):
        expect = (w * g(pts)).sum()
        got = g(x).mean()
        tol = 4 * np.sqrt(g(x).var() / len(x) + (w**2 * (g(pts) - expect) ** 2).sum())
        assert abs(got - expect) < tol
    # mean rotation near the observer against the DF's own v_phi distribution by quadrature
    R = np.hypot(x[:, 0], x[:, 1])
    near = (np.abs(R - 8.122) < 0.15) & (np.abs(x[:, 2]) < 0.15)
    vphi = (x[near, 0] * v[near, 1] - x[near, 1] * v[near, 0]) / R[near]
    vg = np.linspace(-100, 450, 3001)
    pts0 = np.zeros((len(vg), 3))
    pts0[:, 0] = 8.122
    vel = np.zeros((len(vg), 3))
    vel[:, 1] = vg
    lf = disc_df.log_df(torch.tensor(pts0), torch.tensor(vel)).numpy()
    pv = np.exp(lf - lf.max())
    mean_q = (pv * vg).sum() / pv.sum()
    assert vphi.mean() == pytest.approx(mean_q, abs=4 * vphi.std() / np.sqrt(near.sum()) + 1.0)


def test_smear_zero_errors_is_identity_and_errors_scale(disc_sample):
    x, v, _ = disc_sample
    vsun = (0.0, 240.0, 0.0)
    xo, vo, ok = smear(x[:2000], v[:2000], OBSERVER_KPC, vsun, 0.0, 0.0, 0.0, np.random.default_rng(0))
    assert ok.all()
    np.testing.assert_allclose(xo, x[:2000], atol=1e-9)
    np.testing.assert_allclose(vo, v[:2000], atol=1e-7)
    xo, vo, ok = smear(x[:20000], v[:20000], OBSERVER_KPC, vsun, 0.02, 0.0, 0.0, np.random.default_rng(1))
    d_true = np.linalg.norm(x[:20000] - OBSERVER_KPC, axis=1)
    d_obs = np.linalg.norm(xo - OBSERVER_KPC, axis=1)
    dplx = 1 / d_obs[ok] - 1 / d_true[ok]
    assert dplx.std() == pytest.approx(0.02, rel=0.05)
    # radial velocities are untouched by parallax and proper-motion errors
    n = (x[:20000] - OBSERVER_KPC) / d_true[:, None]
    np.testing.assert_allclose(((vo - vsun) * n).sum(1)[ok], ((v[:20000] - vsun) * n).sum(1)[ok], atol=1e-6)


def test_disc_sampling_is_deterministic(disc_df):
    a = disc_df.sample(500, np.random.default_rng([7, 3]))
    b = disc_df.sample(500, np.random.default_rng([7, 3]))
    c = disc_df.sample(500, np.random.default_rng([7, 4]))
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(a[0], c[0])


def test_component_densities_add_up_and_dark_matter_summary():
    import numpy as np

    from darkml.phasespace.measure import _dark_matter
    from darkml.phasespace.mocks import MilkyWay2014

    mw = MilkyWay2014()
    x = torch.tensor([[8.122, 0.0, 0.0208], [7.0, 1.0, 0.5], [9.5, -0.5, -1.0]], dtype=torch.float64)
    total = mw.density(x)
    parts = sum(mw.density(x, (p,)) for p in MilkyWay2014.PARTS)
    assert torch.allclose(total, parts, rtol=1e-14)
    assert torch.allclose(mw.density(x, MilkyWay2014.BARYONS) + mw.density(x, ("halo",)), total, rtol=1e-14)
    frac = float(mw.density(x[:1], ("halo",)) / total[:1])
    assert 0.05 < frac < 0.12                       # the halo is ~8 % of the local density in MWPotential2014
    with pytest.raises(ValueError, match="unknown component"):
        mw.density(x, ("gas",))
    # an estimate equal to the true total gives the true dark-matter density
    t_tot, t_b = 9.0e7, 8.3e7
    A = {"true_rho_smoothed": np.array([t_tot]), "true_rho_baryon_smoothed": np.array([t_b]),
         "true_rho_dm_smoothed": np.array([t_tot - t_b]), "original_rho_sun": np.array([t_tot]),
         "original_rho_sun_stat": np.array([0.01 * t_tot])}
    dm = _dark_matter(A, ["original"])
    assert dm["sun"][1]["rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert dm["sun"][1]["rel_stat"] == pytest.approx(0.01 * t_tot / (t_tot - t_b))
    assert dm["required_total_precision_for_10pct_dm"] == pytest.approx(0.1 * (t_tot - t_b) / t_tot)


def test_h277_like_galaxy_is_selectable_by_name_and_exact(disc_like_velocities):
    """The second mock family: the paper's smoothed density at the Sun, a thicker tracer disc,
    and still an exact steady state (the Boltzmann solve with its exact f returns −∇Φ)."""
    import numpy as np

    from darkml.phasespace import gauss, study
    from darkml.phasespace.boltzmann import solve_acceleration
    from darkml.phasespace.dataset import truth_model

    thin = study.load("quick")
    thick = study.load("quick", ["mock.galaxy=h277-like"])
    assert thick.mock.components[0].sigma_kms == 35.0 and thick.mock.potential.disc_b_kpc == 0.9
    pot, df = truth_model(thick)
    k = gauss.Kernel((1.0, 1.0, 0.2), 2.0)
    rho = gauss.smoothed_density(pot.density, thick.mock.observer_kpc, k)
    assert rho == pytest.approx(3.06e7, rel=0.02)               # h277's smoothed density at the Sun
    rng = np.random.default_rng(0)
    z_thick = np.median(np.abs(df.sample(5000, rng)[0][:, 2]))
    z_thin = np.median(np.abs(truth_model(thin)[1].sample(5000, rng)[0][:, 2]))
    assert z_thick > 1.8 * z_thin
    x = torch.tensor([thick.mock.observer_kpc, (7.0, 1.0, 0.5)], dtype=torch.float64)
    res = solve_acceleration(df.log_df, disc_like_velocities(rng, 50.0), x, 400, weighting="log")
    truth = pot.acceleration(x)
    assert torch.max(torch.abs(res.a - truth) / truth.norm(dim=-1, keepdim=True)).item() < 1e-3
