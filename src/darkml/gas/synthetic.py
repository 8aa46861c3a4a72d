"""A MOPRA-like synthetic CO survey: 12CO and 13CO column-density planes per ring and tile.

No survey data can be downloaded here, so the study runs on a sky whose generating relation
is known. Each 1 deg x 1 deg tile (chunk ``i`` of the dataset, drawn from
``np.random.default_rng([seed, i])``; ring ``k`` from the sub-stream ``[seed, i, k]``) is made as

1. **Gas per Galactocentric ring** (rings.py). For every ring crossed by the line of sight
   (window not empty) the peak 13CO optical depth is

       tau_p(b, l) = tau13_peak * Sigma(R) * LN(b, l) * M(b, l)

   with ``LN`` a log-normal field ``exp(s g - s^2/2)`` of a Gaussian random field ``g`` with
   power spectrum ``P(k) ~ k^-beta``, ``beta ~ U(2.5, 2.8)`` (CO / dust maps, e.g. Stutzki et
   al. 1998; Miville-Deschênes et al. 2010; facts file), ``s`` the width of the ln-column PDF
   (0.8; Kainulainen et al. 2009 find 0.3-1 in clouds), ``M`` a soft sparse cloud mask (a
   steeper field thresholded at the ``1 - cloud_fill`` quantile) and ``Sigma(R)`` a schematic
   molecular surface-density profile (molecular ring peaking at 5 kpc, exponential decline
   with 2.5 kpc scale outside; shape after Nakanishi & Sofue 2006, Miville-Deschênes et al.
   2017; zero beyond ``r_gas_max_kpc``). The gas radius ``R`` wanders smoothly inside the
   crossed part of the ring, so its velocity ``V_LSR(R, l)`` does too; lines are Gaussian with
   dispersion ``sigma_v`` (2 km/s, smooth log-normal scatter).
2. **Radiative transfer** per velocity channel (radiative.py): ``tau_13(v)`` summed over
   rings, ``tau_12 = R_iso tau_13`` with ``R_iso = 6.4 R_gc + 25.9`` (Milam et al. 2005), and
   ``T = T0 [J(Tex) - J(Tbg)] (1 - exp(-tau))`` for each isotopologue (12CO saturates near
   6.65 K at Tex = 10 K).
3. **Observation**: antenna scale ``T_A* = eta_mb T``; Gaussian beam (MOPRA 0.6' FWHM);
   Gaussian noise per channel scaled from 1.5 K (12CO) and 0.7 K (13CO) per 0.1 km/s (MOPRA
   pilot; facts file) with a tile-to-tile log-normal scatter and a smooth in-tile variation;
   zero-valued scan stripes (full rows or columns, all channels; Poisson number per tile).
4. **Survey products** exactly as for real cubes (mopra.py): integrate over each ring's
   velocity window, 12CO -> ``N(H2) = X_CO W / eta_mb``, 13CO -> LTE column per voxel
   (Tex = 10 K) x 7.5e5; plus the 1-sigma noise of each plane.

The tile also returns the truths the noise floor needs: the noise-free 13CO plane and the
per-pixel line width, isotope ratio and excitation temperature.

Pixel grid: MOPRA DR3 is gridded at 30" (120 px per tile; the ``paper`` preset). The
``quick`` preset uses 32 px per tile (1.875' pixels) and 2 km/s channels to keep a CPU run
within minutes; the beam is then sub-pixel and the sigma = 1 px preprocessing filter is
correspondingly wider on the sky.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr

from ..parallel import chunk_rng
from .radiative import (
    H2_PER_13CO,
    LTE_J_BG,
    LTE_T0_K,
    T0_12CO_K,
    T0_13CO_K,
    brightness_temperature,
    h2_from_12co,
    isotope_ratio,
    lte_column_13co,
    planck_j,
    tau_from_brightness,
)
from .rings import V_CLIP_KMS, ring_windows, v_lsr

__all__ = [
    "TileSpec",
    "gaussian_random_field",
    "radial_power_spectrum",
    "molecular_surface_density",
    "survey_layout",
    "tile_grid",
    "channel_overlap",
    "integrate_planes",
    "simulate_tile",
    "ARRAYS_SYNTHETIC",
]

#: per-tile arrays of the synthetic survey (besides the glon/glat axes)
ARRAYS_SYNTHETIC = ("co12", "co13", "noise12", "noise13", "truth13", "sigma_v", "ratio", "tex")


@dataclass(frozen=True)
class TileSpec:
    """Sample ``sample`` of the dataset is tile ``tile`` (position along l) of realization ``realization``."""

    sample: int
    tile: int
    realization: int


def gaussian_random_field(n: int, beta: float, rng: np.random.Generator, periodic: bool = False) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field on an ``n x n`` grid with P(k) ~ k^-beta.

    White noise is coloured in Fourier space by ``k^(-beta/2)``; unless ``periodic``, the
    field is made on a 2n x 2n grid and cropped, so opposite tile edges are not correlated.
    """
    m = n if periodic else 2 * n
    white = rng.standard_normal((m, m))
    kx = np.fft.fftfreq(m)[:, None]
    ky = np.fft.rfftfreq(m)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    k[0, 0] = np.inf
    field = np.fft.irfft2(np.fft.rfft2(white) * k ** (-beta / 2.0), s=(m, m))[:n, :n]
    field = field - field.mean()
    sd = field.std()
    return field / sd if sd > 0 else field


