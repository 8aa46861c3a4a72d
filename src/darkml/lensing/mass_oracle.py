"""The physical ceiling of the axion-mass regression: a Bayes-optimal estimate of log10 m_a.

For an axion image the regression networks predict ``log10(m_a / eV)`` from the pixels alone.
How well could any estimator do on the same data? This module answers with an *oracle* that
knows everything about the record except the axion mass — the main lens, the source, the
vortex's position angle and mass — and computes the exact posterior of ``log10 m_a``:

* prior: uniform on ``axion.log10_mass`` (what the simulator draws);
* likelihood: the record's observed image (noise-free render + its own noise field, exactly as
  the simulator makes it) against the noise-free render at each mass of a grid over the prior,
  Gaussian with the per-pixel sigma of the true image (:func:`darkml.lensing.params.noise_sigmas`);
* estimate: the posterior mean, which minimises the expected squared error.

Knowing more can only lower the error, so the oracle's RMSE is a lower bound on the RMSE of any
estimator that sees the image alone (up to the grid: the posterior mean is a grid average, off by
at most half a grid step where the posterior is narrower than a step). Where the vortex is too
short to resolve (``L_half`` well inside the Einstein radius), the posterior widens to the prior
and the oracle predicts the mean of the unresolved range: the error there is physics, not
learning. The records' vortex half-length follows the mass (``axion.length_scale``), so the
grid renders ``vortex_L_half`` with it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import metrics
from ..parallel import progress
from .fast import render_torch
from .params import (
    LensingSimConfig,
    Records,
    noise_fields,
    noise_sigmas,
    vortex_half_length,
)

log = logging.getLogger(__name__)

__all__ = ["axion_mass_oracle", "measure_stored_oracle", "stored_ceiling", "summarise_oracle"]


def _with_mass(rec: Records, log10_m: float, length_scale: float) -> Records:
    scal = {k: v.copy() for k, v in rec.scalars.items()}
    scal["log10_m_axion"] = np.full(len(rec), float(log10_m))
    scal["vortex_L_half"] = np.full(len(rec), float(vortex_half_length(10.0**log10_m, length_scale)))
    return Records(scal, rec.subhalos)


def axion_mass_oracle(rec: Records, cfg: LensingSimConfig, grid_points: int = 101, batch_size: int = 32,
                      device: str = "cpu", show_progress: bool = True) -> dict[str, np.ndarray]:
    """Per axion record: ``truth``, posterior ``mean`` and ``std`` of log10 m_a, the grid ``map``.

    ``rec`` must hold axion records only (label 2); images are rendered in float64."""
    if grid_points < 3:
        raise ValueError(f"grid_points = {grid_points}: must be >= 3")
    labels = rec.labels
    if len(rec) == 0 or np.any(labels != 2):
        raise ValueError("axion_mass_oracle: records must be a non-empty set of axion images (label 2)")
    lo, hi = cfg.axion.log10_mass
    grid = np.linspace(lo, hi, grid_points)
    sb, t_tot = noise_sigmas(cfg.instrument)
    n = len(rec)
    mean, std, mode = np.zeros(n), np.zeros(n), np.zeros(n)
    chunks = range(0, n, batch_size)
    for b0 in progress(chunks, desc="mass oracle", total=math.ceil(n / batch_size), disable=not show_progress):
        idx = np.arange(b0, min(n, b0 + batch_size))
        sub = rec.subset(idx)
        true = render_torch(sub, cfg, device, torch.float64, batch_size=len(idx), return_tensor=True).reshape(len(idx), -1)
        sigma = torch.sqrt(sb**2 + true.clamp(min=0) / t_tot)
        z = torch.as_tensor(noise_fields(sub.scalars["noise_seed"], cfg.image.num_pix), dtype=torch.float64,
                            device=true.device).reshape(len(idx), -1)
        obs = true + sigma * z if cfg.image.noise else true
        chi2 = np.empty((len(idx), grid_points))
        for j, g in enumerate(grid):
            model = render_torch(_with_mass(sub, g, cfg.axion.length_scale), cfg, device, torch.float64,
                                 batch_size=len(idx), return_tensor=True).reshape(len(idx), -1)
            chi2[:, j] = (((obs - model) / sigma) ** 2).sum(1).cpu().numpy()
        logw = -0.5 * (chi2 - chi2.min(1, keepdims=True))
        w = np.exp(logw)
        w /= w.sum(1, keepdims=True)
        m = (w * grid).sum(1)
        mean[idx] = m
        std[idx] = np.sqrt(np.maximum((w * grid**2).sum(1) - m**2, 0.0))
        mode[idx] = grid[np.argmax(w, 1)]
    return {"truth": rec.scalars["log10_m_axion"].astype(np.float64), "mean": mean, "std": std, "map": mode,
            "grid_step": np.float64(grid[1] - grid[0])}


def measure_stored_oracle(dataset: Path, split: str, samples: np.ndarray, out: Path, grid_points: int = 101,
                          batch_size: int = 32) -> dict[str, np.ndarray]:
    """:func:`axion_mass_oracle` of stored axion ``samples`` of a dataset, written atomically to
    ``out`` (``.npz`` with a ``samples`` column); an existing ``out`` is read back (resume)."""
    from ..runs import atomic_write_npz
    from .dataset import load_records

    samples = np.sort(np.asarray(samples, dtype=np.int64))
    if out.is_file():
        with np.load(out) as f:
            if np.array_equal(f["samples"], samples) and int(f["grid_points"]) == grid_points:
                return {k: f[k] for k in f.files if k not in ("samples", "grid_points")}
    rec, sim_cfg = load_records(dataset, split, samples)
    res = axion_mass_oracle(rec, sim_cfg, grid_points=grid_points, batch_size=batch_size)
    atomic_write_npz(out, samples=samples, grid_points=np.int64(grid_points), **res)
    return res


def stored_ceiling(dataset: Path, out: Path, grid_points: int = 101, n_boot: int = 1000, level: float = 0.68,
                   seed: int = 0, split: str = "test") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The regression's ceiling on every axion image of a stored split: (:func:`summarise_oracle`,
    the per-image result of :func:`measure_stored_oracle`, in store order; cached in ``out``)."""
    from .dataset import open_split

    store = open_split(dataset, split)
    samples = np.nonzero(store.read("label", np.arange(store.n_samples)) == 2)[0]
    log.info("%s/%s: Bayes-optimal axion mass of %d images (%d grid points)", dataset, split, len(samples), grid_points)
    res = measure_stored_oracle(dataset, split, samples, out, grid_points=grid_points)
    if not np.all(np.isfinite(res["truth"])):
        raise ValueError(f"mass oracle of {dataset}/{split}: some axion records have no axion mass")
    summary = summarise_oracle(res, n_boot=n_boot, level=level, seed=seed)
    log.info("%s/%s Bayes-optimal oracle: RMSE %.4f dex", dataset, split, summary["rmse"]["value"])
    return summary, res


def summarise_oracle(res: dict[str, np.ndarray], n_boot: int = 1000, level: float = 0.68, seed: int = 0) -> dict[str, Any]:
    """RMSE and MAE of the oracle's posterior mean (bootstrap intervals over images), the
    spread of the truth (the mean predictor's RMSE on these images) and the share of images
    whose posterior is narrower than a tenth of the prior (resolved vortices)."""
    t, m = res["truth"], res["mean"]
    out = metrics.regression_metrics(t, m, n_boot=n_boot, level=level, seed=seed)
    out["n_images"] = len(t)
    out["truth_std"] = float(np.std(t))
    out["grid_step"] = float(res["grid_step"])
    out["resolved_fraction"] = float(np.mean(res["std"] < 0.1 * (np.ptp(t) if len(t) > 1 else 1.0)))
    return out
