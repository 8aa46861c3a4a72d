"""The phase-space study: mock (or user) stars -> flows -> accelerations and densities -> report.

Stages (each callable from Python and from ``darkml phasespace <stage>``; they talk only
through the run directory):

* :func:`simulate` — sample the mock galaxy (exact truth) as a zarr dataset: true, smeared
  and re-smeared phase-space coordinates of a parent sample drawn in a ball large enough that
  stars scattered into the observed ball by parallax errors are included; or load a user's
  catalogue into the same layout.
* :func:`train` — an ensemble of flow pairs per dataset (original / smeared / re-perturbed),
  each member on a fresh validation split and a bootstrap resample; resumable.
* :func:`evaluate` — accelerations along x and z through the observer and at the observer,
  kernel-smoothed densities (fast cubature estimator; optionally the paper's Monte Carlo),
  point densities by autograd, the Jeans baseline, and the exact truth; statistical error =
  ensemble spread, systematic error = |re-perturbed − smeared| (Monte-Carlo error propagation).
* :func:`report` — ``report.html`` with profile figures and the paper's tables.

The study defines no physics and no layers: those are in ``mocks``, ``flows``, ``boltzmann``,
``gauss`` and ``jeans``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from darkml.runs import Run
from darkml.storage import SampleStore
from darkml.study import Stage, Study, execute

from .catalogue import CatalogueError, load_catalogue
from .config import PRESETS_DIR, PhaseSpaceConfig
from .config import STUDY as STUDY_NAME
from .dataset import _n_parent, dataset_names, load_stars, write_dataset  # noqa: F401 (re-exported)
from .ensembles import train_ensembles
from .figures import build_report
from .flows import SupportError
from .measure import accelerations_at, measure  # noqa: F401 (re-exported)

__all__ = ["STUDY", "load", "open_run", "simulate", "train", "evaluate", "report", "run_all", "dataset_names",
           "load_stars", "accelerations_at"]


def load(preset: str = "quick", overrides: list[str] | tuple[str, ...] = ()) -> PhaseSpaceConfig:
    """Load a preset (``src/darkml/phasespace/presets/<preset>.yaml``) with ``a.b=value`` overrides."""
    return STUDY.load(preset, overrides)


def open_run(cfg: PhaseSpaceConfig, run_dir: Path | str | None) -> Run:
    return Run.create(STUDY_NAME, cfg, path=run_dir)


def _cfg(run: Run) -> PhaseSpaceConfig:
    return run.load_config(PhaseSpaceConfig)


def simulate(run: Run, workers: int = 1, scheduler: str | None = None) -> SampleStore:
    """Sample the mock galaxy (or load --set catalogue.path=...) into the run's dataset."""
    return write_dataset(_cfg(run), run, workers, scheduler)


def train(run: Run, datasets: list[str] | None = None) -> dict[str, list]:
    """Train (or resume) the flow ensembles (original / smeared / re-perturbed data)."""
    return train_ensembles(_cfg(run), run, datasets)


def evaluate(run: Run) -> dict[str, Any]:
    """Accelerations, densities, Jeans baseline and truth."""
    return measure(_cfg(run), run)


def report(run: Run) -> Path:
    """Write report.html: profiles and the paper's tables."""
    return build_report(_cfg(run), run)


def run_all(cfg: PhaseSpaceConfig, run_dir: Path | str | None = None, workers: int = 1,
            scheduler: str | None = None) -> Run:
    """simulate -> train -> evaluate -> report in one run directory (each stage resumes)."""
    return execute(STUDY, cfg, run_dir, workers=workers, scheduler=scheduler)[0]


def expected_outputs(cfg: PhaseSpaceConfig) -> dict[str, int]:
    return {"dataset": _n_parent(cfg) * 3 * 6 * 8}


def preflight(cfg: PhaseSpaceConfig) -> None:
    """A user catalogue is read and checked (format, columns, units, stars in the volume) up front."""
    c = cfg.catalogue
    if c.path is not None:
        load_catalogue(c.path, c.frame, c.columns or None, cfg.mock.observer_kpc, cfg.mock.radius_kpc,
                       cfg.required_stars(), c.key)


STUDY = Study(
    name=STUDY_NAME, title="Normalizing flows on stellar phase space: accelerations and dark-matter density.",
    config_model=PhaseSpaceConfig, presets=PRESETS_DIR,
    stages=(Stage("simulate", simulate, uses=("workers", "scheduler")), Stage("train", train),
            Stage("evaluate", evaluate), Stage("report", report, echo=lambda p: f"report: {p}")),
    expected_outputs=expected_outputs, user_errors=(CatalogueError, SupportError), preflight=preflight,
)