def radial_power_spectrum(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum of a square 2-D field: (integer wavenumber k >= 1, P(k))."""
    n = field.shape[0]
    p2 = np.abs(np.fft.fft2(field - field.mean())) ** 2
    kx = np.fft.fftfreq(n) * n
    kk = np.sqrt(kx[:, None] ** 2 + kx[None, :] ** 2)
    kbin = np.rint(kk).astype(int)
    kmax = n // 2
    sums = np.bincount(kbin.ravel(), weights=p2.ravel(), minlength=kmax + 1)[: kmax + 1]
    cnts = np.bincount(kbin.ravel(), minlength=kmax + 1)[: kmax + 1]
    k = np.arange(1, kmax + 1)
    return k.astype(float), sums[1:] / np.maximum(cnts[1:], 1)


def molecular_surface_density(r_kpc, r_max_kpc: float = 20.0) -> np.ndarray:
    """Relative H2 surface density at Galactocentric radius ``r_kpc`` [kpc] (1 at the 5 kpc peak).

    Schematic: 0.2 + 0.8 exp(-(R-5)^2 / (2 1.5^2)) inside 5 kpc (the molecular ring and the
    depleted inner disc), exp(-(R-5)/2.5) outside, 0 beyond ``r_max_kpc``.
    """
    r = np.asarray(r_kpc, dtype=float)
    inner = 0.2 + 0.8 * np.exp(-0.5 * ((r - 5.0) / 1.5) ** 2)
    outer = np.exp(-(r - 5.0) / 2.5)
    return np.where(r > r_max_kpc, 0.0, np.where(r < 5.0, inner, outer))


def survey_layout(n_tiles: int, l_start_deg: float, test_l_deg: tuple[float, float], floor_realizations: int) -> list[TileSpec]:
    """Samples of the dataset: the survey's tiles, then ``floor_realizations`` extra skies of
    every test tile (independent draws used only to estimate the noise floor)."""
    specs = [TileSpec(t, t, 0) for t in range(n_tiles)]
    test = [t for t in range(n_tiles) if l_start_deg + t >= test_l_deg[0] - 1e-9 and l_start_deg + t + 1 <= test_l_deg[1] + 1e-9]
    for r in range(1, floor_realizations + 1):
        for t in test:
            specs.append(TileSpec(len(specs), t, r))
    return specs


def tile_grid(l_lo_deg: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre longitudes (increasing along the last axis) and latitudes [deg] of a tile."""
    pix = 1.0 / n
    glon = l_lo_deg + (np.arange(n) + 0.5) * pix
    glat = -0.5 + (np.arange(n) + 0.5) * pix
    return glon, glat


def channel_overlap(v_lo: np.ndarray, v_hi: np.ndarray, v_chan: np.ndarray, dv: float) -> np.ndarray:
    """Fraction of each channel inside each window: ``(n_rings, n_chan, n_l)`` from windows ``(n_rings, n_l)``.

    Channels are top-hats of width ``dv`` centred on ``v_chan``; a window narrower than a
    channel still gets its share, and an empty window (``v_lo == v_hi``) gets none.
    """
    a = np.maximum(v_lo[:, None, :], v_chan[None, :, None] - dv / 2)
    b = np.minimum(v_hi[:, None, :], v_chan[None, :, None] + dv / 2)
    return np.clip(b - a, 0.0, None) / dv


def integrate_planes(
    t12: np.ndarray | None,
    t13: np.ndarray | None,
    overlap: np.ndarray,
    dv: float,
    xco: np.ndarray,
    eta_mb: float,
    lte_tex_k: float,
    rms12: np.ndarray | None = None,
    rms13: np.ndarray | None = None,
    efficiency_order: str = "before_lte",
) -> dict[str, np.ndarray]:
    """Ring planes from antenna-temperature cubes ``(n_chan, n_b, n_l)`` [K].

    12CO: ``N(H2) = X_CO W / eta_mb`` with ``W = sum_c f_kc T_c dv`` [K km/s]. 13CO: LTE depth
    per voxel from ``T_mb = T_A*/eta_mb``, integrated over the window, ``N(H2) = 7.5e5 N(13CO)``
    (``efficiency_order = "before_lte"``, the physical order: the LTE formula is written for the
    main-beam temperature). ``"after_lte"`` puts ``T_A*`` into the LTE formula and divides the
    column by ``eta_mb`` afterwards, as the companion data-preparation code reads; it gives a
    smaller column, by more the brighter the line (docs/gas.md, "Conversions").
    Noise planes (1 sigma) propagate per-pixel channel rms maps ``(n_b, n_l)`` [K]; the 13CO
    one is linearised at small depth. NaN voxels (blanks) contribute nothing.
    Returns planes ``(n_rings, n_b, n_l)`` in cm^-2.
    """
    out: dict[str, np.ndarray] = {}
    f = overlap.astype(np.float32)
    f2 = np.sqrt(np.einsum("kcl,kcl->kl", f, f))                       # (K, n_l)
    xco = np.asarray(xco, dtype=float).reshape(-1, 1, 1)
    if t12 is not None:
        w12 = np.einsum("kcl,cbl->kbl", f, np.nan_to_num(t12, nan=0.0)) * dv
        out["co12"] = (h2_from_12co(w12, xco, eta_mb)).astype(np.float32)
        if rms12 is not None:
            out["noise12"] = (xco / eta_mb * dv * f2[:, None, :] * rms12[None]).astype(np.float32)
    if t13 is not None:
        if efficiency_order not in ("before_lte", "after_lte"):
            raise ValueError(f"efficiency_order = {efficiency_order!r}: must be 'before_lte' or 'after_lte'")
        before = efficiency_order == "before_lte"
        t_in = np.nan_to_num(t13, nan=0.0) / (eta_mb if before else 1.0)
        tau = tau_from_brightness(t_in, tex_k=lte_tex_k)
        itau = np.einsum("kcl,cbl->kbl", f, tau.astype(np.float32)) * dv
        col = H2_PER_13CO * lte_column_13co(itau, tex_k=lte_tex_k) / (1.0 if before else eta_mb)
        out["co13"] = col.astype(np.float32)
        if rms13 is not None:
            sat = LTE_T0_K * (planck_j(lte_tex_k, LTE_T0_K) - LTE_J_BG)
            dn = H2_PER_13CO * lte_column_13co(1.0, tex_k=lte_tex_k) / (eta_mb * sat)
            out["noise13"] = (dn * dv * f2[:, None, :] * rms13[None]).astype(np.float32)
    return out


def _soft_mask(field: np.ndarray, fill: float, edge: float) -> np.ndarray:
    if fill >= 1.0:
        return np.ones_like(field)
    thr = np.quantile(field, 1.0 - fill)
    return ndtr((field - thr) / edge)


def simulate_tile(sky: Any, conversion: Any, seed: int, spec: TileSpec, return_cubes: bool = False) -> dict[str, Any]:
    """Simulate one tile of the synthetic survey: a pure function of (config, seed, spec).

    ``sky`` is a :class:`~darkml.gas.config.SkyCfg`, ``conversion`` a ``ConversionCfg``.
    Returns a dict of arrays (see :data:`ARRAYS_SYNTHETIC`; planes ``(n_rings, n, n)``
    float32 in cm^-2, maps ``(n, n)``; ``glon``/``glat`` in deg) plus a ``meta`` dict; with
    ``return_cubes`` also ``cubes``: the observed antenna-temperature cubes ``t12``, ``t13``
    ``(n_chan, n, n)`` [K], channel velocities ``v_kms`` and rms maps ``rms12``, ``rms13``
    (what a survey release ships; used by the mock release, gas/mockrelease.py).
    """
    n = int(sky.pixels_per_tile)
    edges = np.asarray(sky.ring_edges_kpc, dtype=float)
    n_rings = edges.size - 1
    l_lo = float(sky.l_start_deg) + spec.tile
    glon, glat = tile_grid(l_lo, n)
    win = ring_windows(glon % 360.0, edges)
    dv = float(sky.channel_kms)
    n_chan = int(round((V_CLIP_KMS[1] - V_CLIP_KMS[0]) / dv))
    v_chan = V_CLIP_KMS[0] + (np.arange(n_chan) + 0.5) * dv

    rng = chunk_rng(seed, spec.sample)
    tau13 = np.zeros((n_chan, n, n), dtype=np.float32)
    tau12 = np.zeros((n_chan, n, n), dtype=np.float32)
    sigma_v = np.zeros((n_rings, n, n), dtype=np.float32)
    ratio = np.zeros((n_rings, n, n), dtype=np.float32)
    betas = np.zeros(n_rings)
    vc3 = v_chan[:, None, None].astype(np.float32)
    for k in range(n_rings):
        rk = chunk_rng(seed, spec.sample, k + 1)           # ring sub-stream: independent of other rings
        beta = rk.uniform(sky.beta_min, sky.beta_max)
        betas[k] = beta
        g = gaussian_random_field(n, beta, rk)
        ln_field = np.exp(sky.lognormal_sigma * g - 0.5 * sky.lognormal_sigma**2)
        mask = _soft_mask(gaussian_random_field(n, sky.cloud_beta, rk), sky.cloud_fill, sky.cloud_edge)
        u = ndtr(gaussian_random_field(n, 3.5, rk))         # uniform in [0, 1], smooth
        r_lo = win["r_lo"][k][None, :]
        r_hi = np.minimum(win["r_hi"][k], sky.r_gas_max_kpc)[None, :]
        r_c = r_lo + u * np.clip(r_hi - r_lo, 0.0, None)
        active = (~win["empty"][k])[None, :] & (r_hi > r_lo)
        tau_p = sky.tau13_peak * molecular_surface_density(r_c, sky.r_gas_max_kpc) * ln_field * mask
        tau_p = np.where(active, tau_p, 0.0).astype(np.float32)
        scatter = np.exp(sky.sigma_v_scatter * gaussian_random_field(n, 3.5, rk) - 0.5 * sky.sigma_v_scatter**2)
        sv = np.clip(sky.sigma_v_kms * (tau_p / sky.tau13_peak) ** sky.virial_index * scatter,
                     sky.sigma_v_min_kms, sky.sigma_v_max_kms)
        r_iso = isotope_ratio(r_c).astype(np.float32)
        sigma_v[k] = sv
        ratio[k] = r_iso
        if not active.any():
            continue
        v_c = v_lsr(r_c, glon[None, :], glat[:, None]).astype(np.float32)
        prof = np.exp(-0.5 * ((vc3 - v_c[None]) / sv.astype(np.float32)[None]) ** 2)
        contrib = tau_p[None] * prof
        tau13 += contrib
        tau12 += r_iso[None] * contrib

    tex = np.full((n, n), float(sky.tex_k))
    if sky.tex_scatter_k > 0:
        tex = np.clip(tex + sky.tex_scatter_k * gaussian_random_field(n, 3.5, rng), 4.0, None)
    tex = tex.astype(np.float32)
    eta = float(conversion.eta_mb)
    t12 = eta * brightness_temperature(tau12, tex[None], T0_12CO_K)
    t13 = eta * brightness_temperature(tau13, tex[None], T0_13CO_K)
    pix_arcmin = 60.0 / n
    beam_sigma_px = sky.beam_fwhm_arcmin / (2.0 * math.sqrt(2.0 * math.log(2.0))) / pix_arcmin
    if beam_sigma_px > 0.05:
        t12 = gaussian_filter(t12, sigma=(0, beam_sigma_px, beam_sigma_px), mode="nearest")
        t13 = gaussian_filter(t13, sigma=(0, beam_sigma_px, beam_sigma_px), mode="nearest")
    t13_clean = t13.copy()

    # noise: per 0.1 km/s rms scaled to the channel width, tile scatter, smooth in-tile variation
    chan_scale = math.sqrt(0.1 / dv)
    rms = {}
    for name, base in (("12", sky.rms_12co_k), ("13", sky.rms_13co_k)):
        tile_rms = base * chan_scale * math.exp(sky.rms_tile_scatter * rng.standard_normal())
        rms[name] = (tile_rms * np.exp(0.15 * gaussian_random_field(n, 4.0, rng))).astype(np.float32)
    t12 = t12 + rms["12"][None] * rng.standard_normal(t12.shape, dtype=np.float32)
    t13 = t13 + rms["13"][None] * rng.standard_normal(t13.shape, dtype=np.float32)
    n_stripes = {}
    for name, cube in (("12", t12), ("13", t13)):
        ns = int(rng.poisson(sky.stripes_per_tile))
        n_stripes[name] = ns
        for _ in range(ns):
            idx = int(rng.integers(0, n))
            if rng.random() < 0.5:
                cube[:, idx, :] = 0.0
            else:
                cube[:, :, idx] = 0.0

    overlap = channel_overlap(win["v_lo"], win["v_hi"], v_chan, dv)
    xco = np.asarray(conversion.xco_per_ring(n_rings))
    order = conversion.efficiency_order
    planes = integrate_planes(t12, t13, overlap, dv, xco, eta, conversion.lte_tex_k, rms["12"], rms["13"], order)
    truth = integrate_planes(None, t13_clean, overlap, dv, xco, eta, conversion.lte_tex_k, efficiency_order=order)
    out = {
        "co12": planes["co12"],
        "co13": planes["co13"],
        "noise12": planes["noise12"],
        "noise13": planes["noise13"],
        "truth13": truth["co13"],
        "sigma_v": sigma_v,
        "ratio": ratio,
        "tex": tex,
        "glon": glon.astype(np.float32),
        "glat": glat.astype(np.float32),
        "meta": {
            "sample": spec.sample,
            "tile": spec.tile,
            "realization": spec.realization,
            "l_lo_deg": l_lo,
            "rms12_k": float(rms["12"].mean()),
            "rms13_k": float(rms["13"].mean()),
            "stripes12": n_stripes["12"],
            "stripes13": n_stripes["13"],
            "beta_mean": float(betas.mean()),
        },
    }
    if return_cubes:
        out["cubes"] = {"t12": t12, "t13": t13, "v_kms": v_chan, "rms12": rms["12"], "rms13": rms["13"]}
    return out
