"""A physics baseline beside the CNN: an excess-power (χ²-type) statistic of the noisy maps.

Under the no-signal hypothesis each HEALPix pixel's mean velocity is pure noise, independent
between pixels and components, with variance σ_pix² (= 1 when the maps are given in units of
the nominal per-pixel noise σ_u / sqrt(N_q/N_pix), as the study feeds them to the CNN). Lensing
adds power. The plain χ² statistic Σ_pix |µ|²/σ_pix² weighs every pixel alike, but the lensing
signal is spatially coherent over several pixels (a subhalo's velocity pattern extends over
≳ r_s/D ~ 1–5° and its dipole-like far field over the 20° disc) while the noise is white, so we
first smooth each component of the projected image with a Gaussian of σ = ``smoothing_px`` image
pixels (periodic in longitude, zero-padded at the poles): smoothing over a scale L keeps the
signal power of features larger than L while the noise power drops by ~L², so the statistic's
signal-to-noise grows ~L until L reaches the signal's coherence length. The default
(``DEFAULT_SMOOTHING_PX``) was chosen by measuring the baseline's AUC on simulated scenario-D
maps at nside 32 for σ = 0, 1, 2, 3, 4, 6 px (see docs/astrometry.md and
/work/brief/astrometry_physics_notes.md); σ = 0 gives the plain χ².

Statistic: T = Σ_c Σ_ij w_i (K x_c)_ij² with area weights w_i = cos(b_i) of the image rows
(plate carrée pixels shrink towards the poles, where one HEALPix pixel fills many image pixels).
Its exact expectation under the null, E0[T] = σ_pix² Σ_c Σ_p Σ_{j,k ∈ S_p} (K^T W K)_jk — S_p
the image pixels showing HEALPix pixel p — is computed from the projection index (K and W are
separable, so K^T W K = (K_b^T W_b K_b) ⊗ (K_l^T K_l)). The returned score is the fractional
excess T / E0[T] - 1: ≈ 0 (mean exactly 0) for noise-only maps, > 0 with lensing. Any monotonic
transform gives the same ROC.
"""

from __future__ import annotations

import functools

import numpy as np

from .maps import image_lonlat, projection_index

__all__ = ["DEFAULT_SMOOTHING_PX", "chi2_excess", "null_expectation", "smooth_images"]

#: Gaussian smoothing [image pixels] of the default statistic (chosen by measurement, see docstring)
DEFAULT_SMOOTHING_PX = 3.0


@functools.lru_cache(maxsize=32)
def _kernels(height: int, width: int, smoothing_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K_b (H, H), K_l (W, W) circulant, row weights w (H,)) of the smoothing and the area weights."""
    _, lat = image_lonlat(height, width)
    w = np.cos(np.radians(lat))
    if smoothing_px <= 0:
        return np.eye(height), np.eye(width), w
    s = float(smoothing_px)
    i = np.arange(height)
    kb = np.exp(-0.5 * ((i[:, None] - i[None, :]) / s) ** 2)
    j = np.arange(width)
    d = np.abs(j[:, None] - j[None, :])
    d = np.minimum(d, width - d)
    kl = np.exp(-0.5 * (d / s) ** 2)
    norm = np.sqrt(2 * np.pi) * s  # unit-sum 1-D kernels away from the edges
    return kb / norm, kl / norm, w


def smooth_images(maps: np.ndarray, smoothing_px: float) -> np.ndarray:
    """Gaussian-smooth images (..., H, W): periodic in longitude (columns), zero-padded in latitude."""
    maps = np.asarray(maps, dtype=np.float64)
    kb, kl, _ = _kernels(maps.shape[-2], maps.shape[-1], float(smoothing_px))
    return kb @ maps @ kl.T


@functools.lru_cache(maxsize=32)
def null_expectation(nside: int, height: int, width: int, smoothing_px: float) -> float:
    """E0[T] per unit σ_pix² and per component: Σ_p Σ_{j,k ∈ S_p} (K^T W K)_jk (see module docstring)."""
    kb, kl, w = _kernels(height, width, float(smoothing_px))
    ab = kb.T @ (w[:, None] * kb)
    al = kl.T @ kl
    idx = np.asarray(projection_index(nside, height, width)).reshape(-1)
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    sizes = np.diff(np.r_[starts, len(idx)])
    rows, cols = order // width, order % width
    total = 0.0
    # all ordered pairs (j, k) inside each group S_p, vectorised group size by group size
    for size in np.unique(sizes):
        g = starts[sizes == size]
        members = g[:, None] + np.arange(size)[None, :]  # (n_groups, size) positions in `order`
        r, c = rows[members], cols[members]
        total += float(np.sum(ab[r[:, :, None], r[:, None, :]] * al[c[:, :, None], c[:, None, :]]))
    return total


def chi2_excess(maps: np.ndarray, nside: int, smoothing_px: float = DEFAULT_SMOOTHING_PX,
                noise_var: float = 1.0) -> np.ndarray:
    """Fractional excess power T / E0[T] - 1 of projected maps (N, 2, H, W), one score per map.

    ``maps``: plate carrée images as made by :func:`darkml.astrometry.maps.project` from a RING
    map of ``nside``, in units where the per-HEALPix-pixel noise variance is ``noise_var``
    (1 for maps divided by the nominal per-pixel noise). Larger scores mean more power than
    noise alone gives; the score's mean over noise-only maps is 0.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[1] != 2:
        raise ValueError(f"maps shape {maps.shape}: must be (N, 2, H, W)")
    if not noise_var > 0:
        raise ValueError(f"noise_var = {noise_var}: must be > 0")
    h, w = maps.shape[2], maps.shape[3]
    kb, kl, wr = _kernels(h, w, float(smoothing_px))
    y = kb @ maps @ kl.T
    t = np.einsum("nchw,h->n", y * y, wr)
    e0 = 2.0 * noise_var * null_expectation(int(nside), h, w, float(smoothing_px))
    return t / e0 - 1.0
