"""The baseline: accelerations and densities from the axisymmetric Jeans equations.

Steady state and axisymmetry reduce the Boltzmann equation to its velocity moments
(ν the tracer density, ⟨·⟩ second moments, not variances):

    a_R = ⟨v_R²⟩ ∂_R ln ν + ∂_R⟨v_R²⟩ + ⟨v_R v_z⟩ ∂_z ln ν + ∂_z⟨v_R v_z⟩ + (⟨v_R²⟩ − ⟨v_φ²⟩)/R
    a_z = ⟨v_R v_z⟩ ∂_R ln ν + ∂_R⟨v_R v_z⟩ + ⟨v_z²⟩ ∂_z ln ν + ∂_z⟨v_z²⟩ + ⟨v_R v_z⟩/R

and the density follows from Gauss's law in cylindrical coordinates,
ρ = −(∂_R a_R + a_R/R + ∂_z a_z)/(4πG).

Estimator: stars are binned in (R, z) (bin volumes are the parts of the annuli inside the
observed ball; z bins widen away from the plane); ln ν and the four moments are fitted, around
each target point, by count-weighted least squares with a polynomial of total degree ``degree``
in (R − R0, z − z0) over the populated bins inside a window (grown where stars are sparse);
derivatives are those of the fitted polynomials. Errors: bootstrap over stars.

Units: x kpc, v km/s, a (km/s)^2/kpc, ρ Msun/kpc^3.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..physics import constants as const
from .mocks import _ball_weights

log = logging.getLogger(__name__)

__all__ = ["JeansSettings", "JeansResult", "bin_volumes", "binned_moments", "jeans_at", "jeans_estimate"]

_QUANTITIES = ("lnnu", "vR2", "vz2", "vRvz", "vphi2")


@dataclass(frozen=True)
class JeansSettings:
    """Binning and fitting choices (kpc)."""

    bin_R: float = 0.25
    bin_z: float = 0.1
    window_R: float = 1.0
    window_z: float = 0.5
    degree: int = 2
    min_count: int = 20
    n_boot: int = 30


@dataclass
class JeansResult:
    """Cartesian accelerations (P, 3) [(km/s)^2/kpc] and densities (P,) [Msun/kpc^3] with bootstrap errors."""

    a: np.ndarray
    a_err: np.ndarray
    rho: np.ndarray
    rho_err: np.ndarray


def bin_volumes(R_edges: np.ndarray, z_edges: np.ndarray, observer: Sequence[float], radius: float, sub: int = 12) -> np.ndarray:
    """Volume [kpc^3] of each (R, z) annular bin that lies inside the ball (observer, radius)."""
    nR, nz = len(R_edges) - 1, len(z_edges) - 1
    t = (np.arange(sub) + 0.5) / sub
    Rs = (R_edges[:-1, None] + np.diff(R_edges)[:, None] * t[None, :])  # (nR, sub)
    zs = (z_edges[:-1, None] + np.diff(z_edges)[:, None] * t[None, :])  # (nz, sub)
    RR = Rs[:, None, :, None]
    ZZ = zs[None, :, None, :]
    w = RR * _ball_weights(np.broadcast_to(RR, (nR, nz, sub, sub)), np.broadcast_to(ZZ, (nR, nz, sub, sub)), observer, radius)
    return w.mean(axis=(2, 3)) * np.diff(R_edges)[:, None] * np.diff(z_edges)[None, :]


def _cyl(x: np.ndarray, v: np.ndarray):
    R = np.hypot(x[:, 0], x[:, 1])
    c, s = x[:, 0] / R, x[:, 1] / R
    vR = v[:, 0] * c + v[:, 1] * s
    vphi = -v[:, 0] * s + v[:, 1] * c
    return R, x[:, 2], vR, vphi, v[:, 2]


def binned_moments(x: np.ndarray, v: np.ndarray, R_edges: np.ndarray, z_edges: np.ndarray, volumes: np.ndarray,
                   weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Counts, ln ν and second moments per (R, z) bin (NaN where empty)."""
    R, z, vR, vphi, vz = _cyl(x, v)
    w = np.ones(len(R)) if weights is None else weights

    def h(q):
        return np.histogram2d(R, z, bins=(R_edges, z_edges), weights=w * q)[0]

    n = h(np.ones(len(R)))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"count": n, "lnnu": np.log(n / volumes)}
        for name, q in (("vR2", vR**2), ("vz2", vz**2), ("vRvz", vR * vz), ("vphi2", vphi**2)):
            out[name] = h(q) / n
    return out


