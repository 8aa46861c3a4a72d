"""The ``darkml`` command: ``darkml <study> <stage> [--preset P] [--set key=value] …``.

Each study contributes a typer sub-app from ``darkml/<study>/cli.py``; this module only
assembles them (importing a study's module when that study is invoked), so ``darkml --help`` lists the studies and ``darkml <study> --help`` its
stages. Everything a command does is also callable from Python via the study's ``study.py``.
"""

from __future__ import annotations

import importlib

import click
import typer
from typer.core import TyperGroup

from . import __version__

STUDIES = {
    "astrometry": "Astrometric lensing of quasars by Milky Way subhalos (ResNet-18 on HEALPix maps).",
    "lensing": "Strong-lensing images: simulator, equivariant networks, self-supervised learning.",
    "phasespace": "Normalizing flows on stellar phase space: accelerations and dark-matter density.",
    "gas": "13CO gas maps from 12CO with Gaussian processes and a patch CNN.",
}


class _LazyStudies(TyperGroup):
    """Imports a study's CLI (and with it torch, lightning, …) only when that study is invoked.

    ``darkml --help`` lists the studies from :data:`STUDIES` without importing any of them; a
    study whose dependencies are missing fails with a one-line message naming the import that
    failed, and leaves the other studies usable.
    """

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(STUDIES) + [c for c in super().list_commands(ctx) if c not in STUDIES]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in STUDIES or name in self.commands:
            return super().get_command(ctx, name)
        if self._listing:  # help text only: a placeholder, no import
            return click.Group(name=name, help=STUDIES[name])
        try:
            mod = importlib.import_module(f"darkml.{name}.cli")
        except ImportError as exc:
            raise click.UsageError(f"study {name!r} is unavailable: {exc}") from exc
        cmd = typer.main.get_group(mod.app)
        cmd.name, cmd.help = name, STUDIES[name]
        self.add_command(cmd, name)
        return cmd

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="darkml",
    cls=_LazyStudies,
    help="Machine-learning searches for dark matter: simulate -> learn -> measure -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Machine-learning searches for dark matter: simulate -> learn -> measure -> report."""


@app.command()
def version() -> None:
    """Print the darkml version."""
    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
