"""Integrated gradients (Sundararajan et al.) for the signal class, and a localisation score.

``integrated_gradients`` uses captum with the all-zero map as baseline (a sky without lensing
and without noise), integrating along the straight path in ``steps`` Riemann steps (eq. 15 of
the paper). The positive-attribution map sums the two velocity channels, keeps the positive
part and smooths it with a Gaussian of σ = 3 image pixels (Fig. 7), periodic in longitude.

Localisation score (ours; the paper shows Fig. 7 qualitatively). Take the ``n_lenses``
subhalos whose own signal power on the grid is largest (``sky.subhalo_power``) and draw a
disc around each on the image with radius max(2 px, 2 θ_s), θ_s = r_s / distance being the
lens's angular scale radius. Then

    score = (mean positive attribution inside the union of the discs)
            / (mean positive attribution over the whole image).

A map unrelated to the lenses scores ≈ 1 (in expectation, for any attribution map that is
independent of the lens positions); attributions concentrated on the lenses score > 1, up to
(image area / disc area).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from . import sky

__all__ = ["integrated_gradients", "positive_smoothed", "strongest_lens_pixels", "lens_mask", "localisation_score"]


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int = 1, steps: int = 32,
                         baseline: torch.Tensor | None = None) -> np.ndarray:
    """Attributions (N, C, H, W) of ``model``'s logit ``target`` for inputs ``x`` (N, C, H, W)."""
    from captum.attr import IntegratedGradients

    model = model.eval()
    base = torch.zeros_like(x) if baseline is None else baseline
    ig = IntegratedGradients(model)
    attr = ig.attribute(x, baselines=base, target=target, n_steps=steps, method="riemann_trapezoid",
                        internal_batch_size=max(1, min(steps, 16)))
    return attr.detach().cpu().numpy()


def positive_smoothed(attr: np.ndarray, sigma_px: float = 3.0) -> np.ndarray:
    """Channel-summed positive attribution (N, H, W), Gaussian-smoothed (wrap in longitude)."""
    a = np.clip(np.asarray(attr).sum(axis=1), 0, None)
    if sigma_px <= 0:
        return a
    return np.stack([gaussian_filter(m, sigma=sigma_px, mode=("nearest", "wrap")) for m in a])


def strongest_lens_pixels(catalogue: Mapping[str, Any], height: int, width: int, n_lenses: int = 5,
                          nside: int = 32, max_angle_deg: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Image (row, column) of the ``n_lenses`` subhalos with the largest signal power."""
    order = _strongest(catalogue, n_lenses, nside, max_angle_deg)
    return sky.lonlat_to_image_pixel(np.asarray(catalogue["l"])[order], np.asarray(catalogue["b"])[order], height, width)


def _strongest(catalogue: Mapping[str, Any], n: int, nside: int, max_angle_deg: float) -> np.ndarray:
    power = sky.subhalo_power(catalogue, nside=nside, max_angle_deg=max_angle_deg)
    return np.argsort(-power)[:n]


def lens_mask(rows: np.ndarray, cols: np.ndarray, radii_px: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) union of discs (periodic in the column / longitude direction)."""
    rr, cc = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), bool)
    for r, c, rad in zip(rows, cols, radii_px):
        dc = np.abs(cc - c)
        dc = np.minimum(dc, width - dc)
        mask |= (rr - r) ** 2 + dc**2 <= rad**2
    return mask


def localisation_score(positive: np.ndarray, catalogue: Mapping[str, Any], height: int, width: int, n_lenses: int = 5,
                       nside: int = 32, max_angle_deg: float = 20.0) -> dict[str, float]:
    """See the module docstring. ``positive``: (H, W) non-negative attribution map."""
    positive = np.asarray(positive, dtype=np.float64)
    if positive.shape != (height, width):
        raise ValueError(f"attribution map shape {positive.shape}: expected {(height, width)}")
    order = _strongest(catalogue, n_lenses, nside, max_angle_deg)
    rows, cols = sky.lonlat_to_image_pixel(np.asarray(catalogue["l"])[order], np.asarray(catalogue["b"])[order], height, width)
    theta_s_deg = np.degrees(np.asarray(catalogue["r_s"])[order] / np.asarray(catalogue["distance"])[order])
    px_deg = 180.0 / height
    radii = np.maximum(2.0, 2.0 * theta_s_deg / px_deg)
    mask = lens_mask(rows, cols, radii, height, width)
    total = positive.mean()
    if total <= 0 or not mask.any():
        return {"score": float("nan"), "disc_fraction": float(mask.mean())}
    return {"score": float(positive[mask].mean() / total), "disc_fraction": float(mask.mean()),
            "attribution_fraction_in_discs": float(positive[mask].sum() / positive.sum())}
