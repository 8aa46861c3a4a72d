"""Detectability of the substructure in a lensing image: how far it is from a smooth lens, in σ.

For a record with substructure (CDM subhalos or an axion vortex), let ``I_sub`` be its
noise-free image and ``σ`` the per-pixel noise of the observation (background and the Gaussian
limit of the Poisson term, :func:`darkml.lensing.params.noise_sigmas`). Two numbers measure
how visible the substructure is:

* **raw**: ``χ²_raw = Σ_pix ((I_sub − I_smooth) / σ)²`` with ``I_smooth`` the same record
  rendered without its substructure (the same main lens and source);
* **after the refit**: ``χ²_refit = min_θ Σ_pix ((I_sub − I(θ)) / σ)²`` over the 14 parameters θ
  of a substructure-free model (SIE: θ_E, e1, e2, centre; external shear γ1, γ2; Sérsic source:
  amplitude, R, n, e1, e2, centre), by Levenberg–Marquardt from the true macro parameters
  (Jacobian by forward-mode autodiff through the torch renderer of :mod:`.fast`, float64).

``sqrt(χ²)`` is the significance an observer who knows the answer would assign (the Asimov
significance of a known-template test): with Gaussian noise the likelihood-ratio statistic of
"this substructure" against "smooth lens" is N(±sqrt(χ²)/2, 1) under the two hypotheses, so an
oracle separating a population of such images from smooth ones reaches

    AUC_oracle = E_images[ Φ(sqrt(χ²) / sqrt 2) ]

(:func:`darkml.metrics.known_template_auc`). The raw number is the ceiling of an observer who
also knows the main lens and the source exactly; the refitted one is the ceiling when they
must be inferred from the image — what a classifier, which never sees the true lens, faces.
The refit profiles the macro parameters locally (from the truth), so it can miss a distant
better fit: ``χ²_refit`` is an upper bound on the true minimum and the refit oracle a slight
over-estimate of the ceiling.
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
from .fast import _LENS_KEYS, _SRC_KEYS, _macro_deflection, _source_psf, ray_grid, render_torch
from .params import CLASS_NAMES, LensingSimConfig, Records, noise_sigmas, psf_kernel_1d
from .profiles import LENS_PROFILES, SOURCE_PROFILE

log = logging.getLogger(__name__)

__all__ = ["MACRO_FIELDS", "strip_substructure", "SmoothModel", "refit", "detectability", "measure_stored", "summarise"]

#: record columns of the substructure-free model, in the order of the fitted vector θ
MACRO_FIELDS = ("lens_theta_E", "lens_e1", "lens_e2", "lens_x", "lens_y", "shear_g1", "shear_g2",
                "src_amp", "src_R", "src_n", "src_e1", "src_e2", "src_x", "src_y")
#: positive parameters, fitted as their logarithm
_LOG_FIELDS = frozenset({"lens_theta_E", "src_amp", "src_R", "src_n"})


def strip_substructure(rec: Records) -> Records:
    """The same records without substructure: no CDM subhalos, no vortex points."""
    scal = {k: v.copy() for k, v in rec.scalars.items()}
    scal["vortex_n"] = np.zeros(len(rec))
    scal["n_sub"] = np.zeros(len(rec))
    sub = {k: v[:0] for k, v in rec.subhalos.items()}
    return Records(scal, sub)


class SmoothModel:
    """Differentiable image of the substructure-free model: θ (B, 14) float64 → (B, n²) e-/s per pixel.

    Uses the torch backend's kernels and the profiles' own parameter maps, so it renders exactly
    what :func:`darkml.lensing.fast.render_torch` renders for a record without substructure."""

    def __init__(self, cfg: LensingSimConfig, device: str | torch.device = "cpu"):
        self.cfg = cfg
        n, s, d = cfg.image.num_pix, cfg.image.supersampling, cfg.instrument.pixel_scale
        self.gx, self.gy = ray_grid(n, d, s, torch.float64, device)
        self.k1d = torch.as_tensor(psf_kernel_1d(cfg.instrument), dtype=torch.float64, device=device)
        self.args = (n, s, d * d)
        self.device = device

    @staticmethod
    def encode(rec: Records) -> torch.Tensor:
        cols = [np.log(rec.scalars[k]) if k in _LOG_FIELDS else rec.scalars[k] for k in MACRO_FIELDS]
        return torch.as_tensor(np.stack(cols, axis=1), dtype=torch.float64)

    @staticmethod
    def decode(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: (theta[:, j : j + 1].exp() if k in _LOG_FIELDS else theta[:, j : j + 1])
                for j, k in enumerate(MACRO_FIELDS)}

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        sc = self.decode(theta)
        lens = {k: v for prof in LENS_PROFILES for k, v in prof.kernel_params(sc).items()}
        src = SOURCE_PROFILE.kernel_params(sc)
        bx, by = _macro_deflection(self.gx, self.gy, *[lens[k] for k in _LENS_KEYS])
        img = _source_psf(bx, by, *[src[k] for k in _SRC_KEYS], self.k1d, *self.args)
        return img.reshape(len(theta), -1)


def refit(model: SmoothModel, theta0: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor,
          max_iter: int = 40, tol: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Levenberg–Marquardt fit of ``model(θ)`` to ``target`` (B, P) with per-pixel ``sigma``.

    Each image has its own damping λ (Marquardt's diagonal scaling); a step is kept only where
    it lowers χ². Stops when no image's χ² falls by more than ``tol`` (relative, plus 1e-9
    absolute) or after ``max_iter`` iterations. Returns (θ, χ² (B,), iterations)."""
    theta = theta0.clone()
    b, p = theta.shape
    lam = torch.full((b,), 1e-3, dtype=theta.dtype)

    def resid(t: torch.Tensor) -> torch.Tensor:
        return (model(t) - target) / sigma

    with torch.no_grad():
        r = resid(theta)
    chi2 = (r * r).sum(1)
    eye = torch.eye(p, dtype=theta.dtype)
    it = 0
    for it in range(1, max_iter + 1):
        cols = []
        for j in range(p):
            tangent = torch.zeros_like(theta)
            tangent[:, j] = 1.0
            cols.append(torch.func.jvp(resid, (theta,), (tangent,))[1])
        jac = torch.stack(cols, dim=-1)  # (B, P_pix, p)
        a = jac.transpose(1, 2) @ jac
        g = jac.transpose(1, 2) @ r.unsqueeze(-1)
        diag = torch.diagonal(a, dim1=1, dim2=2)
        improved_any = False
        for _ in range(6):  # raise λ where a step fails, retry those images
            damp = a + lam[:, None, None] * torch.diag_embed(diag) + 1e-12 * eye
            step = torch.linalg.solve(damp, -g).squeeze(-1)
            with torch.no_grad():
                r_new = resid(theta + step)
            chi2_new = (r_new * r_new).sum(1)
            ok = torch.isfinite(chi2_new) & (chi2_new < chi2)
            rel = torch.where(ok, (chi2 - chi2_new) / (chi2 + 1e-9), torch.zeros_like(chi2))
            theta = torch.where(ok[:, None], theta + step, theta)
            r = torch.where(ok[:, None], r_new, r)
            improved_any = improved_any or bool((rel > tol).any())
            chi2 = torch.where(ok, chi2_new, chi2)
            lam = torch.where(ok, lam / 3, lam * 4).clamp(1e-9, 1e9)
            if bool(ok.all()):
                break
        if not improved_any:
            break
    return theta, chi2, it


