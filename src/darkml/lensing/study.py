"""The strong-lensing simulator as a study: ``simulate`` → ``report``.

``simulate`` writes ``<run>/dataset/train.zarr`` and ``test.zarr`` (see
:mod:`darkml.lensing.dataset` for the format); ``report`` writes ``<run>/report.html`` with
example images, parameter distributions, subhalo statistics and the flux-only check::

    from darkml.lensing import study
    run = study.run(study.load("euclid-quick"), "runs/lens")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from darkml.runs import Run
from darkml.study import Shortcut, Stage, Study, execute

from .dataset import PRESETS_DIR, SPLITS, n_per_class_overrides, simulate_dataset
from .figures import report_dataset
from .params import DatasetCfg, LensingSimConfig, RecordError
from .simulate import BACKENDS, SimulationError

__all__ = ["STUDY", "load", "simulate", "report", "run"]


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


def report(run: Run) -> Path:
    """Example images per class, parameter distributions, subhalo statistics, flux-only AUC."""
    return report_dataset(run.dataset_path, out=run.report_path)


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
            Stage("report", report, echo=lambda p: f"report: {p}")),
    shortcuts=(Shortcut("--n-per-class", "training images per class (the test set keeps the preset's ratio)",
                        _n_per_class, short="-n", type=int),
               Shortcut.key("--backend", "dataset.backend", f"simulator backend: {', '.join(BACKENDS)}", short="-b")),
    expected_outputs=expected_outputs, user_errors=(RecordError, SimulationError),
)
