"""Figures and report.html of the gas study (Table 1, Figs. 2-4, predicted-vs-true maps)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..config import config_to_dict
from ..learn.train import read_history
from ..report import Report
from ..runs import Run

log = logging.getLogger(__name__)

__all__ = ["build_report", "table1_rows"]

METRIC_LABELS = {
    "pearson": "Correlation coefficient",
    "scaled_abs_error": "Scaled absolute error",
    "hotspot_abs_error": "Hot-spot absolute error",
}
PAPER_TABLE1 = {
    "pearson": {"gp": 0.84, "cnn_wmae": 0.87, "cnn_poisson": 0.85},
    "scaled_abs_error": {"gp": 0.0137, "cnn_wmae": 0.0135, "cnn_poisson": 0.0136},
    "hotspot_abs_error": {"gp": 0.0238, "cnn_wmae": 0.0257, "cnn_poisson": 0.0263},
}


def _label(name: str) -> str:

    return MODEL_LABELS.get(name, FLOOR_LABELS.get(name, name))


def table1_rows(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows: one per metric, columns: each model's median [68% bootstrap interval] (valid planes)."""
    names = list(ev["models"])
    rows = []
    for m, lab in METRIC_LABELS.items():
        row: dict[str, Any] = {"metric (median over planes)": lab}
        for n in names:
            s = ev["models"][n][m]
            row[_label(n)] = s if s["value"] is not None else "–"
        rows.append(row)
    rows.append({"metric (median over planes)": "valid planes (scaled error)",
                 **{_label(n): f"{ev['models'][n]['scaled_abs_error']['n_valid']}/{ev['models'][n]['scaled_abs_error']['n_planes']}"
                    for n in names}})
    return rows


