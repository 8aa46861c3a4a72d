"""Jeans baseline: recovers the Plummer truth within its binning (and bootstrap) error."""

import math

import numpy as np
import pytest
import torch

from darkml.phasespace.jeans import JeansSettings, bin_volumes, jeans_at, jeans_estimate


def test_bin_volumes_sum_to_ball():
    R_edges = np.linspace(4.622, 11.622, 29)
    z_edges = np.linspace(-3.4792, 3.5208, 71)
    vol = bin_volumes(R_edges, z_edges, (8.122, 0.0, 0.0208), 3.5, sub=24)
    assert vol.sum() == pytest.approx(4 / 3 * math.pi * 3.5**3, rel=2e-3)


def _exact_moments(plummer, R_edges, z_edges, sub=6):
    """Bin-averaged exact ln ν and second moments of the isotropic Plummer model (σ² = −Φ/6)."""
    t = (np.arange(sub) + 0.5) / sub
    Rs = R_edges[:-1, None] + np.diff(R_edges)[:, None] * t
    zs = z_edges[:-1, None] + np.diff(z_edges)[:, None] * t
    RR, ZZ = Rs[:, None, :, None], zs[None, :, None, :]
    RR, ZZ = np.broadcast_arrays(RR, ZZ)
    x = torch.tensor(np.stack([RR, np.zeros_like(RR), ZZ], -1))
    nu = plummer.density(x).numpy() / plummer.M
    s2 = plummer.dispersion2(x).numpy()
    wgt = RR * nu
    mean = lambda q: (wgt * q).sum((2, 3)) / wgt.sum((2, 3))  # noqa: E731
    vR2 = mean(s2)
    vphi2 = mean(s2)
    return {"count": np.full(vR2.shape, 1e6), "lnnu": np.log((RR * nu).mean((2, 3)) / RR.mean((2, 3))), "vR2": vR2,
            "vz2": mean(s2), "vRvz": np.zeros_like(vR2), "vphi2": vphi2}


def test_jeans_recovers_plummer(plummer):
    s = JeansSettings(bin_R=0.25, bin_z=0.25, window_R=1.0, window_z=1.0, degree=3, n_boot=8, min_count=30)
    pts = np.array([[3.0, 0.0, 0.5], [2.0, 0.0, -1.0]])
    truth_a = plummer.acceleration(torch.tensor(pts)).numpy()
    truth_rho = plummer.density(torch.tensor(pts)).numpy()
    # binning/fitting error: the estimator applied to exact bin-averaged moments
    R_edges, z_edges = np.arange(0.0, 6.01, 0.25), np.arange(-4.0, 4.01, 0.25)
    mom = _exact_moments(plummer, R_edges, z_edges)
    bin_err_a, bin_err_rho = [], []
    for (R0, _, z0), ta, tr in zip(pts, truth_a, truth_rho):
        aR, az, rho = jeans_at(mom, R_edges, z_edges, R0, z0, s)
        bin_err_a.append(np.abs([aR - ta[0], az - ta[2]]))
        bin_err_rho.append(abs(rho - tr))
        assert abs(aR - ta[0]) < 0.02 * np.linalg.norm(ta)
    # the estimator on 300k sampled stars: truth within 4 bootstrap sigma + the binning error
    x, v = plummer.sample(300_000, np.random.default_rng(11))
    res = jeans_estimate(x, v, pts, observer=(0.0, 0.0, 0.0), radius=1e3, settings=s, seed=0)
    for k in range(len(pts)):
        for j, comp in ((0, 0), (1, 2)):
            tol = 4 * res.a_err[k, comp] + bin_err_a[k][j] + 1e-3 * np.linalg.norm(truth_a[k])
            assert abs(res.a[k, comp] - truth_a[k, comp]) < tol
        assert abs(res.rho[k] - truth_rho[k]) < 4 * res.rho_err[k] + bin_err_rho[k] + 0.02 * truth_rho[k]
        assert res.a_err[k, 0] > 0
