"""Heads put on an encoder's features, registered as ``kind="head"`` (``create_head``)."""

from __future__ import annotations

from torch import nn

from .registry import build, register_model

__all__ = ["create_head", "linear_head", "mlp_head"]


@register_model("linear", kind="head", description="one linear layer")
def linear_head(in_features: int, num_outputs: int) -> nn.Module:
    return nn.Linear(in_features, num_outputs)


@register_model("mlp", kind="head", description="linear -> ReLU -> dropout -> linear")
def mlp_head(in_features: int, num_outputs: int, hidden: int = 256, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_outputs))


def create_head(name: str, in_features: int, num_outputs: int, **kwargs) -> nn.Module:
    """A freshly initialised head ``name`` mapping ``(B, in_features)`` to ``(B, num_outputs)``."""
    if in_features < 1 or num_outputs < 1:
        raise ValueError(f"in_features = {in_features}, num_outputs = {num_outputs}: both must be >= 1")
    return build("head", name, in_features=in_features, num_outputs=num_outputs, **kwargs)
