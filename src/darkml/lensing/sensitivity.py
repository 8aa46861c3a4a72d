"""Substructure sensitivity: how much subhalo mass must a lens hold before a CNN sees it?

Beyond both papers. For each point of ``sensitivity.slopes`` the run's own simulator config is
re-drawn with that CDM mass-function slope (everything else — instrument, main lens, count, mass
range, positions — unchanged), so the total subhalo mass per image runs from the physical
population (dN/dM ∝ M^-1.9, ~3e8 Msun per image) to the papers' (M^-0.9, ~3.8e10). At each
point the same network is trained with the same budget to tell no-substructure from CDM images
(binary, the axion class is not used), and its test AUC (bootstrap interval) stands beside the
oracle ceiling of :mod:`.detectability` on the same test images: the refitted sqrt(χ²) oracle
(what a classifier that must infer the lens can reach at best) and the raw one (the lens known).

Outputs: ``<run>/sensitivity/slope<s>/`` (dataset, checkpoints, ``detectability.npz``) and
``metrics.json["sensitivity"]``; the report draws AUC against the median total subhalo mass.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import metrics
from ..config import config_to_dict
from ..learn import ArrayDataset, ClassifierModule, count_parameters, fit, load_best, make_loader, split_indices
from ..learn.dihedral import predict_array
from ..learn.registry import create_model
from ..runs import Run
from .dataset import load_images, open_split, simulate_dataset
from .detectability import measure_stored, summarise
from .params import SCALAR_FIELDS, LensingSimConfig

log = logging.getLogger(__name__)

__all__ = ["point_config", "run_sensitivity"]


def point_config(cfg: LensingSimConfig, slope: float) -> LensingSimConfig:
    """The run's simulator config with CDM slope ``slope`` and the sensitivity sizes."""
    s = cfg.sensitivity
    data = config_to_dict(cfg)
    data["cdm"]["slope"] = float(slope)
    data["dataset"]["n_per_class_train"] = s.n_per_class_train
    data["dataset"]["n_per_class_test"] = s.n_per_class_test
    data["dataset"]["chunk_size"] = min(cfg.dataset.chunk_size, 3 * s.n_per_class_test)
    return LensingSimConfig.model_validate(data)


def _binary(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = y < 2  # no substructure (0) against CDM (1)
    return x[keep], y[keep].astype(np.int64)


def _train_point(cfg: LensingSimConfig, path: Path, run: Run, tag: str) -> dict[str, Any]:
    s = cfg.sensitivity
    x, y = _binary(*load_images(path / "dataset", "train")[:2])
    tr, va = split_indices(len(y), (1 - s.val_fraction, s.val_fraction), seed=cfg.seed)
    import darkml.learn.resnet  # noqa: F401 (registers the ResNets)

    try:  # the equivariant networks register on import (c8, hnet, etn, cnn)
        import darkml.equivariant.models  # noqa: F401
    except ImportError:  # pragma: no cover - e2cnn missing: only the plain networks are available
        pass
    torch.manual_seed(cfg.seed)  # the same initial network at every point
    model = create_model(s.model, in_channels=1, num_outputs=2, **s.model_options)
    module = ClassifierModule(model, num_classes=2, lr=s.lr)
    res = fit(module, make_loader(ArrayDataset(x[tr], y[tr], seed=cfg.seed), s.batch_size, shuffle=True, seed=cfg.seed),
              make_loader(ArrayDataset(x[va], y[va]), 256, shuffle=False), path / "checkpoints", max_epochs=s.epochs,
              accelerator="cpu" if s.device == "cpu" else "auto", devices=1, log_dir=run.logs, tag=tag, seed=cfg.seed)
    load_best(module, res.best_path)
    xt, yt = _binary(*load_images(path / "dataset", "test")[:2])
    p = predict_array(module, xt, 256)[:, 1]
    return {"auc": metrics.bootstrap_ci(metrics.auc, yt, p, n_boot=1000, seed=cfg.seed), "n_train": int(len(tr)),
            "n_test": int(len(yt)), "epochs": res.epochs, "params": count_parameters(module.model)}


def run_sensitivity(run: Run, workers: int = 1) -> list[dict[str, Any]]:
    """Every point: simulate (resumable), train (resumes), detectability; rows in slope order."""
    cfg = run.load_config(LensingSimConfig)
    rows = []
    for slope in cfg.sensitivity.slopes:
        t0 = time.perf_counter()
        pc = point_config(cfg, slope)
        path = run.path / "sensitivity" / f"slope{slope:+.2f}"
        simulate_dataset(pc, path / "dataset", workers=workers, device="cpu")
        test = open_split(path / "dataset", "test")
        labels = test.read("label")
        det = measure_stored(path / "dataset", "test", np.nonzero(labels == 1)[0][: cfg.sensitivity.n_detectability],
                             path / "detectability.npz", batch_size=cfg.detectability.batch_size,
                             max_iter=cfg.detectability.max_iter)
        summary = summarise(det, seed=cfg.seed)["cdm"]
        train = _train_point(cfg, path, run, f"sensitivity-slope{slope:+.2f}")
        m = test.read("params")[labels == 1, SCALAR_FIELDS.index("sub_mass_total")]
        row = {"slope": float(slope), "median_sub_mass_total": float(np.median(m)),
               "mean_sub_mass_total": float(np.mean(m)), "expected_mean_sub_mass_total": pc.cdm.mean_total_mass(),
               "cnn": train, "oracle_refit": summary["refit"], "oracle_raw": summary["raw"],
               "wall_s": time.perf_counter() - t0}
        log.info("sensitivity slope %+.2f: median %.3g Msun per image, CNN AUC %.3f, oracle (refit) %.3f", slope,
                 row["median_sub_mass_total"], train["auc"]["value"], summary["refit"]["oracle_auc"]["value"])
        rows.append(row)
        run.update_metrics({"sensitivity": {"points": rows, "model": cfg.sensitivity.model,
                                            "model_options": cfg.sensitivity.model_options}})
    return rows
