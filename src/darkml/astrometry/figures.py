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


def survey_style(n_q: float, sigma_u: float) -> tuple[Any, float]:
    """Fig. 6's convention: colour by σ_u (red 1 µas/yr, blue 0.1, in between on a log scale), width by N_q."""
    from matplotlib.colors import to_rgb

    t = float(np.clip((np.log10(sigma_u) + 1.0) / 1.0, 0.0, 1.0))      # 0 at 0.1, 1 at 1 µas/yr
    red, blue = np.array(to_rgb("tab:red")), np.array(to_rgb("tab:blue"))
    return tuple(t * red + (1 - t) * blue), 1.2 + 1.2 * max(np.log10(n_q / 1e8), 0.0)


def fig_roc(ev: dict[str, Any], model: str, scenarios: list[str], surveys: dict[str, Any]) -> Any:
    """Fig. 6: ROC per scenario, the CNN beside the χ² baseline; AUC with its interval in the legends."""
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.4), layout="constrained")
    for s in scenarios:
        if s not in ev["roc"] or model not in ev["roc"][s]:
            continue
        color, lw = survey_style(surveys[s].n_q, surveys[s].sigma_u)
        r = ev["roc"][s][model]
        axes[0].plot(r["fpr"], r["tpr"], color=color, lw=lw, label=f"{s}: {fmt_ci(ev['auc'][s][model])}")
        b = ev["baseline"][s]
        axes[1].plot(b["roc"]["fpr"], b["roc"]["tpr"], color=color, lw=lw, label=f"{s}: {fmt_ci(b['auc'])}")
    for ax, title in zip(axes, (f"{model} (CNN)", "χ² excess-power baseline")):
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize=8.5, title="AUC [68% CI]", title_fontsize=8.5)
    return fig


def fig_snr(ev: dict[str, Any], scenarios: list[str], surveys: dict[str, Any]) -> Any | None:
    """Distribution of the oracle SNR of the test signal maps per scenario (the physical ceiling)."""
    ce = ev.get("ceiling", {})
    if not ce:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    for s in scenarios:
        if s not in ce:
            continue
        color, lw = survey_style(surveys[s].n_q, surveys[s].sigma_u)
        v = np.asarray(ce[s]["snr"]["values"], float)
        ax.hist(v, bins=np.geomspace(max(v.min(), 1e-2), v.max() * 1.01, 30), histtype="step", color=color, lw=lw,
                label=f"{s}: oracle AUC {fmt_ci(ce[s]['oracle_auc'])}")
    ax.set(xscale="log", xlabel="oracle SNR = sqrt(Σ|µ|²)/σ_pix", ylabel="test maps")
    ax.legend(fontsize=8.5, loc="upper right")
    return fig


