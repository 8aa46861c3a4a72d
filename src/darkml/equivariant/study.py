"""The equivariant-network benchmark as stages: simulate → train → evaluate → efficiency → report.

Each stage reads the config from the run directory and writes only into it::

    from darkml.equivariant import study
    cfg = study.load("quick", ["task=regress", "models=[resnet50,c8]"])
    run = study.run(cfg, "runs/bench")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from darkml.runs import Run
from darkml.study import Shortcut, Stage, Study, execute

from . import benchmark, figures
from .config import PRESETS_DIR, BenchmarkConfig

__all__ = ["STUDY", "load", "simulate", "train", "evaluate", "efficiency", "report", "run", "run_benchmark"]


def load(preset: str = "quick", overrides: Iterable[str] = ()) -> BenchmarkConfig:
    return STUDY.load(preset, overrides)


def _cfg(run: Run) -> BenchmarkConfig:
    return run.load_config(BenchmarkConfig)


def simulate(run: Run, workers: int | None = None) -> dict[str, Path]:
    """Simulate (or reuse) the Euclid- and HST-like datasets (zarr, resumable)."""
    return benchmark.prepare_data(_cfg(run), run, workers=workers)


def train(run: Run, devices: Any = None, accelerator: str | None = None) -> dict[str, Any]:
    """Fit every model on every dataset (one Lightning fit each; resumes)."""
    cfg = _cfg(run)
    return benchmark.train_models(cfg, run, benchmark.load_data(cfg, run), devices=_devices(devices),
                                  accelerator=_accelerator(accelerator))


def evaluate(run: Run) -> dict[str, Any]:
    """Test-set metrics with bootstrap intervals, TTA for the baseline, paired comparisons."""
    cfg = _cfg(run)
    return benchmark.evaluate(cfg, run, benchmark.load_data(cfg, run))


def efficiency(run: Run, devices: Any = None, accelerator: str | None = None) -> dict[str, Any]:
    """Data-efficiency curve: test metric after training on fractions of the training set."""
    cfg = _cfg(run)
    return benchmark.data_efficiency(cfg, run, benchmark.load_data(cfg, run), devices=_devices(devices),
                                     accelerator=_accelerator(accelerator))


def report(run: Run) -> Path:
    """Write report.html (Table 1 or 2, ROC / mass plots, convergence, throughput)."""
    return figures.report(_cfg(run), run)


def _devices(devices: Any) -> Any:
    return None if devices in (None, "auto") else devices


def _accelerator(accelerator: str | None) -> str | None:
    return None if accelerator in (None, "auto") else accelerator


def run(cfg: BenchmarkConfig, run_dir: Path | str | None = None, **options: Any) -> Run:
    return execute(STUDY, cfg, run_dir, **options)[0]


def run_benchmark(cfg: BenchmarkConfig, run_dir: Path | str | None = None, data: dict | None = None,
                  devices: Any = None, accelerator: str | None = None) -> Run:
    """All stages. ``data`` (``{name: {"train": (x, y, log10_m), "test": …}}``) replaces the
    simulated datasets, e.g. for tests or external images; it must use ``cfg.data.datasets``'s
    names when data efficiency is enabled."""
    if data is None:
        return run(cfg, run_dir, devices=devices, accelerator=accelerator)
    r = Run.create(STUDY.name, cfg, path=run_dir or Run.default_path(STUDY.name, f"{cfg.preset}-{cfg.task}"))
    with r.stage("simulate"):  # the given arrays take the place of the simulated datasets
        benchmark.write_given_data(cfg, r, data)
    names = [s.name for s in STUDY.stages if s.name != "simulate"]
    return execute(STUDY, None, r.path, names, devices=devices, accelerator=accelerator)[0]


def expected_outputs(cfg: BenchmarkConfig) -> dict[str, int]:
    n = 3 * (cfg.data.n_per_class_train + cfg.data.n_per_class_test) * (64 * 64 * 4 + 240)
    return {f"datasets/{name}": n for name in cfg.data.datasets} | {"checkpoints": 0}


STUDY = Study(
    name="equivariant", title="ResNet50 vs equivariant networks (C8, Harmonic Net, Equivariant Transformer).",
    config_model=BenchmarkConfig, presets=PRESETS_DIR,
    preset_aliases={"benchmark-quick": "quick", "benchmark-paper": "paper", "benchmark-cpu": "cpu",
                    "benchmark-cpu-regress": "cpu-regress"},
    stages=(Stage("simulate", simulate, uses=("workers",)),
            Stage("train", train, uses=("devices", "accelerator")),
            Stage("evaluate", evaluate),
            Stage("efficiency", efficiency, uses=("devices", "accelerator")),
            Stage("report", report, echo=lambda p: f"report: {p}")),
    shortcuts=(Shortcut.key("--task", "task", "classify (Table 1) or regress (Table 2)", short="-t"),
               Shortcut.key("--models", "models", "comma-separated, e.g. resnet50,c8,hnet,etn", short="-m",
                            as_list=True)),
    expected_outputs=expected_outputs,
)
