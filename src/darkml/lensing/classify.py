"""Benchmark: ResNet50 vs rotation-equivariant networks on strong-lensing images.

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
symmetries, D4) for the non-equivariant baseline.

Stages read and write one run directory: ``data`` (simulate or reuse the datasets through
:mod:`darkml.lensing.study`), ``train`` (one Lightning fit per dataset × model; resumable),
``evaluate`` (test-set predictions saved to ``predictions/*.npz``, metrics to
``metrics.json``), ``data_efficiency`` and ``report`` (``report.html``)::

    from darkml.lensing import classify
    cfg = classify.load_benchmark_config("quick", ["task=regress", "models=[resnet50,c8]"])
    run = classify.run_benchmark(cfg, "runs/bench")
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from .. import metrics
from ..config import ConfigError, Section, StudyConfig, config_to_dict, list_presets, load_config
from ..learn import ArrayDataset, ClassifierModule, RegressorModule, fit, load_best, make_loader, predict, split_indices
from ..runs import Run
from .models import DESCRIPTIONS, MODELS, build_model, count_parameters

log = logging.getLogger(__name__)

__all__ = [
    "PRESETS_DIR",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "BenchmarkConfig",
    "load_benchmark_config",
    "create_run",
    "prepare_data",
    "train_models",
    "evaluate",
    "data_efficiency",
    "report",
    "run_benchmark",
    "d4_transforms",
    "predict_tta",
    "subsample",
]

PRESETS_DIR = Path(__file__).parent / "presets"
STUDY = "lensing"
CLASS_NAMES = ("no_substructure", "cdm", "axion")
#: the paper's letters for our instrument-named datasets
PAPER_LABELS = {"euclid": "Model A (Euclid-like)", "hst": "Model B (HST-like)"}

#: Table 1 of the paper: (accuracy [%], macro AUC) per (dataset, model)
PAPER_TABLE1: dict[tuple[str, str], tuple[float, float]] = {
    ("euclid", "resnet50"): (96.86, 0.99740),
    ("euclid", "c8"): (99.02, 0.99967),
    ("euclid", "hnet"): (90.95, 0.98516),
    ("euclid", "etn"): (92.413, 0.99321),
    ("hst", "resnet50"): (98.67, 0.99926),
    ("hst", "c8"): (99.28, 0.99972),
    ("hst", "hnet"): (90.24, 0.98904),
    ("hst", "etn"): (97.42, 0.99770),
}
#: Table 2 of the paper: (RMSE, MSE, MAE) of the axion mass per (dataset, model); units not
#: stated in the paper (our target is log10(m_a / eV)), so compare rankings, not values
PAPER_TABLE2: dict[tuple[str, str], tuple[float, float, float]] = {
    ("euclid", "resnet50"): (0.01309, 1.31e-02, 0.01030),
    ("euclid", "c8"): (0.02504, 6.30e-04, 0.02096),
    ("euclid", "etn"): (0.00691, 4.78e-05, 0.00690),
    ("euclid", "hnet"): (0.02181, 7.88e-04, 0.02181),
    ("hst", "resnet50"): (0.01685, 2.87e-04, 0.01306),
    ("hst", "c8"): (0.00453, 2.07e-05, 0.00357),
    ("hst", "etn"): (0.00410, 1.69e-05, 0.00407),
    ("hst", "hnet"): (0.01068, 1.16e-04, 0.00818),
}


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
def _known_model(name: str, field: str) -> str:
    if name not in MODELS:
        raise ValueError(f"{name!r} is not a model (choose from {', '.join(sorted(MODELS))})")
    return name


class DataCfg(Section):
    """Which datasets, how large, where they live."""

    datasets: dict[str, str] = Field(default_factory=lambda: {"euclid": "euclid", "hst": "hst"},
                                     description="table name -> simulator preset (src/darkml/lensing/presets)")
    n_per_class_train: int = Field(30_000, ge=2, description="simulated training images per class (incl. validation)")
    n_per_class_test: int = Field(5_000, ge=2, description="test images per class (separate draw)")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of the training images held out for validation")
    sim_overrides: list[str] = Field(default_factory=list, description="extra key=value overrides for the simulator presets")
    dataset_dir: str | None = Field(None, description="directory for (reusable) datasets; default <run>/datasets")
    workers: int = Field(1, ge=1, description="simulation worker processes")
    device: str = Field("auto", description="simulation device: auto, cpu, cuda")

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: dict[str, str]):
        if not v:
            raise ValueError("data.datasets: at least one dataset is needed")
        known = list_presets(PRESETS_DIR)
        for name, preset in v.items():
            if preset not in known or preset.startswith("benchmark-"):
                sims = ", ".join(p for p in known if not p.startswith("benchmark-"))
                raise ValueError(f"data.datasets.{name} = {preset!r}: unknown simulator preset (available: {sims})")
        return v


class TrainCfg(Section):
    """Optimisation (paper: Adam, lr 1e-4, batch 64, 10 epochs, cross-entropy / MSE)."""

    lr: float = Field(1e-4, gt=0, le=1)
    batch_size: int = Field(64, ge=1, le=8192)
    epochs: int = Field(10, ge=1, le=10_000)
    patience: int | None = Field(None, ge=1, description="early stopping on val_loss (None: train all epochs)")
    optimizer: Literal["adam", "adamw", "sgd", "lamb"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    plateau_patience: int = Field(5, ge=1)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int | Literal["auto"] = "auto"
    precision: str | None = Field(None, description="None: 16-mixed on GPU, 32-true on CPU; or bf16-mixed, 32-true …")
    channels_last: bool = Field(False, description="channels-last memory format (helps convs under AMP on GPU)")
    num_workers: int = Field(0, ge=0, le=64)
    eval_batch_size: int = Field(256, ge=1)


class EvalCfg(Section):
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples of the test set")
    level: float = Field(0.68, gt=0, lt=1, description="confidence level of the intervals")
    tta_models: list[str] = Field(default_factory=lambda: ["resnet50"],
                                  description="models also evaluated with test-time D4 averaging")
    tta: Literal["c4", "d4"] = Field("d4", description="c4: 4 rotations by 90°; d4: rotations and reflections")

    @field_validator("tta_models")
    @classmethod
    def _models(cls, v):
        return [_known_model(m, "eval.tta_models") for m in v]


class DataEfficiencyCfg(Section):
    enabled: bool = True
    fractions: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0])
    models: list[str] = Field(default_factory=lambda: ["resnet50", "c8"])
    datasets: list[str] = Field(default_factory=lambda: ["euclid"])
    equal_steps: bool = Field(True, description="scale epochs by 1/fraction so every run takes ~the same optimizer steps")
    max_epochs: int = Field(100, ge=1, description="cap on the scaled epochs")
    patience: int | None = Field(10, ge=1, description="early stopping for the scaled runs")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v):
        for f in v:
            if not 0 < f <= 1:
                raise ValueError(f"data_efficiency.fractions: {f}: must be in (0, 1]")
        return sorted(set(v))

    @field_validator("models")
    @classmethod
    def _models(cls, v):
        return [_known_model(m, "data_efficiency.models") for m in v]


class BenchmarkConfig(StudyConfig):
    """``darkml lensing benchmark`` configuration (presets ``benchmark-quick``, ``benchmark-paper``)."""

    study: str = STUDY
    task: Literal["classify", "regress"] = "classify"
    models: list[str] = Field(default_factory=lambda: ["resnet50", "c8", "hnet", "etn"])
    model_options: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                     description="per-model constructor keywords, e.g. {c8: {width: 0.25}}")
    data: DataCfg = DataCfg()
    train: TrainCfg = TrainCfg()
    eval: EvalCfg = EvalCfg()
    data_efficiency: DataEfficiencyCfg = DataEfficiencyCfg()

    @field_validator("models", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):  # --set models=resnet50,c8
            v = [m.strip() for m in v.split(",") if m.strip()]
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v):
        if not v:
            raise ValueError("models: at least one model is needed")
        return [_known_model(m, "models") for m in v]

    @field_validator("model_options")
    @classmethod
    def _options(cls, v):
        for m in v:
            _known_model(m, "model_options")
        return v

    @model_validator(mode="after")
    def _cross(self):
        for d in self.data_efficiency.datasets:
            if d not in self.data.datasets:
                raise ValueError(f"data_efficiency.datasets: {d!r} is not in data.datasets ({', '.join(self.data.datasets)})")
        n_val = int(round(self.data.val_fraction * self.data.n_per_class_train))
        if n_val < 1 or self.data.n_per_class_train - n_val < 1:
            raise ValueError(f"data.n_per_class_train = {self.data.n_per_class_train} with val_fraction = "
                             f"{self.data.val_fraction}: need >= 1 training and >= 1 validation image per class")
        return self

    @property
    def num_outputs(self) -> int:
        return 3 if self.task == "classify" else 1


def load_benchmark_config(preset: str = "benchmark-quick", overrides: Iterable[str] = ()) -> BenchmarkConfig:
    """Validated benchmark config; ``quick`` / ``paper`` are accepted for ``benchmark-quick`` /
    ``benchmark-paper``. Raises :class:`ConfigError` (one line) before any work."""
    known = list_presets(PRESETS_DIR)
    name = preset if preset.startswith("benchmark-") else f"benchmark-{preset}"
    if name not in known:
        bench = ", ".join(p for p in known if p.startswith("benchmark-")) or "none"
        raise ConfigError(f"preset = {preset!r}: unknown benchmark preset (available: {bench})")
    return load_config(BenchmarkConfig, PRESETS_DIR, name, list(overrides), study=STUDY)


def create_run(cfg: BenchmarkConfig, run_dir: Path | str | None = None) -> Run:
    if run_dir is None:
        run_dir = Run.default_path(STUDY, f"{cfg.preset}-{cfg.task}")
    return Run.create(STUDY, cfg, path=run_dir)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # images, labels, log10 m_a


def _sim_config(cfg: BenchmarkConfig, name: str):
    from .study import load_sim_config

    over = [f"seed={cfg.seed}", f"dataset.n_per_class_train={cfg.data.n_per_class_train}",
            f"dataset.n_per_class_test={cfg.data.n_per_class_test}", *cfg.data.sim_overrides]
    return load_sim_config(cfg.data.datasets[name], over)


def _dataset_path(cfg: BenchmarkConfig, run: Run, name: str, sim_cfg) -> Path:
    if cfg.data.dataset_dir is None:
        return run.path / "datasets" / name
    digest = hashlib.sha1(json.dumps(config_to_dict(sim_cfg), sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.data.dataset_dir) / f"{name}-{digest}"


def prepare_data(cfg: BenchmarkConfig, run: Run) -> dict[str, dict[str, Arrays]]:
    """Simulate (or reuse) every dataset and load it: ``{name: {"train": arrays, "test": arrays}}``."""
    from .study import load_images, simulate_dataset

    out: dict[str, dict[str, Arrays]] = {}
    info = {}
    for name in cfg.data.datasets:
        sim_cfg = _sim_config(cfg, name)
        path = _dataset_path(cfg, run, name, sim_cfg)
        log.info("dataset %s: %s (%d + %d images per class)", name, path, cfg.data.n_per_class_train,
                 cfg.data.n_per_class_test)
        simulate_dataset(sim_cfg, path, workers=cfg.data.workers, device=cfg.data.device)
        out[name] = {split: load_images(path, split) for split in ("train", "test")}
        info[name] = {"path": str(path), "simulator_preset": cfg.data.datasets[name],
                      "n_train": int(len(out[name]["train"][1])), "n_test": int(len(out[name]["test"][1]))}
    run.update_metrics({"benchmark": {"datasets": info}})
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
                  plateau_factor=t.plateau_factor)
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
    res = fit(module, train_loader, val_loader, run.checkpoints / tag, max_epochs=epochs or t.epochs,
              patience=patience if epochs is not None else t.patience,
              devices=devices if devices is not None else t.devices,
              accelerator=accelerator if accelerator is not None else t.accelerator,
              precision=t.precision, log_dir=run.logs, tag=tag, seed=cfg.seed)
    load_best(module, res.best_path)
    return module, res


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
    with run.stage(f"train-{cfg.task}"):
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


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------
def d4_transforms(group: str = "d4") -> list:
    """The exact pixel-grid symmetries: 4 rotations by 90° (``c4``), times 2 reflections (``d4``)."""
    if group not in ("c4", "d4"):
        raise ValueError(f"group = {group!r}: must be c4 or d4")
    ops = []
    for flip in ((False, True) if group == "d4" else (False,)):
        for k in range(4):
            def op(x, k=k, flip=flip):
                x = torch.flip(x, dims=(-1,)) if flip else x
                return torch.rot90(x, k, dims=(-2, -1))
            ops.append(op)
    return ops


def _predict(module, x: np.ndarray, batch_size: int, transform=None) -> np.ndarray:
    xt = torch.as_tensor(x)
    if transform is not None:
        xt = transform(xt).contiguous()
    return predict(module, make_loader(ArrayDataset(xt), batch_size, shuffle=False))


def predict_tta(module, x: np.ndarray, batch_size: int = 256, group: str = "d4") -> np.ndarray:
    """Average of the module's predictions (probabilities or values) over the D4/C4 images."""
    preds = [_predict(module, x, batch_size, op) for op in d4_transforms(group)]
    return np.mean(preds, axis=0)


