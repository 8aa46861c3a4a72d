"""What every training logs, once for all modules: images per second and the learning rate."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch

__all__ = ["EpochStats"]

log = logging.getLogger(__name__)


def _batch_size(batch: Any) -> int:
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim else 0


class EpochStats(L.Callback):
    """Logs ``train_images_per_s`` (samples of all ranks over the epoch's wall time) and ``lr``
    (the first parameter group's) at the end of every training epoch; with ``log_lines`` (no
    progress bar, e.g. without a terminal) also one log line per epoch: epoch, losses and
    metrics, samples per second (``unit``/s: images/s, stars/s) and the time left."""

    def __init__(self, tag: str = "", log_lines: bool = False, unit: str = "images") -> None:
        self._t0 = 0.0
        self._n = 0
        self._started = 0.0
        self._first_epoch = 0
        self.tag = tag
        self.log_lines = log_lines
        self.unit = unit

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._first_epoch = trainer.current_epoch

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
        if self.log_lines and trainer.is_global_zero:
            log.info("%s", self._line(trainer, dt))

    def _line(self, trainer: L.Trainer, dt: float) -> str:
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs or 0
        shown = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if k in ("train_loss", "val_loss") or k.startswith("val_")}
        parts = [f"{k} {v:.4g}" for k, v in sorted(shown.items(), key=lambda kv: (kv[0] != "train_loss", kv[0]))]
        done = max(1, epoch - self._first_epoch)
        left = (time.perf_counter() - self._started) / done * max(0, total - epoch) if self._started else 0.0
        rate = f"{self._n / dt:.0f} {self.unit}/s" if dt > 0 and self._n else f"– {self.unit}/s"
        eta = f"{left / 60:.1f} min" if left >= 90 else f"{left:.0f} s"
        return f"{self.tag + ' ' if self.tag else ''}epoch {epoch}/{total}: {', '.join(parts)}; {rate}; ETA {eta}"
