"""Study configuration: pydantic models, YAML presets and ``--set key=value`` overrides.

Every study defines a config model deriving from :class:`StudyConfig` whose fields carry
their allowed ranges (``Field(gt=0)`` …). A preset is a YAML file in the study's
``presets/`` folder; the CLI's ``--set a.b=value`` overrides are applied on top (values
are parsed as YAML, so ``--set train.lr=1e-3`` gives a float and ``--set scenarios=[A,C]``
a list). Validation happens before any work starts and fails with one line that names
the field, the value and the allowed range::

    ConfigError: astrometry.noise.sigma_u = -1.0: must be > 0

"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ConfigError",
    "StudyConfig",
    "TrainLogger",
    "Section",
    "load_config",
    "validate",
    "apply_overrides",
    "config_to_dict",
    "list_presets",
    "read_preset",
    "preset_description",
    "dump_yaml",
]

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names field, value and allowed range."""


class Section(BaseModel):
    """Base for nested config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


#: a training run's loggers: CSV always; ``tensorboard`` adds TensorBoard event files beside it
TrainLogger = Literal["csv", "tensorboard"]


class StudyConfig(Section):
    """Base for a study's top-level config."""

    study: str = ""
    preset: str = "custom"
    seed: int = Field(0, ge=0, description="master seed; chunk i draws from default_rng([seed, i])")


_RANGE_WORDS = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
}


def _describe(err: dict[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    template = _RANGE_WORDS.get(err.get("type", ""))
    if template:
        try:
            return template.format(**ctx)
        except KeyError:
            pass
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if err.get("type") == "literal_error" and "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    msg = err.get("msg", "invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg


def _section_fields(model_cls: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the config section at ``loc`` (for "did you mean" hints)."""
    node: Any = model_cls
    for part in loc:
        fields = getattr(node, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        node = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(getattr(node, "model_fields", {}) or [])


def _format_validation_error(prefix: str, exc: ValidationError, model_cls: type[BaseModel] | None = None) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        name = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        if not loc:  # a cross-field check: its message names the fields itself
            parts.append(f"{prefix or 'config'}: {_describe(err)}")
            continue
        value = err.get("input")
        if isinstance(value, dict):
            shown = "{...}"
        else:
            shown = repr(value)
            if len(shown) > 60:
                shown = shown[:57] + "..."
        why = _describe(err)
        if err.get("type") == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), _section_fields(model_cls, tuple(err["loc"][:-1])), n=1)
            if close:
                why += f" (did you mean {'.'.join([*map(str, err['loc'][:-1]), close[0]])}?)"
        parts.append(f"{name} = {shown}: {why}")
    return "; ".join(parts)


def validate(model_cls: type[T], data: dict[str, Any], prefix: str | None = None) -> T:
    """Build ``model_cls`` from ``data``; raise :class:`ConfigError` with a one-line message."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        study = prefix if prefix is not None else str(data.get("study", "") or "config")
        raise ConfigError(_format_validation_error(study, exc, model_cls)) from None


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. train.lr=1e-3)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b=value`` overrides applied (values parsed as YAML)."""
    out = copy.deepcopy(data)
    for item in overrides or ():
        path, value = _parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = {}
                node[part] = nxt
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def list_presets(presets_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(presets_dir).glob("*.yaml"))


def preset_description(path: Path | str) -> str:
    """A preset's one-line description: the first sentence of its leading comment."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines).strip()
    if text.startswith("`") and "`:" in text:  # drop a leading "`darkml … --preset X`:" usage note
        text = text.split("`:", 1)[1].strip()
    end = re.search(r"(?<=\w{4})\.(\s|$)", text)  # a sentence end, not "Sec. III"
    text = text[: end.start() + 1] if end else text
    return text if len(text) <= 110 else text[:107].rstrip() + "..."


def read_preset(presets_dir: Path | str, preset: str) -> dict[str, Any]:
    """The preset's raw dict (after ``inherit:``), before overrides and validation."""
    return _read_preset(Path(presets_dir), preset)


def _read_preset(presets_dir: Path, preset: str) -> dict[str, Any]:
    path = Path(presets_dir) / f"{preset}.yaml"
    if not path.is_file():
        known = ", ".join(list_presets(presets_dir)) or "none"
        raise ConfigError(f"preset = {preset!r}: unknown preset (available: {known})")
    data = yaml.safe_load(path.read_text()) or {}
    base = data.pop("inherit", None)
    if base:
        parent = _read_preset(presets_dir, base)
        data = _deep_merge(parent, data)
    return data


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(
    model_cls: type[T],
    presets_dir: Path | str,
    preset: str,
    overrides: Iterable[str] = (),
    study: str | None = None,
) -> T:
    """Load preset ``preset`` from ``presets_dir``, apply overrides and validate.

    A preset may name another with ``inherit: <name>`` and only state what differs.
    """
    data = _read_preset(Path(presets_dir), preset)
    data.setdefault("preset", preset)
    if study:
        data.setdefault("study", study)
    data = apply_overrides(data, overrides)
    return validate(model_cls, data, prefix=study)


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """JSON/YAML-safe dict of a config."""
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: BaseModel | dict[str, Any]) -> str:
    data = config_to_dict(cfg) if isinstance(cfg, BaseModel) else cfg
    return yaml.safe_dump(data, sort_keys=False)
