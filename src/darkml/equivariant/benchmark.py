"""ResNet50 vs rotation-equivariant networks on strong-lensing images: data, fits, metrics.

Reproduces the equivariant-network paper (Cheeramvelil, Gleyzer & Toomey): every named model
is trained on the Euclid-like ("Model A") and HST-like ("Model B") datasets for

* ``task="classify"`` — three classes (no substructure / CDM subhalos / axion vortex),
  cross-entropy; Table 1: accuracy and macro one-vs-rest AUC with bootstrap intervals,
  ROC curves per class;
* ``task="regress"`` — log10 of the axion mass on the axion class only, MSE; Table 2:
  RMSE, MSE and MAE with bootstrap intervals, predicted-vs-true plots;

and measures what the paper only claims: validation AUC (or RMSE) per epoch (convergence
speed) and training / inference throughput per model on the same hardware. Beyond the paper:
a data-efficiency curve (test metric of e.g. ResNet50 and C8 trained on 1 %, 10 % and 100 %
of the training set) and test-time rotation/reflection averaging (the 8 exact pixel-grid
symmetries, D4) for the non-equivariant baseline. The stages are in
:mod:`darkml.equivariant.study`; figures and the report in :mod:`darkml.equivariant.figures`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkml.lensing.dataset import load_images, load_sim_config, simulate_dataset
from darkml.runs import atomic_write_npz

from .. import metrics
from ..config import ConfigError, config_to_dict
from ..learn import (
    ArrayDataset,
    ClassifierModule,
    RegressorModule,
    fit,
    load_best,
    make_loader,
    split_indices,
)
from ..learn.dihedral import predict_array, predict_tta
from ..runs import Run
from .config import CLASS_NAMES, BenchmarkConfig
from .models import build_model, count_parameters

log = logging.getLogger(__name__)

__all__ = ["prepare_data", "write_given_data", "load_data", "train_models", "evaluate", "data_efficiency", "subsample"]


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # images, labels, log10 m_a


def _sim_config(cfg: BenchmarkConfig, name: str):
    over = [f"seed={cfg.seed}", f"dataset.n_per_class_train={cfg.data.n_per_class_train}",
            f"dataset.n_per_class_test={cfg.data.n_per_class_test}", *cfg.data.sim_overrides]
    return load_sim_config(cfg.data.datasets[name], over)


def _dataset_path(cfg: BenchmarkConfig, run: Run, name: str, sim_cfg) -> Path:
    if cfg.data.dataset_dir is None:
        return run.path / "datasets" / name
    digest = hashlib.sha1(json.dumps(config_to_dict(sim_cfg), sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.data.dataset_dir) / f"{name}-{digest}"


def prepare_data(cfg: BenchmarkConfig, run: Run, workers: int | None = None) -> dict[str, Path]:
    """Simulate (or reuse) every dataset: ``{name: dataset folder}`` (zarr stores, resumable)."""
    out: dict[str, Path] = {}
    info = {}
    for name in cfg.data.datasets:
        sim_cfg = _sim_config(cfg, name)
        path = _dataset_path(cfg, run, name, sim_cfg)
        log.info("dataset %s: %s (%d + %d images per class)", name, path, cfg.data.n_per_class_train,
                 cfg.data.n_per_class_test)
        simulate_dataset(sim_cfg, path, workers=workers or cfg.data.workers, device=cfg.data.device)
        out[name] = path
        info[name] = {"path": str(path), "simulator_preset": cfg.data.datasets[name],
                      "n_train": 3 * cfg.data.n_per_class_train, "n_test": 3 * cfg.data.n_per_class_test}
    run.update_metrics({"benchmark": {"datasets": info}})
    return out


def _given_path(run: Run, name: str, split: str) -> Path:
    return run.path / "datasets" / name / f"{split}.npz"


def write_given_data(cfg: BenchmarkConfig, run: Run, data: dict[str, dict[str, Arrays]]) -> None:
    """Store images given in memory (``{name: {"train": (x, y, log10_m), "test": …}}``, e.g.
    external images or a toy problem) in the run, where the stages read them."""
    for name, splits in data.items():
        for split in ("train", "test"):
            if split not in splits:
                raise ConfigError(f"dataset {name}: no {split!r} split given")
            _check_arrays(name, split, splits[split])
    missing = [d for d in cfg.data_efficiency.datasets if cfg.data_efficiency.enabled and d not in data]
    if missing:
        raise ConfigError(f"data_efficiency.datasets {missing}: not among the given datasets ({', '.join(data)})")
    for name, splits in data.items():
        for split in ("train", "test"):
            x, y, m = splits[split]
            atomic_write_npz(_given_path(run, name, split), images=x, labels=y, log10_m=m)
    run.update_metrics({"benchmark": {"datasets": {n: {"path": "given", "n_train": int(len(s["train"][1])),
                                                       "n_test": int(len(s["test"][1]))} for n, s in data.items()}}})


def load_data(cfg: BenchmarkConfig, run: Run) -> dict[str, dict[str, Arrays]]:
    """The run's datasets: ``{name: {"train": arrays, "test": arrays}}`` (given or simulated)."""
    out: dict[str, dict[str, Arrays]] = {}
    given = sorted(p.parent.name for p in (run.path / "datasets").glob("*/train.npz"))
    for name in given or list(cfg.data.datasets):
        if given:
            out[name] = {}
            for split in ("train", "test"):
                with np.load(_given_path(run, name, split)) as f:
                    out[name][split] = (f["images"], f["labels"], f["log10_m"])
        else:
            path = _dataset_path(cfg, run, name, _sim_config(cfg, name))
            out[name] = {split: load_images(path, split) for split in ("train", "test")}
    return out


