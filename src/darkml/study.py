"""The Study contract: what every study declares, and the one runner that executes it.

A study is a config model, a presets folder and an ordered list of stages. Every stage is a
function ``stage(run, **execution_options)`` that reads its config from the run directory
(``run.load_config(...)``) and writes only into it. Execution options are how a stage runs,
never what it computes: ``workers`` and ``scheduler`` (data generation), ``devices`` and
``accelerator`` (training). A stage names the ones it accepts in ``Stage.uses``.

The runner (:func:`execute`) does the bookkeeping for every study: it creates or reopens the
run directory, records per-stage start/end/wall time and status in ``run.json``, skips a
stage that already finished (``run``), and logs. The CLI (:mod:`darkml.cli`) turns a
:class:`Study` into ``darkml <study> <stage>|run|config`` with the same options everywhere.

Adding a study::

    STUDY = Study(name="mystudy", title="…", config_model=MyConfig,
                  presets=Path(__file__).parent / "presets",
                  stages=(Stage("simulate", simulate, uses=("workers", "scheduler")),
                          Stage("train", train, uses=("devices", "accelerator")),
                          Stage("evaluate", evaluate), Stage("report", report)))

plus one line in :data:`darkml.cli.STUDIES`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import ConfigError, StudyConfig, list_presets, load_config, read_preset
from .parallel import check_scheduler_address
from .runs import Run, RunError
from .storage import SampleStore, find_stores

log = logging.getLogger(__name__)

__all__ = ["Stage", "Shortcut", "Study", "EXECUTION_OPTIONS", "execute", "check_execution", "check_resources",
           "check_before_work"]

#: the execution options a stage may accept, with their defaults
EXECUTION_OPTIONS: dict[str, Any] = {"workers": 1, "scheduler": None, "devices": "auto", "accelerator": "auto"}


@dataclass(frozen=True)
class Stage:
    """One step of a study: ``fn(run, **options)`` with ``options`` a subset of ``uses``."""

    name: str
    fn: Callable[..., Any]
    help: str = ""
    uses: tuple[str, ...] = ()
    #: formats the stage's return value for stdout (default: paths and strings as they are)
    echo: Callable[[Any], str | None] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.uses) - set(EXECUTION_OPTIONS)
        if unknown:
            raise ValueError(f"stage {self.name}: unknown execution options {sorted(unknown)}")
        if not self.help:
            object.__setattr__(self, "help", (self.fn.__doc__ or self.name).strip().splitlines()[0])


@dataclass(frozen=True)
class Shortcut:
    """A CLI flag that stands for config overrides, e.g. ``--models a,b`` -> ``models=[a,b]``.

    ``apply(value, preset_data)`` returns the ``key=value`` overrides; ``preset_data`` is the
    preset's raw dict (so a shortcut can keep a ratio the preset states).
    """

    flag: str
    help: str
    apply: Callable[[Any, dict[str, Any]], list[str]]
    short: str | None = None
    type: type = str

    @classmethod
    def key(cls, flag: str, key: str, help: str, short: str | None = None, as_list: bool = False,
            type: type = str) -> "Shortcut":
        if as_list:
            return cls(flag, help, lambda v, _: [f"{key}=[{v}]"], short, type)
        return cls(flag, help, lambda v, _: [f"{key}={v}"], short, type)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Study:
    """What a study declares; everything else (CLI, runner, provenance) is shared."""

    name: str
    title: str
    config_model: type[StudyConfig]
    presets: Path
    stages: tuple[Stage, ...]
    default_preset: str = "quick"
    #: old preset spellings kept for one release: alias -> preset
    preset_aliases: Mapping[str, str] = field(default_factory=dict)
    shortcuts: tuple[Shortcut, ...] = ()
    #: ``cfg -> {output: size in bytes}`` for ``run --dry-run``
    expected_outputs: Callable[[Any], dict[str, int]] | None = None
    #: exception types that are the user's to fix (one line, exit code 2)
    user_errors: tuple[type[BaseException], ...] = ()
    #: ``cfg -> None``: checks of the inputs a config names (files, headers, columns) that can be
    #: made without doing the work; run before the run directory is created or touched
    preflight: Callable[[Any], None] | None = None
    #: extra commands that are ``run`` with another default preset: name -> (preset, help),
    #: e.g. ``darkml astrometry frontier`` = ``darkml astrometry run --preset frontier``
    preset_commands: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"study {self.name}: stage names must be unique and non-empty, got {names}")
        if set(names) & {"run", "config"}:
            raise ValueError(f"study {self.name}: 'run' and 'config' are reserved command names")
        clash = set(self.preset_commands) & (set(names) | {"run", "config"})
        if clash:
            raise ValueError(f"study {self.name}: preset command {sorted(clash)[0]!r} clashes with a stage or built-in command")

    # ---- presets and config -------------------------------------------------------------
    def preset_names(self) -> list[str]:
        return list_presets(self.presets)

    def resolve_preset(self, preset: str | None) -> str:
        preset = preset or self.default_preset
        return self.preset_aliases.get(preset, preset)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"stage = {name!r}: unknown stage of {self.name} (available: "
                          f"{', '.join(s.name for s in self.stages)})")

    def load(self, preset: str | None = None, overrides: Iterable[str] = (),
             shortcuts: Mapping[str, Any] | None = None) -> Any:
        """Validated config: preset + shortcut overrides + ``key=value`` overrides."""
        name = self.resolve_preset(preset)
        extra: list[str] = []
        if shortcuts:
            raw = read_preset(self.presets, name)
            by_dest = {s.dest: s for s in self.shortcuts}
            for dest, value in shortcuts.items():
                if value is not None:
                    extra += by_dest[dest].apply(value, raw)
        return load_config(self.config_model, self.presets, name, [*extra, *(overrides or ())], study=self.name)


def check_execution(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate execution options before any work; returns them normalised."""
    out = dict(options)
    if "workers" in out and out["workers"] is not None and int(out["workers"]) < 1:
        raise ConfigError(f"--workers = {out['workers']}: must be >= 1")
    if out.get("devices") not in (None, "auto"):
        dev = out["devices"]
        try:
            n = int(dev)
        except (TypeError, ValueError):
            raise ConfigError(f"--devices = {dev!r}: must be 'auto' or a positive integer") from None
        if n < 1:
            raise ConfigError(f"--devices = {n}: must be 'auto' or a positive integer")
        out["devices"] = n
    acc = out.get("accelerator")
    if acc not in (None, "auto", "cpu", "gpu", "cuda"):
        raise ConfigError(f"--accelerator = {acc!r}: must be one of auto, cpu, gpu")
    if acc in ("gpu", "cuda") and not _cuda_available():
        raise ConfigError(f"--accelerator = {acc!r}: {_NO_CUDA}")
    sched = out.get("scheduler")
    if sched not in (None, "", "local"):
        check_scheduler_address(sched)
    return out


