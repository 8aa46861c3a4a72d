"""One registry for every network of every study (as timm does).

A study registers its architectures where they are defined::

    @register_model("c8", description="C8 steerable CNN", tags=("equivariant",))
    def c8(in_channels=1, num_outputs=3, **kw): ...

and builds them by name: ``create_model("c8", in_channels=1, num_outputs=3, width=0.5)``.
Encoders (networks that return features, for self-supervised learning) and heads are
registered the same way in their own namespaces (``register_model(..., kind="encoder")``,
``create_encoder``). Unknown names and unknown keywords fail with one line that names the
allowed values. Training logic never lives in a model: see :mod:`darkml.learn`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

__all__ = ["register_model", "create_model", "create_encoder", "build", "list_models", "model_entry", "ModelEntry"]

KINDS = ("model", "encoder", "head")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    kind: str = "model"
    description: str = ""
    tags: frozenset[str] = field(default_factory=frozenset)
    #: whether the factory takes architecture keywords besides in_channels / num_outputs
    options: bool = True


_REGISTRY: dict[str, dict[str, ModelEntry]] = {k: {} for k in KINDS}


def register_model(name: str, *, kind: str = "model", description: str = "", tags: tuple[str, ...] = (),
                   options: bool = True) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a factory under ``name`` in the ``kind`` namespace."""
    if kind not in KINDS:
        raise ValueError(f"kind = {kind!r}: must be one of {', '.join(KINDS)}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        old = _REGISTRY[kind].get(name)
        if old is not None and old.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"{kind} {name!r} is registered twice ({old.fn.__module__} and {fn.__module__})")
        _REGISTRY[kind][name] = ModelEntry(name, fn, kind, description or name, frozenset(tags), options)
        return fn

    return deco


def list_models(kind: str = "model", tag: str | None = None) -> list[str]:
    return sorted(n for n, e in _REGISTRY[kind].items() if tag is None or tag in e.tags)


def model_entry(name: str, kind: str = "model") -> ModelEntry:
    if name not in _REGISTRY[kind]:
        raise ValueError(f"{kind} = {name!r}: unknown {kind} (choose from {', '.join(list_models(kind))})")
    return _REGISTRY[kind][name]


def build(kind: str, name: str, **kwargs: Any) -> nn.Module:
    """Registry entry ``name`` of ``kind`` called with ``kwargs``; a bad keyword is one line."""
    return _build(model_entry(name, kind), **kwargs)


def _build(entry: ModelEntry, **kwargs: Any) -> nn.Module:
    with warnings.catch_warnings():  # e2cnn's basis sampling warns about uint8 indexing (harmless)
        warnings.filterwarnings("ignore", message=".*dtype torch.uint8.*")
        try:
            return entry.fn(**kwargs)
        except TypeError as exc:
            raise ValueError(f"{entry.kind} {entry.name!r}: bad option ({exc})") from None


def create_model(name: str, in_channels: int = 1, num_outputs: int = 1, **kwargs: Any) -> nn.Module:
    """A freshly initialised model ``name`` returning ``(batch, num_outputs)`` (the caller seeds torch)."""
    entry = model_entry(name, "model")
    if in_channels < 1 or num_outputs < 1:
        raise ValueError(f"in_channels = {in_channels}, num_outputs = {num_outputs}: both must be >= 1")
    if kwargs and not entry.options:
        raise ValueError(f"model {name!r} takes no architecture options; got {sorted(kwargs)}")
    return _build(entry, in_channels=in_channels, num_outputs=num_outputs, **kwargs)


def create_encoder(name: str, **kwargs: Any) -> nn.Module:
    """A freshly initialised encoder ``name`` (returns features; ``.out_dim`` is their size)."""
    return build("encoder", name, **kwargs)
