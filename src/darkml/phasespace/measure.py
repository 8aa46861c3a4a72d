"""TODO."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from darkml.config import ConfigError
from darkml.learn.devices import resolve_device
from darkml.phasespace import boltzmann, flows, gauss, jeans, moments, tilt
from darkml.runs import Run, atomic_write_npz

from .config import ACC_UNIT, RHO_UNIT, PhaseSpaceConfig
from .dataset import dataset_names, load_stars, truth_model
from .ensembles import _load_ensemble


# =============================================================================================
# Measurement
# =============================================================================================
def profile_points(cfg: PhaseSpaceConfig) -> dict[str, np.ndarray]:
    """Evaluation positions [kpc]: the observer, and lines along x and z through it."""
    obs = np.asarray(cfg.mock.observer_kpc, float)
    m = cfg.measure
    tx = np.linspace(-m.x_half_range_kpc, m.x_half_range_kpc, m.profile_points)
    tz = np.linspace(-m.z_half_range_kpc, m.z_half_range_kpc, m.profile_points)
    px = obs + tx[:, None] * np.array([1.0, 0, 0])
    pz = obs + tz[:, None] * np.array([0, 0, 1.0])
    return {"sun": obs[None], "x": px, "z": pz, "tx": tx, "tz": tz}


log = logging.getLogger(__name__)

def density_points(cfg: PhaseSpaceConfig, kernel: gauss.Kernel) -> dict[str, np.ndarray]:
    """Density positions where the whole kernel lies inside the support."""
    obs = np.asarray(cfg.mock.observer_kpc, float)
    R = cfg.mock.radius_kpc
    ext = kernel.extent()
    n = cfg.measure.density_profile_points
    out = {"sun": obs[None]}
    for axis, k in (("x", 0), ("z", 2)):
        # farthest offset t along the axis with every kernel node inside: |t e_k + c h ŝ| ≤ R
        lim = _max_offset(ext, k, R)
        t = np.linspace(-lim, lim, n) if n > 1 else np.zeros(max(n, 0))
        e = np.zeros(3)
        e[k] = 1
        out[axis] = obs + t[:, None] * e
        out["t" + axis] = t
    return out


def _max_offset(ext: np.ndarray, k: int, R: float) -> float:
    # ellipsoid with semi-axes ext shifted by t along axis k: max distance = max over the surface
    u = np.random.default_rng(0).standard_normal((20000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pts = u * ext
    lo, hi = 0.0, R
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        p = pts.copy()
        p[:, k] += mid
        if np.linalg.norm(p, axis=1).max() <= R * 0.98:
            lo = mid
        else:
            hi = mid
    return lo


def _device(cfg: PhaseSpaceConfig) -> torch.device:
    try:
        return resolve_device(cfg.measure.device, field="measure.device")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class _LastCall:
    """An acceleration field that remembers its last (points → accelerations): the Sun's density
    nodes are evaluated once and reused by the hybrid estimate."""

    def __init__(self, field):
        self.field, self.x, self.a = field, None, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.x is None or self.x.shape != x.shape or not torch.equal(self.x, x):
            self.x, self.a = x.clone(), self.field(x).to(torch.float64)
        return self.a


def hybrid_field(horizontal, vertical):
    """x (M, 3) → a (M, 3): a_x, a_y from ``horizontal`` (the least squares: accurate and precise there),
    a_z from ``vertical`` (the moments: no a_R leak); docs/phasespace.md, "the flux split"."""
    return lambda p: torch.cat([horizontal(p)[:, :2], vertical(p)[:, 2:]], 1)


def _dlnnu_dz(log_nu, points: np.ndarray, device="cpu", dtype=torch.float32) -> np.ndarray:
    """∂ ln ν/∂z at ``points`` (P, 3) kpc by autograd [kpc⁻¹]."""
    x = torch.tensor(points, dtype=dtype, device=device, requires_grad=True)
    with torch.enable_grad():
        g = torch.autograd.grad(log_nu(x).sum(), x)[0]
    return g[:, 2].double().cpu().numpy()


def _agg(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and spread (std over members; NaN — not available — for one member)."""
    values = np.asarray(values, float)
    return values.mean(0), (values.std(0, ddof=1) if len(values) > 1 else np.full(values.shape[1:], np.nan))


