"""Integrated gradients for the signal class (Sec. III C, Fig. 7) and a localisation score.

**Attributions.** :func:`integrated_gradients` applies eq. (15) with captum: baseline x' = 0 (a
sky with neither lensing nor noise, the mean of the no-signal class), straight path,
Gauss-Legendre quadrature with ``steps`` nodes. The explained output F is the classifier's
log-odds of the ``target`` class, logit_target - logit_other for two classes (log-softmax for
more), i.e. the evidence for "substructure" against "no substructure"; completeness then reads
Σ_i IG_i = F(x) - F(x'). :func:`positive_smoothed` sums the channels (mu_l, mu_b), keeps the
positive part (pixels that voted for the signal class) and smooths it with a Gaussian of
σ = 3 image pixels (Fig. 7), periodic in longitude and reflecting at the image's top and bottom
rows (the poles), which keeps the total attribution.

**Which lenses.** :func:`strongest_lens_pixels` ranks the subhalos of a map's catalogue by their
own signal power on the HEALPix grid, Σ_pix |mu|^2 over their 20° disc
(:func:`darkml.astrometry.sky.subhalo_power`, the same physics as the map), and returns the
image pixels (row, column) that contain the top ``n_lenses`` on the study's plate carrée grid
(:func:`darkml.astrometry.maps.lonlat_to_image_pixel`).

**Localisation score** (ours; the paper shows Fig. 7 only qualitatively). Around each of the
K = ``n_lenses`` strongest lenses draw a disc on the sky of angular radius
max(``radius_scale`` θ_s, ``min_radius_px`` image-pixel heights), θ_s = arctan(r_s / D) the
lens's angular scale radius (defaults: 2 θ_s, at least 3 px = the smoothing σ); image pixels
belong to a disc when their centre is within that great-circle distance. Let m_lens be the mean
positive attribution over the image pixels in the union of the K discs. Place the same K discs
(same radii) at isotropic random centres ``n_random`` times (seeded) and let m_rand be the mean
over placements of the same quantity. Then

    score = m_lens / m_rand,      p_value = (1 + #{placements with mean >= m_lens}) / (1 + n_random).

An attribution map unrelated to the lenses scores ≈ 1 (exactly 1 in expectation for i.i.d. pixel
values); attributions concentrated on the lenses score > 1, up to ~ (sky area / disc area).
The p-value is the probability that randomly placed discs do as well.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from . import maps, sky

__all__ = [
    "integrated_gradients",
    "log_odds",
    "positive_smoothed",
    "strongest_lenses",
    "strongest_lens_pixels",
    "disc_mask",
    "localisation_score",
]


class _LogOdds(nn.Module):
    def __init__(self, model: nn.Module, target: int):
        super().__init__()
        self.model, self.target = model, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_odds(self.model(x), self.target)


def log_odds(logits: torch.Tensor, target: int = 1) -> torch.Tensor:
    """F(x): logit_target - logit_other for 2 classes, log_softmax(target) otherwise."""
    if logits.shape[-1] == 2:
        return logits[..., target] - logits[..., 1 - target]
    return torch.log_softmax(logits, dim=-1)[..., target]


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int = 1, steps: int = 32,
                         baseline: torch.Tensor | None = None, internal_batch_size: int | None = 16) -> np.ndarray:
    """Attributions (N, C, H, W) of the log-odds of class ``target`` for inputs ``x`` (N, C, H, W).

    Eq. (15) with baseline 0 (or ``baseline``), ``steps`` Gauss-Legendre nodes. The model is
    put in eval mode; inputs move to the model's device.
    """
    from captum.attr import IntegratedGradients

    if steps < 1:
        raise ValueError(f"steps = {steps}: must be >= 1")
    model = model.eval()
    dev = next(model.parameters()).device
    x = torch.as_tensor(x, dtype=torch.float32).to(dev)
    base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype).to(dev).expand_as(x)
    ig = IntegratedGradients(_LogOdds(model, target))
    attr = ig.attribute(x, baselines=base, n_steps=steps, method="gausslegendre", internal_batch_size=internal_batch_size)
    return attr.detach().cpu().numpy()


def positive_smoothed(attr: np.ndarray, sigma_px: float = 3.0) -> np.ndarray:
    """Channel-summed positive attribution (N, H, W), Gaussian-smoothed (σ in pixels; periodic in longitude, reflecting at the poles)."""
    a = np.clip(np.asarray(attr, dtype=np.float64).sum(axis=1), 0, None)
    if sigma_px <= 0:
        return a
    return np.stack([gaussian_filter(m, sigma=sigma_px, mode=("reflect", "wrap")) for m in a])


def strongest_lenses(catalogue: Mapping[str, Any], n_lenses: int = 5, nside: int = 32,
                     max_angle_deg: float = 20.0) -> np.ndarray:
    """Indices of the ``n_lenses`` subhalos with the largest own signal power on the grid (descending)."""
    if len(np.asarray(catalogue["l"])) == 0:
        return np.zeros(0, dtype=np.int64)
    power = sky.subhalo_power(catalogue, nside=nside, max_angle_deg=max_angle_deg)
    return np.argsort(-power, kind="stable")[:n_lenses]


def strongest_lens_pixels(catalogue: Mapping[str, Any], height: int, width: int, n_lenses: int = 5,
                          nside: int = 32, max_angle_deg: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Image (rows, columns) of the ``n_lenses`` strongest lenses on the (height, width) projection grid."""
    order = strongest_lenses(catalogue, n_lenses, nside, max_angle_deg)
    return maps.lonlat_to_image_pixel(np.asarray(catalogue["l"])[order], np.asarray(catalogue["b"])[order], height, width)