_NO_CUDA = "no CUDA device is available on this machine (use cpu or auto)"


def _cuda_available() -> bool:
    import torch  # the CLI imports torch only when a GPU is asked for

    return torch.cuda.is_available()


#: Lightning's precision strings
LIGHTNING_PRECISIONS = ("16-mixed", "bf16-mixed", "32-true", "64-true", "16-true", "bf16-true", "transformer-engine",
                        "transformer-engine-float16")
#: config sections whose ``precision`` is Lightning's (elsewhere, e.g. ``sky.precision``, it is the study's own)
_TRAINING_SECTIONS = ("train", "pretrain", "finetune", "cnn", "")


def check_resources(cfg: Any) -> None:
    """Check what a config asks of the machine before any work: every ``device`` (auto, cpu,
    cuda[:n]) and ``accelerator`` (auto, cpu, gpu) is valid and available, every Lightning
    ``precision`` is one Lightning knows. One-line :class:`ConfigError` naming the field."""
    data = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(cfg)
    problems: list[str] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            where = f"{path}.{key}" if path else key
            if isinstance(value, dict):
                walk(value, where)
            elif key == "device" and isinstance(value, str):
                kind = value.split(":")[0]
                if kind not in ("auto", "cpu", "cuda"):
                    problems.append(f"{where} = {value!r}: must be auto, cpu or cuda")
                elif kind == "cuda" and not _cuda_available():
                    problems.append(f"{where} = {value!r}: {_NO_CUDA}")
            elif key == "accelerator" and value in ("gpu", "cuda") and not _cuda_available():
                problems.append(f"{where} = {value!r}: {_NO_CUDA}")
            elif key == "precision" and value is not None and path.split(".")[-1] in _TRAINING_SECTIONS \
                    and str(value) not in LIGHTNING_PRECISIONS:
                problems.append(f"{where} = {value!r}: must be one of {', '.join(LIGHTNING_PRECISIONS)}")

    walk(data, "")
    if problems:
        raise ConfigError("; ".join(f"{data.get('study') or 'config'}.{p}" for p in problems))


