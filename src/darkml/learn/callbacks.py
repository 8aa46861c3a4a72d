"""What every training logs, once for all modules: images per second and the learning rate."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

__all__ = ["EpochStats"]


def _batch_size(batch: Any) -> int:
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim else 0


class EpochStats(L.Callback):
    """Logs ``train_images_per_s`` (samples of all ranks over the epoch's wall time) and ``lr``
    (the first parameter group's) at the end of every training epoch."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._n = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._n = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._n += _batch_size(batch) * max(1, trainer.world_size)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dt = time.perf_counter() - self._t0
        if dt > 0 and self._n:
            pl_module.log("train_images_per_s", self._n / dt, sync_dist=True)
        if trainer.optimizers:
            pl_module.log("lr", trainer.optimizers[0].param_groups[0]["lr"], sync_dist=True)
