"""The patch CNN of Sec. 2.3: a D x D patch of the 12CO plane -> the 13CO value at its centre.

Architecture (paper): K convolution filters of size D x D applied to the patch without
padding (one K-vector per patch), PReLU, batch normalisation, dropout; fully-connected
hidden layers each with PReLU, batch norm and dropout; a final linear layer to the scalar
13CO estimate. Evaluated on a whole (reflect-padded) plane, the D x D convolution followed
by the same per-position layers (fully-connected layers = 1x1 convolutions) is the fully
convolutional network the paper mentions: in eval mode both give the same numbers
(tests/gas/test_patch_cnn.py).

One network serves all velocity bins; with ``ring_feature`` the ring's Galactocentric
radius (R / 10 kpc) enters the first hidden layer, since the 12CO -> 13CO relation changes
with the isotope ratio along the Galaxy.

Losses (Sec. 2.3), on targets scaled to O(1):

* WMAE with annealed weights. The paper's formula
  ``gamma_t = (sigma - sigma / (1 + exp(-10 t + 5))) (Rescale(T) + 1)`` gives a bright/dim
  ratio of 2 at every t (it only rescales the loss), while its text says bright regions get
  "up to sigma = 30 times" the weight and the scaling is "progressively reduced to 1.0".
  ``weighting="text"`` (default) implements the text:
  ``gamma_t = 1 + s(t) Rescale(T)``, ``s(t) = sigma - sigma / (1 + exp(-10 t + 5))``, so the
  weights span [1, 1 + 0.993 sigma] at t = 0 and [1, 1.2] at t = 1; ``weighting="literal"``
  is the formula verbatim.
* Poisson log-likelihood ``f - T log f`` with a softplus output so ``f > 0``.

Optimiser LAMB (``pytorch_optimizer.Lamb``), lr 1e-3, batch 8192 patches (paper).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..learn import RegressorModule
from .patches import PatchDataset, PatchPlanes, pad_planes

__all__ = [
    "PatchCNN",
    "MODELS",
    "build_model",
    "anneal_scale",
    "wmae_gamma",
    "wmae_loss",
    "poisson_loss",
    "PatchRegressor",
    "predict_map",
    "predict_patchwise",
]


class PatchCNN(nn.Module):
    """``forward(x, ring)``: ``x`` ``(B, 1, H, W)`` with H, W >= window, ``ring`` ``(B,)`` (R / 10 kpc)
    -> ``(B, H - window + 1, W - window + 1)``; a single patch gives a 1 x 1 map.

    The first layer is a ``window x window`` convolution. On a patch it is evaluated as the
    equivalent matrix product (much faster on CPU); on a larger map as a convolution, after
    which the per-position layers (PReLU, batch norm, dropout, fully-connected = 1x1
    convolution) act on every position's K-vector. Same weights, same numbers.
    """

    def __init__(self, window: int = 7, filters: int = 128, hidden: Sequence[int] = (64, 32), dropout: float = 0.1,
                 ring_feature: bool = True, positive: bool = False):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window = {window}: must be an odd positive integer")
        self.window = int(window)
        self.ring_feature = bool(ring_feature)
        self.positive = bool(positive)
        self.conv = nn.Conv2d(1, filters, kernel_size=window, padding=0)
        self.head0 = nn.Sequential(nn.PReLU(filters), nn.BatchNorm1d(filters), nn.Dropout(dropout))
        layers: list[nn.Module] = []
        prev = filters + (1 if ring_feature else 0)
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.PReLU(width), nn.BatchNorm1d(width), nn.Dropout(dropout)]
            prev = width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(prev, 1)

    def forward(self, x: torch.Tensor, ring: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        if h == self.window and w == self.window:      # one patch per sample: conv == matrix product
            z = nn.functional.linear(x.reshape(b, -1), self.conv.weight.reshape(self.conv.out_channels, -1), self.conv.bias)
            ho = wo = 1
        else:                                          # whole maps: fully convolutional
            z = self.conv(x)
            ho, wo = z.shape[2], z.shape[3]
            z = z.permute(0, 2, 3, 1).reshape(b * ho * wo, -1)
        z = self.head0(z)
        if self.ring_feature:
            if ring is None:
                raise ValueError("this PatchCNN was built with ring_feature=True: pass ring (R / 10 kpc) per sample")
            r = ring.to(z.dtype).reshape(b, 1).repeat_interleave(ho * wo, dim=0)
            z = torch.cat([z, r], dim=1)
        y = self.out(self.hidden(z)).reshape(b, ho, wo)
        return nn.functional.softplus(y) if self.positive else y

    @torch.no_grad()
    def set_output_bias(self, value: float) -> None:
        """Start the output at ``value`` (e.g. the mean target): LAMB's layer-wise trust ratio moves
        a near-zero bias only slowly, so a softplus output initialised at log 2 would take many
        epochs to reach sparse targets."""
        value = float(value)
        if self.positive:
            value = math.log(math.expm1(max(value, 1e-4)))
        self.out.bias.fill_(value)


MODELS = {"patch_cnn": PatchCNN}


def build_model(name: str = "patch_cnn", **kwargs) -> nn.Module:
    """Model by name from :data:`MODELS`."""
    if name not in MODELS:
        raise ValueError(f"model = {name!r}: must be one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def anneal_scale(t, sigma: float):
    """s(t) = sigma - sigma / (1 + exp(-10 t + 5)) for re-scaled epoch t in [0, 1]."""
    return sigma - sigma / (1.0 + math.exp(-10.0 * float(t) + 5.0))


def wmae_gamma(t: float, rescaled: torch.Tensor, sigma: float = 30.0, form: str = "text") -> torch.Tensor:
    """Per-sample WMAE weights gamma_t from Rescale(T) in [0, 1] (see module docstring)."""
    s = anneal_scale(t, sigma)
    if form == "text":
        return 1.0 + s * rescaled
    if form == "literal":
        return s * (rescaled + 1.0)
    raise ValueError(f"weighting = {form!r}: must be 'text' or 'literal'")


def wmae_loss(pred: torch.Tensor, target: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """(1/N) sum gamma_i |f(I_i) - T_i|."""
    return (gamma * (pred - target).abs()).mean()


def poisson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(1/N) sum f(I_i) - T_i log f(I_i) (f > 0)."""
    return (pred - target * torch.log(pred + eps)).mean()


