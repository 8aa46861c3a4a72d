"""HEALPix proper-motion maps as the networks see them: per-pixel noise from the quasar count
and the astrometric error (Poisson quasars per pixel, Gaussian errors), and the plate-carrée
projection to (64, 128) images."""

from __future__ import annotations

import functools
import logging
import math

import healpy as hp
import numpy as np
import torch

from .discs import check_nside

log = logging.getLogger(__name__)


# ---- noise ---------------------------------------------------------------------------------
def per_pixel_noise(n_q: float, sigma_u: float, nside: int) -> float:
    """Nominal per-pixel noise sigma_u / sqrt(N_q / N_pix) [µas/yr]."""
    return float(sigma_u / math.sqrt(n_q / (12 * check_nside(nside) ** 2)))


def add_noise(signal: np.ndarray, n_q: float, sigma_u: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Survey noise of Sec. III A on a HEALPix map: returns (noisy map, quasar counts).

    ``signal`` (..., 2, npix) [µas/yr] (zeros for a no-signal map); ``n_q`` quasars on the whole
    sky, ``sigma_u`` [µas/yr] per-quasar, per-component error. Counts (..., npix) ~
    Poisson(n_q / npix); the value of a pixel with n > 0 quasars ~ Normal(signal, sigma_u /
    sqrt(n)) per component; pixels with n = 0 are set to 0. Draw order: counts, then normals.
    """
    if not n_q > 0:
        raise ValueError(f"n_q = {n_q}: must be > 0 (number of quasars)")
    if not sigma_u > 0:
        raise ValueError(f"sigma_u = {sigma_u}: must be > 0 [µas/yr]")
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim < 2 or signal.shape[-2] != 2:
        raise ValueError(f"signal shape {signal.shape}: must be (..., 2, npix)")
    npix = signal.shape[-1]
    counts = rng.poisson(n_q / npix, size=signal.shape[:-2] + (npix,))
    z = rng.standard_normal(signal.shape)
    has = counts > 0
    scale = np.where(has, sigma_u / np.sqrt(np.maximum(counts, 1)), 0.0)
    noisy = np.where(has[..., None, :], signal + scale[..., None, :] * z, 0.0)
    return noisy, counts


# ---- projection ----------------------------------------------------------------------------
def image_lonlat(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes (width,) and latitudes (height,) [deg] of the image pixel centres."""
    lon = 180.0 - (np.arange(width) + 0.5) * 360.0 / width
    lat = 90.0 - (np.arange(height) + 0.5) * 180.0 / height
    return lon, lat


@functools.lru_cache(maxsize=16)
def _projection_index(nside: int, height: int, width: int) -> np.ndarray:
    lon, lat = image_lonlat(height, width)
    ll, bb = np.meshgrid(lon, lat)
    idx = hp.ang2pix(nside, ll, bb, lonlat=True)
    idx.setflags(write=False)
    return idx


def projection_index(nside: int, height: int = 64, width: int = 128) -> np.ndarray:
    """(height, width) int64 RING pixel index of each image pixel centre (read-only, cached)."""
    check_nside(nside)
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width}: must be positive")
    return _projection_index(int(nside), int(height), int(width))


def project(maps, index):
    """HEALPix maps (..., npix) -> images (..., H, W) by gathering ``index`` (numpy or torch)."""
    if isinstance(maps, torch.Tensor):
        idx = torch.as_tensor(np.asarray(index), device=maps.device)
        return maps[..., idx]
    return np.asarray(maps)[..., np.asarray(index)]


def lonlat_to_image_pixel(l_deg, b_deg, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the image pixel containing Galactic (l, b) [deg] on the projection grid."""
    lon = (np.asarray(l_deg, dtype=np.float64) + 180.0) % 360.0 - 180.0  # (-180, 180]
    lat = np.asarray(b_deg, dtype=np.float64)
    rows = np.clip(np.floor((90.0 - lat) / 180.0 * height), 0, height - 1).astype(np.int64)
    cols = np.clip(np.floor((180.0 - lon) / 360.0 * width), 0, width - 1).astype(np.int64)
    return rows, cols
