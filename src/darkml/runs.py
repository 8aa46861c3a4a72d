"""Run directories: the only way stages talk to each other.

A run directory holds::

    config.yaml       the validated config the run was made with
    run.json          provenance: darkml version, git commit, packages, machine, command
                      lines, seed, and per-stage start/end/wall time and status
    dataset/          the study's dataset(s) (zarr stores)
    checkpoints/      model checkpoints (Lightning .ckpt), one folder per model tag
    figures/          PNG/PDF figures
    metrics.json      everything measured, merged stage by stage (atomic writes)
    report.html       self-contained report

Every file is written atomically (temporary file in the same folder, then ``os.replace``),
so an interrupted stage never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel

from . import __version__
from .config import ConfigError, config_to_dict, validate

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

__all__ = ["Run", "RunError", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_npz", "to_jsonable",
           "machine_info", "provenance"]

#: config fields (by name) that say how a run executes, not what it computes: a run directory
#: accepts a change of these on resume
EXECUTION_FIELDS = frozenset({"device", "accelerator", "devices", "workers", "threads", "num_workers", "cpu_threads",
                              "loader_workers", "logger"})

#: packages whose versions a run records (those installed)
KEY_PACKAGES = ("numpy", "scipy", "torch", "torchvision", "lightning", "zarr", "healpy", "astropy", "lenstronomy",
                "e2cnn", "lightly", "zuko", "gpytorch", "galpy", "captum", "dask", "pydantic", "matplotlib")


#: the command line a run records (the CLI sets it; else the process's argv)
_COMMAND: list[str] | None = None


def set_command_line(argv: list[str] | None) -> None:
    global _COMMAND
    _COMMAND = list(argv) if argv is not None else None


def _command_line() -> str:
    argv = _COMMAND if _COMMAND is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    return " ".join(argv)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class RunError(RuntimeError):
    """A run directory is missing, foreign, or inconsistent with the requested config."""


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; keep the umask's permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npz(path: Path | str, **arrays: Any) -> Path:
    """``np.savez`` of ``arrays`` to ``path``, written atomically (a reader never sees half a file)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and pydantic models to JSON types."""
    if isinstance(obj, BaseModel):
        return config_to_dict(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch tensor
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def machine_info() -> dict[str, Any]:
    """Where a measurement was taken: platform, CPU, Python/torch versions, torch's CPU threads,
    the CUDA device (or None) and the load average at the time of the call (benchmark JSON)."""
    import torch  # the foundation's run bookkeeping does not need torch otherwise

    return {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": os.getloadavg()}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Where a run came from: darkml version, git commit and dirty flag (from a checkout),
    Python/torch/CUDA and key package versions, machine."""
    from importlib import metadata

    packages = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    commit = _git("rev-parse", "HEAD")
    git = None
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        git = {"commit": commit, "dirty": bool(status)}
    cuda = None
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        cuda = {"version": torch.version.cuda, "device": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else None
    return {"darkml": __version__, "git": git, "python": platform.python_version(), "packages": packages, "cuda": cuda,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(), "hostname": platform.node()}}