def _downsample_curve(fpr: np.ndarray, tpr: np.ndarray, n: int = 400) -> dict[str, list[float]]:
    if fpr.size > n:
        keep = np.unique(np.r_[0, np.linspace(0, fpr.size - 1, n - 2).astype(int), fpr.size - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


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
    with run.stage(f"evaluate-{cfg.task}"):
        for dataset, arrays in data.items():
            x, y = _task_arrays(cfg, arrays["test"])
            preds = {}
            for model in cfg.models:
                module = _trained_module(cfg, run, dataset, model)
                t0 = time.perf_counter()
                p = _predict(module, x, cfg.train.eval_batch_size)
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
            base = "resnet50" if "resnet50" in preds else cfg.models[0]
            for model in preds:
                if model != base:
                    comparison.setdefault(dataset, {})[f"{model}-minus-{base}"] = _paired_diff(cfg, y, preds[model], preds[base])
        run.update_metrics({"benchmark": {"task": cfg.task, "test": results, "tta": tta, "comparison": comparison,
                                          "reference": reference}})
    return {"test": results, "tta": tta, "comparison": comparison, "reference": reference}


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
    with run.stage(f"data-efficiency-{cfg.task}"):
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
                        epochs = min(math.ceil(cfg.train.epochs / f), de.max_epochs) if de.equal_steps else cfg.train.epochs
                        module, _ = _fit_one(cfg, run, dataset, model, (tr[0][idx], tr[1][idx]), va, fraction=f,
                                             epochs=epochs, patience=de.patience, devices=devices, accelerator=accelerator)
                    res = _score(cfg, y_te, _predict(module, x_te, cfg.train.eval_batch_size))
                    out.setdefault(dataset, {}).setdefault(model, {})[f"{f:g}"] = {"n_train": int(len(idx)), key: res[key]}
                    log.info("data efficiency %s %s fraction %g (%d images): %s %.4f", dataset, model, f, len(idx), key,
                             res[key]["value"])
        run.update_metrics({"benchmark": {"data_efficiency": out}})
    return out


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
    from ..report import Report, fmt_ci

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
           "training-set mean for every image.</p>" if cfg.task == "regress" else ""))
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


