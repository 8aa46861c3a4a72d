"""The dataset report of the strong-lensing simulator: example images, parameter and subhalo
distributions, the substructure's detectability and the flux-only check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from darkml.lensing.params import CLASS_NAMES, SCALAR_FIELDS, LensingSimConfig
from darkml.metrics import auc, bootstrap_ci
from darkml.report import Report, fmt_ci
from darkml.runs import atomic_write_json
from darkml.storage import DatasetError

from .dataset import SPLITS, open_split


# ---------------------------------------------------------------------------------------
# quality checks and report
# ---------------------------------------------------------------------------------------
def flux_check(image_sums: np.ndarray, flux_scale: np.ndarray, labels: np.ndarray, n_boot: int = 200) -> dict:
    """AUC of total flux alone for each pair of classes (and one-vs-rest), for the physical
    total flux (sum of e-/s) and for the stored peak-normalised images (``image_sums`` = the
    per-image sum of ``images``). 0.5 = no information."""
    tot_norm = np.asarray(image_sums, dtype=np.float64)
    tot_phys = tot_norm * flux_scale
    out: dict = {}
    for name, score in (("physical_flux", tot_phys), ("normalised_flux", tot_norm)):
        res = {}
        for a, b in ((0, 1), (0, 2), (1, 2)):
            keep = (labels == a) | (labels == b)
            res[f"{CLASS_NAMES[a]}_vs_{CLASS_NAMES[b]}"] = bootstrap_ci(
                auc, (labels[keep] == b).astype(int), score[keep], n_boot=n_boot)
        for c in range(3):
            res[f"{CLASS_NAMES[c]}_vs_rest"] = bootstrap_ci(auc, (labels == c).astype(int), score, n_boot=n_boot)
        res["max_abs_deviation"] = float(max(abs(v["value"] - 0.5) for v in res.values() if isinstance(v, dict)))
        out[name] = res
    return out


def _example_figure(images: dict, labels, params, n_examples):
    import matplotlib.pyplot as plt

    names = list(SCALAR_FIELDS)
    fig, axes = plt.subplots(3, n_examples, figsize=(1.6 * n_examples, 5.2))
    axes = np.atleast_2d(axes)
    for c in range(3):
        idx = np.nonzero(labels == c)[0][:n_examples]
        for j in range(n_examples):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(idx):
                ax.axis("off")
                continue
            i = idx[j]
            ax.imshow(images[int(i)][0], origin="lower", cmap="magma")
            if c == 1:
                ax.set_title(f"n_sub={int(params[i, names.index('n_sub')])}", fontsize=7)
            elif c == 2:
                ax.set_title(f"log m={params[i, names.index('log10_m_axion')]:.2f}", fontsize=7)
            if j == 0:
                ax.set_ylabel(CLASS_NAMES[c], fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.25, left=0.04, right=0.99, top=0.95, bottom=0.02)
    return fig


def _param_figure(labels, params):
    import matplotlib.pyplot as plt

    names = [n for n in SCALAR_FIELDS if n not in ("label", "noise_seed")]
    ncol = 4
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(12, 2.2 * nrow))
    for ax, name in zip(axes.flat, names):
        col = params[:, SCALAR_FIELDS.index(name)]
        for c in range(3):
            v = col[labels == c]
            v = v[np.isfinite(v)]
            if v.size and (name not in ("n_sub", "sub_mass_total") or c == 1) and (
                    not name.startswith(("vortex", "log10")) or c == 2):
                ax.hist(v, bins=30, histtype="step", color=f"C{c}", label=CLASS_NAMES[c])
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.subplots_adjust(wspace=0.3, hspace=0.6, left=0.05, right=0.98, top=0.96, bottom=0.04)
    return fig


def _subhalo_figure(table, cfg: LensingSimConfig, n_cdm: int, counts):
    import matplotlib.pyplot as plt
    from scipy import stats

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    C = cfg.cdm
    m = np.asarray(table.get("mass", np.zeros(0)))
    edges = np.logspace(math.log10(C.mass_min), math.log10(C.mass_max), 25)
    if m.size:
        h, _ = np.histogram(m, edges)
        centers = np.sqrt(edges[1:] * edges[:-1])
        axes[0].loglog(centers, h / np.diff(np.log10(edges)) / max(n_cdm, 1), "o", ms=3, label="drawn")
        beta = C.slope + 1
        lo, hi = C.mass_min, C.mass_max
        # expected dN/dlog10 M per image = mean * M p(M) ln10 with p ∝ M^slope normalised on [lo, hi]
        norm = (hi**beta - lo**beta) / beta if abs(beta) > 1e-12 else math.log(hi / lo)
        axes[0].loglog(centers, C.mean_number * centers ** (C.slope + 1) / norm * math.log(10), "-", label=f"dN/dM ∝ M^{C.slope}")
        axes[0].legend(fontsize=7)
    axes[0].set_xlabel("subhalo mass [Msun]")
    axes[0].set_ylabel("dN/dlog10 M per CDM image")
    if m.size:
        r = np.hypot(table["x"], table["y"])
        axes[1].hist(r, bins=30, range=(0, C.r_max * 1.05), histtype="step")
    axes[1].set_xlabel("subhalo radius [arcsec] (lens at centre)")
    k = np.arange(0, int(max(counts.max(initial=0), C.mean_number * 2)) + 1)
    axes[2].hist(counts, bins=np.arange(k[-1] + 2) - 0.5, density=True, histtype="step", label="drawn")
    axes[2].plot(k, stats.poisson.pmf(k, C.mean_number), ".-", ms=3, label=f"Poisson({C.mean_number:g})")
    axes[2].set_xlabel("subhalos per CDM image")
    axes[2].legend(fontsize=7)
    fig.subplots_adjust(wspace=0.3, left=0.07, right=0.98, bottom=0.18)
    return fig


def _detectability_figure(res: dict[str, np.ndarray], summary: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), constrained_layout=True)
    colors = {1: "tab:orange", 2: "tab:green"}
    z_all = np.sqrt(np.maximum(np.concatenate([res["chi2_raw"], res["chi2_refit"]])[
        np.concatenate([res["label"], res["label"]]) > 0], 1e-6))
    bins = np.logspace(np.log10(max(z_all.min(), 1e-2)), np.log10(max(z_all.max(), 1.0)) + 0.05, 30)
    for c in (1, 2):
        sel = res["label"] == c
        if not sel.any():
            continue
        row = summary[CLASS_NAMES[c]]
        for key, ls in (("raw", "--"), ("refit", "-")):
            z = np.sqrt(np.maximum(res[f"chi2_{key}"][sel], 1e-6))
            axes[0].hist(np.clip(z, bins[0], bins[-1]), bins=bins, histtype="step", ls=ls, color=colors[c], lw=1.5,
                         label=f"{CLASS_NAMES[c]} {key}: oracle AUC {fmt_ci(row[key]['oracle_auc'], 3)}")
    axes[0].set_xscale("log")
    axes[0].axvline(1.0, color="k", lw=0.8, ls=":")
    axes[0].set_xlabel("sqrt(chi^2) of the substructure [sigma]  (dashed: raw, solid: after the smooth-lens refit)")
    axes[0].set_ylabel("images")
    axes[0].legend(fontsize=7, loc="upper left")
    sel = res["label"] == 1
    if sel.any():
        m = res["sub_mass_total"][sel]
        axes[1].scatter(m, np.sqrt(np.maximum(res["chi2_raw"][sel], 1e-6)), s=10, marker="x", color="tab:gray",
                        label="raw")
        axes[1].scatter(m, np.sqrt(np.maximum(res["chi2_refit"][sel], 1e-6)), s=10, color=colors[1], label="refit")
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].axhline(1.0, color="k", lw=0.8, ls=":")
        axes[1].set_xlabel("total subhalo mass of the image [Msun]")
        axes[1].set_ylabel("sqrt(chi^2) [sigma]")
        axes[1].legend(fontsize=8)
    return fig


def _sensitivity_figure(rows: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6), constrained_layout=True)
    m = np.array([r["median_sub_mass_total"] for r in rows])
    cnn = [r["cnn"]["auc"] for r in rows]
    yerr = np.array([[c["value"] - c["lo"] for c in cnn], [c["hi"] - c["value"] for c in cnn]])
    ax.errorbar(m, [c["value"] for c in cnn], yerr=yerr, marker="o", capsize=3, color="tab:blue",
                label=f"CNN ({rows[0]['cnn']['n_train']} training images per point)")
    for key, ls, label in (("oracle_refit", "-", "oracle, lens refitted (classifier ceiling)"),
                           ("oracle_raw", "--", "oracle, lens known")):
        v = [r[key]["oracle_auc"] for r in rows]
        ax.plot(m, [x["value"] for x in v], ls=ls, color="k", lw=1.2, label=label)
        ax.fill_between(m, [x["lo"] for x in v], [x["hi"] for x in v], color="k", alpha=0.1, lw=0)
    for r in rows:
        ax.annotate(f"{r['slope']:+.1f}", (r["median_sub_mass_total"], r["cnn"]["auc"]["value"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=7, color="tab:blue")
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(0.4, 1.03)
    ax.set_xlabel("median total subhalo mass per CDM image [Msun]  (labels: mass-function slope)")
    ax.set_ylabel("AUC, no substructure vs CDM")
    ax.legend(fontsize=8, loc="center left")
    return fig


def report_dataset(path: Path | str, out: Path | str | None = None, split: str = "train", n_examples: int = 8,
                   max_samples: int = 30_000, detectability: Path | str | None = None,
                   sensitivity: list[dict] | None = None) -> Path:
    """Write ``<path>/report.html`` (+ ``<path>/report/metrics.json`` and figures): example
    images per class, every sampled parameter's distribution, the subhalo mass function, the
    substructure's detectability (``detectability``: the stage's ``.npz``) and the flux-only AUC
    check. Reads at most ``max_samples`` (a balanced prefix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    store = open_split(path, split)
    n = min(store.n_samples, max_samples - max_samples % 3)
    sl = slice(0, n)
    labels = store.read("label", sl)
    flux_scale = store.read("flux_scale", sl)
    params = store.read("params", sl)
    sums = np.empty(n)
    for i in range(store.n_chunks):  # chunk by chunk: never all images in memory
        c = store.chunk_slice(i)
        if c.start >= n:
            break
        c = slice(c.start, min(c.stop, n))
        sums[c] = store.read("images", c).reshape(c.stop - c.start, -1).sum(axis=1, dtype=np.float64)
    first = np.concatenate([np.nonzero(labels == k)[0][:n_examples] for k in range(3)])
    examples = dict(zip(first.tolist(), store.read("images", first)))
    cfg = LensingSimConfig.model_validate(store.attrs["config"])
    table = store.table("subhalos", np.arange(n))
    out_html = Path(out) if out else path / "report.html"
    fig_dir = out_html.parent / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)

    flux = flux_check(sums, flux_scale, labels)
    n_cdm = int((labels == 1).sum())
    counts = params[labels == 1, SCALAR_FIELDS.index("n_sub")]
    sizes = {}
    if store.path != path:  # a dataset directory: list its splits
        for sp in SPLITS:
            try:
                sizes[sp] = open_split(path, sp).n_samples
            except DatasetError:
                sizes[sp] = None
    sub_mass = params[labels == 1, SCALAR_FIELDS.index("sub_mass_total")]
    median_mass = float(np.median(sub_mass)) if sub_mass.size else None
    metrics = {"split": split, "n_samples_read": n, "splits": sizes, "flux_only_auc": flux,
               "median_sub_mass_total_per_cdm_image": median_mass,
               "subhalos_per_cdm_image": {"mean": float(counts.mean()) if counts.size else None,
                                          "var": float(counts.var()) if counts.size else None},
               "images_per_class": {CLASS_NAMES[c]: int((labels == c).sum()) for c in range(3)}}
    rep = Report(f"Strong-lensing dataset — {cfg.preset}", subtitle=str(path))
    rep.add_text(
        f"<p>{n} images of the <b>{split}</b> split read (classes interleave). Instrument "
        f"<b>{cfg.instrument.name}</b>: {cfg.image.num_pix}×{cfg.image.num_pix} pixels of {cfg.instrument.pixel_scale}″, "
        f"PSF FWHM {cfg.instrument.psf_fwhm}″, backend <b>{cfg.dataset.backend}</b>. Images are peak-normalised "
        "(multiply by <code>flux_scale</code> for e-/s per pixel).</p>"
        f"<p>CDM population: {cfg.cdm.count} count {cfg.cdm.mean_number:g}, dN/dM ∝ M^{cfg.cdm.slope:g} on "
        f"[{cfg.cdm.mass_min:.0e}, {cfg.cdm.mass_max:.0e}] Msun; main lens <b>{cfg.lens.mode}</b>. "
        + (f"<b>Median total subhalo mass per CDM image: {median_mass:.3g} Msun</b> "
           f"(expected mean {cfg.cdm.mean_total_mass():.3g}).</p>" if median_mass is not None else "</p>"))
    rep.add_heading("Example images")
    fig = _example_figure(examples, labels, params, n_examples)
    rep.add_figure(fig, "Rows: no substructure, CDM subhalos, axion vortex (peak-normalised, origin lower left).",
                   name="examples", figures_dir=fig_dir)
    plt.close(fig)
    if detectability is not None:
        from .detectability import summarise

        with np.load(detectability) as f:
            det = {k: f[k] for k in f.files}
        summary = summarise(det, seed=cfg.seed)
        metrics["detectability"] = summary
        rep.add_heading("Detectability of the substructure")
        rep.add_text(
            "<p>sqrt(χ²) of each image's substructure: its noise-free image against the same lens and source "
            "without substructure (<i>raw</i>), and against the best substructure-free SIE + shear + Sérsic model "
            "refitted to it (<i>refit</i>, 14 parameters, Levenberg–Marquardt from the truth). The oracle AUC "
            "E[Φ(sqrt(χ²)/√2)] is what a known-template test could reach against smooth images; the refit "
            "number is the ceiling for a classifier, which never sees the true lens.</p>")
        rows = [{"class": name, "images": row["n_images"],
                 "sqrt(χ²) raw [16/50/84 %]": "{q16:.3g} / {median:.3g} / {q84:.3g}".format(**row["raw"]["sqrt_chi2"]),
                 "sqrt(χ²) refit": "{q16:.3g} / {median:.3g} / {q84:.3g}".format(**row["refit"]["sqrt_chi2"]),
                 "oracle AUC raw": fmt_ci(row["raw"]["oracle_auc"], 3),
                 "oracle AUC refit": fmt_ci(row["refit"]["oracle_auc"], 3)} for name, row in summary.items()]
        rep.add_table(rows, "Detectability per substructure class (68 % bootstrap intervals over images)")
        fig = _detectability_figure(det, summary)
        rep.add_figure(fig, "Left: sqrt(χ²) per image, raw (dashed) and after the refit (solid); the dotted line is "
                       "1σ. Right: CDM images against their total subhalo mass.", name="detectability",
                       figures_dir=fig_dir)
        plt.close(fig)
    if sensitivity:
        rep.add_heading("Substructure sensitivity")
        rep.add_text(
            "<p>No substructure against CDM: the same network and budget trained at each CDM mass-function slope "
            "(everything else as this run's config), against the median total subhalo mass per image, beside the "
            "detectability oracle on the same test images — how much substructure a lens must hold before a CNN "
            "sees it.</p>")
        rows = [{"slope": f"{r['slope']:+.2f}", "median mass / image [Msun]": f"{r['median_sub_mass_total']:.3g}",
                 "CNN AUC": fmt_ci(r["cnn"]["auc"], 3), "oracle (refit)": fmt_ci(r["oracle_refit"]["oracle_auc"], 3),
                 "oracle (lens known)": fmt_ci(r["oracle_raw"]["oracle_auc"], 3),
                 "median sqrt(χ²) refit": f"{r['oracle_refit']['sqrt_chi2']['median']:.3g}"} for r in sensitivity]
        rep.add_table(rows, "Sensitivity curve (68 % bootstrap intervals)")
        fig = _sensitivity_figure(sensitivity)
        rep.add_figure(fig, "Classifier AUC against the total subhalo mass per image (points; error bars 68 %), "
                       "the refitted-lens oracle (solid) and the known-lens oracle (dashed).", name="sensitivity",
                       figures_dir=fig_dir)
        plt.close(fig)
    atomic_write_json(fig_dir / "metrics.json", metrics)
    rep.add_heading("Flux-only check")
    rows = []
    for key, res in flux.items():
        for pair, v in res.items():
            if isinstance(v, dict):
                rows.append({"flux": key, "classes": pair, "AUC [68% CI]": fmt_ci(v)})
    rep.add_table(rows, "AUC of the total image flux alone (0.5 = the classes are not separable by flux)")
    rep.add_note(f"max |AUC - 0.5|: physical flux {flux['physical_flux']['max_abs_deviation']:.3f}, "
                 f"normalised flux {flux['normalised_flux']['max_abs_deviation']:.3f}")
    rep.add_heading("Sampled parameters")
    fig = _param_figure(labels, params)
    rep.add_figure(fig, "Distribution of every sampled parameter, per class (units: arcsec, Msun, mag, eV).",
                   name="parameters", figures_dir=fig_dir)
    plt.close(fig)
    fig = _subhalo_figure(table, cfg, n_cdm, counts)
    rep.add_figure(fig, "CDM subhalos: mass function against the input power law, radii, counts against Poisson.",
                   name="subhalos", figures_dir=fig_dir)
    plt.close(fig)
    info = path / "simulate.json"
    if info.is_file():
        sim = json.loads(info.read_text())
        rep.add_timings({f"simulate {k}": v["seconds"] for k, v in sim.get("timings", {}).items()})
    rep.add_json(metrics, "metrics.json")
    rep.add_config(cfg)
    rep.write(out_html)
    return out_html