def _directory(path: Path) -> Path:
    """``path`` unless it names a file (a run directory must be a directory)."""
    if path.exists() and not path.is_dir():
        raise RunError(f"--run-dir {path}: is a file, not a directory")
    return path


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _deep_update(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _deep_update(a[k], v)
        else:
            a[k] = v
    return a


class Run:
    """A run directory. Create with :meth:`create`, reopen with :meth:`open`."""

    MARKER = "config.yaml"

    def __init__(self, path: Path | str):
        self.path = Path(path)

    # ---- layout: where each part of a run lives -------------------------------------------
    config_path = property(lambda self: self.path / "config.yaml")
    info_path = property(lambda self: self.path / "run.json")
    dataset_path = property(lambda self: self.path / "dataset")
    checkpoints = property(lambda self: self.path / "checkpoints")
    figures = property(lambda self: self.path / "figures")
    logs = property(lambda self: self.path / "logs")
    metrics_path = property(lambda self: self.path / "metrics.json")
    report_path = property(lambda self: self.path / "report.html")

    # ---- lifecycle ----------------------------------------------------------
    @classmethod
    def default_path(cls, study: str, preset: str, root: Path | str = "runs") -> Path:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(root) / f"{study}-{preset}-{stamp}"

    @classmethod
    def create(
        cls,
        study: str,
        config: BaseModel,
        root: Path | str = "runs",
        path: Path | str | None = None,
    ) -> "Run":
        """Create (or reopen, if it holds the same config) the run directory.

        Reopening a directory whose ``config.yaml`` differs raises :class:`RunError`, so a
        resumed run can never silently mix two configurations. A non-empty folder that is
        not a run directory is refused too.
        """
        preset = getattr(config, "preset", "custom")
        target = _directory(Path(path) if path is not None else cls.default_path(study, preset, root))
        run = cls(target)
        new = config_to_dict(config)
        if run.config_path.exists():
            old = yaml.safe_load(run.config_path.read_text()) or {}
            diff = sorted(_diff_keys(old, new))
            if diff and all(k.split(".")[-1] in EXECUTION_FIELDS for k in diff):
                # how the run executes (device, workers, logger …), not what it computes: a run that
                # failed on such a value resumes with the corrected one
                log.info("run %s: execution settings changed (%s); config.yaml updated", target, ", ".join(diff))
                atomic_write_text(run.config_path, yaml.safe_dump(new, sort_keys=False))
                old = new
            if old != new:
                raise RunError(
                    f"run directory {target} was made with a different config "
                    f"(differs in: {', '.join(diff[:6])}); use a new --run-dir or the same settings"
                )
            log.info("resuming run %s", target)
        else:
            if target.exists() and any(target.iterdir()):
                raise RunError(f"run directory {target} exists, is not empty and holds no config.yaml")
            target.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run.config_path, yaml.safe_dump(new, sort_keys=False))
            run.record_invocation()
            log.info("created run %s", target)
        for sub in (run.checkpoints, run.figures, run.logs):
            sub.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: Path | str) -> "Run":
        run = cls(_directory(Path(path)))
        if not run.config_path.is_file():
            raise RunError(f"{path} is not a darkml run directory (no config.yaml); run the study's first stage there")
        for sub in (run.checkpoints, run.figures, run.logs):
            sub.mkdir(parents=True, exist_ok=True)
        return run

    # ---- provenance (run.json) -----------------------------------------------------------
    def info(self) -> dict[str, Any]:
        if not self.info_path.is_file():
            return {}
        return json.loads(self.info_path.read_text())

    def _write_info(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.info_path, info)

    def record_invocation(self) -> None:
        """Create run.json on first use (with :func:`provenance`); append this process's
        command line once. The runner calls it when a stage is about to start, so a command
        refused before any work leaves run.json as it was."""
        info = self.info()
        if not info:
            cfg = self.config_dict()
            info = {"study": cfg.get("study") or None, "seed": cfg.get("seed"), "created": _now(), **provenance(),
                    "invocations": [], "stages": {}}
        command, pid = _command_line(), os.getpid()
        last = info["invocations"][-1:]
        if not (last and last[0].get("pid") == pid and last[0].get("command") == command):
            info["invocations"].append({"time": _now(), "command": command, "pid": pid, "darkml": __version__,
                                        "git": _git("rev-parse", "HEAD")})
        self._write_info(info)

    def stage_finished(self, name: str) -> bool:
        return self.info().get("stages", {}).get(name, {}).get("status") == "finished"

    def _record_stage(self, name: str, kind: str = "stages", **fields: Any) -> None:
        info = self.info() or {"stages": {}, "invocations": []}
        info.setdefault(kind, {}).setdefault(name, {}).update(fields)
        self._write_info(info)

    def config_dict(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text()) or {}

    def load_config(self, model_cls: type[T]) -> T:
        data = self.config_dict()
        try:
            return validate(model_cls, data)
        except ConfigError as exc:
            raise RunError(f"{self.config_path}: {exc}") from None

    # ---- metrics ------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        if not self.metrics_path.is_file():
            return {}
        return json.loads(self.metrics_path.read_text())

    def update_metrics(self, update: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
        """Deep-merge ``update`` into metrics.json (atomic)."""
        merged = self.metrics()
        _deep_update(merged, to_jsonable(dict(update or {}, **sections)))
        atomic_write_json(self.metrics_path, merged)
        return merged

    @contextlib.contextmanager
    def stage(self, name: str, kind: str = "stage") -> Iterator[None]:
        """Log the start/end of a stage (or, ``kind="step"``, of a piece of one); record
        start/end/wall time and status in ``run.json`` (under ``stages`` or ``steps``) and the
        wall time in ``metrics.json``."""
        key = f"{kind}s"
        log.info("%s %s: start (%s)", kind, name, self.path)
        self._record_stage(name, key, start=_now(), end=None, wall_s=None, status="running")
        t0 = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
            self._record_stage(name, key, end=_now(), wall_s=round(time.perf_counter() - t0, 3), status=status)
            raise
        dt = time.perf_counter() - t0
        self._record_stage(name, key, end=_now(), wall_s=round(dt, 3), status="finished")
        self.update_metrics({"timings_s": {name: round(dt, 3)}})
        log.info("%s %s: done in %.1f s", kind, name, dt)

    def step(self, name: str):
        """A timed piece of a stage (``train/gp``, ``train/finetune/…``): recorded under
        ``steps`` in ``run.json`` (never skipped as a stage is) and in ``timings_s``."""
        return self.stage(name, "step")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}
