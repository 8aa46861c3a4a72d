"""Options and error handling shared by every study's sub-app of the ``darkml`` CLI.

A study's ``cli.py`` builds its typer app from these so that every study accepts the same
``--preset``, ``--set key=value``, ``--run-dir``, ``--workers``, ``--scheduler`` and
``--devices`` options, and every user-facing error (bad config, foreign or incomplete dataset,
inconsistent run directory, bad catalogue) is printed as one line with exit code 2 instead of
a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable, List, Optional, TypeVar

import typer

from .config import ConfigError
from .runs import RunError
from .storage import DatasetError

F = TypeVar("F", bound=Callable)

__all__ = [
    "PresetOpt", "SetOpt", "RunDirOpt", "WorkersOpt", "SchedulerOpt", "DevicesOpt", "AcceleratorOpt", "VerboseOpt",
    "user_errors", "setup_logging", "USER_ERRORS",
]

PresetOpt = typer.Option("quick", "--preset", "-p", help="preset name (see the study's presets/ folder)")
SetOpt = typer.Option(None, "--set", "-s", help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")
RunDirOpt = typer.Option(None, "--run-dir", "-o", help="run directory (default runs/<study>-<preset>-<time>)")
WorkersOpt = typer.Option(1, "--workers", "-j", min=1, help="local worker processes for data generation")
SchedulerOpt = typer.Option(None, "--scheduler", help="Dask scheduler address, or 'local' for a LocalCluster")
DevicesOpt = typer.Option("auto", "--devices", help="training devices: 'auto' or a GPU count (>1 uses DDP)")
AcceleratorOpt = typer.Option("auto", "--accelerator", help="auto, cpu or gpu")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="debug logging")

#: exceptions that are the user's to fix: shown as one line, exit code 2
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DatasetError, RunError, FileNotFoundError)


def register_user_error(exc: type[BaseException]) -> None:
    """Let a study add its own input-error type (e.g. a catalogue validation error)."""
    global USER_ERRORS
    if exc not in USER_ERRORS:
        USER_ERRORS = USER_ERRORS + (exc,)


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    root = logging.getLogger()
    if any(isinstance(h, RichHandler) for h in root.handlers):
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, rich_tracebacks=True, console=None)],
    )
    for noisy in ("lightning", "lightning.pytorch", "distributed", "matplotlib", "numba", "PIL", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def user_errors(fn: F) -> F:
    """Decorator for CLI commands: user errors become one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:  # type: ignore[misc]
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def parse_devices(devices: str) -> int | str:
    if devices == "auto":
        return "auto"
    try:
        n = int(devices)
    except ValueError:
        raise ConfigError(f"--devices = {devices!r}: must be 'auto' or a positive integer") from None
    if n < 1:
        raise ConfigError(f"--devices = {n}: must be >= 1")
    return n
