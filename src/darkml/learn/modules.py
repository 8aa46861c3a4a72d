"""LightningModules for supervised classification and regression.

Both wrap any ``nn.Module`` (``model(x) -> logits`` or ``-> values``), use Adam (or AdamW /
SGD / LAMB) with one of two learning-rate schedules (``schedule``):

* ``"plateau"`` (default): ReduceLROnPlateau on the validation loss (factor and patience
  configurable: ×0.1 after 5 epochs without improvement is the astrometric paper's schedule);
* ``"cosine"``: a linear warm-up over ``warmup_fraction`` of the optimizer steps, then a cosine
  decay to zero at the last step — the rate follows the budget, not the noise of a small
  validation set (with patience 1 the plateau rule can cut the rate ×0.3 every other epoch and
  freeze a long run half-way: docs/lensing-equivariant.md, "Not the learning-rate schedule").

They log per
epoch: ``train_loss``, ``val_loss`` and ``val_acc`` / ``val_auc`` (classification; macro
one-vs-rest AUC when there are more than two classes) or ``val_rmse`` / ``val_mae``
(regression), plus ``lr`` and ``train_images_per_s``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from .. import metrics

__all__ = ["ClassifierModule", "RegressorModule", "SCHEDULES", "cosine_optimizers", "make_optimizer",
           "plateau_optimizers"]

#: learning-rate schedules of the supervised modules
SCHEDULES = ("plateau", "cosine")


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "lamb":
        from pytorch_optimizer import Lamb

        return Lamb(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer = {name!r}: must be one of adam, adamw, sgd, lamb")


def plateau_optimizers(params, optimizer: str, lr: float, weight_decay: float, factor: float, patience: int,
                       min_lr: float = 0.0) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer: the optimizer, with the learning rate cut by
    ``factor`` after ``patience`` epochs without a lower ``val_loss`` (down to ``min_lr``)."""
    opt = make_optimizer(optimizer, params, lr, weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=factor, patience=patience, min_lr=min_lr)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"}}


def cosine_optimizers(params, optimizer: str, lr: float, weight_decay: float, total_steps: int,
                      warmup_fraction: float = 0.05) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer: the optimizer, with the rate raised linearly
    from ~0 over the first ``warmup_fraction`` of ``total_steps`` and then decayed as a half
    cosine to 0 at step ``total_steps`` (stepped every optimizer step)."""
    import math

    if total_steps < 1:
        raise ValueError(f"total_steps = {total_steps}: must be >= 1")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction = {warmup_fraction}: must be in [0, 1)")
    opt = make_optimizer(optimizer, params, lr, weight_decay)
    warm = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1.0 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _Supervised(L.LightningModule):
    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.0, optimizer: str = "adam",
                 plateau_patience: int = 5, plateau_factor: float = 0.1, schedule: str = "plateau",
                 warmup_fraction: float = 0.05):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr = {lr}: must be > 0")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule = {schedule!r}: must be one of {', '.join(SCHEDULES)}")
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        self._val_out: list[torch.Tensor] = []
        self._val_y: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self) -> Any:
        h = self.hparams
        if h.get("schedule", "plateau") == "cosine":
            return cosine_optimizers(self.parameters(), h.optimizer, h.lr, h.weight_decay,
                                     int(self.trainer.estimated_stepping_batches), h.warmup_fraction)
        return plateau_optimizers(self.parameters(), h.optimizer, h.lr, h.weight_decay, h.plateau_factor,
                                  h.plateau_patience)

    # -- per-epoch transforms (throughput and lr: learn.callbacks.EpochStats) ----------------
    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        ds = getattr(loader, "dataset", None)
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(self.current_epoch)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        loss = self.loss(out, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        loss = self.loss(out, y)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        self._val_out.append(out.detach().float().cpu())
        self._val_y.append(y.detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_out:
            return
        out = torch.cat(self._val_out)
        y = torch.cat(self._val_y)
        self._val_out.clear()
        self._val_y.clear()
        if self.trainer.world_size > 1:  # DDP: metrics of the whole validation set, not of this rank's shard
            out = self.all_gather(out.to(self.device)).reshape(-1, *out.shape[1:]).cpu()
            y = self.all_gather(y.to(self.device)).reshape(-1, *y.shape[1:]).cpu()
        for k, v in self.epoch_metrics(out, y).items():
            if np.isfinite(v):  # identical on every rank; sync_dist only makes that explicit to Lightning
                self.log(k, float(v), prog_bar=k in ("val_auc", "val_rmse"), sync_dist=True)

    def epoch_metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # pragma: no cover
        return {}

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.transform_output(self(x))

    def transform_output(self, out: torch.Tensor) -> torch.Tensor:
        return out


class ClassifierModule(_Supervised):
    """Cross-entropy classifier; ``predict`` returns class probabilities."""

    def __init__(self, model: nn.Module, num_classes: int, lr: float, weight_decay: float = 0.0,
                 optimizer: str = "adam", plateau_patience: int = 5, plateau_factor: float = 0.1,
                 label_smoothing: float = 0.0, schedule: str = "plateau", warmup_fraction: float = 0.05):
        super().__init__(model, lr, weight_decay, optimizer, plateau_patience, plateau_factor, schedule, warmup_fraction)
        if num_classes < 2:
            raise ValueError(f"num_classes = {num_classes}: must be >= 2")
        self.num_classes = num_classes
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(self, out, y):
        return self.criterion(out.float(), y.long())

    def transform_output(self, out):
        return torch.softmax(out.float(), dim=-1)

    def epoch_metrics(self, out, y):
        p = torch.softmax(out, -1).numpy()
        yy = y.numpy().astype(int)
        res = {"val_acc": metrics.accuracy(yy, p.argmax(1))}
        if len(np.unique(yy)) > 1:
            res["val_auc"] = metrics.auc(yy == 1, p[:, 1]) if self.num_classes == 2 else metrics.macro_auc_ovr(yy, p)
        return res


class RegressorModule(_Supervised):
    """Mean-squared-error regression of a scalar (or vector) target."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.0, optimizer: str = "adam",
                 plateau_patience: int = 5, plateau_factor: float = 0.1, target_mean: float = 0.0, target_std: float = 1.0,
                 schedule: str = "plateau", warmup_fraction: float = 0.05):
        super().__init__(model, lr, weight_decay, optimizer, plateau_patience, plateau_factor, schedule, warmup_fraction)
        if target_std <= 0:
            raise ValueError(f"target_std = {target_std}: must be > 0")
        # targets are standardised inside the module so the network sees O(1) values
        self.register_buffer("t_mean", torch.tensor(float(target_mean)))
        self.register_buffer("t_std", torch.tensor(float(target_std)))

    def _norm(self, y):
        return (y.float() - self.t_mean) / self.t_std

    def loss(self, out, y):
        return nn.functional.mse_loss(out.float().reshape(y.shape), self._norm(y))

    def transform_output(self, out):
        return out.float().squeeze(-1) * self.t_std + self.t_mean

    def epoch_metrics(self, out, y):
        pred = self.transform_output(out).numpy()
        yy = y.float().numpy().reshape(pred.shape)
        return {"val_rmse": metrics.rmse(yy, pred), "val_mae": metrics.mae(yy, pred)}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
