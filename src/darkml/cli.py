"""The ``darkml`` command: ``darkml <study> <stage> [--preset P] [--set key=value] …``.

Each study contributes a typer sub-app from ``darkml/<study>/cli.py``; this module only
assembles them, so ``darkml --help`` lists the studies and ``darkml <study> --help`` its
stages. Everything a command does is also callable from Python via the study's ``study.py``.
"""

from __future__ import annotations

import importlib
import logging

import typer

from . import __version__

app = typer.Typer(
    name="darkml",
    help="Machine-learning searches for dark matter: simulate -> learn -> measure -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

STUDIES = {
    "astrometry": "Astrometric lensing of quasars by Milky Way subhalos (ResNet-18 on HEALPix maps).",
    "lensing": "Strong-lensing images: simulator, equivariant networks, self-supervised learning.",
    "phasespace": "Normalizing flows on stellar phase space: accelerations and dark-matter density.",
    "gas": "13CO gas maps from 12CO with Gaussian processes and a patch CNN.",
}

for _name, _help in STUDIES.items():
    try:
        _mod = importlib.import_module(f"darkml.{_name}.cli")
    except ImportError as _exc:  # a study whose optional pieces are missing must not break the others
        logging.getLogger(__name__).debug("study %s unavailable: %s", _name, _exc)
        continue
    app.add_typer(_mod.app, name=_name, help=_help)


@app.command()
def version() -> None:
    """Print the darkml version."""
    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
