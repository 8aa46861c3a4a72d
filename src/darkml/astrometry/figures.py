"""Figures of the astrometric-lensing study and the assembly of its ``report.html``.

Figure numbers refer to Vattis, Toomey & Koushiappas: Fig. 3 (noiseless velocity signal),
Fig. 4 (signal+noise vs noise-only maps), Fig. 5 (architectures on scenario C), Fig. 6 (ROC
per scenario), Fig. 7 (positive integrated-gradient attributions beside the lenses).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import healpy as hp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..parallel import chunk_rng  # noqa: E402
from ..report import Report, fmt_ci  # noqa: E402
from ..runs import Run  # noqa: E402
from ..storage import SampleStore  # noqa: E402
from . import attribution, maps  # noqa: E402
from .config import SCENARIOS, AstrometryConfig  # noqa: E402

log = logging.getLogger(__name__)

SCENARIO_STYLE = {  # Fig. 6: red for sigma_u = 1, blue for 0.1; width grows with N_q
    "A": ("tab:red", 1.2), "B": ("tab:blue", 1.2), "C": ("tab:red", 2.4), "D": ("tab:blue", 2.4), "E": ("tab:red", 3.6),
}


def _moll_row(fig, maps: list[np.ndarray], titles: list[str], row: int, nrows: int, unit: str, symmetric: bool = True,
              ncols: int | None = None) -> None:
    """Mollweide panels in row ``row`` of an ``nrows`` x ``ncols`` grid (default: one column per map)."""
    ncols = ncols or len(maps)
    for k, (m, title) in enumerate(zip(maps, titles)):
        lim = np.nanpercentile(np.abs(m), 99.5) or 1.0
        kw = dict(min=-lim, max=lim, cmap="RdBu_r") if symmetric else dict(min=0, max=lim, cmap="viridis")
        hp.mollview(m, fig=fig.number, sub=(nrows, ncols, row * ncols + k + 1), title=title, unit=unit,
                    cbar=True, notext=True, hold=False, **kw)


def fig_signal(cfg: AstrometryConfig, signal: np.ndarray) -> Any:
    """Fig. 3 (velocity row): noiseless µ_l, µ_b and |µ| in nas/yr."""
    fig = plt.figure(figsize=(13, 3.4))
    mu = signal * 1e3  # µas/yr -> nas/yr
    _moll_row(fig, [mu[0], mu[1]], ["µ_l", "µ_b"], 0, 1, "nas/yr", ncols=3)
    amp = np.hypot(mu[0], mu[1])
    hp.mollview(np.log10(np.maximum(amp, 1e-6)), fig=fig.number, sub=(1, 3, 3), title="log10 |µ| [nas/yr]",
                cmap="magma", notext=True, hold=False)
    return fig


def fig_noisy(cfg: AstrometryConfig, signal: np.ndarray, scenario: str) -> Any:
    """Fig. 4: one signal+noise and one noise-only map of ``scenario`` (display noise draw)."""
    s = cfg.data.survey(scenario)
    rng = chunk_rng(cfg.seed, 0, 99)
    with_sig, _ = maps.add_noise(signal.astype(np.float64), n_q=s.n_q, sigma_u=s.sigma_u, rng=rng)
    noise, _ = maps.add_noise(np.zeros_like(signal, dtype=np.float64), n_q=s.n_q, sigma_u=s.sigma_u, rng=rng)
    fig = plt.figure(figsize=(10, 6.4))
    _moll_row(fig, [with_sig[0], with_sig[1]], [f"signal+noise µ_l ({scenario})", f"signal+noise µ_b ({scenario})"], 0, 2, "µas/yr")
    _moll_row(fig, [noise[0], noise[1]], ["noise only µ_l", "noise only µ_b"], 1, 2, "µas/yr")
    return fig


def fig_roc(ev: dict[str, Any], model: str, scenarios: list[str]) -> Any:
    """Fig. 6: ROC per scenario (solid: CNN, dotted: χ² baseline)."""
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for s in scenarios:
        if s not in ev["roc"] or model not in ev["roc"][s]:
            continue
        color, lw = SCENARIO_STYLE.get(s, ("tab:gray", 1.5))
        r = ev["roc"][s][model]
        a = ev["auc"][s][model]["value"]
        ax.plot(r["fpr"], r["tpr"], color=color, lw=lw, label=f"{s}: AUC {a:.3f}")
        b = ev["baseline"][s]
        ax.plot(b["roc"]["fpr"], b["roc"]["tpr"], color=color, lw=1, ls=":", alpha=0.8)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{model}: ROC per scenario (dotted: χ² baseline)")
    ax.legend(loc="lower right", fontsize=9)
    return fig


def fig_models(ev: dict[str, Any], scenario: str) -> Any:
    """Fig. 5: architectures compared on one scenario."""
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for m, r in ev["roc"].get(scenario, {}).items():
        ax.plot(r["fpr"], r["tpr"], lw=2, label=f"{m}: AUC {ev['auc'][scenario][m]['value']:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"architectures, scenario {scenario}")
    ax.legend(loc="lower right")
    return fig


def fig_history(training: dict[str, Any]) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for tag, res in training.items():
        h = res.get("history", [])
        ep = [r["epoch"] for r in h if "val_loss" in r]
        axes[0].plot(ep, [r["val_loss"] for r in h if "val_loss" in r], marker="o", label=tag)
        ep2 = [r["epoch"] for r in h if "val_auc" in r]
        axes[1].plot(ep2, [r["val_auc"] for r in h if "val_auc" in r], marker="o", label=tag)
    axes[0].set(xlabel="epoch", ylabel="validation loss")
    axes[1].set(xlabel="epoch", ylabel="validation AUC")
    axes[1].legend(fontsize=8)
    return fig


def fig_attribution(cfg: AstrometryConfig, run: Run, att: dict[str, Any]) -> Any | None:
    """Fig. 7: smoothed positive attribution beside the noiseless signal and the lenses."""
    path = run.path / "attributions.npz"
    if not path.is_file() or not att:
        return None
    data = np.load(path)
    positive = data["positive"]
    sig_store = SampleStore.open(run.dataset_path / "signal.zarr")
    proj = maps.projection_index(cfg.sky.nside, cfg.sky.image_height, cfg.sky.image_width)
    n = len(positive)
    fig, axes = plt.subplots(n, 2, figsize=(11, 2.9 * n), squeeze=False)
    extent = (180, -180, -90, 90)
    for k in range(n):
        si = int(data["signal_index"][k])
        signal = maps.project(sig_store.read("signal", [si])[0].astype(np.float64), proj)
        cat = sig_store.table("subhalos", samples=[si])
        rows, cols = attribution.strongest_lens_pixels(cat, cfg.sky.image_height, cfg.sky.image_width, cfg.evaluate.n_lenses,
                                                      nside=cfg.sky.nside, max_angle_deg=cfg.sky.max_angle_deg)
        a = positive[k] / (positive[k].max() or 1)
        axes[k, 0].imshow(a, extent=extent, cmap="inferno", aspect="auto")
        amp = np.hypot(signal[0], signal[1])
        axes[k, 1].imshow(amp / (amp.max() or 1), extent=extent, cmap="viridis", aspect="auto")
        h, w = cfg.sky.image_height, cfg.sky.image_width
        lon = 180 - (cols + 0.5) * 360 / w
        lat = 90 - (rows + 0.5) * 180 / h
        for ax in axes[k]:
            ax.scatter(lon, lat, s=60, facecolors="none", edgecolors="cyan", lw=1.4)
            ax.set(xlabel="l [deg]", ylabel="b [deg]")
        score = att["per_map"][k]["score"]
        axes[k, 0].set_title(f"positive IG attribution (σ={cfg.evaluate.smoothing_px:g} px), localisation {score:.2f}")
        axes[k, 1].set_title("noiseless |µ| (normalised); circles: strongest lenses")
    fig.tight_layout()
    return fig


def build_report(cfg: AstrometryConfig, run: Run) -> Path:
    m = run.metrics()
    ev = m.get("evaluation", {})
    rep = Report(f"darkml · astrometric lensing · preset {cfg.preset}",
                 subtitle="Milky Way subhalos lensing quasar proper motions (Vattis, Toomey & Koushiappas)")
    model = cfg.train.model
    rep.add_heading("Result: AUC per scenario")
    rows = []
    for s in cfg.data.scenarios:
        sv = cfg.data.survey(s)
        auc = ev.get("auc", {}).get(s, {}).get(model)
        base = ev.get("baseline", {}).get(s, {}).get("auc")
        rows.append({"scenario": s, "N_q": f"{sv.n_q:.0e}", "σ_u [µas/yr]": f"{sv.sigma_u:g}",
                     "per-pixel noise [µas/yr]": f"{sv.sigma_u / np.sqrt(sv.n_q / (12 * cfg.sky.nside**2)):.2e}",
                     f"{model} AUC [{int(cfg.evaluate.ci_level * 100)}% CI]": auc or "–", "χ² baseline AUC": base or "–"})
    rep.add_table(rows, "Held-out test set; intervals from bootstrap resampling of the test maps")
    if ev.get("roc"):
        rep.add_figure(fig_roc(ev, model, cfg.data.scenarios), "ROC curves per scenario (like Fig. 6); dotted: χ² excess-power baseline",
                       name="roc", figures_dir=run.figures)
    cs = cfg.train.compare_scenario
    if len(ev.get("roc", {}).get(cs, {})) > 1:
        rep.add_figure(fig_models(ev, cs), f"Architectures on scenario {cs} (like Fig. 5)", name="architectures", figures_dir=run.figures)
        rep.add_table([{"model": k, "AUC": v} for k, v in ev["auc"][cs].items()], f"AUC by architecture, scenario {cs}")
    sig_path = run.dataset_path / "signal.zarr"
    if sig_path.exists():
        store = SampleStore.open(sig_path, require_complete=False)
        done = store.complete_samples()
        if done.size:
            signal = store.read("signal", [int(done[0])])[0]
            n_sub = int(store.read("n_subhalos", [int(done[0])])[0])
            rep.add_heading("Maps")
            rep.add_figure(fig_signal(cfg, signal), f"Noiseless lensing proper motion of one population ({n_sub} subhalos, "
                           f"nside {cfg.sky.nside}, effect truncated at {cfg.sky.max_angle_deg:g}°; like Fig. 3, velocity row)",
                           name="signal", figures_dir=run.figures)
            show = "C" if "C" in cfg.data.scenarios else cfg.data.scenarios[0]
            rep.add_figure(fig_noisy(cfg, signal, show), f"Scenario {show}: signal+noise (top) and noise only (bottom), like Fig. 4",
                           name="noisy", figures_dir=run.figures)
            amp = np.hypot(signal[0], signal[1]) * 1e3
            rep.add_table([{"quantity": "median |µ| [nas/yr]", "value": f"{np.median(amp):.3g}"},
                           {"quantity": "max |µ| [nas/yr]", "value": f"{amp.max():.3g}"},
                           {"quantity": "rms µ per component [µas/yr]", "value": f"{np.sqrt(np.mean(signal**2)):.3g}"}],
                          "Signal scale of the map above (paper: median |µ| ~ 1e-2 nas/yr)")
    if m.get("training"):
        rep.add_heading("Training")
        rep.add_figure(fig_history(m["training"]), "Validation loss and AUC per epoch", name="history", figures_dir=run.figures)
        rep.add_table([{"job": k, "epochs": v["epochs"], "best val loss": v["best_val_loss"]} for k, v in m["training"].items()])
    att = ev.get("attribution")
    if att:
        rep.add_heading("Localisation with integrated gradients")
        rep.add_text(
            f"<p>Scenario {att['scenario']}: mean localisation score {fmt_ci(att['mean_score'])} "
            "(positive attribution per unit area inside r_s-scaled discs around the strongest lenses, divided by the same "
            "for random discs; 1 = no localisation). See docs/astrometry.md.</p>")
        f = fig_attribution(cfg, run, att)
        if f is not None:
            rep.add_figure(f, "Positive integrated-gradient attributions smoothed with a Gaussian (like Fig. 7)", name="attribution",
                           figures_dir=run.figures)
    rep.add_config(cfg.model_dump(mode="json"))
    rep.add_timings(m.get("timings_s", {}))
    return rep.write(run.report_path)


__all__ = ["build_report", "fig_signal", "fig_noisy", "fig_roc", "fig_models", "fig_attribution", "SCENARIOS"]
