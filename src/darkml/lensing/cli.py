"""``darkml lensing …``: strong-lensing images (simulate, report).

Thin over :mod:`darkml.lensing.study`; other lensing stages (classification, self-supervised
learning) add their commands to the same ``app``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from darkml.options import SchedulerOpt, SetOpt, VerboseOpt, WorkersOpt, register_user_error, setup_logging, user_errors

from .params import RecordError
from .simulate import SimulationError

app = typer.Typer(no_args_is_help=True, help="Strong-lensing images: simulate, report, learn.")

register_user_error(RecordError)
register_user_error(SimulationError)


@app.command()
@user_errors
def simulate(
    preset: str = typer.Option("euclid-quick", "--preset", "-p", help="euclid, hst, euclid-quick, hst-quick, quick"),
    n_per_class: Optional[int] = typer.Option(None, "--n-per-class", "-n", help="training images per class (test keeps the preset ratio)"),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="torch or lenstronomy"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="dataset directory (default runs/lensing-<preset>/dataset)"),
    workers: int = WorkersOpt,
    scheduler: Optional[str] = SchedulerOpt,
    device: str = typer.Option("auto", "--device", help="torch backend device: auto, cpu or cuda"),
    set_: Optional[List[str]] = SetOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Simulate a dataset: <out>/train.zarr and <out>/test.zarr (resumes if interrupted)."""
    setup_logging(verbose)
    from darkml.config import ConfigError

    from .study import load_sim_config, simulate_dataset

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device = {device!r}: must be auto, cpu or cuda")
    cfg = load_sim_config(preset, set_ or [], n_per_class=n_per_class, backend=backend)
    path = out or Path("runs") / f"lensing-{cfg.preset}" / "dataset"
    paths = simulate_dataset(cfg, path, workers=workers, scheduler=scheduler, device=device)
    for split, p in paths.items():
        typer.echo(f"{split}: {p}")


@app.command()
@user_errors
def report(
    dataset: Path = typer.Argument(..., help="dataset directory written by `darkml lensing simulate`"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="report file (default DATASET/report.html)"),
    split: str = typer.Option("train", "--split", help="train or test"),
    verbose: bool = VerboseOpt,
) -> None:
    """Example images per class, parameter distributions, subhalo statistics, flux-only AUC."""
    setup_logging(verbose)
    from .study import report_dataset

    path = report_dataset(dataset, out=out, split=split)
    typer.echo(str(path))


# --- self-supervised pre-training (darkml.lensing.pretrain) --------------------------------
from darkml.options import DevicesOpt, RunDirOpt, parse_devices  # noqa: E402


@app.command("ssl")
@user_errors
def ssl_command(
    preset: str = typer.Option("ssl-quick", "--preset", "-p", help="ssl-quick or ssl-paper ('quick'/'paper' accepted)"),
    methods: Optional[str] = typer.Option(None, "--methods", help="comma-separated subset of "
                                          "simclr-rotation,simclr-noise,byol,simsiam,dino"),
    encoders: Optional[str] = typer.Option(None, "--encoders", help="comma-separated: resnet50,vit (paper), "
                                           "resnet18, vit-tiny, resnet-tiny"),
    set_: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt,
    devices: str = DevicesOpt,
    report_only: bool = typer.Option(False, "--report-only", help="only rewrite report.html of --run-dir"),
    verbose: bool = VerboseOpt,
) -> None:
    """Self-supervised pre-training, fine-tuning and supervised baselines -> report.html
    (Tables 1-2, Fig. 2, label efficiency, linear probes)."""
    setup_logging(verbose)
    from darkml.runs import Run

    from .pretrain import load, run_ssl, write_report

    if report_only:
        if run_dir is None:
            raise FileNotFoundError("--report-only needs --run-dir")
        typer.echo(f"report: {write_report(Run.open(run_dir))}")
        return
    overrides = list(set_ or [])
    if methods:
        overrides.append(f"methods=[{methods}]")
    if encoders:
        overrides.append(f"encoders=[{encoders}]")
    cfg = load(preset, overrides)
    run = run_ssl(cfg, run_dir, devices=parse_devices(devices))
    typer.echo(f"report: {run.report_path}")


@app.command()
@user_errors
def benchmark(
    preset: str = typer.Option("benchmark-quick", "--preset", "-p",
                               help="benchmark-quick (CPU smoke run) or benchmark-paper (the paper's setup, GPU); "
                                    "'quick' / 'paper' also work"),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="classify (Table 1) or regress (Table 2)"),
    models: Optional[str] = typer.Option(None, "--models", "-m", help="comma-separated, e.g. resnet50,c8,hnet,etn"),
    set_: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="run directory (default runs/lensing-<preset>-<task>-<time>)"),
    devices: str = typer.Option("auto", "--devices", help="training devices: 'auto' or a GPU count (>1 uses DDP)"),
    accelerator: Optional[str] = typer.Option(None, "--accelerator", help="auto, cpu or gpu (default: the preset's)"),
    verbose: bool = VerboseOpt,
) -> None:
    """ResNet50 vs equivariant networks (C8, Harmonic Net, Equivariant Transformer): train on the
    Euclid- and HST-like datasets, write Table 1 or 2, ROC / mass plots, convergence, throughput."""
    setup_logging(verbose)
    from darkml.config import ConfigError
    from darkml.options import parse_devices

    from .classify import load_benchmark_config, run_benchmark

    overrides = list(set_ or [])
    if task is not None:
        overrides.append(f"task={task}")
    if models is not None:
        overrides.append(f"models=[{models}]")
    if accelerator is not None and accelerator not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"--accelerator = {accelerator!r}: must be auto, cpu or gpu")
    cfg = load_benchmark_config(preset, overrides)
    dev = parse_devices(devices)
    run = run_benchmark(cfg, run_dir, devices=None if dev == "auto" else dev, accelerator=accelerator)
    typer.echo(f"report: {run.report_path}")
