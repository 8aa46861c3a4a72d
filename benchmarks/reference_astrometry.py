"""Straightforward reference for the astrometric-lensing signal map (what benchmarks/astrometry.py races).

Written independently of ``darkml.astrometry.sky`` and ``darkml.physics.nfw``, plainly: a
Python loop over subhalos, ``healpy.query_disc`` for the pixels within the cut, numpy for the
physics, and the textbook NFW cylinder-mass closed form

    F(x) = arccosh(1/x)/sqrt(1-x^2) (x<1),  arccos(1/x)/sqrt(x^2-1) (x>1),  1 (x=1)
    M(b)  = 4 pi rho_s r_s^3 [ln(x/2) + F(x)]
    M'(b) = 4 pi rho_s r_s^2 [1/x + F'(x)],  F'(x) = (1 - x^2 F) / (x (x^2 - 1))

with a first-order Taylor expansion (F'(1) = -2/3, F''(1) = 14/15) for |x - 1| < 1e-4. The
impact parameter is the 3-D perpendicular offset D_l [l_hat - (l_hat.n) n] of the lens from the
line of sight of source n, and eq. (3) of Vattis et al. is evaluated with the lens velocity
relative to the Sun projected perpendicular to n, then expressed along the source's e_l, e_b.
"""

from __future__ import annotations

import math

import healpy as hp
import numpy as np

G = 6.67430e-11  # m^3 kg^-1 s^-2 (CODATA 2018)
C_LIGHT = 299792458.0  # m/s
M_SUN = 1.988409870698051e30  # kg (IAU 2015 nominal GM_sun / G)
KPC = 3.0856775814913673e19  # m
YEAR = 365.25 * 86400.0  # s (Julian)
RAD_TO_MUAS = 180.0 / math.pi * 3600.0 * 1e6


def cylinder_mass(b, rho_s, r_s):
    """M(b) [Msun] and dM/db [Msun/kpc] for an NFW halo, b and r_s in kpc."""
    x = b / r_s
    F = np.ones_like(x)
    dF = np.full_like(x, -2.0 / 3.0)
    near = np.abs(x - 1.0) < 1e-4
    lo = (x < 1.0) & ~near
    hi = (x > 1.0) & ~near
    F[lo] = np.arccosh(1.0 / x[lo]) / np.sqrt(1.0 - x[lo] ** 2)
    F[hi] = np.arccos(1.0 / x[hi]) / np.sqrt(x[hi] ** 2 - 1.0)
    far = ~near
    dF[far] = (1.0 - x[far] ** 2 * F[far]) / (x[far] * (x[far] ** 2 - 1.0))
    e = x[near] - 1.0
    F[near] = 1.0 - 2.0 / 3.0 * e
    dF[near] = -2.0 / 3.0 + 14.0 / 15.0 * e
    amp = 4.0 * math.pi * rho_s * r_s**3
    return amp * (np.log(x / 2.0) + F), amp / r_s * (1.0 / x + dF)


def reference_signal_map(cat, nside: int, max_angle_deg: float = 20.0) -> np.ndarray:
    """(2, npix) lensing proper motion (mu_l, mu_b) [µas/yr], one subhalo at a time."""
    npix = hp.nside2npix(nside)
    theta, phi = hp.pix2ang(nside, np.arange(npix))
    k = 4.0 * G * M_SUN / (C_LIGHT**2 * KPC)  # rad per (Msun/kpc)
    kms_to_kpc_yr = 1e3 * YEAR / KPC
    out = np.zeros((2, npix))
    for i in range(len(cat["l"])):
        lon, lat = math.radians(cat["l"][i]), math.radians(cat["b"][i])
        lhat = np.array([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)])
        lens_el = np.array([-math.sin(lon), math.cos(lon), 0.0])
        lens_eb = np.array([-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat)])
        vel = cat["v_l"][i] * lens_el + cat["v_b"][i] * lens_eb + cat["v_r"][i] * lhat  # km/s, relative to the Sun
        pix = hp.query_disc(nside, lhat, math.radians(max_angle_deg))
        th, ph = theta[pix], phi[pix]
        n = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], axis=1)
        e_l = np.stack([-np.sin(ph), np.cos(ph), np.zeros_like(ph)], axis=1)
        e_b = np.stack([-np.cos(th) * np.cos(ph), -np.cos(th) * np.sin(ph), np.sin(th)], axis=1)
        cosang = n @ lhat
        b3 = cat["distance"][i] * (lhat[None, :] - cosang[:, None] * n)  # kpc, towards the lens
        v3 = vel[None, :] - (n @ vel)[:, None] * n  # km/s
        bvec = np.stack([np.sum(b3 * e_l, 1), np.sum(b3 * e_b, 1)], axis=1)
        vvec = np.stack([np.sum(v3 * e_l, 1), np.sum(v3 * e_b, 1)], axis=1) * kms_to_kpc_yr  # kpc/yr
        b = np.sqrt(np.sum(bvec**2, 1))
        bhat = bvec / b[:, None]
        M, dM = cylinder_mass(b, cat["rho_s"][i], cat["r_s"][i])
        bdot = np.sum(bhat * vvec, 1)
        mu = -k * ((dM * bdot / b)[:, None] * bhat + (M / b**2)[:, None] * (vvec - 2.0 * bdot[:, None] * bhat))
        out[0, pix] += mu[:, 0] * RAD_TO_MUAS
        out[1, pix] += mu[:, 1] * RAD_TO_MUAS
    return out