def measure(cfg: PhaseSpaceConfig, run: Run) -> dict[str, Any]:
    """Accelerations, densities, Jeans baseline and truth; writes ``profiles.npz`` and metrics."""
    dev = _device(cfg)
    pts = profile_points(cfg)
    kernel = gauss.Kernel(tuple(cfg.measure.bandwidth_kpc), cfg.measure.truncation)
    dpts = density_points(cfg, kernel)
    obs, R = cfg.mock.observer_kpc, cfg.mock.radius_kpc
    all_acc = np.concatenate([pts["sun"], pts["x"], pts["z"]])
    flows.check_support(all_acc, obs, R, what="acceleration point")
    flows.check_support(np.concatenate([dpts["sun"], dpts["x"], dpts["z"]]), obs, R, reach=0.0, what="density point")
    m = cfg.measure
    arrays: dict[str, np.ndarray] = {"acc_points": all_acc, "tx": pts["tx"], "tz": pts["tz"],
                                     "rho_tx": dpts["tx"], "rho_tz": dpts["tz"]}
    cost: dict[str, Any] = {}
    results: dict[str, Any] = {}
    tilts: dict[str, Any] = {}
    # heights above the observer for the ln ν slope profile (inside the support)
    nu_z = np.linspace(-1.0, 1.0, 41) * min(1.0, 0.9 * R)
    nu_points = np.column_stack([np.full_like(nu_z, obs[0]), np.full_like(nu_z, obs[1]), obs[2] + nu_z])
    arrays["nu_z"] = nu_z
    with flows.torch_threads(m.cpu_threads if dev.type == "cpu" else None):
        for name in dataset_names(cfg):
            models = _load_ensemble(run, cfg, name, dev)
            acc, rho_sun, rho_x, rho_z, rho_div, rho_paper, rho_mom, rho_hyb = [], [], [], [], [], [], [], []
            with_profiles = name == "original" or m.density_profiles_all_datasets
            for k, model in enumerate(models):
                t0 = time.perf_counter()
                field = boltzmann.AccelerationField(model, m.n_velocities, m.weighting, common_random_numbers=False,
                                                    seed=cfg.seed * 7919 + k, batch_points=m.batch_points)
                acc.append(field(torch.tensor(all_acc)).double().cpu().numpy())
                t_acc = (time.perf_counter() - t0) / len(all_acc)
                fast = boltzmann.AccelerationField(model, m.fast_velocities, m.weighting, common_random_numbers=True,
                                                   seed=cfg.seed * 7919 + 100 + k, batch_points=m.batch_points)
                t0 = time.perf_counter()
                fast_sun = _LastCall(fast)
                rho_sun.append(gauss.density_fast(fast_sun, dpts["sun"][0], kernel, *m.fast_nodes).rho)
                t_rho = time.perf_counter() - t0
                if with_profiles:
                    rho_x.append([gauss.density_fast(fast, p, kernel, *m.fast_nodes).rho for p in dpts["x"]])
                    rho_z.append([gauss.density_fast(fast, p, kernel, *m.fast_nodes).rho for p in dpts["z"]])
                if m.moments_velocities:
                    # the same kernel and nodes, accelerations from the Jeans equations of the flows (moments.py)
                    mom = _LastCall(moments.MomentField(model, m.moments_velocities, seed=cfg.seed * 7919 + 300 + k))
                    rho_mom.append(gauss.density_fast(mom, dpts["sun"][0], kernel, *m.fast_nodes).rho)
                    # same nodes: both fields' last calls are reused
                    rho_hyb.append(gauss.density_fast(hybrid_field(fast_sun, mom), dpts["sun"][0], kernel, *m.fast_nodes).rho)
                if m.divergence and name == "original":
                    rho_div.append(gauss.density_divergence(fast.differentiable, dpts["sun"][0]).rho)
                if m.paper_estimator and name == "original":
                    paper_field = boltzmann.AccelerationField(model, m.paper_velocities, m.weighting, common_random_numbers=False,
                                                              seed=cfg.seed * 7919 + 200 + k, batch_points=m.batch_points)
                    t0 = time.perf_counter()
                    n_surf = m.paper_kernel_points // 4
                    rp = gauss.density_paper(paper_field, dpts["sun"][0], kernel, m.paper_kernel_points - n_surf, n_surf, seed=k)
                    rho_paper.append(rp.rho)
                    cost.setdefault("paper_density_s_per_point", []).append(time.perf_counter() - t0)
                cost.setdefault("acceleration_s_per_point", []).append(t_acc)
                cost.setdefault("fast_density_s_per_point", []).append(t_rho)
                log.info("%s m%d: a_sun = %s (km/s)^2/kpc, rho_h(sun) = %.4g Msun/kpc^3", name, k,
                         np.array2string(acc[-1][0], precision=1), rho_sun[-1])
            a_mean, a_std = _agg(np.array(acc))
            arrays[f"{name}_acc"], arrays[f"{name}_acc_stat"] = a_mean, a_std
            arrays[f"{name}_acc_members"] = np.array(acc)
            r_mean, r_std = _agg(np.array(rho_sun)[:, None])
            arrays[f"{name}_rho_sun"], arrays[f"{name}_rho_sun_stat"] = r_mean, r_std
            if with_profiles and len(dpts["x"]):
                for ax, vals in (("x", rho_x), ("z", rho_z)):
                    mu, sd = _agg(np.array(vals))
                    arrays[f"{name}_rho_{ax}"], arrays[f"{name}_rho_{ax}_stat"] = mu, sd
            if rho_div:
                arrays[f"{name}_rho_div_sun"], arrays[f"{name}_rho_div_sun_stat"] = _agg(np.array(rho_div)[:, None])
            for label, vals in (("moments", rho_mom), ("hybrid", rho_hyb)):
                if vals:
                    arrays[f"{name}_rho_{label}_sun"], arrays[f"{name}_rho_{label}_sun_stat"] = _agg(np.array(vals)[:, None])
            if rho_paper:
                arrays[f"{name}_rho_paper_sun"], arrays[f"{name}_rho_paper_sun_stat"] = _agg(np.array(rho_paper)[:, None])
            results[name] = len(models)
            if name == "original":
                # the slope of ln ν along z under the observer — what sets the vertical flux (docs: the flux split)
                arrays["original_dlnnu_dz_members"] = np.array([_dlnnu_dz(mdl.log_nu, nu_points, dev) for mdl in models])
                if any(isinstance(mdl, tilt.TiltedFlow) for mdl in models):
                    arrays["original_dlnnu_dz_untilted_members"] = np.array(
                        [_dlnnu_dz(mdl.flow.log_nu, nu_points, dev) for mdl in models])
            fits = [mdl.fit.as_dict() for mdl in models if isinstance(mdl, tilt.TiltedFlow)]
            if fits:
                tilts[name] = {"val_gain_nats_per_star": [f["val_gain"] for f in fits],
                               "coef": [f["coef"] for f in fits], "stderr": [f["stderr"] for f in fits],
                               "chi2": [f["chi2"] for f in fits], "p_value": [f["p_value"] for f in fits],
                               "terms": cfg.flow.nu_tilt_terms, "width_kpc": cfg.flow.nu_tilt_width_kpc}
        # Jeans baseline on each dataset (stat: bootstrap)
        if cfg.jeans.enabled:
            js = jeans.JeansSettings(cfg.jeans.bin_R, cfg.jeans.bin_z, cfg.jeans.window_R, cfg.jeans.window_z, cfg.jeans.degree,
                                     cfg.jeans.min_count, cfg.jeans.n_boot)
            jp = np.concatenate([all_acc, dpts["x"], dpts["z"]])
            for name in dataset_names(cfg):
                x, v = load_stars(run, cfg, name)
                t0 = time.perf_counter()
                jr = jeans.jeans_estimate(x, v, jp, obs, R, js, seed=cfg.seed)
                cost["jeans_s"] = time.perf_counter() - t0
                na = len(all_acc)
                arrays[f"jeans_{name}_acc"], arrays[f"jeans_{name}_acc_stat"] = jr.a[:na], jr.a_err[:na]
                arrays[f"jeans_{name}_rho"], arrays[f"jeans_{name}_rho_stat"] = jr.rho, jr.rho_err
        # truth
        if cfg.catalogue.path is None:
            pot, df = truth_model(cfg)
            arrays["true_acc"] = pot.acceleration(torch.tensor(all_acc)).numpy()
            dp_all = np.concatenate([dpts["sun"], dpts["x"], dpts["z"]])
            arrays["true_rho_point"] = pot.density(torch.tensor(dp_all)).numpy()
            if hasattr(df, "log_nu"):
                arrays["true_dlnnu_dz"] = _dlnnu_dz(df.log_nu, nu_points, dtype=torch.float64)
            arrays["true_rho_smoothed"] = np.array([gauss.smoothed_density(pot.density, p, kernel) for p in dp_all])
            if hasattr(pot, "BARYONS"):
                # the local dark-matter density: total minus the exact baryons (bulge + disc) of the mock
                arrays["true_rho_baryon_smoothed"] = np.array(
                    [gauss.smoothed_density(lambda q: pot.density(q, pot.BARYONS), p, kernel) for p in dp_all])
                arrays["true_rho_dm_smoothed"] = np.array(
                    [gauss.smoothed_density(lambda q: pot.density(q, ("halo",)), p, kernel) for p in dp_all])
            arrays["jeans_points_true_rho"] = pot.density(torch.tensor(jp)).numpy() if cfg.jeans.enabled else np.zeros(0)
    atomic_write_npz(run.path / "profiles.npz", **arrays)
    summary = _summarise(cfg, arrays)
    summary["cost"] = {
        "acceleration_s_per_point": float(np.mean(cost.get("acceleration_s_per_point", [np.nan]))),
        "acceleration_evaluations_per_point": m.n_velocities,
        "fast_density_s_per_point": float(np.mean(cost.get("fast_density_s_per_point", [np.nan]))),
        "fast_density_evaluations_per_point": int(np.prod(m.fast_nodes) + m.fast_nodes[1] * m.fast_nodes[2]) * m.fast_velocities,
        "paper_density_evaluations_per_point": m.paper_kernel_points * m.paper_velocities,
        "paper_density_s_per_point": float(np.mean(cost["paper_density_s_per_point"])) if "paper_density_s_per_point" in cost else None,
        "jeans_s": cost.get("jeans_s"), "device": str(dev), "members": results,
    }
    if tilts:
        summary["nu_tilt"] = tilts
    run.update_metrics({"measure": summary})
    return summary


