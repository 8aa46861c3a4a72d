"""Devices and saved tensors, resolved once for every study."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ..runs import atomic_write_bytes

__all__ = ["resolve_device", "save_torch"]


def resolve_device(name: str | torch.device | None = "auto", field: str = "device") -> torch.device:
    """``auto``/None -> CUDA when available, else CPU. An unknown name, or ``cuda`` on a machine
    without a GPU, is a one-line ``ValueError`` naming the config ``field``."""
    if isinstance(name, torch.device):
        return name
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{field} = {str(name)!r}: must be cpu, cuda or auto") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{field} = {str(name)!r}: must be cpu, cuda or auto")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{field} = {str(name)!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
    return dev


def save_torch(path: Path | str, obj: Any) -> Path:
    """``torch.save`` written atomically (a killed process never leaves half a file)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())