def _check_arrays(name: str, split: str, arrays: Arrays) -> None:
    x, y, m = arrays
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3]:
        raise ConfigError(f"dataset {name}/{split}: images of shape {x.shape}: expected (N, 1, n, n)")
    if len(y) != len(x) or len(m) != len(x):
        raise ConfigError(f"dataset {name}/{split}: {len(x)} images but {len(y)} labels and {len(m)} masses")
    if not set(np.unique(y)).issubset({0, 1, 2}):
        raise ConfigError(f"dataset {name}/{split}: labels {sorted(set(np.unique(y)))}: must be in {{0, 1, 2}}")


def _task_arrays(cfg: BenchmarkConfig, arrays: Arrays) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) for the task: all classes / labels, or the axion class / log10 m_a."""
    x, y, m = arrays
    if cfg.task == "classify":
        return x, y.astype(np.int64)
    keep = y == 2
    if not np.all(np.isfinite(m[keep])):
        raise ConfigError("regression: some axion images have a non-finite log10_m_axion")
    return x[keep], m[keep].astype(np.float32)


def subsample(targets: np.ndarray, fraction: float, seed: int, classify: bool) -> np.ndarray:
    """Sorted indices of a ``fraction`` of the samples (per class for classification, at least
    one per class), drawn with ``default_rng([seed, round(1e6·fraction)])``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction = {fraction}: must be in (0, 1]")
    n = len(targets)
    if fraction >= 1:
        return np.arange(n)
    rng = np.random.default_rng([seed, int(round(fraction * 1e6))])
    if not classify:
        k = max(2, int(round(fraction * n)))
        return np.sort(rng.choice(n, size=min(k, n), replace=False))
    idx = []
    for c in np.unique(targets):
        members = np.nonzero(targets == c)[0]
        k = max(1, int(round(fraction * len(members))))
        idx.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(idx))


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
def _build(cfg: BenchmarkConfig, name: str) -> torch.nn.Module:
    model = build_model(name, in_channels=1, num_outputs=cfg.num_outputs, **cfg.model_options.get(name, {}))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _module(cfg: BenchmarkConfig, name: str, y_train: np.ndarray | None = None):
    torch.manual_seed(cfg.seed)  # identical initialisation for a model wherever it is trained
    model = _build(cfg, name)
    t = cfg.train
    common = dict(lr=t.lr, weight_decay=t.weight_decay, optimizer=t.optimizer, plateau_patience=t.plateau_patience,
                  plateau_factor=t.plateau_factor, schedule=t.schedule, warmup_fraction=t.warmup_fraction)
    if cfg.task == "classify":
        return ClassifierModule(model, num_classes=3, **common)
    mu = float(np.mean(y_train)) if y_train is not None else 0.0
    sd = float(np.std(y_train)) if y_train is not None and len(y_train) > 1 else 1.0
    return RegressorModule(model, target_mean=mu, target_std=max(sd, 1e-6), **common)


