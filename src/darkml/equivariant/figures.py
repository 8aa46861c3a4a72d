"""TODO."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkml import metrics
from darkml.equivariant.models import DESCRIPTIONS
from darkml.runs import Run

from ..report import Report, fmt_ci
from .benchmark import _tag
from .config import (
    CLASS_NAMES,
    PAPER_LABELS,
    PAPER_TABLE1,
    PAPER_TABLE2,
    BenchmarkConfig,
)


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def _label(dataset: str) -> str:
    return PAPER_LABELS.get(dataset, dataset)


def _fig_roc(cfg: BenchmarkConfig, dataset: str, test: dict[str, Any]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0))
    for k, cname in enumerate(CLASS_NAMES):
        ax = axes[k]
        for i, (model, res) in enumerate(test.items()):
            roc = res["roc"][cname]
            ax.plot(roc["fpr"], roc["tpr"], color=f"C{i}", label=f"{DESCRIPTIONS[model]} (AUC {roc['auc']:.4f})")
        chance = np.logspace(-3, 0, 50)
        ax.plot(chance, chance, ":", color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_xlabel("false-positive rate")
        ax.set_title(f"{cname} vs rest")
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("true-positive rate")
    fig.suptitle(_label(dataset))
    fig.tight_layout()
    return fig


def _fig_mass(cfg: BenchmarkConfig, run: Run, dataset: str, models: list[str]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        path = run.path / "predictions" / f"{_tag(cfg, dataset, model)}.npz"
        if not path.is_file():
            ax.axis("off")
            continue
        d = np.load(path)
        y, p = d["target"], d["pred"]
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot(y, p, ".", ms=2, alpha=0.5)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xlabel("true log10(m_a / eV)")
        ax.set_title(f"{DESCRIPTIONS[model]} (RMSE {metrics.rmse(y, p):.3f})", fontsize=9)
    axes[0][0].set_ylabel("predicted log10(m_a / eV)")
    fig.suptitle(_label(dataset))
    fig.tight_layout()
    return fig


def _fig_convergence(cfg: BenchmarkConfig, training: dict[str, Any]):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(training)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], names):
        for i, (model, info) in enumerate(training[dataset].items()):
            key = info["metric"]
            rows = [r for r in info["per_epoch"] if key in r]
            ax.plot([r["epoch"] + 1 for r in rows], [r[key] for r in rows], "o-", ms=3, color=f"C{i}",
                    label=DESCRIPTIONS[model])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("validation macro AUC" if cfg.task == "classify" else "validation RMSE [dex]")
        ax.set_title(_label(dataset))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fig_efficiency(cfg: BenchmarkConfig, eff: dict[str, Any]):
    import matplotlib.pyplot as plt

    key = "macro_auc" if cfg.task == "classify" else "rmse"
    fig, axes = plt.subplots(1, len(eff), figsize=(5 * len(eff), 3.6), squeeze=False)
    for ax, (dataset, per_model) in zip(axes[0], eff.items()):
        for i, (model, per_f) in enumerate(per_model.items()):
            fr = sorted(per_f, key=float)
            n = [per_f[f]["n_train"] for f in fr]
            v = np.array([per_f[f][key]["value"] for f in fr])
            lo = np.array([per_f[f][key]["lo"] for f in fr])
            hi = np.array([per_f[f][key]["hi"] for f in fr])
            ax.errorbar(n, v, yerr=[v - lo, hi - v], fmt="o-", ms=4, capsize=2, color=f"C{i}", label=DESCRIPTIONS[model])
        ax.set_xscale("log")
        ticks = sorted({per_f[f]["n_train"] for per_f in per_model.values() for f in per_f})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training images")
        ax.set_ylabel("test macro AUC" if key == "macro_auc" else "test RMSE [dex]")
        ax.set_title(_label(dataset))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _metric_cells(cfg: BenchmarkConfig, res: dict[str, Any]) -> dict[str, Any]:
    """Table cells of one scored prediction: accuracy [%] and macro AUC, or RMSE / MSE / MAE."""
    if cfg.task == "classify":
        return {"accuracy [%]": {k: 100 * res["accuracy"][k] for k in ("value", "lo", "hi")},
                "macro AUC": res["macro_auc"]}
    return {k.upper(): res[k] for k in ("rmse", "mse", "mae")}


def _tables(cfg: BenchmarkConfig, bench: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    main, speed = [], []
    for dataset, per_model in bench.get("test", {}).items():
        ref = bench.get("reference", {}).get(dataset)
        if ref and cfg.task == "regress":
            main.append({"dataset": _label(dataset), "model": "training-set mean (no learning)",
                         **_metric_cells(cfg, ref)})
        ceil = bench.get("ceiling", {}).get(dataset)
        if ceil and cfg.task == "regress":
            main.append({"dataset": _label(dataset), "model": "Bayes-optimal oracle (knows lens, source, vortex angle)",
                         **_metric_cells(cfg, ceil)})
        for model, res in per_model.items():
            tr = bench.get("training", {}).get(dataset, {}).get(model, {})
            row: dict[str, Any] = {"dataset": _label(dataset), "model": DESCRIPTIONS[model], **_metric_cells(cfg, res)}
            if cfg.task == "classify":
                paper = PAPER_TABLE1.get((dataset, model))
                row["paper accuracy [%]"] = f"{paper[0]:.2f}" if paper else "–"
                row["paper AUC"] = f"{paper[1]:.5f}" if paper else "–"
            else:
                paper = PAPER_TABLE2.get((dataset, model))
                row["paper RMSE / MSE / MAE"] = (f"{paper[0]:.5f} / {paper[1]:.2e} / {paper[2]:.5f}" if paper else "–")
            main.append(row)
            tta = bench.get("tta", {}).get(dataset, {}).get(model)
            if tta:
                main.append({"dataset": _label(dataset), "model": f"{DESCRIPTIONS[model]} + {cfg.eval.tta.upper()} TTA",
                             **_metric_cells(cfg, tta)})
            speed.append({"dataset": _label(dataset), "model": DESCRIPTIONS[model],
                          "parameters": f"{tr.get('params', 0):,}",
                          "epochs": tr.get("epochs", "–"),
                          "train images/s": f"{tr['train_images_per_s']:.1f}" if tr.get("train_images_per_s") else "–",
                          "inference images/s": f"{res.get('infer_images_per_s', float('nan')):.1f}",
                          "fit wall time [s]": f"{tr.get('fit_wall_s', float('nan')):.0f}"})
    return main, speed


def _convergence_table(cfg: BenchmarkConfig, training: dict[str, Any]) -> list[dict]:
    rows = []
    for dataset, per_model in training.items():
        for model, info in per_model.items():
            key = info["metric"]
            vals = [r[key] for r in info["per_epoch"] if key in r]
            row: dict[str, Any] = {"dataset": _label(dataset), "model": DESCRIPTIONS[model]}
            for e, v in enumerate(vals[:12]):
                row[f"ep {e + 1}"] = f"{v:.4f}"
            rows.append(row)
    return rows


def report(cfg: BenchmarkConfig, run: Run) -> Path:
    """Write ``report.html`` from ``metrics.json`` and the saved predictions."""
    import matplotlib

    matplotlib.use("Agg")
    saved = run.metrics()
    bench = saved.get("benchmark", {})
    rep = Report(f"Strong lensing — ResNet50 vs equivariant networks ({cfg.task})",
                 subtitle=f"preset {cfg.preset}, models {', '.join(cfg.models)}")
    dev = "GPU " + torch.cuda.get_device_name(0) if torch.cuda.is_available() and cfg.train.accelerator != "cpu" else "CPU"
    sizes = bench.get("datasets", {})
    rep.add_text(
        "<p>Reproduces Tables 1 and 2 of <i>Equivariant Neural Networks for Signatures of Dark Matter Morphology in "
        "Strong Lensing Data</i> (Cheeramvelil, Gleyzer &amp; Toomey) on our simulated Euclid-like (paper: Model A) and "
        "HST-like (Model B) images. "
        f"Task: <b>{cfg.task}</b>; training: {cfg.train.optimizer} lr {cfg.train.lr:g}, batch {cfg.train.batch_size}, "
        f"{cfg.train.epochs} epochs, best epoch by validation loss; {int(100 * cfg.data.val_fraction)}% of the training "
        f"images held out for validation. Hardware: {dev}. Intervals are {int(100 * cfg.eval.level)}% bootstrap "
        f"intervals over the test images ({cfg.eval.n_boot} resamples).</p>"
        + "".join(f"<p>{_label(d)}: {v.get('n_train')} training+validation and {v.get('n_test')} test images, all "
                  f"classes (<code>{v.get('path', 'in memory')}</code>).</p>" for d, v in sizes.items())
        + ("<p>The regression uses the axion images only (a third of each set); its reference row predicts the "
           "training-set mean for every image, and its ceiling row is the posterior mean of log10 m_a computed from "
           "each test image by an oracle that knows every other parameter of the record (uniform prior, exact "
           "likelihood on a grid: <code>darkml.lensing.mass_oracle</code>) — no estimator that sees the image alone "
           "can beat it. Where the vortex is shorter than the resolution the oracle is left with the prior, so the "
           "ceiling row measures how much of the error is physics.</p>" if cfg.task == "regress" else ""))
    if cfg.model_options:
        rep.add_note("Model options (non-paper widths where set): " + json.dumps(cfg.model_options))
    main, speed = _tables(cfg, bench)
    rep.add_heading("Table 1 — classification" if cfg.task == "classify" else "Table 2 — axion-mass regression")
    caption = ("Test accuracy and macro one-vs-rest AUC [68% CI]; the paper's values beside ours."
               if cfg.task == "classify" else
               "Test RMSE, MSE and MAE of log10(m_a/eV) on the axion class [68% CI]; paper's values (units unstated) beside.")
    rep.add_table(main, caption)
    comp = bench.get("comparison", {})
    if comp:
        rows = []
        for dataset, per in comp.items():
            for pair, ci in per.items():
                excl = ci["lo"] > 0 or ci["hi"] < 0
                rows.append({"dataset": _label(dataset), "difference": pair.replace("-minus-", " − "),
                             ("Δ macro AUC" if cfg.task == "classify" else "Δ RMSE"): fmt_ci(ci, 5),
                             "interval excludes 0": "yes" if excl else "no"})
        rep.add_table(rows, "Paired bootstrap differences on the same test images (model − baseline).")
    if cfg.task == "classify":
        rep.add_heading("ROC curves per class")
        for dataset, test in bench.get("test", {}).items():
            rep.add_figure(_fig_roc(cfg, dataset, test), f"One-vs-rest ROC per class, {_label(dataset)}.",
                           name=f"roc-{dataset}", figures_dir=run.figures)
    else:
        rep.add_heading("Predicted vs true axion mass")
        for dataset in bench.get("test", {}):
            rep.add_figure(_fig_mass(cfg, run, dataset, list(bench["test"][dataset])),
                           f"Predicted vs true log10 m_a on the axion test images, {_label(dataset)}.",
                           name=f"mass-{dataset}", figures_dir=run.figures)
    training = bench.get("training", {})
    if training:
        rep.add_heading("Convergence and throughput")
        rep.add_figure(_fig_convergence(cfg, training), "Validation metric after each epoch.", name="convergence",
                       figures_dir=run.figures)
        rep.add_table(_convergence_table(cfg, training),
                      "Validation " + ("macro AUC" if cfg.task == "classify" else "RMSE [dex]") + " per epoch.")
        rep.add_table(speed, "Model size and speed on this hardware (training: median over epochs, data loading "
                             "included; inference: test-set prediction).")
    eff = bench.get("data_efficiency", {})
    if eff:
        rep.add_heading("Data efficiency")
        rep.add_figure(_fig_efficiency(cfg, eff), "Test metric vs number of training images.", name="data-efficiency",
                       figures_dir=run.figures)
    rep.add_timings(saved.get("timings_s", {}))
    rep.add_config(cfg)
    return rep.write(run.report_path)
