"""``darkml gas run|simulate|train|evaluate|report``: thin wrappers over darkml.gas.study.

Examples::

    darkml gas run --preset quick --run-dir runs/gas-quick
    darkml gas simulate --preset paper --set sky.floor_realizations=4 -j 8 --run-dir runs/gas-paper
    darkml gas train --run-dir runs/gas-paper --accelerator gpu
    darkml gas run --preset paper --mopra /data/mopra-dr3 --run-dir runs/gas-mopra   # real cubes

``--mopra DIR`` replaces the synthetic sky by the MOPRA FITS cubes in DIR (pairs of
``*12CO*.fits`` / ``*13CO*.fits``; the noise floor is then not available). Later stages read
the config stored in the run directory, so only ``--run-dir`` is needed after the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..options import (
    AcceleratorOpt,
    DevicesOpt,
    PresetOpt,
    RunDirOpt,
    SchedulerOpt,
    SetOpt,
    VerboseOpt,
    WorkersOpt,
    parse_devices,
    register_user_error,
    setup_logging,
    user_errors,
)
from ..runs import Run, RunError
from . import study
from .config import GasConfig
from .mopra import MopraError

register_user_error(MopraError)

app = typer.Typer(no_args_is_help=True, help="13CO gas maps from 12CO: Gaussian processes and a patch CNN.")

MopraOpt = typer.Option(None, "--mopra", help="folder of MOPRA FITS cubes to use instead of the synthetic sky")


def _config(preset: str, set_: Optional[List[str]], run_dir: Optional[Path], mopra: Optional[Path]) -> tuple[GasConfig, Run]:
    """A new run from preset + overrides, or the run directory's stored config when it has one."""
    if run_dir is not None and (Path(run_dir) / "config.yaml").is_file() and not set_ and mopra is None:
        run = Run.open(run_dir)
        cfg = run.load_config(GasConfig)
        if preset not in (cfg.preset, "quick"):
            raise RunError(f"{run_dir} holds a {cfg.preset!r} run; drop --preset or use another --run-dir")
        return cfg, run
    cfg = study.load(preset, set_ or [], str(mopra) if mopra else None)
    return cfg, study.create_run(cfg, run_dir)


@app.command()
@user_errors
def run(preset: str = PresetOpt, set_: Optional[List[str]] = SetOpt, run_dir: Optional[Path] = RunDirOpt,
        mopra: Optional[Path] = MopraOpt, workers: int = WorkersOpt, scheduler: Optional[str] = SchedulerOpt,
        devices: str = DevicesOpt, accelerator: str = AcceleratorOpt, verbose: bool = VerboseOpt) -> None:
    """All stages: simulate (or read MOPRA) -> train -> evaluate -> report."""
    setup_logging(verbose)
    cfg, r = _config(preset, set_, run_dir, mopra)
    study.run(cfg, r.path, workers, scheduler, parse_devices(devices), None if accelerator == "auto" else accelerator)
    typer.echo(f"report: {r.report_path}")


@app.command()
@user_errors
def simulate(preset: str = PresetOpt, set_: Optional[List[str]] = SetOpt, run_dir: Optional[Path] = RunDirOpt,
             mopra: Optional[Path] = MopraOpt, workers: int = WorkersOpt, scheduler: Optional[str] = SchedulerOpt,
             verbose: bool = VerboseOpt) -> None:
    """Make the dataset: the synthetic survey, or the tiles of local MOPRA cubes (--mopra DIR)."""
    setup_logging(verbose)
    cfg, r = _config(preset, set_, run_dir, mopra)
    store = study.simulate(cfg, r, workers, scheduler)
    typer.echo(f"dataset: {store.path} ({store.n_samples} tiles)")


@app.command()
@user_errors
def train(preset: str = PresetOpt, set_: Optional[List[str]] = SetOpt, run_dir: Optional[Path] = RunDirOpt,
          devices: str = DevicesOpt, accelerator: str = AcceleratorOpt, verbose: bool = VerboseOpt) -> None:
    """Fit the baselines, the GP, the Optuna search and the CNNs (resumes)."""
    setup_logging(verbose)
    cfg, r = _config(preset, set_, run_dir, None)
    study.train(cfg, r, parse_devices(devices), None if accelerator == "auto" else accelerator)
    typer.echo(f"checkpoints: {r.checkpoints}")


@app.command()
@user_errors
def evaluate(preset: str = PresetOpt, set_: Optional[List[str]] = SetOpt, run_dir: Optional[Path] = RunDirOpt,
             verbose: bool = VerboseOpt) -> None:
    """Predict the test region; Table 1, heatmaps, generalisation and the noise floor -> metrics.json."""
    setup_logging(verbose)
    cfg, r = _config(preset, set_, run_dir, None)
    ev = study.evaluate(cfg, r)
    for name, m in ev["models"].items():
        typer.echo(f"{name:26s} r={_fmt(m['pearson']['value'])}  SAE={_fmt(m['scaled_abs_error']['value'])}  "
                   f"hot={_fmt(m['hotspot_abs_error']['value'])}")


@app.command()
@user_errors
def report(preset: str = PresetOpt, set_: Optional[List[str]] = SetOpt, run_dir: Optional[Path] = RunDirOpt,
           verbose: bool = VerboseOpt) -> None:
    """Write report.html from the run's metrics and predictions."""
    setup_logging(verbose)
    cfg, r = _config(preset, set_, run_dir, None)
    typer.echo(f"report: {study.report(cfg, r)}")


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4f}"
