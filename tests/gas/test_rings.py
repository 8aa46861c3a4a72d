"""Rings and LSR velocities against an independent geometric computation."""

import numpy as np
import pytest

from darkml.gas.rings import (
    R0_KPC,
    RING_EDGES_KPC,
    THETA0_KMS,
    V_CLIP_KMS,
    clemens_rotation_curve,
    min_radius,
    ring_windows,
    v_lsr,
)


def _geometric(l_deg, d_kpc):
    """Radius and LSR radial velocity of gas in circular orbit at distance d along longitude l,
    from explicit position and velocity vectors (Sun at (R0, 0), rotation towards l = 90 deg)."""
    l = np.deg2rad(l_deg)
    u = np.array([-np.cos(l), np.sin(l)])
    sun = np.array([R0_KPC, 0.0])
    p = sun[:, None] + np.outer(u, d_kpc)
    r = np.hypot(p[0], p[1])
    theta = clemens_rotation_curve(r)
    v_gas = theta * np.vstack([-p[1], p[0]]) / r
    v_sun = np.array([0.0, THETA0_KMS])[:, None]
    return r, ((v_gas - v_sun) * u[:, None]).sum(axis=0)


@pytest.mark.parametrize("l_deg", [15.0, 120.0, 200.0, 305.0, 330.0, 349.0])
def test_v_lsr_matches_vector_geometry(l_deg):
    d = np.linspace(0.05, 30.0, 400)
    r, v_geo = _geometric(l_deg, d)
    np.testing.assert_allclose(v_lsr(r, l_deg), v_geo, atol=1e-6)


def test_rotation_curve_continuous_and_local_speed():
    # the published polynomial pieces join within a few km/s and give ~220 km/s at the Sun
    for rb in (0.09 * R0_KPC, 0.45 * R0_KPC, 1.6 * R0_KPC):
        lo, hi = clemens_rotation_curve([rb - 1e-6, rb + 1e-6])
        assert abs(lo - hi) < 15.0
    assert abs(clemens_rotation_curve(R0_KPC) - THETA0_KMS) < 3.0


def test_tangent_radius():
    assert min_radius(330.0) == pytest.approx(R0_KPC * 0.5)
    assert min_radius(180.0) == pytest.approx(R0_KPC)


@pytest.mark.parametrize("l_deg", [300.5, 325.0, 345.5, 349.9])
def test_windows_match_brute_force(l_deg):
    w = ring_windows(np.array([l_deg]))
    d = np.linspace(0.0, 70.0, 200001)
    r, v = _geometric(l_deg, d)
    edges = np.asarray(RING_EDGES_KPC)
    for k in range(len(edges) - 1):
        sel = (r >= edges[k]) & (r <= edges[k + 1])
        vv = np.clip(v[sel], *V_CLIP_KMS)
        if not sel.any() or vv.max() - vv.min() < 1e-6:
            assert w["empty"][k, 0], f"ring {k} should be empty at l={l_deg}"
            continue
        assert not w["empty"][k, 0]
        assert w["v_lo"][k, 0] == pytest.approx(vv.min(), abs=0.3)
        assert w["v_hi"][k, 0] == pytest.approx(vv.max(), abs=0.3)


def test_inner_rings_empty_inside_tangent_radius():
    w = ring_windows(np.array([300.5]))            # tangent radius 7.3 kpc
    edges = np.asarray(RING_EDGES_KPC)
    inside = edges[1:] <= R0_KPC * abs(np.sin(np.deg2rad(300.5)))
    assert w["empty"][inside, 0].all()
    assert np.all(w["v_lo"][w["empty"]] == w["v_hi"][w["empty"]])


def test_bad_edges_raise():
    with pytest.raises(ValueError, match="strictly increasing"):
        ring_windows(np.array([300.0]), edges_kpc=[0, 2, 1])