@functools.lru_cache(maxsize=8)
def _image_vectors(height: int, width: int) -> np.ndarray:
    lon, lat = maps.image_lonlat(height, width)
    ll, bb = np.meshgrid(np.radians(lon), np.radians(lat))
    return np.stack([np.cos(bb) * np.cos(ll), np.cos(bb) * np.sin(ll), np.sin(bb)], axis=-1)  # (H, W, 3)


def _unit(l_deg, b_deg) -> np.ndarray:
    l, b = np.radians(np.asarray(l_deg, dtype=np.float64)), np.radians(np.asarray(b_deg, dtype=np.float64))
    return np.stack([np.cos(b) * np.cos(l), np.cos(b) * np.sin(l), np.sin(b)], axis=-1)


def disc_mask(centres: np.ndarray, radii_deg: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean (H, W): image pixels whose centre lies within ``radii_deg`` of any of ``centres`` (K, 3) unit vectors."""
    vec = _image_vectors(height, width)
    cos_r = np.cos(np.radians(np.asarray(radii_deg, dtype=np.float64)))
    dots = vec @ np.asarray(centres, dtype=np.float64).reshape(-1, 3).T  # (H, W, K)
    return np.any(dots >= cos_r, axis=-1)


def _random_units(n: int, rng: np.random.Generator) -> np.ndarray:
    z = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * math.pi, n)
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def localisation_score(positive: np.ndarray, catalogue: Mapping[str, Any], height: int, width: int, n_lenses: int = 5,
                       nside: int = 32, max_angle_deg: float = 20.0, radius_scale: float = 2.0,
                       min_radius_px: float = 3.0, n_random: int = 200, seed: int = 0) -> dict[str, Any]:
    """Localisation score of a positive attribution map (H, W) against the map's strongest lenses (module docstring).

    Returns a JSON-ready dict: ``score``, ``p_value``, ``lens_mean``, ``random_mean``,
    ``disc_fraction`` (fraction of image pixels in the lens discs), ``radii_deg``, ``rows``,
    ``cols`` of the lenses. ``score`` is NaN when the map has no positive attribution.
    """
    positive = np.asarray(positive, dtype=np.float64)
    if positive.shape != (height, width):
        raise ValueError(f"attribution map shape {positive.shape}: expected {(height, width)}")
    if n_lenses < 1 or n_random < 1:
        raise ValueError(f"n_lenses = {n_lenses}, n_random = {n_random}: both must be >= 1")
    order = strongest_lenses(catalogue, n_lenses, nside, max_angle_deg)
    l, b = np.asarray(catalogue["l"])[order], np.asarray(catalogue["b"])[order]
    theta_s = np.degrees(np.arctan(np.asarray(catalogue["r_s"])[order] / np.asarray(catalogue["distance"])[order]))
    radii = np.maximum(radius_scale * theta_s, min_radius_px * 180.0 / height)
    rows, cols = maps.lonlat_to_image_pixel(l, b, height, width)
    out: dict[str, Any] = {"rows": rows.tolist(), "cols": cols.tolist(), "radii_deg": radii.tolist(), "n_lenses": int(len(order))}
    if len(order) == 0 or not np.any(positive > 0):
        return {**out, "score": float("nan"), "p_value": float("nan"), "lens_mean": 0.0, "random_mean": 0.0,
                "disc_fraction": 0.0}
    mask = disc_mask(_unit(l, b), radii, height, width)
    lens_mean = float(positive[mask].mean())
    rng = np.random.default_rng(seed)
    rand = np.empty(n_random)
    for i in range(n_random):
        m = disc_mask(_random_units(len(order), rng), radii, height, width)
        rand[i] = positive[m].mean() if m.any() else 0.0
    random_mean = float(rand.mean())
    return {**out, "score": lens_mean / random_mean if random_mean > 0 else float("nan"),
            "p_value": float((1 + np.sum(rand >= lens_mean)) / (1 + n_random)),
            "lens_mean": lens_mean, "random_mean": random_mean, "disc_fraction": float(mask.mean())}