def _heatmaps(ev: dict[str, Any], names: list[str]):
    import matplotlib.pyplot as plt

    lows = ev["test_l_lo_deg"]
    fig, axes = plt.subplots(len(METRIC_LABELS), len(names), figsize=(2.6 * len(names) + 1, 8.5), squeeze=False)
    for r, m in enumerate(METRIC_LABELS):
        grids = [np.array(ev["heatmaps"][n][m], dtype=float) for n in names]
        finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
        vmin, vmax = (np.nanpercentile(finite, 2), np.nanpercentile(finite, 98)) if finite.size else (0, 1)
        for c, (n, g) in enumerate(zip(names, grids)):
            ax = axes[r, c]
            im = ax.imshow(np.ma.masked_invalid(g), origin="lower", aspect="auto", vmin=vmin, vmax=vmax,
                           cmap="viridis" if m == "pearson" else "magma_r",
                           extent=(min(lows), max(lows) + 1, -0.5, g.shape[0] - 0.5))
            ax.set_facecolor("white")
            if r == 0:
                ax.set_title(_label(n), fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{METRIC_LABELS[m]}\nring (velocity bin)", fontsize=8)
            if r == len(METRIC_LABELS) - 1:
                ax.set_xlabel("Galactic longitude [deg]", fontsize=8)
        fig.colorbar(im, ax=axes[r, :].tolist(), shrink=0.8)
    return fig


def _locality(hp: dict[str, Any]):
    import matplotlib.pyplot as plt

    rows = hp.get("trials", [])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if rows:
        w = np.array([r["window"] for r in rows])
        v = np.array([r["val_scaled_abs_error"] for r in rows])
        ax.scatter(w, v, s=14, alpha=0.6, label="trials")
        bw = hp.get("by_window", {})
        ks = sorted(int(k) for k in bw)
        ax.plot(ks, [bw[str(k)]["mean"] for k in ks], "o-", color="k", label="mean per window")
        ax.legend(fontsize=8)
    ax.set_xlabel("window size D [px]")
    ax.set_ylabel("validation scaled absolute error")
    ax.set_title("Locality (Fig. 2)")
    return fig


def _generalisation(ev: dict[str, Any], names: list[str]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    floors = [n for n in ("floor_conditional_median",) if n in ev["generalisation"]]
    for n in names + floors:
        g = ev["generalisation"][n]
        y = np.array([np.nan if v is None else v for v in g["mean_scaled_abs_error"]], dtype=float)
        ax.plot(g["distance_deg"], y, "o-" if n in names else "k--", ms=3, label=_label(n))
    ax.set_xlabel("distance from the training region [deg]")
    ax.set_ylabel("mean scaled absolute error (all bins)")
    ax.set_title("Generalisation (Fig. 3)")
    ax.legend(fontsize=7)
    return fig


def _maps(pred: dict[str, np.ndarray], names: list[str], n_show: int, lows: dict, rings_r: Any):
    import matplotlib.pyplot as plt

    tgt = pred["target"]
    order = np.argsort(-tgt.reshape(len(tgt), -1).sum(axis=1))
    pick = order[: max(1, n_show)]
    cols = ["source", "target"] + [n for n in names if f"pred_{n}" in pred]
    fig, axes = plt.subplots(len(pick), len(cols), figsize=(2.2 * len(cols), 2.3 * len(pick)), squeeze=False)
    for r, q in enumerate(pick):
        vmax = max(float(tgt[q].max()), 1e-9)
        for c, name in enumerate(cols):
            img = pred["source"][q] if name == "source" else tgt[q] if name == "target" else pred[f"pred_{name}"][q]
            ax = axes[r, c]
            ax.imshow(img, origin="lower", cmap="inferno", vmin=0, vmax=None if name == "source" else vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("12CO (input)" if name == "source" else "13CO (true)" if name == "target" else _label(name),
                             fontsize=8)
            if c == 0:
                t, k = int(pred["tile"][q]), int(pred["ring"][q])
                ax.set_ylabel(f"l = {lows.get(t, t):.0f}-{lows.get(t, t) + 1:.0f} deg\nring {k}", fontsize=8)
    return fig


def _curves(run: Run, cfg) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    any_ = False
    for loss in cfg.cnn.losses:
        h = read_history(run.logs / f"cnn_{loss}" / "metrics.csv")
        ys = [r.get("val_loss") for r in h if r.get("val_loss") is not None]
        if ys:
            ax.plot(range(len(ys)), ys, label=f"{loss} CNN: validation MAE (scaled)")
            any_ = True
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MAE [scaled units]")
    if any_:
        ax.legend(fontsize=8)
        ax.set_yscale("log")
    return fig


def build_report(cfg, run: Run) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    metrics = run.metrics()
    ev = metrics.get("evaluate")
    if not ev:
        raise FileNotFoundError(f"{run.metrics_path}: no evaluation results; run the evaluate stage first")
    models = [n for n in ev["models"] if not n.startswith("floor_")]
    floors = [n for n in ev["models"] if n.startswith("floor_")]
    src = "synthetic MOPRA-like sky" if cfg.data.source == "synthetic" else f"MOPRA cubes in {cfg.data.mopra_dir}"
    rep = Report(f"Gas skymaps: 13CO from 12CO ({cfg.preset})",
                 subtitle=f"{src}; train l = {cfg.data.train_l_deg}, test l = {cfg.data.test_l_deg} deg; "
                          f"{ev['n_test_planes']} test planes (rings x tiles)")
    rep.add_heading("Table 1: medians over test planes")
    rep.add_table(table1_rows(ev), "Median per (velocity bin, tile) plane with a 68% bootstrap interval over planes; "
                                   "invalid planes (constant target) excluded")
    rep.add_table([{"metric": METRIC_LABELS[m], **{_label(k): v for k, v in PAPER_TABLE1[m].items()}}
                   for m in METRIC_LABELS], "The paper's Table 1 (real MOPRA data) for reference")
    nf = ev.get("noise_floor")
    if nf:
        ratio = ev.get("ratio_to_floor", {})
        rep.add_text(
            "<p><b>Noise floor.</b> The best predictor available given the known generating relation: the better of "
            "(i) the physics inverse with every pixel's true line width, isotope ratio and excitation temperature "
            "('oracle inverse') and (ii) a Monte-Carlo estimate of median[13CO | 12CO] per tile position and ring "
            "from independent realizations of the test tiles. Median scaled absolute error of the floor: "
            f"<b>{nf['scaled_abs_error']:.4g}</b>; correlation {nf['pearson'] if nf['pearson'] is None else round(nf['pearson'], 3)}. "
            "'bound: noise-free target' predicts the target's own noise-free version: no predictor from 12CO can do better "
            "than the target noise it cannot see.</p>"
            + "<p>Model error / floor: " + ", ".join(f"{_label(k)} {v:.2f}" for k, v in ratio.items() if v is not None) + "</p>")
    rk = ev.get("ranking", {})
    if rk:
        rep.add_text("<p><b>Ranking</b> (best first). Overall scaled error: " + " &gt; ".join(_label(n) for n in rk["scaled_abs_error"])
                     + ". Hot spots: " + " &gt; ".join(_label(n) for n in rk["hotspot_abs_error"])
                     + ". Correlation: " + " &gt; ".join(_label(n) for n in rk["pearson"]) + ".</p>")
    rep.add_heading("Fig. 4: metrics per velocity bin and longitude")
    rep.add_figure(_heatmaps(ev, models + floors), "Per-plane metrics on the test region; white = invalid "
                   "(constant target: empty ring, no emission above 3 sigma, or no hot spot)", name="heatmaps",
                   figures_dir=run.figures)
    hp = metrics.get("train", {}).get("hpsearch")
    if hp:
        rep.add_heading("Fig. 2: locality")
        rep.add_figure(_locality(hp), "Validation error of the Optuna trials grouped by window size", name="locality",
                       figures_dir=run.figures)
        rep.add_table([{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in hp["trials"]],
                      f"Optuna trials ({hp['sampler']} sampler); best: {hp.get('best')}")
    rep.add_heading("Fig. 3: generalisation")
    rep.add_figure(_generalisation(ev, models), "Mean scaled absolute error over velocity bins per tile, against the "
                   "distance of the tile centre from the training region", name="generalisation", figures_dir=run.figures)
    rep.add_table([{"model": _label(n), "slope [per deg]": ev["generalisation"][n]["trend"]["slope"],
                    "slope error": ev["generalisation"][n]["trend"]["slope_err"]} for n in models],
                  "Least-squares trend of the error with distance")
    pred_path = run.path / "predictions.npz"
    if pred_path.is_file() and cfg.eval.maps_shown > 0:
        with np.load(pred_path) as z:
            pred = {k: z[k] for k in z.files}
        lows = dict(zip(ev["test_tiles"], ev["test_l_lo_deg"]))
        rep.add_heading("Predicted vs true maps")
        rep.add_figure(_maps(pred, models, cfg.eval.maps_shown, lows, None),
                       "Brightest test planes: 12CO input, 13CO target (after the 3-sigma cut) and predictions, "
                       "common colour scale per row", name="maps", figures_dir=run.figures)
    tr = metrics.get("train", {})
    if tr.get("cnn"):
        rep.add_heading("Training")
        rep.add_figure(_curves(run, cfg), "Validation mean absolute error per epoch", name="curves", figures_dir=run.figures)
        rep.add_table([{"model": k, "epochs": v.get("epochs"), "best val MAE (scaled)": v.get("best_val_mae_scaled"),
                        "patches/s": v.get("train_patches_per_s_median")} for k, v in tr["cnn"].items()], "CNN training")
    if tr.get("gp"):
        g = tr["gp"]
        rep.add_table([{"GPs (batched)": g["n_gps"], "patches per GP": g["n_train_per_gp"],
                        "fit [s]": round(g["fit_seconds"], 1), "bins on pooled GP": str(g["pooled_rings"]),
                        **{f"median {k}": round(v, 4) for k, v in g["hyperparameters_median"].items()}}],
                      "Gaussian processes")
    ds = metrics.get("dataset", {})
    if ds.get("inventory"):
        rep.add_heading("Survey release")
        rep.add_table([{k: f[k] for k in ("path", "kind", "isotope", "used", "note")} for f in ds["inventory"]["files"]],
                      f"Every FITS file under {ds['inventory']['folder']}, classified by its header")
        rep.add_table(ds.get("tiles", []), "Tiles: fraction of the tile inside the cubes (footprint) and holding data")
    rep.add_timings(metrics.get("timings_s", {}))
    rep.add_config(config_to_dict(cfg))
    return rep.write(run.report_path)


MODEL_LABELS = {
    "gp": "Matern GP",
    "cnn_wmae": "WMAE CNN",
    "cnn_poisson": "Poisson CNN",
    "ring_linear": "per-ring linear",
    "physics_inverse": "physics inverse",
}


FLOOR_LABELS = {
    "floor_conditional_median": "floor: MC median[13CO|12CO]",
    "floor_oracle_inverse": "floor: oracle inverse",
    "floor_target_noise": "bound: noise-free target",
}