# ---------------------------------------------------------------------------------------
# all stages
# ---------------------------------------------------------------------------------------
def run_benchmark(cfg: BenchmarkConfig, run_dir: Path | str | None = None,
                  data: dict[str, dict[str, Arrays]] | None = None, devices=None, accelerator=None) -> Run:
    """All stages. ``data`` (``{name: {"train": (x, y, log10_m), "test": …}}``) replaces the
    simulated datasets, e.g. for tests or external images; it must use ``cfg.data.datasets``'s
    names when data efficiency is enabled."""
    run = create_run(cfg, run_dir)
    if data is None:
        with run.stage("data"):
            data = prepare_data(cfg, run)
    else:
        for name, splits in data.items():
            for split in ("train", "test"):
                if split not in splits:
                    raise ConfigError(f"dataset {name}: no {split!r} split given")
                _check_arrays(name, split, splits[split])
        missing = [d for d in cfg.data_efficiency.datasets if cfg.data_efficiency.enabled and d not in data]
        if missing:
            raise ConfigError(f"data_efficiency.datasets {missing}: not among the given datasets ({', '.join(data)})")
        run.update_metrics({"benchmark": {"datasets": {n: {"path": "in memory", "n_train": int(len(s["train"][1])),
                                                           "n_test": int(len(s["test"][1]))} for n, s in data.items()}}})
    train_models(cfg, run, data, devices=devices, accelerator=accelerator)
    evaluate(cfg, run, data)
    data_efficiency(cfg, run, data, devices=devices, accelerator=accelerator)
    with run.stage("report"):
        path = report(cfg, run)
    log.info("report: %s", path)
    return run
