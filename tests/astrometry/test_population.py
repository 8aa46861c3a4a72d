"""Subhalo populations against their defining distributions (independent CDFs by quadrature)."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from darkml.astrometry import population as pop
from darkml.physics.cosmology import critical_density
from darkml.physics.nfw import nfw_f

P = pop.PopulationParams()


def test_expected_count_from_normalisation():
    a = -0.9  # slope + 1
    expected = 150 * (1e7**a - 1e10**a) / (1e8**a - 1e10**a)
    assert pop.expected_count(P) == pytest.approx(expected, rel=1e-12)
    assert 1207 < expected < 1209


@pytest.fixture(scope="module")
def many():
    rng = np.random.default_rng(2024)
    return [pop.draw_population(P, rng) for _ in range(25)]


def test_poisson_count_and_normalisation_150(many):
    counts = np.array([len(c["m200"]) for c in many])
    mu = pop.expected_count(P)
    assert abs(counts.mean() - mu) < 4 * math.sqrt(mu / len(counts))
    in_norm = np.array([np.sum((c["m200"] >= 1e8) & (c["m200"] <= 1e10)) for c in many])
    assert abs(in_norm.mean() - 150) < 4 * math.sqrt(150 / len(many))


def test_mass_function_slope_ks_and_mle():
    rng = np.random.default_rng(1)
    m = pop.sample_masses(20000, 1e7, 1e10, -1.9, rng)
    a = -0.9
    cdf = lambda x: (x**a - 1e7**a) / (1e10**a - 1e7**a)  # noqa: E731
    assert stats.kstest(m, cdf).pvalue > 1e-3
    # maximum-likelihood slope of a truncated power law, found on a grid (independent of the sampler)
    grid = np.linspace(-2.1, -1.7, 801)
    lnm = np.log(m).sum()
    ll = [s * lnm + len(m) * np.log((s + 1) / (1e10 ** (s + 1) - 1e7 ** (s + 1))) for s in grid]
    assert grid[int(np.argmax(ll))] == pytest.approx(-1.9, abs=0.02)


def _einasto_cdf(r_max=300.0, r_e=199.0, g=0.678):
    pdf = lambda r: r * r * math.exp(-(2 / g) * ((r / r_e) ** g - 1))  # noqa: E731
    norm = integrate.quad(pdf, 0, r_max, epsrel=1e-12)[0]
    return np.vectorize(lambda r: integrate.quad(pdf, 0, min(max(r, 0.0), r_max), epsrel=1e-10)[0] / norm)


def test_radial_distribution_ks():
    rng = np.random.default_rng(2)
    r = pop.sample_radii(3000, 0.0, 300.0, 199.0, 0.678, rng)
    assert r.min() >= 0 and r.max() <= 300
    assert stats.kstest(r, _einasto_cdf()).pvalue > 1e-3


def test_catalogue_positions_recover_radii_and_isotropy(many):
    """Galactocentric radii rebuilt from (l, b, distance) and the Sun's position follow the Einasto pdf."""
    cat = {k: np.concatenate([c[k] for c in many[:3]]) for k in many[0]}
    l, b, d = np.radians(cat["l"]), np.radians(cat["b"]), cat["distance"]
    helio = np.stack([d * np.cos(b) * np.cos(l), d * np.cos(b) * np.sin(l), d * np.sin(b)], -1)
    gc = helio - np.array([pop.R_SUN_KPC, 0, 0])  # the Galactic centre is at (R_sun, 0, 0)
    r = np.linalg.norm(gc, axis=-1)
    assert stats.kstest(r, _einasto_cdf()).pvalue > 1e-3
    u = gc / r[:, None]
    assert np.all(np.abs(u.mean(0)) < 4 / math.sqrt(3 * len(u)))  # isotropic about the centre


def _maxwell_cdf(v0=220.0, vesc=550.0):
    pdf = lambda v: v * v * math.exp(-(v / v0) ** 2)  # noqa: E731
    norm = integrate.quad(pdf, 0, vesc, epsrel=1e-12)[0]
    return np.vectorize(lambda v: integrate.quad(pdf, 0, min(max(v, 0.0), vesc), epsrel=1e-10)[0] / norm)


def test_speed_distribution_is_truncated_maxwellian_with_v2():
    rng = np.random.default_rng(3)
    v = pop.sample_speeds(3000, 220.0, 550.0, rng)
    assert v.max() < 550
    assert stats.kstest(v, _maxwell_cdf()).pvalue > 1e-3
    # without the v^2 phase-space factor the speeds would be much slower: mean 124 km/s
    assert 240 < v.mean() < 250  # truncated Maxwellian: mean ≈ 245 km/s


def test_heliocentric_velocities_are_shm_shifted_by_v_sun(many):
    cat = {k: np.concatenate([c[k] for c in many[:3]]) for k in many[0]}
    l, b = np.radians(cat["l"]), np.radians(cat["b"])
    e_l = np.stack([-np.sin(l), np.cos(l), 0 * l], -1)
    e_b = np.stack([-np.sin(b) * np.cos(l), -np.sin(b) * np.sin(l), np.cos(b)], -1)
    e_r = np.stack([np.cos(b) * np.cos(l), np.cos(b) * np.sin(l), np.sin(b)], -1)
    v_helio = cat["v_l"][:, None] * e_l + cat["v_b"][:, None] * e_b + cat["v_r"][:, None] * e_r
    v_gal = v_helio + np.array([11.0, 232.0, 7.0])  # Galilean transformation, eq. (12)
    assert stats.kstest(np.linalg.norm(v_gal, axis=-1), _maxwell_cdf()).pvalue > 1e-3
    assert np.all(np.abs(v_gal.mean(0)) < 4 * 170 / math.sqrt(len(v_gal)))  # no net rotation of the halo
    assert v_helio[:, 1].mean() == pytest.approx(-232.0, abs=4 * 170 / math.sqrt(len(v_gal)))


def test_profile_parameters_satisfy_eq13(many):
    c = many[0]
    assert np.allclose(4 * math.pi * c["rho_s"] * c["r_s"] ** 3 * nfw_f(c["c200"]), c["m200"], rtol=1e-12)
    r200 = c["c200"] * c["r_s"]
    assert np.allclose(c["m200"] / (4 / 3 * math.pi * r200**3), 200 * critical_density(0.7), rtol=1e-12)
    assert set(c) == set(pop.CATALOGUE_COLUMNS)
    assert np.all((c["l"] >= 0) & (c["l"] < 360)) and np.all(np.abs(c["b"]) <= 90)


def test_deterministic_and_config_compatible():
    a = pop.draw_population(P, np.random.default_rng([7, 3]))
    b = pop.draw_population(P, np.random.default_rng([7, 3]))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = pop.draw_population(P, np.random.default_rng([7, 4]))
    assert len(c["m200"]) != len(a["m200"]) or not np.array_equal(a["m200"], c["m200"])
    from darkml.astrometry.config import PopulationCfg

    d = pop.draw_population(PopulationCfg(), np.random.default_rng([7, 3]))
    assert all(np.array_equal(a[k], d[k]) for k in a)


def test_bad_input_is_one_line_error():
    with pytest.raises(ValueError, match="m_min .* must be < .*m_max"):
        pop.draw_population(pop.PopulationParams(m_min=1e11), np.random.default_rng(0))
    with pytest.raises(ValueError, match="r_min_kpc"):
        pop.draw_population(pop.PopulationParams(r_min_kpc=400.0), np.random.default_rng(0))