def _tag(cfg: BenchmarkConfig, dataset: str, model: str, fraction: float = 1.0) -> str:
    base = f"{cfg.task}-{dataset}-{model}"
    return base if fraction >= 1 else f"{base}-frac{fraction:g}"


def _splits(cfg: BenchmarkConfig, arrays: Arrays) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    x, t = _task_arrays(cfg, arrays)
    tr, va = split_indices(len(t), (1 - cfg.data.val_fraction, cfg.data.val_fraction), seed=cfg.seed)
    if len(tr) == 0 or len(va) == 0:
        raise ConfigError(f"task {cfg.task}: {len(t)} samples are too few to split into training and validation")
    return (x[tr], t[tr]), (x[va], t[va])


def _fit_one(cfg: BenchmarkConfig, run: Run, dataset: str, model: str, train: tuple[np.ndarray, np.ndarray],
             val: tuple[np.ndarray, np.ndarray], fraction: float = 1.0, epochs: int | None = None,
             patience: int | None = None, devices=None, accelerator=None):
    t = cfg.train
    tag = _tag(cfg, dataset, model, fraction)
    module = _module(cfg, model, train[1])
    train_loader = make_loader(ArrayDataset(train[0], train[1], seed=cfg.seed), t.batch_size, shuffle=True,
                               seed=cfg.seed, num_workers=t.num_workers)
    val_loader = make_loader(ArrayDataset(val[0], val[1]), t.eval_batch_size, shuffle=False)
    log.info("training %s on %s (%s, %d train / %d val, fraction %g)", model, dataset, cfg.task, len(train[1]),
             len(val[1]), fraction)
    module.train()  # e2cnn shares cached basis sub-modules between models; one may have been left in eval mode
    res = fit(module, train_loader, val_loader, run.checkpoints / tag, max_epochs=epochs or _epochs(cfg),
              patience=patience if epochs is not None else t.patience,
              devices=devices if devices is not None else t.devices,
              accelerator=accelerator if accelerator is not None else t.accelerator,
              precision=t.precision, log_dir=run.logs, tag=tag, seed=cfg.seed, tensorboard=t.logger == "tensorboard")
    load_best(module, res.best_path)
    return module, res


def _epochs(cfg: BenchmarkConfig) -> int:
    """Training epochs of the task (``train.regress_epochs`` for the regression when set)."""
    if cfg.task == "regress" and cfg.train.regress_epochs is not None:
        return cfg.train.regress_epochs
    return cfg.train.epochs


def _history_summary(cfg: BenchmarkConfig, history: list[dict[str, float]]) -> dict[str, Any]:
    key = "val_auc" if cfg.task == "classify" else "val_rmse"
    rows = [{k: h[k] for k in ("epoch", "train_loss", "val_loss", key, "train_images_per_s", "lr") if k in h}
            for h in history]
    rates = [h["train_images_per_s"] for h in history if "train_images_per_s" in h]
    return {"per_epoch": rows, "metric": key,
            "train_images_per_s": float(np.median(rates)) if rates else None}


def train_models(cfg: BenchmarkConfig, run: Run, data: dict[str, dict[str, Arrays]], devices=None,
                 accelerator=None) -> dict[str, dict[str, Any]]:
    """Fit every model on every dataset (resumes; finished fits return at once)."""
    out: dict[str, dict[str, Any]] = {}
    for dataset, arrays in data.items():
        tr, va = _splits(cfg, arrays["train"])
        for model in cfg.models:
            t0 = time.perf_counter()
            module, res = _fit_one(cfg, run, dataset, model, tr, va, devices=devices, accelerator=accelerator)
            info = _history_summary(cfg, res.history)
            info.update({"epochs": res.epochs, "best_val_loss": res.best_score, "best_checkpoint": str(res.best_path),
                         "params": count_parameters(module.model), "fit_wall_s": time.perf_counter() - t0,
                         "n_train": int(len(tr[1])), "n_val": int(len(va[1]))})
            out.setdefault(dataset, {})[model] = info
            run.update_metrics({"benchmark": {"training": {dataset: {model: info}}}})
    return out


