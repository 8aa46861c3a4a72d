"""TODO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from darkml.learn.ssl import METHOD_LABELS
from darkml.report import Report, fmt_ci
from darkml.runs import Run

from .config import PAPER_TABLES, SSLConfig, _ds_label, paper_encoder
from .pretraining import _pct


# ---------------------------------------------------------------------------------------
# summary and report
# ---------------------------------------------------------------------------------------
def summarise(cfg: SSLConfig, m: dict) -> dict:
    """Count the (dataset, encoder, method) triples where SSL + fine-tuning ≥ supervised in
    macro AUC with all labels (the paper's claim), and the same at every label fraction."""
    res = m.get("results", {})
    out: dict[str, Any] = {"ssl_ge_supervised": {}, "pairs": []}
    for frac in cfg.finetune.label_fractions:
        key = _pct(frac)
        n = k = 0
        for inst, encs in res.items():
            for enc, inits in encs.items():
                sup = inits.get("supervised", {}).get("classify", {}).get(key, {}).get("macro_auc", {}).get("value")
                for meth in cfg.methods:
                    v = inits.get(meth, {}).get("classify", {}).get(key, {}).get("macro_auc", {}).get("value")
                    if sup is None or v is None:
                        continue
                    n += 1
                    k += v >= sup
                    if frac == 1.0:
                        out["pairs"].append({"dataset": inst, "encoder": enc, "method": meth, "supervised": sup, "ssl": v,
                                             "ssl_ge_supervised": bool(v >= sup)})
        out["ssl_ge_supervised"][key] = {"count": int(k), "of": int(n)}
    return out


def _get(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _paper_cell(inst: str, method: str, enc: str) -> tuple[str, str]:
    v = PAPER_TABLES.get(inst, {}).get((method, paper_encoder(enc)))
    return (f"{v[0]:.3f}", f"{v[1]:.3f}") if v else ("–", "–")


def _ordered_instruments(cfg: SSLConfig) -> list[str]:
    """The datasets with Model A (hst) and Model B (euclid) first, as in the paper."""
    return ([i for i in ("hst", "euclid") if i in cfg.data.instruments]
            + [i for i in cfg.data.instruments if i not in ("hst", "euclid")])


def _fig_mass(cfg: SSLConfig, run: Run):
    import matplotlib.pyplot as plt

    insts = _ordered_instruments(cfg)
    nr, nc = len(cfg.encoders), len(insts)
    fig, axes = plt.subplots(nr, nc, figsize=(4.6 * nc, 4.2 * nr), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    any_data = False
    for i, enc in enumerate(cfg.encoders):
        for j, inst in enumerate(insts):
            ax = axes[i][j]
            lo, hi = -24.0, -22.0
            for k, init in enumerate(["supervised", *cfg.methods]):
                p = run.checkpoints / inst / enc / init / "regress" / "predictions.npz"
                if not p.is_file():
                    continue
                d = np.load(p)
                t, y = d["true"], d["pred"]
                if len(t) < 2:
                    continue
                any_data = True
                lo, hi = min(lo, float(t.min())), max(hi, float(t.max()))
                edges = np.linspace(t.min(), t.max() + 1e-9, 9)
                mid, med, q16, q84 = [], [], [], []
                for a, b in zip(edges[:-1], edges[1:]):
                    s = (t >= a) & (t < b)
                    if s.sum() >= 2:
                        mid.append(0.5 * (a + b))
                        med.append(np.median(y[s]))
                        q16.append(np.quantile(y[s], 0.16))
                        q84.append(np.quantile(y[s], 0.84))
                if not mid:
                    continue
                col = "k" if init == "supervised" else colors[(k - 1) % len(colors)]
                lab = "supervised (random init)" if init == "supervised" else METHOD_LABELS[init]
                med_a = np.array(med)
                ax.errorbar(np.array(mid) + 0.01 * (k - 3), med_a, yerr=[med_a - np.array(q16), np.array(q84) - med_a],
                            marker="o", ms=3, capsize=2, lw=1.2 if init != "supervised" else 2.0, color=col, label=lab)
            ax.plot([lo, hi], [lo, hi], ls="--", color="0.5", lw=1)
            ax.set_title(f"{_ds_label(inst)}, {enc}")
            ax.set_xlabel(r"simulated $\log_{10}(m_a/\mathrm{eV})$")
            ax.set_ylabel(r"predicted $\log_{10}(m_a/\mathrm{eV})$")
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig, any_data


def _fig_label_efficiency(cfg: SSLConfig, res: dict):
    import matplotlib.pyplot as plt

    insts, encs = cfg.data.instruments, cfg.encoders
    fig, axes = plt.subplots(len(insts), len(encs), figsize=(4.6 * len(encs), 3.8 * len(insts)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fr = cfg.finetune.label_fractions
    for i, inst in enumerate(insts):
        for j, enc in enumerate(encs):
            ax = axes[i][j]
            for k, init in enumerate(["supervised", *cfg.methods]):
                vals = [_get(res, inst, enc, init, "classify", _pct(f), "macro_auc") for f in fr]
                pts = [(f, v) for f, v in zip(fr, vals) if v]
                if not pts:
                    continue
                x = np.array([p[0] for p in pts]) * (1 + 0.03 * (k - 3))
                v = np.array([p[1]["value"] for p in pts])
                lo = np.array([p[1]["lo"] for p in pts])
                hi = np.array([p[1]["hi"] for p in pts])
                col = "k" if init == "supervised" else colors[(k - 1) % len(colors)]
                ax.errorbar(x, v, yerr=[np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)], marker="o", ms=3, capsize=2,
                            color=col, lw=2.0 if init == "supervised" else 1.2,
                            label="supervised (random init)" if init == "supervised" else METHOD_LABELS[init])
            ax.set_xscale("log")
            ax.set_xlabel("fraction of training labels")
            ax.set_ylabel("test macro AUC")
            ax.set_title(f"{_ds_label(inst)}, {enc}")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fig_pretrain(cfg: SSLConfig, res: dict):
    import matplotlib.pyplot as plt

    insts, encs = cfg.data.instruments, cfg.encoders
    fig, axes = plt.subplots(2, len(insts) * len(encs), figsize=(3.8 * len(insts) * len(encs), 6.0), squeeze=False)
    col = 0
    for inst in insts:
        for enc in encs:
            for meth in cfg.methods:
                hist = _get(res, inst, enc, meth, "pretrain", "history", default=[]) or []
                ep = [h["epoch"] for h in hist if h.get("train_loss") is not None]
                if not ep:
                    continue
                axes[0][col].plot(ep, [h["train_loss"] for h in hist if h.get("train_loss") is not None], marker=".", label=meth)
                es = [(h["epoch"], h["val_embed_std"]) for h in hist if h.get("val_embed_std") is not None]
                if es:
                    axes[1][col].plot(*zip(*es), marker=".", label=meth)
            axes[0][col].set_title(f"{inst}, {enc}")
            axes[0][col].set_ylabel("pre-training loss")
            axes[1][col].set_ylabel("collapse index (val views)")
            axes[1][col].set_xlabel("epoch")
            col += 1
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _init_rows(cfg: SSLConfig, res: dict, key: str, init_col: str, random_label: str, cells) -> list[dict]:
    """One table row per (dataset, encoder, initialisation) holding a ``key`` result:
    dataset, encoder, the initialisation under ``init_col``, then ``cells(result)``."""
    rows = []
    for inst in cfg.data.instruments:
        for enc in cfg.encoders:
            for init in ["supervised", *cfg.methods]:
                r = _get(res, inst, enc, init, key)
                if r:
                    rows.append({"dataset": _ds_label(inst), "encoder": enc,
                                 init_col: random_label if init == "supervised" else METHOD_LABELS[init], **cells(r)})
    return rows


def write_report(run: Run, cfg: SSLConfig | None = None) -> Path:
    """Tables 1 and 2, Fig. 2, label efficiency, linear probes, pre-training diagnostics."""
    cfg = cfg or run.load_config(SSLConfig)
    m = run.metrics()
    res = m.get("results", {})
    rep = Report(f"Self-supervised learning on strong-lensing images — {cfg.preset}",
                 subtitle="Deshmukh, Sachdev, Gleyzer & Toomey (2023): contrastive, BYOL, SimSiam and DINO pre-training, "
                          "fine-tuned against supervised baselines")
    quick_encs = [e for e in cfg.encoders if e not in ("resnet50", "vit")]
    rep.add_text(
        "<p>Each encoder is pre-trained without labels on the training images, then fine-tuned with a fully connected "
        "head (3-way classification: no substructure / CDM subhalos / axion vortex; 1-output regression of "
        "log<sub>10</sub>(m<sub>a</sub>/eV) on the axion images). The <em>supervised</em> column is the same "
        "architecture trained from random initialisation with the same augmentations and schedule. Intervals are "
        f"{int(100 * cfg.eval.level)}% bootstrap intervals over the test set ({cfg.eval.n_boot} resamples). "
        "This paper's Model A is HST-like and Model B Euclid-like (the equivariant-network paper labels them the "
        f"other way round). Data source: <b>{cfg.data.source}</b>.</p>")
    if cfg.data.source == "toy":
        rep.add_note("Toy images (rings with blobs / line segments), not the lensing simulator: the numbers test the "
                     "pipeline, not the physics.")
    if quick_encs:
        rep.add_note(f"Small encoders {', '.join(quick_encs)} stand in for the paper's ResNet50 / ViT in this preset; "
                     "the paper columns refer to ResNet50 / ViT.")
    summ = m.get("summary", {}).get("ssl_ge_supervised", {})
    if summ:
        parts = [f"{k}% labels: {v['count']} of {v['of']}" for k, v in summ.items()]
        rep.add_text("<p><b>SSL + fine-tuning ≥ supervised (macro AUC)</b> in " + "; ".join(parts)
                     + " (dataset, encoder, method) combinations. The paper: 13 of 14 (one tie).</p>")
    for t, inst in enumerate(_ordered_instruments(cfg), start=1):
        rows = []
        for meth in cfg.methods:
            for enc in cfg.encoders:
                sup = _get(res, inst, enc, "supervised", "classify", "100", "macro_auc")
                ssl = _get(res, inst, enc, meth, "classify", "100", "macro_auc")
                ps, pf = _paper_cell(inst, meth, enc)
                rows.append({
                    "Method": METHOD_LABELS[meth], "Encoder": enc, "Supervised": sup or "–",
                    "Self-supervised + fine-tuning": ssl or "–",
                    "Δ (SSL − sup.)": f"{ssl['value'] - sup['value']:+.3f}" if sup and ssl else "–",
                    "paper: supervised": ps, "paper: SSL + fine-tuning": pf,
                })
        rep.add_heading(f"Table {t}: {_ds_label(inst)} test-set classification, macro AUC")
        rep.add_table(rows, f"{_ds_label(inst)}, 100% of the training labels; test set of "
                            f"{_get(m, 'data', inst, 'n_test', default='?')} images")
    rep.add_heading("Figure 2: predicted versus simulated axion mass")
    fig, ok = _fig_mass(cfg, run)
    rep.add_figure(fig, "Median prediction of log10(m_a/eV) in bins of the simulated value with 16–84% bands "
                        "(test axion images); left Model A (HST-like), right Model B (Euclid-like); black: supervised "
                        "baseline.", name="fig2-mass", figures_dir=run.figures)
    if not ok:
        rep.add_note("No regression predictions yet.")
    rows = _init_rows(cfg, res, "regress", "initialisation", "random (supervised)",
                      lambda r: {"RMSE [dex]": r["rmse"], "MAE [dex]": r["mae"], "n_train": r["n_train"]})
    for inst, c in m.get("ceiling", {}).items():
        rows.append({"dataset": _ds_label(inst), "encoder": "–",
                     "initialisation": "Bayes-optimal oracle (knows lens, source, vortex angle)",
                     "RMSE [dex]": c["rmse"], "MAE [dex]": c["mae"], "n_train": "–"})
    rep.add_table(rows, "Axion-mass regression on the test axion images (log10 m_a; the prior spans 2 dex, "
                        "so predicting its mean gives RMSE ≈ 0.58 dex). The oracle row is the physical ceiling: the "
                        "posterior mean of log10 m_a from each test image given every other parameter of the record "
                        "(darkml.lensing.mass_oracle); no estimator that sees only the image can beat it.")
    rep.add_heading("Label efficiency (beyond the paper)")
    rep.add_figure(_fig_label_efficiency(cfg, res), "Test macro AUC against the fraction of training labels used "
                   "for fine-tuning (the validation set is subsampled alike).", name="label-efficiency", figures_dir=run.figures)
    rows = []
    for inst in cfg.data.instruments:
        for enc in cfg.encoders:
            for init in ["supervised", *cfg.methods]:
                row: dict[str, Any] = {"dataset": _ds_label(inst), "encoder": enc,
                                       "initialisation": "random (supervised)" if init == "supervised" else METHOD_LABELS[init]}
                for f in cfg.finetune.label_fractions:
                    row[f"{_pct(f)}% labels"] = _get(res, inst, enc, init, "classify", _pct(f), "macro_auc") or "–"
                rows.append(row)
    rep.add_table(rows, "Macro AUC by fraction of training labels")
    if cfg.finetune.linear_probe:
        rep.add_heading("Linear probes of the frozen encoders (beyond the paper)")
        rows = _init_rows(cfg, res, "probe", "encoder weights", "random init",
                          lambda p: {"macro AUC": p["macro_auc"], "RMSE log10 m_a [dex]": p.get("rmse", "–")})
        rep.add_table(rows, "Logistic regression (classes) and ridge regression (axion mass) on frozen features; "
                            "'random init' probes the untrained encoder")
    rep.add_heading("Pre-training diagnostics")
    rows = []
    for inst in cfg.data.instruments:
        for enc in cfg.encoders:
            for meth in cfg.methods:
                p = _get(res, inst, enc, meth, "pretrain")
                if p:
                    rows.append({"dataset": _ds_label(inst), "encoder": enc, "method": meth, "epochs": p.get("epochs"),
                                 "train loss": fmt_ci(p.get("train_loss")), "val loss": fmt_ci(p.get("val_loss")),
                                 "collapse index, random init": fmt_ci(p.get("collapse_init")),
                                 "collapse index, pre-trained": fmt_ci(p.get("collapse_final")),
                                 "projector collapse index": fmt_ci(p.get("collapse_projector")),
                                 "images/s": fmt_ci(p.get("images_per_s"), 1)})
    rep.add_table(rows, "Final-epoch pre-training losses and collapse indices of the representation on the clean "
                        "validation images (eval mode; per-dimension std of the L2-normalised features × sqrt(dim): "
                        "≈1 spread isotropically, 0 collapsed; DINO's projector index is that of the teacher's "
                        "centred, sharpened distribution)")
    rep.add_figure(_fig_pretrain(cfg, res), "Pre-training loss and validation collapse index per epoch.",
                   name="pretrain-curves", figures_dir=run.figures)
    rep.add_config(cfg)
    rep.add_timings(m.get("timings_s", {}))
    return rep.write(run.report_path)