def fig_learning_curve(lc: dict[str, Any], surveys: dict[str, Any]) -> Any:
    """Test AUC against training maps per class, with the χ² baseline, the oracle and the extrapolation."""
    fig, ax = plt.subplots(figsize=(7.8, 4.8), layout="constrained")
    for s, r in lc.items():
        color, lw = survey_style(surveys[s].n_q, surveys[s].sigma_u)
        n = np.asarray(r["sizes"], float)
        v = np.array([a["value"] for a in r["auc"]])
        err = np.array([[a["value"] - a["lo"], a["hi"] - a["value"]] for a in r["auc"]]).T
        ax.errorbar(n, v, yerr=err, color=color, lw=lw, marker="o", capsize=3, label=f"{s}: CNN")
        ax.axhline(r["oracle_auc"], color=color, ls="--", lw=1, label=f"{s}: oracle ceiling {r['oracle_auc']:.3f}")
        ax.axhline(r["chi2_auc"]["value"], color=color, ls=":", lw=1, label=f"{s}: χ² baseline")
        ex = r["extrapolation"]
        if ex.get("auc") is not None:
            t = ex["target_n_per_class"]
            ax.errorbar([t], [ex["auc"]], yerr=[[ex["auc"] - ex["lo"]], [ex["hi"] - ex["auc"]]], color=color, marker="s",
                        mfc="white", capsize=3, ls="none", label=f"{s}: extrapolated to {t:,}: {ex['auc']:.3f}")
    ax.axvline(25_000, color="0.6", lw=0.8)
    ax.plot([25_000], [0.723], marker="*", ms=13, color="k", ls="none", label="paper, C: 0.723")
    ax.set(xscale="log", xlabel="training maps per class", ylabel="test AUC", ylim=(0.45, 1.01))
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def fig_frontier(ev: dict[str, Any], model: str, surveys: dict[str, Any], nside: int) -> Any:
    """AUC against per-pixel noise for every survey of the grid: CNN, χ² baseline and oracle."""
    fig, ax = plt.subplots(figsize=(8.6, 5.0), layout="constrained")
    marks = {1e8: "o", 4e8: "D", 1e9: "s", 3e9: "^"}
    for s, sv in surveys.items():
        if s not in ev["auc"]:
            continue
        x = maps.per_pixel_noise(sv.n_q, sv.sigma_u, nside)
        color, _ = survey_style(sv.n_q, sv.sigma_u)
        a = ev["auc"][s][model]
        ax.errorbar([x], [a["value"]], yerr=[[a["value"] - a["lo"]], [a["hi"] - a["value"]]], marker=marks.get(sv.n_q, "o"),
                    color=color, capsize=3, ls="none", ms=7)
        b = ev["baseline"][s]["auc"]
        ax.plot([x], [b["value"]], marker=marks.get(sv.n_q, "o"), mfc="none", color=color, ls="none", ms=7)
        ax.plot([x], [ev["ceiling"][s]["oracle_auc"]["value"]], marker="_", color="k", ms=14, ls="none")
        ax.annotate(s, (x, a["value"]), textcoords="offset points", xytext=(6, -3), fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=m, color="0.3", ls="none", label=f"N_q = {q:.0e}") for q, m in marks.items()]
    handles += [Line2D([], [], marker="o", color="0.3", ls="none", label="filled: CNN (68% CI)"),
                Line2D([], [], marker="o", mfc="none", color="0.3", ls="none", label="open: χ² baseline"),
                Line2D([], [], marker="_", color="k", ms=14, ls="none", label="oracle ceiling")]
    ax.axvline(maps.per_pixel_noise(1e9, 1.0, nside), color="tab:red", lw=0.6, ls=":")
    ax.set(xscale="log", xlabel="per-pixel noise σ_u / sqrt(N_q / N_pix) [µas/yr]", ylabel="test AUC", ylim=(0.45, 1.02))
    ax.legend(handles=handles, fontsize=8, loc="lower left")
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
        ce = ev.get("ceiling", {}).get(s, {})
        rows.append({"scenario": s, "N_q": f"{sv.n_q:.0e}", "σ_u [µas/yr]": f"{sv.sigma_u:g}",
                     "per-pixel noise [µas/yr]": f"{sv.sigma_u / np.sqrt(sv.n_q / (12 * cfg.sky.nside**2)):.2e}",
                     f"{model} AUC [{int(cfg.evaluate.ci_level * 100)}% CI]": auc or "–", "χ² baseline AUC": base or "–",
                     "median oracle SNR": f"{ce['snr']['median']:.2f}" if ce else "–",
                     "oracle AUC (ceiling)": ce.get("oracle_auc", "–")})
    rep.add_table(rows, "Held-out test set; intervals from bootstrap resampling of the test maps. Oracle: the "
                        "known-template test, the best any method can do on these maps (docs/astrometry.md)")
    surveys = {s: cfg.data.survey(s) for s in cfg.data.scenarios}
    if ev.get("roc"):
        rep.add_figure(fig_roc(ev, model, cfg.data.scenarios, surveys),
                       "ROC curves per scenario (like Fig. 6): red σ_u = 1, blue σ_u = 0.1 µas/yr, line width grows with "
                       "N_q; the CNN (left) beside the χ² excess-power baseline (right)", name="roc", figures_dir=run.figures)
    f = fig_snr(ev, cfg.data.scenarios, surveys)
    if f is not None:
        rep.add_figure(f, "Physical ceiling: oracle signal-to-noise of the test signal maps per scenario, and the AUC of the "
                          "known-template test it implies", name="ceiling", figures_dir=run.figures)
    if ev.get("frontier"):
        rep.add_heading("Sensitivity frontier and the paper's claims")
        rep.add_figure(fig_frontier(ev, model, surveys, cfg.sky.nside), "AUC against per-pixel noise for every survey of "
                       "the grid (colour: σ_u, marker: N_q); dotted line: scenario C's noise", name="frontier",
                       figures_dir=run.figures)
        fr = ev["frontier"]
        c1 = fr["claim1_per_pixel_noise_only"]
        rep.add_table([{"pair": f"{r['a']} vs {r['b']}", "per-pixel noise": f"{r['per_pixel_noise']:.2e}",
                        "Δ AUC CNN [68% CI]": r["cnn"], "Δ AUC χ² [68% CI]": r["chi2"],
                        "consistent with 0": "yes" if r["cnn_consistent"] and r["chi2_consistent"] else "no"}
                       for r in c1["pairs"]], f"Claim 1 (AUC depends on the survey only through σ_u/√n_q): "
                                              f"{'holds' if c1['holds'] else 'fails'}; {c1['test']}")
        c2 = fr["claim2_ska20_auc_0p8"]
        if c2.get("cnn_auc"):
            rep.add_text(f"<p><b>Claim 2</b> (σ_u = 0.5 µas/yr, N_q = 1e8 gives AUC ≳ 0.8): CNN {fmt_ci(c2['cnn_auc'])}, "
                         f"χ² {fmt_ci(c2['chi2_auc'])}, oracle ceiling {fmt_ci(c2['oracle_auc'])}; scenario C (lower "
                         f"per-pixel noise) CNN {fmt_ci(c2.get('scenario_C_cnn_auc'))}. "
                         f"{'Holds' if c2['holds'] else 'Does not hold'} at this budget.</p>")
    if ev.get("learning_curve"):
        rep.add_heading("Learning curve")
        rep.add_figure(fig_learning_curve(ev["learning_curve"], surveys), "Test AUC against training maps per class (same "
                       "network and epochs), the χ² baseline and the oracle ceiling; open squares: extrapolation to the "
                       "paper's 25,000 maps per class", name="learning-curve", figures_dir=run.figures)
        rep.add_table([{"scenario": s, "maps per class": n, "CNN AUC [68% CI]": a} for s, r in ev["learning_curve"].items()
                       for n, a in zip(r["sizes"], r["auc"])], "Learning curve")
        rep.add_table([{"scenario": s, "model": r["extrapolation"]["model"],
                        "extrapolated AUC [68% CI]": {"value": r["extrapolation"]["auc"], "lo": r["extrapolation"]["lo"],
                                                      "hi": r["extrapolation"]["hi"]}
                        if r["extrapolation"].get("auc") is not None else r["extrapolation"].get("reason"),
                        "oracle ceiling": r["oracle_auc"]}
                       for s, r in ev["learning_curve"].items()], "Extrapolation to 25,000 maps per class")
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
            f"<p>Scenario {att['scenario']}, {att.get('n_maps', len(att.get('maps', [])))} test signal maps: localisation "
            "score = positive attribution per unit area inside r_s-scaled discs around the strongest lenses, divided by the "
            "same for random discs (1 = no localisation). See docs/astrometry.md.</p>")
        if att.get("methods"):
            rep.add_table([{"attribution": k, "mean score [68% CI]": v["score"], "maps with p < 0.05": v["fraction_p_below_0.05"]}
                           for k, v in att["methods"].items()],
                          "Localisation of integrated gradients against two references on the same maps")
        f = fig_attribution(cfg, run, att)
        if f is not None:
            rep.add_figure(f, "Positive integrated-gradient attributions smoothed with a Gaussian (like Fig. 7)", name="attribution",
                           figures_dir=run.figures)
    rep.add_config(cfg.model_dump(mode="json"))
    rep.add_timings(m.get("timings_s", {}))
    return rep.write(run.report_path)


__all__ = ["build_report", "fig_signal", "fig_noisy", "fig_roc", "fig_snr", "fig_models", "fig_attribution", "survey_style",
           "SCENARIOS"]
