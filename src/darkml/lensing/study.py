"""The strong-lensing simulator as a study: ``simulate`` → ``detectability`` → ``report``.

``simulate`` writes ``<run>/dataset/train.zarr`` and ``test.zarr`` (see
:mod:`darkml.lensing.dataset` for the format); ``detectability`` measures how far each
substructure image is from a smooth lens (sqrt(χ²), raw and after a substructure-free refit,
and the oracle AUC it implies; :mod:`darkml.lensing.detectability`) into
``<run>/detectability.npz``; ``report`` writes ``<run>/report.html`` with example images,
parameter distributions, subhalo statistics, the detectability and the flux-only check::

    from darkml.lensing import study
    run = study.run(study.load("euclid-quick"), "runs/lens")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from darkml.runs import Run
from darkml.study import Shortcut, Stage, Study, execute

from .dataset import PRESETS_DIR, SPLITS, n_per_class_overrides, open_split, simulate_dataset
from .detectability import measure_stored, summarise
from .sensitivity import run_sensitivity
from .figures import report_dataset
from .params import DatasetCfg, LensingSimConfig, RecordError
from .simulate import BACKENDS, SimulationError

__all__ = ["STUDY", "load", "simulate", "detectability", "sensitivity", "report", "run"]


def load(preset: str = "quick", overrides: Iterable[str] = ()) -> LensingSimConfig:
    return STUDY.load(preset, overrides)


def simulate(run: Run, workers: int = 1, scheduler: str | None = None, accelerator: str = "auto") -> Path:
    """Simulate the dataset: <run>/dataset/{train,test}.zarr (resumes if interrupted).

    ``accelerator`` (torch backend: auto, cpu or gpu) is an execution choice: CPU and CUDA
    agree to float32 round-off, not bit for bit."""
    cfg = run.load_config(LensingSimConfig)
    device = {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}.get(accelerator, "auto")
    simulate_dataset(cfg, run.dataset_path, workers=workers, scheduler=scheduler, device=device)
    return run.dataset_path


def detectability(run: Run) -> dict[str, Any] | None:
    """Ideal significance of the substructure, raw and after a smooth-lens refit (oracle AUC)."""
    cfg = run.load_config(LensingSimConfig)
    d = cfg.detectability
    if d.n_per_class == 0:
        return None
    labels = open_split(run.dataset_path, d.split).read("label")
    idx = np.concatenate([np.nonzero(labels == c)[0][: d.n_per_class] for c in (1, 2)])
    res = measure_stored(run.dataset_path, d.split, idx, run.path / "detectability.npz", batch_size=d.batch_size,
                         max_iter=d.max_iter)
    summary = summarise(res, seed=cfg.seed)
    run.update_metrics({"detectability": summary})
    return summary


def _echo_detectability(summary: dict[str, Any] | None) -> str | None:
    if not summary:
        return "detectability: skipped (detectability.n_per_class = 0)"
    return "; ".join(f"{name}: median sqrt(chi2) {row['raw']['sqrt_chi2']['median']:.3g} raw, "
                     f"{row['refit']['sqrt_chi2']['median']:.3g} refit, oracle AUC {row['refit']['oracle_auc']['value']:.3f}"
                     for name, row in summary.items())


def sensitivity(run: Run, workers: int = 1) -> list[dict[str, Any]] | None:
    """Classifier AUC (no substructure vs CDM) against the total subhalo mass, beside the oracle."""
    cfg = run.load_config(LensingSimConfig)
    if not cfg.sensitivity.slopes:
        return None
    return run_sensitivity(run, workers=workers)


def _echo_sensitivity(rows: list[dict[str, Any]] | None) -> str | None:
    if not rows:
        return "sensitivity: skipped (sensitivity.slopes is empty)"
    return "\n".join(f"slope {r['slope']:+.2f}: median {r['median_sub_mass_total']:.3g} Msun/image, CNN AUC "
                     f"{r['cnn']['auc']['value']:.3f}, oracle {r['oracle_refit']['oracle_auc']['value']:.3f}" for r in rows)


def report(run: Run) -> Path:
    """Example images per class, parameter distributions, subhalo statistics, detectability, flux-only AUC."""
    det = run.path / "detectability.npz"
    sens = run.metrics().get("sensitivity", {}).get("points")
    return report_dataset(run.dataset_path, out=run.report_path, detectability=det if det.is_file() else None,
                          sensitivity=sens)


def run(cfg: LensingSimConfig, run_dir: Path | str | None = None, **options: Any) -> Run:
    return execute(STUDY, cfg, run_dir, **options)[0]


def _n_per_class(value: int, preset: dict) -> list[str]:
    """``--n-per-class N``: N training images per class; the test set keeps the preset's ratio."""
    defaults = DatasetCfg()
    ds = {"n_per_class_train": defaults.n_per_class_train, "n_per_class_test": defaults.n_per_class_test,
          **preset.get("dataset", {})}
    return n_per_class_overrides(value, ds["n_per_class_train"], ds["n_per_class_test"])


def expected_outputs(cfg: LensingSimConfig) -> dict[str, int]:
    per_image = cfg.image.num_pix**2 * 4 + 8 * 30
    return {f"dataset/{split}.zarr": 3 * per_image * (cfg.dataset.n_per_class_train if split == "train"
                                                     else cfg.dataset.n_per_class_test) for split in SPLITS}


STUDY = Study(
    name="lensing", title="Strong-lensing images: no substructure / CDM subhalos / axion vortices.",
    config_model=LensingSimConfig, presets=PRESETS_DIR, default_preset="quick",
    stages=(Stage("simulate", simulate, uses=("workers", "scheduler", "accelerator"),
                  echo=lambda p: f"dataset: {p}"),
            Stage("detectability", detectability, echo=_echo_detectability),
            Stage("sensitivity", sensitivity, uses=("workers",), echo=_echo_sensitivity),
            Stage("report", report, echo=lambda p: f"report: {p}")),
    shortcuts=(Shortcut("--n-per-class", "training images per class (the test set keeps the preset's ratio)",
                        _n_per_class, short="-n", type=int),
               Shortcut.key("--backend", "dataset.backend", f"simulator backend: {', '.join(BACKENDS)}", short="-b")),
    expected_outputs=expected_outputs, user_errors=(RecordError, SimulationError),
)