def _score(cfg: BenchmarkConfig, y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    e = cfg.eval
    if cfg.task == "classify":
        rep = metrics.multiclass_report(y, pred, n_boot=e.n_boot, level=e.level, seed=cfg.seed)
        roc = {CLASS_NAMES[int(k)]: {"auc": v["auc"], **_downsample_curve(np.asarray(v["fpr"]), np.asarray(v["tpr"]))}
               for k, v in rep["roc"].items()}
        return {"accuracy": rep["accuracy"], "macro_auc": rep["macro_auc"], "roc": roc}
    return metrics.regression_metrics(y, pred, n_boot=e.n_boot, level=e.level, seed=cfg.seed)


def _trained_module(cfg: BenchmarkConfig, run: Run, dataset: str, model: str, fraction: float = 1.0):
    ckpt = run.checkpoints / _tag(cfg, dataset, model, fraction)
    done = ckpt / "done.json"
    if not done.is_file():
        raise ConfigError(f"{model} on {dataset} is not trained yet in {run.path} (no {done}); run the train stage")
    best = Path(json.loads(done.read_text())["best_path"])
    if not best.is_file():
        best = ckpt / "best.ckpt"
    module = _module(cfg, model)
    load_best(module, best)
    return module


def _paired_diff(cfg: BenchmarkConfig, y, pa, pb) -> dict[str, float]:
    """Bootstrap interval of metric(a) − metric(b) on the same resampled test images."""
    if cfg.task == "classify":
        f = lambda yy, a, b: metrics.macro_auc_ovr(yy, a) - metrics.macro_auc_ovr(yy, b)  # noqa: E731
    else:
        f = lambda yy, a, b: metrics.rmse(yy, a) - metrics.rmse(yy, b)  # noqa: E731
    return metrics.bootstrap_ci(f, y, pa, pb, n_boot=cfg.eval.n_boot, level=cfg.eval.level, seed=cfg.seed)


def evaluate(cfg: BenchmarkConfig, run: Run, data: dict[str, dict[str, Arrays]]) -> dict[str, Any]:
    """Test-set metrics (with bootstrap intervals), TTA for the baseline, paired comparisons;
    predictions saved to ``<run>/predictions/<task>-<dataset>-<model>.npz``."""
    pred_dir = run.path / "predictions"
    pred_dir.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    tta: dict[str, Any] = {}
    comparison: dict[str, Any] = {}
    reference: dict[str, Any] = {}
    ceiling: dict[str, Any] = {}
    for dataset, arrays in data.items():
        x, y = _task_arrays(cfg, arrays["test"])
        preds = {}
        for model in cfg.models:
            module = _trained_module(cfg, run, dataset, model)
            t0 = time.perf_counter()
            p = predict_array(module, x, cfg.train.eval_batch_size)
            rate = len(x) / max(time.perf_counter() - t0, 1e-9)
            res = _score(cfg, y, p)
            res["infer_images_per_s"] = rate
            res["n_test"] = int(len(y))
            save = {"target": y, "pred": p}
            if model in cfg.eval.tta_models:
                pt = predict_tta(module, x, cfg.train.eval_batch_size, cfg.eval.tta)
                tta.setdefault(dataset, {})[model] = _score(cfg, y, pt)
                save["pred_tta"] = pt
            np.savez_compressed(pred_dir / f"{_tag(cfg, dataset, model)}.npz", **save)
            results.setdefault(dataset, {})[model] = res
            preds[model] = p
            log.info("%s %s: %s", dataset, model, _headline(cfg, res))
        if cfg.task == "regress":  # the no-learning reference: predict the training-set mean
            y_tr = _splits(cfg, arrays["train"])[0][1]
            reference[dataset] = _score(cfg, y, np.full(len(y), float(np.mean(y_tr)), np.float32))
            oracle = _mass_oracle(cfg, run, dataset, y)
            if oracle:
                ceiling[dataset] = oracle
        base = "resnet50" if "resnet50" in preds else cfg.models[0]
        for model in preds:
            if model != base:
                comparison.setdefault(dataset, {})[f"{model}-minus-{base}"] = _paired_diff(cfg, y, preds[model], preds[base])
    run.update_metrics({"benchmark": {"task": cfg.task, "test": results, "tta": tta, "comparison": comparison,
                                      "reference": reference, "ceiling": ceiling}})
    return {"test": results, "tta": tta, "comparison": comparison, "reference": reference, "ceiling": ceiling}


def _mass_oracle(cfg: BenchmarkConfig, run: Run, dataset: str, y: np.ndarray) -> dict[str, Any] | None:
    """The regression's physical ceiling on the same axion test images (:mod:`darkml.lensing.mass_oracle`,
    cached in ``predictions/oracle-<dataset>.npz``). None for given (in-memory) datasets, whose
    records are unknown."""
    if not cfg.eval.mass_oracle or _given_path(run, dataset, "test").is_file():
        return None
    from ..lensing.mass_oracle import stored_ceiling

    path = _dataset_path(cfg, run, dataset, _sim_config(cfg, dataset))
    out, res = stored_ceiling(path, run.path / "predictions" / f"oracle-{dataset}.npz", cfg.eval.oracle_grid,
                              n_boot=cfg.eval.n_boot, level=cfg.eval.level, seed=cfg.seed)
    if not np.allclose(res["truth"], np.asarray(y, np.float64), atol=1e-5):
        raise ConfigError(f"mass oracle of {dataset}: the stored records do not match the test images (dataset changed?)")
    return out


def _headline(cfg: BenchmarkConfig, res: dict[str, Any]) -> str:
    if cfg.task == "classify":
        return f"accuracy {res['accuracy']['value']:.4f}, macro AUC {res['macro_auc']['value']:.5f}"
    return f"RMSE {res['rmse']['value']:.4f}, MAE {res['mae']['value']:.4f}"


def data_efficiency(cfg: BenchmarkConfig, run: Run, data: dict[str, dict[str, Arrays]], devices=None,
                    accelerator=None) -> dict[str, Any]:
    """Test metric of ``data_efficiency.models`` trained on ``fractions`` of the training set.

    Validation and test sets are the full ones. With ``equal_steps`` a run on fraction f gets
    ``min(ceil(epochs / f), max_epochs)`` epochs (about the same optimizer steps as the full
    run) and early stopping with ``patience``; fraction 1 reuses the main training when the
    model is among ``models``.
    """
    de = cfg.data_efficiency
    out: dict[str, Any] = {}
    if not de.enabled:
        return out
    key = "macro_auc" if cfg.task == "classify" else "rmse"
    for dataset in de.datasets:
        arrays = data[dataset]
        tr, va = _splits(cfg, arrays["train"])
        x_te, y_te = _task_arrays(cfg, arrays["test"])
        for model in de.models:
            for f in de.fractions:
                idx = subsample(tr[1], f, cfg.seed, cfg.task == "classify")
                if f >= 1 and model in cfg.models:
                    module = _trained_module(cfg, run, dataset, model)
                else:
                    epochs = min(math.ceil(_epochs(cfg) / f), de.max_epochs) if de.equal_steps else _epochs(cfg)
                    module, _ = _fit_one(cfg, run, dataset, model, (tr[0][idx], tr[1][idx]), va, fraction=f,
                                         epochs=epochs, patience=de.patience, devices=devices, accelerator=accelerator)
                res = _score(cfg, y_te, predict_array(module, x_te, cfg.train.eval_batch_size))
                out.setdefault(dataset, {}).setdefault(model, {})[f"{f:g}"] = {"n_train": int(len(idx)), key: res[key]}
                log.info("data efficiency %s %s fraction %g (%d images): %s %.4f", dataset, model, f, len(idx), key,
                         res[key]["value"])
    run.update_metrics({"benchmark": {"data_efficiency": out}})
    return out


def _downsample_curve(fpr: np.ndarray, tpr: np.ndarray, n: int = 400) -> dict[str, list[float]]:
    if fpr.size > n:
        keep = np.unique(np.r_[0, np.linspace(0, fpr.size - 1, n - 2).astype(int), fpr.size - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