def detectability(rec: Records, cfg: LensingSimConfig, batch_size: int = 16, max_iter: int = 40,
                  device: str = "cpu", show_progress: bool = True) -> dict[str, np.ndarray]:
    """Per record: ``chi2_raw``, ``chi2_refit`` (0 for records without substructure), the
    refit's iterations and the fitted macro parameters (``theta_fit``, log for θ_E, amp, R, n).

    Images are rendered by the torch backend in float64 with and without the substructure."""
    n = len(rec)
    sigma_bkg, t_tot = noise_sigmas(cfg.instrument)
    model = SmoothModel(cfg, device)
    chi2_raw = np.zeros(n)
    chi2_fit = np.zeros(n)
    iters = np.zeros(n, dtype=np.int64)
    theta_fit = np.full((n, len(MACRO_FIELDS)), np.nan)
    has_sub = (rec.scalars["n_sub"] > 0) | (rec.scalars["vortex_n"] > 0)
    todo = np.nonzero(has_sub)[0]
    for b0 in progress(range(0, len(todo), batch_size), desc="detectability", total=math.ceil(len(todo) / batch_size),
                       disable=not show_progress):
        idx = todo[b0 : b0 + batch_size]
        sub = rec.subset(idx)
        with_sub = render_torch(sub, cfg, device, torch.float64, batch_size=len(idx), return_tensor=True)
        smooth = render_torch(strip_substructure(sub), cfg, device, torch.float64, batch_size=len(idx),
                              return_tensor=True)
        target = with_sub.reshape(len(idx), -1)
        sigma = torch.sqrt(sigma_bkg**2 + target.clamp(min=0) / t_tot)
        chi2_raw[idx] = (((target - smooth.reshape(len(idx), -1)) / sigma) ** 2).sum(1).numpy()
        theta, chi2, it = refit(model, model.encode(sub).to(device), target, sigma, max_iter=max_iter)
        chi2_fit[idx] = chi2.cpu().numpy()
        theta_fit[idx] = theta.cpu().numpy()
        iters[idx] = it
    return {"label": rec.labels, "chi2_raw": chi2_raw, "chi2_refit": chi2_fit, "iterations": iters,
            "theta_fit": theta_fit, "sub_mass_total": rec.scalars["sub_mass_total"].copy()}


