"""Signal maps, noise and projection against independent computations."""

import importlib.util
import math
from pathlib import Path

import healpy as hp
import numpy as np
import pytest
import torch
from scipy import integrate

from darkml.astrometry import discs, maps, population, sky
from darkml.physics import constants as k

_spec = importlib.util.spec_from_file_location(
    "reference_astrometry", Path(__file__).resolve().parents[2] / "benchmarks" / "reference_astrometry.py")
_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_reference)
reference_signal_map = _reference.reference_signal_map

ONE = {"l": np.array([30.0]), "b": np.array([25.0]), "distance": np.array([12.0]), "v_l": np.array([150.0]),
       "v_b": np.array([-80.0]), "v_r": np.array([40.0]), "r_s": np.array([0.9]), "rho_s": np.array([1.5e7])}


def _cyl_mass_quad(b, rho_s, r_s):
    """M(b) and M'(b) = 2 pi b Sigma(b) by quadrature of the NFW density (independent of the closed form)."""
    rho = lambda r: rho_s / ((r / r_s) * (1 + r / r_s) ** 2)  # noqa: E731
    sig = lambda R: 2 * integrate.quad(lambda z: rho(math.hypot(z, R)), 0, np.inf, epsrel=1e-12, limit=400)[0]  # noqa: E731
    M = integrate.quad(lambda R: 2 * math.pi * R * sig(R), 0, b, epsrel=1e-11, limit=200,
                       points=[r_s] if b > r_s else None)[0]
    return M, 2 * math.pi * b * sig(b)


def test_single_subhalo_map_matches_direct_computation():
    nside = 32
    m = sky.signal_map(ONE, nside=nside, max_angle_deg=20.0)
    lens = hp.ang2vec(30.0, 25.0, lonlat=True)
    pix = hp.query_disc(nside, lens, math.radians(20.0))
    rng = np.random.default_rng(0)
    chosen = list(rng.choice(pix, 6, replace=False)) + [int(hp.vec2pix(nside, *lens))]
    lon, lat = np.radians(30.0), np.radians(25.0)
    e_l0 = np.array([-np.sin(lon), np.cos(lon), 0])
    e_b0 = np.array([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)])
    V = 150.0 * e_l0 - 80.0 * e_b0 + 40.0 * lens
    for p in chosen:
        th, ph = hp.pix2ang(nside, p)
        n = hp.ang2vec(th, ph)
        e_l = np.array([-np.sin(ph), np.cos(ph), 0.0])
        e_b = np.cross(n, e_l)
        b3 = 12.0 * (lens - (lens @ n) * n)
        v3 = (V - (V @ n) * n) * k.KPC_PER_YR_PER_KMS
        b = np.linalg.norm(b3)
        bhat = b3 / b
        M, M1 = _cyl_mass_quad(b, 1.5e7, 0.9)
        bdot = bhat @ v3
        mu = -4 * k.G * k.M_SUN / (k.C**2 * k.KPC) * (M1 * bdot / b * bhat + M / b**2 * (v3 - 2 * bdot * bhat))
        expected = np.array([mu @ e_l, mu @ e_b]) * k.MUAS_PER_RAD
        np.testing.assert_allclose(m[:, p], expected, rtol=1e-8)


def _disc_centres(seed: int, n: int, edge_lon, edge_lat):
    """n random disc centres plus edge cases (poles, longitude wrap): lon, lat [deg], theta, phi [rad]."""
    rng = np.random.default_rng(seed)
    lon = np.concatenate([rng.uniform(0, 360, n), edge_lon])
    lat = np.concatenate([rng.uniform(-90, 90, n), edge_lat])
    return lon, lat, torch.tensor(np.radians(90 - lat)), torch.tensor(np.radians(lon) % (2 * np.pi))


@pytest.mark.parametrize("radius", [5.0, 20.0, 60.0])
def test_truncation_and_disc_search_match_query_disc(radius):
    nside = 16
    lon, lat, theta, phi = _disc_centres(1, 40, [0.0, 359.99, 123.0, 45.0], [89.999, -89.99, 90.0, 0.0])
    grid = discs._grid(nside, "cpu")
    sub, pix = discs.disc_pairs(grid, theta, phi, math.radians(radius))
    for i in range(len(lon)):
        mine = np.sort(pix[sub == i].numpy())
        ref = np.sort(hp.query_disc(nside, hp.ang2vec(lon[i], lat[i], lonlat=True), math.radians(radius)))
        assert np.array_equal(mine, ref), (lon[i], lat[i])
    # the map of one subhalo is non-zero exactly on its disc
    cat = {**ONE, "l": np.array([lon[0]]), "b": np.array([lat[0]])}
    m = sky.signal_map(cat, nside=nside, max_angle_deg=radius)
    disc = hp.query_disc(nside, hp.ang2vec(lon[0], lat[0], lonlat=True), math.radians(radius))
    outside = np.setdiff1d(np.arange(hp.nside2npix(nside)), disc)
    assert np.all(m[:, outside] == 0) and np.all(np.hypot(*m[:, disc]) > 0)


