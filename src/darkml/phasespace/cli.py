"""``darkml phasespace run|simulate|train|evaluate|report`` — thin over :mod:`darkml.phasespace.study`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..options import PresetOpt, RunDirOpt, SchedulerOpt, SetOpt, VerboseOpt, WorkersOpt, setup_logging, user_errors
from ..runs import Run, RunError
from . import study

app = typer.Typer(no_args_is_help=True, help="Normalizing flows on stellar phase space: accelerations and dark-matter density.")


def _setup(preset: str, set_: Optional[List[str]], run_dir: Optional[Path], verbose: bool, must_exist: bool = False):
    setup_logging(verbose)
    if must_exist:
        if run_dir is None:
            raise RunError("--run-dir is required for this stage (the run made by `simulate`)")
        run = Run.open(run_dir)
        cfg = run.load_config(study.PhaseSpaceConfig)
        if set_:
            raise RunError("--set is not allowed on an existing run (its config is fixed); start a new --run-dir")
        return cfg, run
    cfg = study.load(preset, set_ or [])
    return cfg, study.open_run(cfg, run_dir)


@app.command()
@user_errors
def run(preset: str = PresetOpt, set_: Optional[List[str]] = SetOpt, run_dir: Optional[Path] = RunDirOpt,
        workers: int = WorkersOpt, scheduler: Optional[str] = SchedulerOpt, verbose: bool = VerboseOpt) -> None:
    """All stages: simulate -> train -> evaluate -> report (each resumes)."""
    setup_logging(verbose)
    cfg = study.load(preset, set_ or [])
    r = study.run_all(cfg, run_dir, workers, scheduler)
    typer.echo(f"report: {r.report_path}")


@app.command()
@user_errors
def simulate(preset: str = PresetOpt, set_: Optional[List[str]] = SetOpt, run_dir: Optional[Path] = RunDirOpt,
             workers: int = WorkersOpt, scheduler: Optional[str] = SchedulerOpt, verbose: bool = VerboseOpt) -> None:
    """Sample the mock galaxy (or load --set catalogue.path=...) into the run's dataset."""
    cfg, r = _setup(preset, set_, run_dir, verbose)
    with r.stage("simulate"):
        study.simulate(cfg, r, workers, scheduler)
    typer.echo(f"run: {r.path}")


@app.command()
@user_errors
def train(run_dir: Optional[Path] = RunDirOpt, verbose: bool = VerboseOpt,
          dataset: Optional[List[str]] = typer.Option(None, "--dataset", help="original | smeared | reperturbed (repeatable)")) -> None:
    """Train (or resume) the flow ensembles of an existing run."""
    cfg, r = _setup("", None, run_dir, verbose, must_exist=True)
    with r.stage("train"):
        study.train(cfg, r, list(dataset) if dataset else None)


@app.command()
@user_errors
def evaluate(run_dir: Optional[Path] = RunDirOpt, verbose: bool = VerboseOpt) -> None:
    """Accelerations, densities, Jeans baseline and truth for an existing run."""
    cfg, r = _setup("", None, run_dir, verbose, must_exist=True)
    with r.stage("evaluate"):
        study.evaluate(cfg, r)


@app.command()
@user_errors
def report(run_dir: Optional[Path] = RunDirOpt, verbose: bool = VerboseOpt) -> None:
    """Write report.html for an existing run."""
    cfg, r = _setup("", None, run_dir, verbose, must_exist=True)
    with r.stage("report"):
        path = study.report(cfg, r)
    typer.echo(f"report: {path}")
