"""TODO."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from darkml.config import config_to_dict
from darkml.runs import Run
from darkml.storage import DatasetError

from ..learn.train import read_history
from ..report import Report
from .config import ACC_UNIT, RHO_UNIT, PhaseSpaceConfig
from .dataset import dataset_names
from .ensembles import _members
from .measure import _summarise

_COLORS = {"original": "C0", "smeared": "C1", "reperturbed": "C2"}  # per dataset, in every figure


# =============================================================================================
# Report
# =============================================================================================
def _clip_to(ax, curves) -> None:
    """Fix the y-range to the truth and flow curves (±25%), so that a wild baseline point does not
    squash the figure (it stays in the tables)."""
    vals = np.concatenate([np.ravel(c) for c in curves]) if curves else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo, hi = vals.min(), vals.max()
        pad = 0.25 * max(hi - lo, 1e-9 + 0.05 * max(abs(lo), abs(hi)))
        ax.set_ylim(lo - pad, hi + pad)
        ax.autoscale(False)


def _figures(cfg: PhaseSpaceConfig, A: dict[str, np.ndarray]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    names = dataset_names(cfg)
    n = len(A["tx"])
    sl = {"x": slice(1, 1 + n), "z": slice(1 + n, 1 + 2 * n)}
    for axis in ("x", "z"):
        t = A["t" + axis]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, (comp, j) in zip(axes, (("a_x", 0), ("a_z", 2))):
            if "true_acc" in A:
                ax.plot(t, A["true_acc"][sl[axis], j] * ACC_UNIT, "k-", lw=2, label="truth")
            for name in names:
                mu = A[f"{name}_acc"][sl[axis], j] * ACC_UNIT
                sd = np.nan_to_num(A[f"{name}_acc_stat"][sl[axis], j]) * ACC_UNIT
                ax.errorbar(t, mu, sd, fmt="o", ms=3, color=_COLORS[name], label=f"flows: {name}", capsize=2)
            _clip_to(ax, ([A["true_acc"][sl[axis], j] * ACC_UNIT] if "true_acc" in A else [])
                     + [A[f"{name}_acc"][sl[axis], j] * ACC_UNIT for name in names])
            if "jeans_original_acc" in A:
                ax.errorbar(t, A["jeans_original_acc"][sl[axis], j] * ACC_UNIT, np.nan_to_num(A["jeans_original_acc_stat"][sl[axis], j]) * ACC_UNIT,
                            fmt="s", ms=3, mfc="none", color="C3", label="Jeans", capsize=2)
            ax.set_xlabel(f"{axis} − {axis}$_\\odot$ [kpc]")
            ax.set_ylabel(f"{comp} [kpc/Gyr$^2$]")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Accelerations along {axis} through the observer")
        fig.tight_layout()
        figs.append((fig, f"Accelerations along {axis} through the observer: flows (ensemble mean ± spread), Jeans, exact truth.",
                     f"acceleration_{axis}"))
    if "original_rho_x" in A and len(A["rho_tx"]):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        nd = len(A["rho_tx"])
        dsl = {"x": slice(1, 1 + nd), "z": slice(1 + nd, 1 + 2 * nd)}
        nj = len(A["acc_points"])
        jsl = {"x": slice(nj, nj + nd), "z": slice(nj + nd, nj + 2 * nd)}
        for ax, axis in zip(axes, ("x", "z")):
            t = A["rho_t" + axis]
            if "true_rho_smoothed" in A:
                ax.plot(t, A["true_rho_smoothed"][dsl[axis]] / RHO_UNIT, "k-", lw=2, label="truth (smoothed)")
                ax.plot(t, A["true_rho_point"][dsl[axis]] / RHO_UNIT, "k:", label="truth (point)")
            for name in names:
                if f"{name}_rho_{axis}" in A:
                    ax.errorbar(t, A[f"{name}_rho_{axis}"] / RHO_UNIT, np.nan_to_num(A[f"{name}_rho_{axis}_stat"]) / RHO_UNIT, fmt="o", ms=3,
                                color=_COLORS[name], label=f"flows: {name} (smoothed)", capsize=2)
            _clip_to(ax, ([A["true_rho_smoothed"][dsl[axis]] / RHO_UNIT, A["true_rho_point"][dsl[axis]] / RHO_UNIT]
                          if "true_rho_smoothed" in A else []) + [A[f"{n}_rho_{axis}"] / RHO_UNIT for n in names if f"{n}_rho_{axis}" in A])
            if "jeans_original_rho" in A:
                ax.errorbar(t, A["jeans_original_rho"][jsl[axis]] / RHO_UNIT, np.nan_to_num(A["jeans_original_rho_stat"][jsl[axis]]) / RHO_UNIT,
                            fmt="s", ms=3, mfc="none", color="C3", label="Jeans (point)", capsize=2)
            ax.set_xlabel(f"{axis} − {axis}$_\\odot$ [kpc]")
            ax.set_ylabel("ρ [10$^7$ M$_\\odot$/kpc$^3$]")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        figs.append((fig, "Mass density along x and z: kernel-smoothed Gauss's law (fast estimator) vs the smoothed truth; "
                          "Jeans and the point truth for reference.", "density_profiles"))
    if "original_dlnnu_dz_members" in A:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        z = A["nu_z"]
        if "true_dlnnu_dz" in A:
            ax.plot(z, A["true_dlnnu_dz"], "k-", lw=2, label="truth")
        for key, label, color in (("original_dlnnu_dz_untilted_members", "flows (untilted ν)", "C7"),
                                  ("original_dlnnu_dz_members", "flows" + (" (tilted ν)" if "original_dlnnu_dz_untilted_members" in A else ""), "C0")):
            if key in A:
                mu, sd = A[key].mean(0), (A[key].std(0, ddof=1) if len(A[key]) > 1 else np.zeros_like(z))
                ax.plot(z, mu, color=color, label=label)
                ax.fill_between(z, mu - sd, mu + sd, color=color, alpha=0.25)
        ax.set_xlabel("z − z$_\\odot$ [kpc]")
        ax.set_ylabel("∂ ln ν/∂z [kpc$^{-1}$]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs.append((fig, "Slope of the log stellar density along z through the observer (original data; ensemble mean ± spread) "
                          "against the mock's exact ν: through Gauss's law it sets the vertical flux, hence the density at the Sun.",
                     "dlnnu_dz"))
    return figs


def _training_figure(run: Run, cfg: PhaseSpaceConfig):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    any_curve = False
    for name in dataset_names(cfg):
        for k in range(_members(cfg, name)):
            h = read_history(run.logs / f"{name}-m{k}" / "metrics.csv")
            ep = [r["epoch"] for r in h if "val_loss" in r]
            vl = [r["val_loss"] for r in h if "val_loss" in r]
            if ep:
                any_curve = True
                ax.plot(ep, vl, color=_COLORS[name], alpha=0.7,
                        label=name if k == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation −⟨log f⟩")
    ax.grid(alpha=0.3)
    if any_curve:
        ax.legend()
    fig.tight_layout()
    return fig


def build_report(cfg: PhaseSpaceConfig, run: Run) -> Path:
    """Write ``report.html`` from ``profiles.npz`` and ``metrics.json``."""
    path = run.path / "profiles.npz"
    if not path.is_file():
        raise DatasetError(f"{path} missing; run the evaluate stage first")
    A = dict(np.load(path))
    met = run.metrics()
    meas = met.get("measure") or _summarise(cfg, A)
    rep = Report(f"Phase-space flows: accelerations and dark-matter density — {cfg.preset}",
                 subtitle="Buckley, Lim, Putney & Shih (arXiv:2205.01129), regenerated on a mock galaxy with exact truth")
    src = f"user catalogue {cfg.catalogue.path}" if cfg.catalogue.path else (
        "Milky-Way-like mock: MWPotential2014 (bulge + Miyamoto–Nagai disc + NFW halo) traced by an exact-equilibrium "
        "f(E, Lz) thin + thick disc" if cfg.mock.model == "milkyway" else "Plummer sphere with its isotropic DF")
    data = met.get("data", {})
    rep.add_text(f"<p>Data: {src}; observer at {tuple(cfg.mock.observer_kpc)} kpc, stars within {cfg.mock.radius_kpc} kpc "
                 f"(stars per dataset: {data.get('n_stars', '?')}). Flows: {cfg.flow.model.upper()} × {cfg.flow.transforms}, "
                 f"hidden {cfg.flow.hidden}, {cfg.flow.activation}; ensembles of {cfg.train.ensemble} (original) and "
                 f"{cfg.train.ensemble_smeared} (smeared, re-perturbed) bootstrap members. Accelerations from "
                 f"{cfg.measure.n_velocities} velocities per point ({cfg.measure.weighting}-weighted least squares); densities by the "
                 f"kernel-smoothed Gauss's law with bandwidths {tuple(cfg.measure.bandwidth_kpc)} kpc (truncated at "
                 f"{cfg.measure.truncation}σ), fast symmetric cubature ({cfg.measure.fast_nodes}, {cfg.measure.fast_velocities} "
                 "velocities per node, common random numbers).</p>"
                 "<p>stat. = spread of the ensemble (bootstrap) members; syst. = |re-perturbed − smeared| (leading-order "
                 "bias from measurement errors, the paper's Monte-Carlo error propagation).</p>")
    if "accuracy" in meas:
        acc = meas["accuracy"]
        a0 = acc["acceleration_at_sun"].get("original", {})
        def pct(v, fmt_=".2f", sign=True):
            return "–" if v is None or not math.isfinite(v) else f"{100 * v:{'+' if sign else ''}{fmt_}}%"

        rep.add_note(f"Accuracy at the Sun (original data): radial acceleration {pct(a0.get('radial_rel_error'))} "
                     f"(stat. {pct(a0.get('radial_rel_stat'), sign=False)}), vertical error "
                     f"{pct(a0.get('vertical_error_over_norm'))} of |a|, smoothed density "
                     f"{pct(acc['density_at_sun_rel_error'].get('original'), '.1f')}; median acceleration error along the "
                     f"profiles {pct(acc['acceleration_profiles_median_rel_error'], '.1f', False)}.")

    def fmt(r, digits):
        return {**r, **{k: (f"{r[k]:.{digits}f}" if isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) else "–")
                        for k in ("value", "stat", "syst")}}

    rep.add_heading("Acceleration at the Sun")
    rep.add_table([fmt(r, 0) for r in meas["sun_acceleration"]],
                  "Acceleration at the Sun [kpc/Gyr²]", columns=["component", "dataset", "value", "stat", "syst"])
    rep.add_heading("Mass density at the Sun")
    rep.add_table([fmt(r, 3) for r in meas["sun_density"]],
                  "Mass density at the Sun [10⁷ Msun/kpc³]; smoothed estimates compare with the smoothed truth, point "
                  "estimates with the point truth", columns=["dataset", "value", "stat", "syst"])
    dm = meas.get("dark_matter")
    if dm:
        rep.add_heading("Local dark-matter density")
        rep.add_table([{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in dm["sun"]],
                      "ρ_DM at the Sun = total (Gauss's law, smoothed) − the mock's exact baryons (bulge + disc, smoothed "
                      "alike) [10⁷ Msun/kpc³]; rel_error against the smoothed NFW halo")
        rep.add_text(f"<p>The halo is {100 * dm['sun'][0]['dm_fraction_of_total']:.1f} % of the total at the Sun, so a "
                     f"10 % measurement of ρ_DM needs the total to {100 * dm['required_total_precision_for_10pct_dm']:.2f} % "
                     "(with exact baryons).</p>")
    for fig, cap, name in _figures(cfg, A):
        rep.add_figure(fig, cap, name=name, figures_dir=run.figures)
    rep.add_figure(_training_figure(run, cfg), "Validation loss per epoch for every ensemble member.", name="training",
                   figures_dir=run.figures)
    if "cost" in meas:
        c = meas["cost"]
        rows = [{"quantity": "acceleration: network evaluations per point", "value": str(c["acceleration_evaluations_per_point"])},
                {"quantity": "acceleration: seconds per point", "value": f"{c['acceleration_s_per_point']:.3g}"},
                {"quantity": "density (fast): evaluations per point", "value": str(c["fast_density_evaluations_per_point"])},
                {"quantity": "density (fast): seconds per point", "value": f"{c['fast_density_s_per_point']:.3g}"},
                {"quantity": "density (paper MC): evaluations per point", "value": str(c["paper_density_evaluations_per_point"])},
                {"quantity": "speed-up in evaluations (paper / fast)",
                 "value": f"{c['paper_density_evaluations_per_point'] / c['fast_density_evaluations_per_point']:.0f}×"},
                {"quantity": "device", "value": c["device"]}]
        if c.get("paper_density_s_per_point"):
            rows.append({"quantity": "density (paper MC): seconds per point", "value": f"{c['paper_density_s_per_point']:.3g}"})
        rep.add_heading("Cost")
        rep.add_table(rows)
    if "train" in met:
        rows = []
        for name, t in met["train"].items():
            kl = t.get("kl_to_truth") or []
            for k, mm in enumerate(t["members"]):
                rows.append({"dataset": name, "member": k, "stars": t["n_stars"], "epochs": mm["epochs"],
                             "best val −⟨log f⟩": f"{mm['best_val_loss']:.4f}" if mm["best_val_loss"] is not None else "–",
                             "KL(true‖flow) [nats]": f"{kl[k]:.4f}" if k < len(kl) else "–"})
        rep.add_heading("Training")
        rep.add_table(rows)
    if meas.get("nu_tilt"):
        rows = []
        for name, t in meas["nu_tilt"].items():
            for k, g in enumerate(t["val_gain_nats_per_star"]):
                rows.append({"dataset": name, "member": k, "held-out gain [nats/star]": f"{g:+.2e}",
                             "χ² (no tilt)": f"{t['chi2'][k]:.1f}" if "chi2" in t else "–",
                             "p": f"{t['p_value'][k]:.2g}" if "p_value" in t else "–",
                             "c": " ".join(f"{c:+.3f}" for c in t["coef"][k])})
        rep.add_heading("Vertical tilt of ν")
        rep.add_text(f"<p>Each member's ν multiplied by exp(Σ<sub>k&lt;{cfg.flow.nu_tilt_terms}</sub> c<sub>k</sub> "
                     f"(z/w)<sup>k</sup> e<sup>−z²/2w²</sup>)/Z, w = {cfg.flow.nu_tilt_width_kpc} kpc, fitted by maximum "
                     "likelihood on its training stars (tilt.py). Held-out gain: mean log-likelihood change on the member's "
                     "validation stars; χ², p: Wald test of c = 0.</p>")
        rep.add_table(rows)
    rep.add_timings(met.get("timings_s", {}))
    rep.add_config(config_to_dict(cfg))
    return rep.write(run.report_path)