def check_before_work(study: Study, cfg: Any | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """Everything checkable without doing the work: execution options, the machine resources the
    config asks for, and the study's preflight of the files it names. Returns the options
    normalised; shared by :func:`execute` and ``run --dry-run``."""
    options = check_execution({k: v for k, v in options.items() if v is not None})
    unknown = set(options) - set(EXECUTION_OPTIONS)
    if unknown:
        raise TypeError(f"unknown execution options {sorted(unknown)}")
    if cfg is not None:
        check_resources(cfg)
        if study.preflight is not None:
            study.preflight(cfg)
    return options


def _open_or_create(study: Study, cfg: Any | None, run_dir: Path | str | None, create: bool) -> Run:
    if cfg is None:
        if run_dir is None:
            raise RunError("--run-dir is required for this stage (the run made by the study's first stage)")
        return Run.open(run_dir)
    if not create and run_dir is None:
        raise RunError("--run-dir is required for this stage (the run made by the study's first stage)")
    if not create and not Run(run_dir).config_path.is_file():
        raise RunError(f"{run_dir} is not a darkml run directory (no config.yaml); run `darkml {study.name} "
                       f"{study.stages[0].name}` or `run` there first")
    return Run.create(study.name, cfg, path=run_dir)


def _check_prerequisites(study: Study, run: Run, first: Stage) -> None:
    """A stage runs only after the stages before it finished (e.g. no report of an unevaluated
    run). Runs made before run.json recorded stages count a stage as finished when
    ``metrics.json`` holds its wall time."""
    info = run.info().get("stages", {})
    legacy = run.metrics().get("timings_s", {}) if not info else {}
    for st in study.stages:
        if st is first:
            return
        if info.get(st.name, {}).get("status") != "finished" and st.name not in legacy:
            raise RunError(f"{run.path}: stage {st.name!r} has not finished, so {first.name!r} cannot run yet; "
                           f"run `darkml {study.name} {st.name} --run-dir {run.path}` (or `run`) first")


def execute(study: Study, cfg: Any | None = None, run_dir: Path | str | None = None,
            stages: Sequence[str] | None = None, *, skip_finished: bool | None = None, repair: bool = False,
            **options: Any) -> tuple[Run, dict[str, Any]]:
    """Run ``stages`` (default: all, in order) of ``study`` in a run directory.

    ``cfg`` given: the run is created (or reopened if it holds the same config); ``cfg`` None:
    ``run_dir`` must be an existing run. With ``skip_finished`` (default: when running all
    stages) a stage that ``run.json`` records as finished is skipped. ``options`` are the
    execution options; each stage receives those in its ``uses``. Returns the run and
    ``{stage: return value}``.
    """
    names = list(stages) if stages is not None else [s.name for s in study.stages]
    chosen = [study.stage(n) for n in names]
    if skip_finished is None:
        skip_finished = stages is None
    if repair and chosen[0].name != study.stages[0].name:
        raise ConfigError(f"--repair: only with `{study.stages[0].name}` or `run` (the stage that writes the data)")
    options = check_before_work(study, cfg, options)  # before the run directory is created or touched
    create = stages is None or names[0] == study.stages[0].name
    run = _open_or_create(study, cfg, run_dir, create)
    run.load_config(study.config_model)  # refuses a run of another study or a stale schema
    _check_prerequisites(study, run, chosen[0])
    run.record_invocation()
    if repair:
        damaged = {str(p): p_bad for p in find_stores(run.path) if (p_bad := SampleStore.open(
            p, require_complete=False, mode="r+", verify=False).repair())}
        log.info("repair: %s", damaged or "no damaged chunk found")
    results: dict[str, Any] = {}
    for st in chosen:
        if skip_finished and run.stage_finished(st.name) and not (repair and st is chosen[0]):
            log.info("stage %s: already finished in %s (skipped)", st.name, run.path)
            continue
        kwargs = {k: options[k] for k in st.uses if k in options}
        with run.stage(st.name):
            results[st.name] = st.fn(run, **kwargs)
    return run, results
