"""TODO."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from darkml.learn import ArrayDataset, make_loader, predict


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------
def d4_transforms(group: str = "d4") -> list:
    """The exact pixel-grid symmetries: 4 rotations by 90° (``c4``), times 2 reflections (``d4``)."""
    if group not in ("c4", "d4"):
        raise ValueError(f"group = {group!r}: must be c4 or d4")
    ops = []
    for flip in ((False, True) if group == "d4" else (False,)):
        for k in range(4):
            def op(x, k=k, flip=flip):
                x = torch.flip(x, dims=(-1,)) if flip else x
                return torch.rot90(x, k, dims=(-2, -1))
            ops.append(op)
    return ops


def predict_array(module, x: np.ndarray, batch_size: int, transform=None) -> np.ndarray:
    """``module``'s outputs on the images ``x`` (optionally transformed first), in batches."""
    xt = torch.as_tensor(x)
    if transform is not None:
        xt = transform(xt).contiguous()
    return predict(module, make_loader(ArrayDataset(xt), batch_size, shuffle=False))


def predict_tta(module, x: np.ndarray, batch_size: int = 256, group: str = "d4") -> np.ndarray:
    """Average of the module's predictions (probabilities or values) over the D4/C4 images."""
    preds = [predict_array(module, x, batch_size, op) for op in d4_transforms(group)]
    return np.mean(preds, axis=0)


def rotate_d4(x: Tensor, k: Tensor, flip: Tensor | None = None) -> Tensor:
    """Exact rotation by ``k[b]`` × 90° (counter-clockwise in array axes) after an optional
    left-right flip per sample: pixels are permuted, never resampled."""
    x, single = as_batch(x)
    out = x
    if flip is not None and bool(flip.any()):
        out = torch.where(flip.view(-1, 1, 1, 1).to(x.device), out.flip(-1), out)
    k = k.to(x.device) % 4
    res = out.clone()
    for kk in range(1, 4):
        sel = k == kk
        if bool(sel.any()):
            res[sel] = torch.rot90(out[sel], kk, dims=(-2, -1))
    return res[0] if single else res


# ---------------------------------------------------------------------------------------
# augmentations (batched, on the batch's device, every draw from an explicit generator)
# ---------------------------------------------------------------------------------------
def as_batch(x: Tensor) -> tuple[Tensor, bool]:
    if x.ndim == 3:
        return x[None], True
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W) or (C, H, W); got shape {tuple(x.shape)}")
    return x, False