def test_dense_disc_slots_hold_the_same_pairs_in_the_same_order():
    """disc_slots (dense per-subhalo table) against expand_runs (flat pair list), incl. wrapped runs and poles."""
    lon, lat, theta, phi = _disc_centres(3, 60, [0.0, 359.99, 0.01, 180.0], [89.999, -89.99, 0.0, 90.0])
    grid = discs._grid(16, "cpu")
    for radius in (3.0, 20.0, 70.0):
        run_pix0, run_cnt = discs._dense_runs(grid, theta, phi, math.radians(radius))
        count = run_cnt.sum(1)
        width = int(count.max()) + 5  # extra slots past every disc must be harmless
        pix, cnt = discs.disc_slots(run_pix0, run_cnt, torch.arange(width), grid.npix)
        assert torch.equal(cnt[:, 0], count) and pix.min() >= 0 and pix.max() < grid.npix
        sub, flat = discs.disc_pairs(grid, theta, phi, math.radians(radius))
        valid = torch.arange(width) < cnt
        assert torch.equal(pix[valid], flat)  # row-major = subhalo, then ring order
        assert torch.equal(torch.arange(len(lon))[:, None].expand_as(pix)[valid], sub)


def test_full_population_matches_reference_and_is_linear():
    rng = np.random.default_rng(5)
    cat = population.draw_population(None, rng)
    m = sky.signal_map(cat, nside=16)
    part = {c: v[:300] for c, v in cat.items()}  # the plain reference loop is slow: a quarter of the subhalos
    ref = reference_signal_map(part, 16)
    assert np.abs(sky.signal_map(part, nside=16) - ref).max() / np.abs(ref).max() < 1e-9
    half = {c: v[: len(v) // 2] for c, v in cat.items()}
    rest = {c: v[len(v) // 2:] for c, v in cat.items()}
    np.testing.assert_allclose(sky.signal_map(half, 16) + sky.signal_map(rest, 16), m, rtol=1e-12, atol=1e-18)
    many = sky.signal_maps([half, cat, rest], nside=16)
    np.testing.assert_allclose(many[1], m, rtol=1e-12, atol=1e-18)
    assert many.shape == (3, 2, hp.nside2npix(16))


def test_mixed_precision_stays_within_the_benchmark_tolerance():
    """float32 far-field kernel: within 1e-6 of the double-precision map, but not bit-identical."""
    rng = np.random.default_rng(6)
    cat = population.draw_population(None, rng)
    exact = sky.signal_map(cat, nside=16)
    mixed = sky.signal_map(cat, nside=16, precision="mixed")
    err = np.abs(mixed - exact).max() / np.abs(exact).max()
    assert 1e-12 < err < 1e-6  # really float32 somewhere, and still well inside the tolerance
    near = {c: v[:1] for c, v in ONE.items()}  # one subhalo: the pixels nearest it go the float64 path
    np.testing.assert_allclose(sky.signal_map(near, nside=32, precision="mixed"), sky.signal_map(near, nside=32),
                               rtol=0, atol=2e-7 * np.abs(sky.signal_map(near, nside=32)).max())
    with pytest.raises(ValueError, match="precision"):
        sky.signal_map(cat, nside=16, precision="half")


def test_deflection_points_away_and_quantities():
    m = sky.signal_map(ONE, nside=32, quantity="deflection")
    lens = hp.ang2vec(30.0, 25.0, lonlat=True)
    pix = hp.query_disc(32, lens, math.radians(20.0))
    th, ph = hp.pix2ang(32, pix)
    n = np.stack(hp.ang2vec(th, ph), 0) if np.ndim(hp.ang2vec(th, ph)) == 1 else hp.ang2vec(th, ph)
    e_l = np.stack([-np.sin(ph), np.cos(ph), 0 * ph], -1)
    e_b = np.cross(n, e_l)
    to_lens = np.stack([(lens - (n @ lens)[:, None] * n) @ np.eye(3)[i] for i in range(3)], -1)
    comp = np.stack([np.sum(to_lens * e_l, -1), np.sum(to_lens * e_b, -1)])
    assert np.all(np.sum(comp * m[:, pix], 0) < 0)  # displacement opposite to the lens direction
    a = sky.signal_map(ONE, nside=16, quantity="acceleration")
    assert np.isfinite(a).all() and np.abs(a).max() > 0
    with pytest.raises(ValueError, match="quantity"):
        sky.signal_map(ONE, quantity="jerk")
    with pytest.raises(ValueError, match="power of two"):
        sky.signal_map(ONE, nside=48)
    with pytest.raises(ValueError, match="max_angle_deg"):
        sky.signal_map(ONE, max_angle_deg=120)


def test_signal_scale_sanity_band():
    """Loose band around the reference code's scale (facts file: median |mu| 0.018-0.027 nas/yr)."""
    cat = population.draw_population(None, np.random.default_rng(11))
    m = sky.signal_map(cat, nside=32)
    amp = np.hypot(*m) * 1e3  # nas/yr
    assert 5e-3 < np.median(amp) < 0.1
    assert 2e-5 < np.sqrt(np.mean(m**2)) < 3e-4  # µas/yr per component
    d = sky.signal_map(cat, nside=16, quantity="deflection")
    assert 0.3e3 < np.median(np.hypot(*d)) < 10e3  # µas: ~1 mas (paper)


def test_noise_statistics():
    nside, n_maps = 8, 400
    npix = hp.nside2npix(nside)
    rng = np.random.default_rng(3)
    signal = np.zeros((n_maps, 2, npix))
    signal[:, 0] = 0.5
    noisy, counts = maps.add_noise(signal, n_q=20 * npix, sigma_u=2.0, rng=rng)
    assert counts.shape == (n_maps, npix)
    assert abs(counts.mean() - 20) < 4 * math.sqrt(20 / counts.size)
    z = (noisy - signal) * np.sqrt(counts)[:, None, :] / 2.0  # standardised by sigma_u / sqrt(n)
    assert abs(z.mean()) < 4 / math.sqrt(z.size) and abs(z.var() - 1) < 4 * math.sqrt(2 / z.size)
    # pure noise: zero mean; empty pixels (n = 0) are 0
    sparse, c2 = maps.add_noise(np.zeros((50, 2, npix)), n_q=0.7 * npix, sigma_u=1.0, rng=rng)
    assert np.all(np.moveaxis(sparse, 1, -1)[c2 == 0] == 0)
    assert (c2 == 0).any()
    with pytest.raises(ValueError, match="n_q"):
        maps.add_noise(signal[0], n_q=0, sigma_u=1, rng=rng)
    with pytest.raises(ValueError, match="sigma_u"):
        maps.add_noise(signal[0], n_q=1e6, sigma_u=-1, rng=rng)
    assert maps.per_pixel_noise(1e9, 0.1, 128) == pytest.approx(1.4e-3, rel=0.01)  # facts file, scenario D


def test_projection_of_analytic_field():
    nside, H, W = 64, 32, 64
    npix = hp.nside2npix(nside)
    lon, lat = hp.pix2ang(nside, np.arange(npix), lonlat=True)
    f = np.stack([np.cos(np.radians(lat)) * np.sin(np.radians(lon)), np.sin(np.radians(lat))])
    img = maps.project(f, maps.projection_index(nside, H, W))
    assert img.shape == (2, H, W)
    L, B = np.meshgrid(*maps.image_lonlat(H, W))
    exact = np.stack([np.cos(np.radians(B)) * np.sin(np.radians(L)), np.sin(np.radians(B))])
    assert np.abs(img - exact).max() < 1.5 * hp.max_pixrad(nside)  # |grad f| <= 1 per radian
    # orientation: row 0 is the north, column 0 is l = +180 deg, the centre is the Galactic centre
    assert img[1, 0].mean() > 0.99 and img[1, -1].mean() < -0.99
    r, c = maps.lonlat_to_image_pixel(0.0, 0.0, H, W)
    assert (int(r), int(c)) == (H // 2, W // 2)
    rows, cols = maps.lonlat_to_image_pixel(L, B, H, W)
    assert np.array_equal(rows, np.repeat(np.arange(H)[:, None], W, 1)) and np.array_equal(cols, np.tile(np.arange(W), (H, 1)))
    t = maps.project(torch.tensor(f), maps.projection_index(nside, H, W))
    assert torch.equal(t, torch.tensor(img))


@pytest.mark.slow
def test_compiled_kernel_matches_eager():
    cat = population.draw_population(None, np.random.default_rng(9))
    a = sky.signal_map(cat, nside=32)
    b = sky.signal_map(cat, nside=32, compile=True)
    assert np.abs(a - b).max() <= 1e-12 * np.abs(a).max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cat = population.draw_population(None, np.random.default_rng(9))
    a = sky.signal_map(cat, nside=32)
    b = sky.signal_map(cat, nside=32, device="cuda")
    assert np.abs(a - b).max() <= 1e-12 * np.abs(a).max()