def _basis(dR: np.ndarray, dz: np.ndarray, degree: int) -> np.ndarray:
    return np.stack([dR**i * dz**j for i, j in _powers(degree)], -1)


def _powers(degree: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]


def _poly(coef: np.ndarray, degree: int, dR: float, dz: float) -> tuple[float, float, float]:
    """Value and first derivatives (∂_R, ∂_z) of the fitted polynomial at offset (dR, dz)."""
    val = dRv = dzv = 0.0
    for c, (i, j) in zip(coef, _powers(degree)):
        val += c * dR**i * dz**j
        if i:
            dRv += c * i * dR ** (i - 1) * dz**j
        if j:
            dzv += c * j * dR**i * dz ** (j - 1)
    return val, dRv, dzv


def _fit_all(mom: dict[str, np.ndarray], Rc: np.ndarray, zc: np.ndarray, R0: float, z0: float, s: JeansSettings):
    """Weighted polynomial fits around (R0, z0). Where stars are sparse (high |z|) the window grows
    (×1.5, up to 4 times) until at least 3× as many populated bins as polynomial terms are inside."""
    n_terms = len(_powers(s.degree))
    populated = mom["count"] >= s.min_count
    wR, wz = s.window_R, s.window_z
    for _ in range(5):
        sel = (np.abs(Rc - R0) <= wR) & (np.abs(zc - z0) <= wz) & populated
        if sel.sum() >= 3 * n_terms:
            break
        wR, wz = 1.5 * wR, 1.5 * wz
    else:
        return None
    # no extrapolation: populated bins must lie on both sides of the point in R and in z
    if not ((Rc[sel] < R0).any() and (Rc[sel] > R0).any() and (zc[sel] < z0).any() and (zc[sel] > z0).any()):
        return None
    dR, dz = Rc[sel] - R0, zc[sel] - z0
    B = _basis(dR, dz, s.degree)
    sw = np.sqrt(mom["count"][sel])
    coefs = {}
    for q in _QUANTITIES:
        y = mom[q][sel]
        coefs[q], *_ = np.linalg.lstsq(B * sw[:, None], y * sw, rcond=None)
    return coefs


def _jeans_accel(coefs, degree: int, R0: float, dR: float, dz: float) -> tuple[float, float]:
    lnnu, lnnu_R, lnnu_z = _poly(coefs["lnnu"], degree, dR, dz)
    RR, RR_R, _ = _poly(coefs["vR2"], degree, dR, dz)
    ZZ, _, ZZ_z = _poly(coefs["vz2"], degree, dR, dz)
    RZ, RZ_R, RZ_z = _poly(coefs["vRvz"], degree, dR, dz)
    PP, _, _ = _poly(coefs["vphi2"], degree, dR, dz)
    R = R0 + dR
    aR = RR * lnnu_R + RR_R + RZ * lnnu_z + RZ_z + (RR - PP) / R
    az = RZ * lnnu_R + RZ_R + ZZ * lnnu_z + ZZ_z + RZ / R
    return aR, az


def jeans_at(mom: dict[str, np.ndarray], R_edges: np.ndarray, z_edges: np.ndarray, R0: float, z0: float,
             settings: JeansSettings) -> tuple[float, float, float]:
    """(a_R, a_z, ρ) at (R0, z0) from binned moments; NaN when too few bins are populated."""
    Rc = 0.5 * (R_edges[:-1] + R_edges[1:])
    zc = 0.5 * (z_edges[:-1] + z_edges[1:])
    RC, ZC = np.meshgrid(Rc, zc, indexing="ij")
    coefs = _fit_all(mom, RC, ZC, R0, z0, settings)
    if coefs is None:
        return math.nan, math.nan, math.nan
    aR, az = _jeans_accel(coefs, settings.degree, R0, 0.0, 0.0)
    eps = 1e-3
    aRp, _ = _jeans_accel(coefs, settings.degree, R0, eps, 0.0)
    aRm, _ = _jeans_accel(coefs, settings.degree, R0, -eps, 0.0)
    _, azp = _jeans_accel(coefs, settings.degree, R0, 0.0, eps)
    _, azm = _jeans_accel(coefs, settings.degree, R0, 0.0, -eps)
    div = (aRp - aRm) / (2 * eps) + aR / R0 + (azp - azm) / (2 * eps)
    rho = -div / (4 * math.pi * const.G_KPC_KMS2_MSUN)
    return aR, az, rho


