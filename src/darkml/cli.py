"""The ``darkml`` command, built from the registered studies by one factory.

Every study gets the same commands and options::

    darkml <study> <stage> [--preset P] [--set key=value]... [--run-dir DIR] [execution options]
    darkml <study> run     [same] [--dry-run]          all stages; finished stages are skipped
    darkml <study> config  [--preset P] [--set k=v]... [--run-dir DIR]   the resolved YAML
    darkml presets                                      every study's presets, one line each

Execution options appear on the stages that use them: ``--workers/-j`` and ``--scheduler``
(data generation), ``--devices`` and ``--accelerator`` (training). Studies are imported only
when invoked, so ``darkml --help`` and ``darkml presets`` need neither torch nor lightning.
User errors (config, paths, data) are one line on stderr with exit code 2.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import signal
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .config import ConfigError, dump_yaml, list_presets, preset_description
from .runs import Run, RunError, set_command_line
from .storage import DatasetError
from .study import check_before_work, execute

log = logging.getLogger(__name__)

# third-party import-time noise that says nothing to a darkml user
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)


@dataclass(frozen=True)
class StudyEntry:
    """Where a study lives (imported on first use) and its one-line help."""

    package: str
    help: str

    @property
    def presets(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        assert spec is not None and spec.submodule_search_locations, self.package
        return Path(list(spec.submodule_search_locations)[0]) / "presets"

    def load(self):
        return importlib.import_module(f"{self.package}.study").STUDY


#: the registered studies: one line each
STUDIES: dict[str, StudyEntry] = {
    "astrometry": StudyEntry("darkml.astrometry", "Astrometric lensing of quasars by Milky Way subhalos (ResNet-18 on HEALPix maps)."),
    "lensing": StudyEntry("darkml.lensing", "Strong-lensing images: no substructure / CDM subhalos / axion vortices."),
    "equivariant": StudyEntry("darkml.equivariant", "Equivariant networks vs ResNet50 on strong-lensing images."),
    "ssl": StudyEntry("darkml.ssl", "Self-supervised pre-training (SimCLR, BYOL, SimSiam, DINO) on strong-lensing images."),
    "phasespace": StudyEntry("darkml.phasespace", "Normalizing flows on stellar phase space: accelerations and dark-matter density."),
    "gas": StudyEntry("darkml.gas", "13CO gas maps from 12CO with Gaussian processes and a patch CNN."),
}

#: old spellings, kept for one release: (study, command) -> (study, command)
ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("lensing", "benchmark"): ("equivariant", "run"),
    ("lensing", "ssl"): ("ssl", "run"),
}

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DatasetError, RunError, FileNotFoundError,
                                                NotADirectoryError)


def setup_logging(verbose: bool = False) -> None:
    """Rich log lines on stderr (results go to stdout)."""
    from rich.console import Console
    from rich.logging import RichHandler

    root = logging.getLogger()
    if any(isinstance(h, RichHandler) for h in root.handlers):
        return
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=True, console=Console(stderr=True))])
    for noisy in ("lightning", "lightning.pytorch", "distributed", "matplotlib", "numba", "PIL", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _user_errors(study, fn: Callable[..., Any]) -> Callable[..., Any]:
    errors = USER_ERRORS + tuple(study.user_errors)

    def wrapper(**kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except errors as exc:  # type: ignore[misc]
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)  # pragma: no cover


def _terminate_as_interrupt():
    """SIGTERM (a batch system's stop) ends a command like Ctrl-C: same message, resumable run."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


class _OneLineGroup(click.Group):
    """An unknown command is one line on stderr (with the closest name), exit code 2."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            known = self.list_commands(ctx)
            close = difflib.get_close_matches(name, known, n=1)
            what = "study or command" if ctx.parent is None else f"command of {ctx.info_name}"
            hint = f"; did you mean {close[0]!r}?" if close else ""
            click.echo(f"error: {name!r}: unknown {what} (available: {', '.join(known)}){hint}", err=True)
            ctx.exit(2)
        return super().resolve_command(ctx, args)


# ---- the factory -------------------------------------------------------------------------
_EXEC_PARAMS = {
    "workers": lambda: click.Option(["--workers", "-j"], type=click.IntRange(min=1), default=None,
                                    help="local worker processes for data generation (default 1)"),
    "scheduler": lambda: click.Option(["--scheduler"], default=None,
                                      help="Dask scheduler address (tcp://host:8786), or 'local' for a LocalCluster"),
    "devices": lambda: click.Option(["--devices"], default=None,
                                    help="training devices: 'auto' or a device count (>1 uses DDP)"),
    "accelerator": lambda: click.Option(["--accelerator"], default=None, help="auto, cpu or gpu"),
}


def _repair_option() -> click.Option:
    return click.Option(["--repair"], is_flag=True, help="recompute the dataset chunks whose checksum or completion "
                                                         "marker fails (bit-identical to the originals)")


def _common_params(study, with_shortcuts: bool) -> list[click.Parameter]:
    params: list[click.Parameter] = [
        click.Option(["--preset", "-p"], default=None,
                     help=f"preset (default {study.default_preset}; `darkml presets` lists them)"),
        click.Option(["--set", "-s", "sets"], multiple=True, help="override a config value, e.g. --set train.lr=1e-3 (repeatable)"),
        click.Option(["--run-dir", "-o"], type=click.Path(path_type=Path), default=None,
                     help=f"run directory (default runs/{study.name}-<preset>-<time>)"),
    ]
    if with_shortcuts:
        for sc in study.shortcuts:
            names = [sc.flag] + ([sc.short] if sc.short else [])
            params.append(click.Option(names, sc.dest, type=sc.type, default=None, help=sc.help))
    return params


def _config_for(study, preset, sets, run_dir, shortcuts) -> Any | None:
    """The config to create a run with, or None to use the one stored in ``run_dir``."""
    stored = run_dir is not None and Run(run_dir).config_path.is_file()
    given = {k: v for k, v in (shortcuts or {}).items() if v is not None}
    if stored and preset is None and not sets and not given:
        return None
    if stored and preset is None:  # --set on an existing run: start from its own preset
        preset = Run(run_dir).config_dict().get("preset")
    return study.load(preset, list(sets), given)


def _stage_command(study, stage) -> click.Command:
    first = stage.name == study.stages[0].name
    params = _common_params(study, with_shortcuts=first)
    params += [_EXEC_PARAMS[name]() for name in stage.uses]
    if first:
        params.append(_repair_option())
    params.append(click.Option(["--verbose", "-v"], is_flag=True, help="debug logging"))

    def callback(preset=None, sets=(), run_dir=None, verbose=False, repair=False, **rest):
        setup_logging(verbose)
        shortcuts = {s.dest: rest.pop(s.dest, None) for s in study.shortcuts}
        cfg = _config_for(study, preset, sets, run_dir, shortcuts)
        run, results = execute(study, cfg, run_dir, [stage.name], repair=repair, **rest)
        out = results.get(stage.name)
        text = stage.echo(out) if stage.echo else (f"{stage.name}: {out}" if isinstance(out, (str, Path)) else None)
        if text:
            click.echo(text)
        click.echo(f"run: {run.path}")

    return click.Command(stage.name, params=params, callback=_user_errors(study, callback), help=stage.help)


def _run_command(study, name: str = "run", default_preset: str | None = None, help: str | None = None) -> click.Command:
    uses = [name for name in _EXEC_PARAMS if any(name in s.uses for s in study.stages)]
    params = _common_params(study, with_shortcuts=True) + [_EXEC_PARAMS[n]() for n in uses]
    params += [_repair_option(),
               click.Option(["--dry-run"], is_flag=True, help="print the resolved config, the stages and the expected "
                                                                  "output sizes; do no work"),
               click.Option(["--verbose", "-v"], is_flag=True, help="debug logging")]

    def callback(preset=None, sets=(), run_dir=None, verbose=False, dry_run=False, repair=False, **rest):
        shortcuts = {s.dest: rest.pop(s.dest, None) for s in study.shortcuts}
        if preset is None and default_preset and not (run_dir is not None and Run(run_dir).config_path.is_file()):
            preset = default_preset
        cfg = _config_for(study, preset, sets, run_dir, shortcuts)
        setup_logging(verbose)
        if dry_run:
            check_before_work(study, cfg, rest)
            click.echo(_dry_run(study, cfg, run_dir))
            return
        run, _ = execute(study, cfg, run_dir, None, repair=repair, **rest)
        click.echo(f"report: {run.report_path}" if run.report_path.is_file() else f"run: {run.path}")

    return click.Command(name, params=params, callback=_user_errors(study, callback),
                         help=help or f"All stages ({' -> '.join(s.name for s in study.stages)}); finished stages are skipped.")


def _dry_run(study, cfg, run_dir) -> str:
    if cfg is None:
        run = Run.open(run_dir) if run_dir is not None else None
        cfg = run.load_config(study.config_model) if run else None
    lines = [f"# darkml {study.name} run --dry-run: nothing is executed",
             f"# run directory: {run_dir if run_dir is not None else Run.default_path(study.name, cfg.preset)}",
             "# stages:"]
    done = Run(run_dir).info().get("stages", {}) if run_dir is not None else {}
    for st in study.stages:
        state = " (finished: skipped)" if done.get(st.name, {}).get("status") == "finished" else ""
        opts = f" [uses {', '.join(st.uses)}]" if st.uses else ""
        lines.append(f"#   {st.name}{opts}: {st.help}{state}")
    if study.expected_outputs is not None:
        lines.append("# expected outputs:")
        for name, size in study.expected_outputs(cfg).items():
            lines.append(f"#   {name}: ~{_human(int(size))}")
    lines.append(dump_yaml(cfg).rstrip())
    return "\n".join(lines)


def _config_command(study) -> click.Command:
    params = _common_params(study, with_shortcuts=True)

    def callback(preset=None, sets=(), run_dir=None, **rest):
        shortcuts = {s.dest: rest.pop(s.dest, None) for s in study.shortcuts}
        cfg = _config_for(study, preset, sets, run_dir, shortcuts)
        if cfg is None:
            cfg = Run.open(run_dir).load_config(study.config_model)
        click.echo(dump_yaml(cfg).rstrip())

    return click.Command("config", params=params, callback=_user_errors(study, callback),
                         help="Print the resolved config (preset + --set overrides, or a run's stored config).")


def study_group(study, name: str | None = None, help: str | None = None) -> click.Group:
    """``darkml <study> <stage>|run|config`` for one :class:`darkml.study.Study`."""
    group = _OneLineGroup(name or study.name, help=help or study.title, no_args_is_help=True)
    for stage in study.stages:
        group.add_command(_stage_command(study, stage))
    group.add_command(_run_command(study))
    for cmd, (preset, text) in study.preset_commands.items():
        group.add_command(_run_command(study, cmd, preset, f"{text} (= `run --preset {preset}`; every run option applies)"))
    group.add_command(_config_command(study))
    return group


class _LazyStudies(_OneLineGroup):
    """Imports a study (and with it torch, lightning, …) only when that study is invoked; a
    usage error (bad option or value) is one line on stderr with exit code 2."""

    _listing = False

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        set_command_line(["darkml", *(sys.argv[1:] if args is None else list(args))])
        previous = _terminate_as_interrupt()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except (KeyboardInterrupt, click.Abort):
            click.echo("interrupted — rerun the same command to resume", err=True)
            sys.exit(130)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except Exception:  # not the user's mistake: keep the traceback, ask for a report
            traceback.print_exc()
            click.echo("error: this is a bug in darkml (not in your input); please report it with the traceback above "
                       "and the run's run.json", err=True)
            sys.exit(1)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(STUDIES) + [c for c in super().list_commands(ctx) if c not in STUDIES]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in STUDIES or name in self.commands:
            return super().get_command(ctx, name)
        if self._listing:  # help text only: a placeholder, no import
            return click.Group(name=name, help=STUDIES[name].help)
        group = build_study_group(name)
        self.add_command(group, name)
        return group

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def load_study(name: str):
    if name not in STUDIES:
        raise click.UsageError(f"unknown study {name!r} (available: {', '.join(STUDIES)})")
    try:
        return STUDIES[name].load()
    except ImportError as exc:
        raise click.UsageError(f"study {name!r} is unavailable: {exc}") from exc


def build_study_group(name: str) -> click.Group:
    group = study_group(load_study(name), name, STUDIES[name].help)
    for (owner, alias), (target, command) in ALIASES.items():
        if owner == name:
            cmd = study_group(load_study(target)).commands[command]
            cmd.name, cmd.hidden = alias, True
            cmd.help = f"(deprecated alias of `darkml {target} {command}`) {cmd.help}"
            group.add_command(cmd, alias)
    return group


@click.group("darkml", cls=_LazyStudies, no_args_is_help=True)
def app() -> None:
    """Machine-learning searches for dark matter: simulate -> learn -> measure -> report."""


@app.command()
def version() -> None:
    """Print the darkml version."""
    click.echo(__version__)


@app.command()
def presets() -> None:
    """List every study's presets: `<study> <preset> <description>`, one line each."""
    for name, entry in STUDIES.items():
        for preset in list_presets(entry.presets):
            click.echo(f"{name} {preset} {preset_description(entry.presets / f'{preset}.yaml')}")


@app.command()
def stages() -> None:
    """Print the stage table of every study (Markdown; the README's table)."""
    click.echo(stage_table())


def stage_table() -> str:
    """The README's stage table, generated from the registered studies."""
    rows = ["| study | stages | presets |", "|---|---|---|"]
    for name in STUDIES:
        study = load_study(name)
        rows.append(f"| `{name}` | {' → '.join(f'`{s.name}`' for s in study.stages)} | "
                    f"{', '.join(f'`{p}`' for p in study.preset_names())} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    app()


__all__ = ["app", "STUDIES", "ALIASES", "StudyEntry", "study_group", "build_study_group", "load_study", "stage_table",
           "setup_logging"]