def accelerations_at(cfg: PhaseSpaceConfig, run: Run, points, dataset: str = "original",
                     n_velocities: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble-mean accelerations and their spread [(km/s)^2/kpc] at ``points`` (P, 3) [kpc] from the
    trained flows of ``dataset``. Raises :class:`~darkml.phasespace.flows.SupportError` for points
    outside the observed ball."""
    pts = np.atleast_2d(np.asarray(points, dtype=float))
    flows.check_support(pts, cfg.mock.observer_kpc, cfg.mock.radius_kpc, what="acceleration point")
    dev = _device(cfg)
    m = cfg.measure
    out = []
    with flows.torch_threads(m.cpu_threads if dev.type == "cpu" else None):
        for k, model in enumerate(_load_ensemble(run, cfg, dataset, dev)):
            field = boltzmann.AccelerationField(model, n_velocities or m.n_velocities, m.weighting, False,
                                                seed=cfg.seed * 7919 + k, batch_points=m.batch_points)
            out.append(field(torch.tensor(pts)).double().cpu().numpy())
    return _agg(np.array(out))


def _dark_matter(A: dict[str, np.ndarray], names: list[str]) -> dict[str, Any]:
    """ρ_DM = ρ_total (Gauss's law) − ρ_baryons (the mock's exact bulge + disc, smoothed alike), at
    the Sun; the statistical interval is the ensemble's (the baryons are exact here; for a real
    catalogue a baryon model and its uncertainty take their place)."""
    t_dm, t_b = float(A["true_rho_dm_smoothed"][0]), float(A["true_rho_baryon_smoothed"][0])
    t_tot = float(A["true_rho_smoothed"][0])
    rows = [{"dataset": "truth (smoothed)", "rho_dm": t_dm / RHO_UNIT, "rho_baryon": t_b / RHO_UNIT,
             "dm_fraction_of_total": t_dm / t_tot}]
    for name in names:
        for key, label in ((f"{name}_rho_sun", name), (f"{name}_rho_moments_sun", f"{name} (moments)"),
                           (f"{name}_rho_hybrid_sun", f"{name} (hybrid)")):
            if key not in A:
                continue
            est, st = float(A[key][0]), float(A[key + "_stat"][0])
            dm = est - t_b
            rows.append({"dataset": label, "rho_dm": dm / RHO_UNIT, "stat": st / RHO_UNIT, "rel_error": dm / t_dm - 1.0,
                         "rel_stat": st / t_dm})
    out: dict[str, Any] = {"sun": rows, "required_total_precision_for_10pct_dm": 0.1 * t_dm / t_tot}
    if "original_rho_x" in A:
        n = len(A["original_rho_x"])
        out["profiles"] = {ax: {"estimate": ((A[f"original_rho_{ax}"] - A["true_rho_baryon_smoothed"][off:off + n]) / RHO_UNIT).tolist(),
                                "stat": (A[f"original_rho_{ax}_stat"] / RHO_UNIT).tolist(),
                                "truth": (A["true_rho_dm_smoothed"][off:off + n] / RHO_UNIT).tolist()}
                           for ax, off in (("x", 1), ("z", 1 + n))}
    return out


def _summarise(cfg: PhaseSpaceConfig, A: dict[str, np.ndarray]) -> dict[str, Any]:
    """The Sun tables (paper units) and accuracy numbers."""
    names = dataset_names(cfg)
    out: dict[str, Any] = {"units": {"acceleration": "kpc/Gyr^2", "density": "1e7 Msun/kpc^3"}}
    rows_a = []
    has_truth = "true_acc" in A
    for comp, j in (("a_x", 0), ("a_y", 1), ("a_z", 2)):
        if has_truth:
            rows_a.append({"component": comp, "dataset": "truth", "value": A["true_acc"][0, j] * ACC_UNIT})
        for name in names:
            row = {"component": comp, "dataset": name, "value": A[f"{name}_acc"][0, j] * ACC_UNIT,
                   "stat": A[f"{name}_acc_stat"][0, j] * ACC_UNIT}
            if name == "smeared" and "reperturbed" in names:
                row["syst"] = abs(A["reperturbed_acc"][0, j] - A["smeared_acc"][0, j]) * ACC_UNIT
            rows_a.append(row)
        if "jeans_original_acc" in A:
            row = {"component": comp, "dataset": "jeans", "value": A["jeans_original_acc"][0, j] * ACC_UNIT,
                   "stat": A["jeans_original_acc_stat"][0, j] * ACC_UNIT}
            if "jeans_smeared_acc" in A and "jeans_reperturbed_acc" in A:
                row["syst"] = abs(A["jeans_reperturbed_acc"][0, j] - A["jeans_smeared_acc"][0, j]) * ACC_UNIT
            rows_a.append(row)
    out["sun_acceleration"] = rows_a
    rows_r = []
    if has_truth:
        rows_r.append({"dataset": "truth (smoothed)", "value": A["true_rho_smoothed"][0] / RHO_UNIT})
        rows_r.append({"dataset": "truth (point)", "value": A["true_rho_point"][0] / RHO_UNIT})
    for name in names:
        row = {"dataset": f"{name} (smoothed, fast)", "value": A[f"{name}_rho_sun"][0] / RHO_UNIT,
               "stat": A[f"{name}_rho_sun_stat"][0] / RHO_UNIT}
        if name == "smeared" and "reperturbed" in names:
            row["syst"] = abs(A["reperturbed_rho_sun"][0] - A["smeared_rho_sun"][0]) / RHO_UNIT
        rows_r.append(row)
    for label in ("moments", "hybrid"):
        for name in names:
            key = f"{name}_rho_{label}_sun"
            if key in A:
                row = {"dataset": f"{name} (smoothed, {label})", "value": A[key][0] / RHO_UNIT, "stat": A[key + "_stat"][0] / RHO_UNIT}
                if name == "smeared" and f"reperturbed_rho_{label}_sun" in A:
                    row["syst"] = abs(A[f"reperturbed_rho_{label}_sun"][0] - A[key][0]) / RHO_UNIT
                rows_r.append(row)
    if "original_rho_paper_sun" in A:
        rows_r.append({"dataset": "original (smoothed, paper MC)", "value": A["original_rho_paper_sun"][0] / RHO_UNIT,
                       "stat": A["original_rho_paper_sun_stat"][0] / RHO_UNIT})
    if "original_rho_div_sun" in A:
        rows_r.append({"dataset": "original (point, autograd)", "value": A["original_rho_div_sun"][0] / RHO_UNIT,
                       "stat": A["original_rho_div_sun_stat"][0] / RHO_UNIT})
    if "jeans_original_rho" in A:
        row = {"dataset": "jeans (point)", "value": A["jeans_original_rho"][0] / RHO_UNIT, "stat": A["jeans_original_rho_stat"][0] / RHO_UNIT}
        if "jeans_smeared_rho" in A and "jeans_reperturbed_rho" in A:
            row["syst"] = abs(A["jeans_reperturbed_rho"][0] - A["jeans_smeared_rho"][0]) / RHO_UNIT
        rows_r.append(row)
    out["sun_density"] = rows_r
    if has_truth:
        ta = A["true_acc"][0]
        norm = float(np.linalg.norm(ta))
        acc = {}
        keys = [(n, f"{n}_acc") for n in names] + ([("jeans", "jeans_original_acc")] if "jeans_original_acc" in A else [])
        for label, key in keys:
            est, st = A[key][0], A[key + "_stat"][0]
            acc[label] = {"radial_rel_error": float((est[0] - ta[0]) / ta[0]),
                          "vertical_error_over_norm": float((est[2] - ta[2]) / norm),
                          "radial_rel_stat": float(st[0] / abs(ta[0])), "vertical_stat_over_norm": float(st[2] / norm)}
        dens = {}
        for name in names:
            dens[name] = float(A[f"{name}_rho_sun"][0] / A["true_rho_smoothed"][0] - 1)
            for label in ("moments", "hybrid"):
                if f"{name}_rho_{label}_sun" in A:
                    dens[f"{name}_{label}"] = float(A[f"{name}_rho_{label}_sun"][0] / A["true_rho_smoothed"][0] - 1)
        if "original_rho_div_sun" in A:
            dens["original_point_autograd"] = float(A["original_rho_div_sun"][0] / A["true_rho_point"][0] - 1)
        if "original_rho_paper_sun" in A:
            dens["original_paper_mc"] = float(A["original_rho_paper_sun"][0] / A["true_rho_smoothed"][0] - 1)
        if "jeans_original_rho" in A:
            dens["jeans_point"] = float(A["jeans_original_rho"][0] / A["true_rho_point"][0] - 1)
        # profile accuracy: median |Δa|/|a_true| along the x and z lines (original)
        t = A["true_acc"][1:]
        e = A["original_acc"][1:]
        prof = float(np.median(np.linalg.norm(e - t, axis=1) / np.linalg.norm(t, axis=1)))
        out["accuracy"] = {"acceleration_at_sun": acc, "density_at_sun_rel_error": dens,
                           "acceleration_profiles_median_rel_error": prof}
        if "true_rho_dm_smoothed" in A:
            out["dark_matter"] = _dark_matter(A, names)
    return out