def _z_edges(z_obs: float, radius: float, width: float, lo: float, hi: float, scale: float = 0.5) -> np.ndarray:
    """Bin edges in z, ``width`` wide near the observer's plane and widening as sinh away from it
    (uniform in asinh((z − z_obs)/scale)), so that sparse high-|z| bins still hold stars."""
    u_max = math.asinh(radius / scale)
    du = width / scale
    n = int(math.ceil(u_max / du))
    u = np.arange(-n, n + 1) * du
    edges = z_obs + scale * np.sinh(u)
    keep = (edges >= lo - 1e-9) & (edges <= hi + 1e-9)
    idx = np.nonzero(keep)[0]
    lo_i, hi_i = max(idx.min() - 1, 0), min(idx.max() + 1, len(edges) - 1)
    return edges[lo_i:hi_i + 1]


def jeans_estimate(x: np.ndarray, v: np.ndarray, points: np.ndarray, observer: Sequence[float], radius: float,
                   settings: JeansSettings = JeansSettings(), seed: int = 0) -> JeansResult:
    """Jeans accelerations and densities at ``points`` (P, 3) [kpc] from stars (x [kpc], v [km/s])
    observed inside the ball (observer, radius); errors from ``settings.n_boot`` bootstrap resamples."""
    x = np.asarray(x, float)
    v = np.asarray(v, float)
    points = np.atleast_2d(np.asarray(points, float))
    d = math.hypot(observer[0], observer[1])
    Rp = np.hypot(points[:, 0], points[:, 1])
    Rs = np.hypot(x[:, 0], x[:, 1])
    # bins only where both the data and the fit windows are: the ball ∩ data extent ∩ windows
    R_lo = max(d - radius, 0.0, Rs.min(), Rp.min() - settings.window_R - settings.bin_R)
    R_hi = min(d + radius, Rs.max(), Rp.max() + settings.window_R + settings.bin_R)
    z_lo = max(observer[2] - radius, x[:, 2].min(), points[:, 2].min() - settings.window_z - settings.bin_z)
    z_hi = min(observer[2] + radius, x[:, 2].max(), points[:, 2].max() + settings.window_z + settings.bin_z)
    R_lo = R_lo - (R_lo - max(d - radius, 0.0)) % settings.bin_R  # align to a grid anchored on the ball
    R_edges = np.arange(R_lo, R_hi + settings.bin_R, settings.bin_R)
    z_edges = _z_edges(observer[2], radius, settings.bin_z, z_lo, z_hi)
    vol = bin_volumes(R_edges, z_edges, observer, radius)

    def one(weights):
        mom = binned_moments(x, v, R_edges, z_edges, vol, weights)
        return np.array([jeans_at(mom, R_edges, z_edges, R0, z0, settings) for R0, z0 in zip(Rp, points[:, 2])])

    main = one(None)
    rng = np.random.default_rng([int(seed), 9113])
    boots = [one(rng.multinomial(len(x), np.full(len(x), 1.0 / len(x))).astype(float)) for _ in range(settings.n_boot)]
    boots = np.array(boots) if boots else np.full((1,) + main.shape, np.nan)
    err = np.nanstd(boots, axis=0) if settings.n_boot > 1 else np.zeros_like(main)

    def cart(arr):
        aR, az = arr[:, 0], arr[:, 1]
        return np.stack([aR * points[:, 0] / Rp, aR * points[:, 1] / Rp, az], -1)

    a = cart(main)
    aerr = np.abs(cart(err))
    return JeansResult(a, aerr, main[:, 2], err[:, 2])
