"""``darkml astrometry run|simulate|train|evaluate|report`` — thin over :mod:`.study`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..options import (DevicesOpt, PresetOpt, RunDirOpt, SchedulerOpt, SetOpt, VerboseOpt, WorkersOpt, parse_devices,
                       setup_logging, user_errors)
from ..runs import Run
from . import study

app = typer.Typer(no_args_is_help=True, help="Astrometric lensing of quasars by Milky Way subhalos.")

RunDirArg = typer.Option(..., "--run-dir", "-o", help="run directory made by `simulate` or `run`")


def _new_run(preset: str, set_: Optional[List[str]], run_dir: Optional[Path]) -> Run:
    cfg = study.load(preset, set_ or [])  # validated before anything is written
    return study.create_run(cfg, run_dir)


@app.command()
@user_errors
def run(preset: str = PresetOpt, set_: Optional[List[str]] = SetOpt, run_dir: Optional[Path] = RunDirOpt,
        workers: int = WorkersOpt, scheduler: Optional[str] = SchedulerOpt, devices: str = DevicesOpt,
        verbose: bool = VerboseOpt) -> None:
    """All stages: simulate maps, train, evaluate on the test set, write report.html."""
    setup_logging(verbose)
    cfg = study.load(preset, set_ or [])
    r = study.run(cfg, run_dir, workers=workers, scheduler=scheduler, devices=parse_devices(devices))
    typer.echo(f"report: {r.report_path}")


@app.command()
@user_errors
def simulate(preset: str = PresetOpt, set_: Optional[List[str]] = SetOpt, run_dir: Optional[Path] = RunDirOpt,
             workers: int = WorkersOpt, scheduler: Optional[str] = SchedulerOpt, verbose: bool = VerboseOpt) -> None:
    """Simulate signal maps and noisy maps per scenario (zarr; resumable, deterministic)."""
    setup_logging(verbose)
    r = _new_run(preset, set_, run_dir)
    paths = study.simulate(r, workers=workers, scheduler=scheduler)
    typer.echo(f"datasets: {', '.join(str(p) for p in paths.values())}")


@app.command()
@user_errors
def train(run_dir: Path = RunDirArg, devices: str = DevicesOpt, verbose: bool = VerboseOpt) -> None:
    """Train the classifier(s) of a simulated run (resumes an interrupted training)."""
    setup_logging(verbose)
    study.train(Run.open(run_dir), devices=parse_devices(devices))


@app.command()
@user_errors
def evaluate(run_dir: Path = RunDirArg, verbose: bool = VerboseOpt) -> None:
    """ROC/AUC on the held-out test maps, χ² baseline, integrated-gradient localisation."""
    setup_logging(verbose)
    study.evaluate(Run.open(run_dir))


@app.command()
@user_errors
def report(run_dir: Path = RunDirArg, verbose: bool = VerboseOpt) -> None:
    """Write report.html for a run."""
    setup_logging(verbose)
    typer.echo(f"report: {study.report(Run.open(run_dir))}")