def measure_stored(dataset: Path, split: str, samples: np.ndarray, out: Path, batch_size: int = 16,
                   max_iter: int = 40) -> dict[str, np.ndarray]:
    """:func:`detectability` of stored ``samples`` of a dataset, written atomically to ``out``
    (``.npz`` with a ``samples`` column); an existing ``out`` is read back instead (resume)."""
    from ..runs import atomic_write_npz
    from .dataset import load_records

    if out.is_file():
        with np.load(out) as f:
            return {k: f[k] for k in f.files if k != "samples"}
    samples = np.sort(np.asarray(samples, dtype=np.int64))
    rec, sim_cfg = load_records(dataset, split, samples)
    res = detectability(rec, sim_cfg, batch_size=batch_size, max_iter=max_iter)
    atomic_write_npz(out, samples=samples, **res)
    return res


def summarise(res: dict[str, np.ndarray], n_boot: int = 1000, level: float = 0.68, seed: int = 0) -> dict[str, Any]:
    """Per substructure class: quantiles of sqrt(χ²) raw and after the refit, and the oracle AUC
    against the no-substructure class that each implies (bootstrap interval over images)."""
    out: dict[str, Any] = {}
    for c in (1, 2):
        sel = res["label"] == c
        if not sel.any():
            continue
        row: dict[str, Any] = {"n_images": int(sel.sum())}
        for key in ("raw", "refit"):
            z = np.sqrt(np.maximum(res[f"chi2_{key}"][sel], 0.0))
            q = np.percentile(z, [16, 50, 84])
            row[key] = {"sqrt_chi2": {"q16": float(q[0]), "median": float(q[1]), "q84": float(q[2])},
                        "oracle_auc": metrics.known_template_auc(z, n_boot=n_boot, level=level, seed=seed)}
        if c == 1:
            row["median_sub_mass_total"] = float(np.median(res["sub_mass_total"][sel]))
        out[CLASS_NAMES[c]] = row
    return out