class PatchRegressor(RegressorModule):
    """LightningModule training a :class:`PatchCNN` on ``(x, ring, y, w)`` batches.

    ``val_loss`` is the unweighted mean absolute error (scaled units) for both losses, so
    checkpoints and early stopping compare like with like while the WMAE weights anneal.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, loss: str = "wmae", max_weight: float = 30.0,
                 weighting: str = "text", max_epochs: int = 200, optimizer: str = "lamb", weight_decay: float = 0.0,
                 plateau_patience: int = 10, plateau_factor: float = 0.5):
        if loss not in ("wmae", "poisson"):
            raise ValueError(f"loss = {loss!r}: must be 'wmae' or 'poisson'")
        if weighting not in ("text", "literal"):
            raise ValueError(f"weighting = {weighting!r}: must be 'text' or 'literal'")
        super().__init__(model, lr=lr, weight_decay=weight_decay, optimizer=optimizer,
                         plateau_patience=plateau_patience, plateau_factor=plateau_factor)
        self.loss_name = loss
        self.max_weight = float(max_weight)
        self.weighting = weighting
        self.max_epochs_planned = int(max_epochs)

    def forward(self, x: torch.Tensor, ring: torch.Tensor | None = None) -> torch.Tensor:
        """Patches ``(B, 1, D, D)`` -> values ``(B,)``."""
        return self.model(x, ring).reshape(x.shape[0])

    def progress_t(self) -> float:
        return min(1.0, self.current_epoch / max(1, self.max_epochs_planned - 1))

    def compute_loss(self, pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "poisson":
            return poisson_loss(pred, y)
        return wmae_loss(pred, y, wmae_gamma(self.progress_t(), w, self.max_weight, self.weighting))

    def training_step(self, batch, batch_idx):
        x, ring, y, w = batch
        pred = self(x, ring).float()
        loss = self.compute_loss(pred, y.float(), w.float())
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, ring, y, w = batch
        pred = self(x, ring).float()
        mae = (pred - y.float()).abs().mean()
        self.log("val_loss", mae, on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        return None

    def predict_step(self, batch, batch_idx):
        x, ring = batch[0], batch[1]
        return self(x, ring).float()


@torch.no_grad()
def predict_map(model: PatchCNN, src: np.ndarray | torch.Tensor, ring_r_kpc: np.ndarray | torch.Tensor,
                device: str | torch.device = "cpu", planes_per_batch: int = 64, clamp: bool = True) -> np.ndarray:
    """Fully convolutional prediction of whole planes ``(P, H, W)`` (scaled units), reflect-padded."""
    model = model.to(device).eval()
    src_t = torch.as_tensor(np.asarray(src) if not torch.is_tensor(src) else src, dtype=torch.float32)
    ring = torch.as_tensor(np.asarray(ring_r_kpc, dtype=np.float32)) / 10.0
    half = model.window // 2
    outs = []
    for a in range(0, src_t.shape[0], planes_per_batch):
        x = pad_planes(src_t[a:a + planes_per_batch], half).to(device)[:, None]
        y = model(x, ring[a:a + planes_per_batch].to(device)).float()
        outs.append((y.clamp_min(0.0) if clamp else y).cpu())
    return torch.cat(outs).numpy() if outs else np.zeros_like(np.asarray(src), dtype=np.float32)


@torch.no_grad()
def predict_patchwise(model: PatchCNN, src: np.ndarray, ring_r_kpc: np.ndarray, device: str | torch.device = "cpu",
                      batch_size: int = 8192, clamp: bool = True) -> np.ndarray:
    """The same prediction patch by patch (the paper's view): every pixel's D x D window separately."""
    model = model.to(device).eval()
    src = np.asarray(src, dtype=np.float32)
    p, h, w = src.shape
    zeros = np.zeros_like(src)
    planes = PatchPlanes(src, zeros, zeros, np.zeros(p, int), np.zeros(p, int), np.asarray(ring_r_kpc, dtype=np.float32))
    ds = PatchDataset(planes, model.window)
    out = np.empty(p * h * w, dtype=np.float32)
    for a in range(0, len(ds), batch_size):
        idx = np.arange(a, min(a + batch_size, len(ds)))
        x, ring, _, _ = ds[idx]
        y = model(x.to(device), ring.to(device)).reshape(-1).float()
        out[idx] = (y.clamp_min(0.0) if clamp else y).cpu().numpy()
    return out.reshape(p, h, w)
