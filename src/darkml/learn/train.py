"""``fit`` and ``predict``: Lightning training with checkpoints, resume, early stopping, logs.

``fit(module, train_loader, val_loader, ckpt_dir, ...)``

* keeps ``best.ckpt`` (lowest ``val_loss``) and ``last.ckpt`` in ``ckpt_dir`` (Lightning
  writes checkpoints atomically);
* resumes from ``last.ckpt`` when it exists, so an interrupted training continues where it
  stopped (optimizer, scheduler, early-stopping and epoch state included);
* stops early after ``patience`` epochs without validation improvement;
* writes ``done.json`` when training finished, after which ``fit`` returns immediately;
* logs every epoch to CSV (``<log_dir>/<tag>/metrics.csv``), optionally TensorBoard;
* ``devices=N`` on GPUs trains data-parallel with DDP; ``precision="16-mixed"`` for AMP.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from ..runs import atomic_write_json
from .callbacks import EpochStats

# Lightning-internal deprecation notices a user cannot act on (they name Lightning's own code)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
# ... and Lightning's advertisement for its cloud logger and hardware census, printed on every fit
# (darkml logs the device it trains on itself)
_LIGHTNING_CHATTER = ("litlogger", "GPU available:", "TPU available:", "HPU available:")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda rec: not any(s in rec.getMessage() for s in _LIGHTNING_CHATTER))


def _single_log_stream() -> None:
    """When the application configured root logging, drop Lightning's own console handler.

    ``import lightning`` always attaches a StreamHandler to the "lightning" logger while its
    records also propagate to the root logger, so every Lightning message would print twice.
    """
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:
                lg.removeHandler(h)
        lg.propagate = True


log = logging.getLogger(__name__)

__all__ = ["FitResult", "fit", "load_best", "predict", "read_history"]


@dataclass
class FitResult:
    best_path: Path
    best_score: float | None
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)


def read_history(csv_path: Path) -> list[dict[str, float]]:
    """Per-epoch rows of a Lightning CSV log (train and val rows merged by epoch).

    A resumed training starts a new CSV; earlier parts were kept as ``metrics-partN.csv``
    beside it and are merged here (later parts win for an epoch logged twice).
    """
    csv_path = Path(csv_path)
    parts = sorted(csv_path.parent.glob("metrics-part*.csv"), key=lambda p: int(p.stem.split("part")[-1]))
    parts += [csv_path] if csv_path.is_file() else []
    rows: dict[int, dict[str, float]] = {}
    for part in parts:
        with open(part) as fh:
            for r in csv.DictReader(fh):
                if not r.get("epoch"):
                    continue
                e = int(float(r["epoch"]))
                d = rows.setdefault(e, {"epoch": e})
                for k, v in r.items():
                    if k in ("epoch", "step") or v in ("", None):
                        continue
                    d[k] = float(v)
    return [rows[e] for e in sorted(rows)]


def _accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def fit(
    module: L.LightningModule,
    train_loader: DataLoader,
    val_loader: DataLoader,
    ckpt_dir: Path | str,
    max_epochs: int,
    patience: int | None = None,
    monitor: str = "val_loss",
    mode: str = "min",
    devices: int | str = "auto",
    accelerator: str = "auto",
    precision: str | None = None,
    log_dir: Path | str | None = None,
    tag: str = "model",
    tensorboard: bool = False,
    seed: int = 0,
    progress: bool | None = None,
    gradient_clip_val: float | None = None,
    sample_unit: str = "images",
) -> FitResult:
    """Train ``module``; return the best checkpoint. See the module docstring. ``sample_unit`` names
    what a sample is in the per-epoch log line's throughput ("images/s", "stars/s")."""
    _single_log_stream()
    if max_epochs < 1:
        raise ValueError(f"max_epochs = {max_epochs}: must be >= 1")
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    log_root = Path(log_dir) if log_dir is not None else ckpt_dir / "logs"
    csv_path = log_root / tag / "metrics.csv"
    done = ckpt_dir / "done.json"
    if done.is_file():
        info = json.loads(done.read_text())
        log.info("%s: training already finished (%s); reusing best checkpoint", tag, done)
        return FitResult(Path(info["best_path"]), info.get("best_score"), int(info.get("epochs", 0)), read_history(csv_path))

    L.seed_everything(seed, workers=True, verbose=False)
    acc = _accelerator(accelerator)
    if precision is None:
        precision = "16-mixed" if acc == "gpu" else "32-true"
    n_dev: Any = devices
    strategy: Any = "auto"
    if acc == "gpu" and isinstance(devices, int) and devices > 1:
        strategy = "ddp"
    if acc == "cpu" and devices == "auto":
        n_dev = 1

    ckpt_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode, save_last=True,
                              save_top_k=1, enable_version_counter=False)
    if progress is None:
        progress = sys.stderr.isatty()
    callbacks: list[Any] = [ckpt_cb, EpochStats(tag, log_lines=not progress, unit=sample_unit)]
    if patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    loggers: list[Any] = [CSVLogger(save_dir=str(log_root), name=tag, version="")]
    if tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(log_root), name=f"{tag}-tb", version=""))
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator=acc,
        devices=n_dev,
        strategy=strategy,
        precision=precision,
        callbacks=callbacks,
        logger=loggers,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        deterministic=False,
        gradient_clip_val=gradient_clip_val,
    )
    log.info("%s: training on %s x%s (%s, precision %s)", tag, acc, trainer.num_devices,
             type(trainer.strategy).__name__, precision)
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.is_file() else None
    if resume:
        log.info("%s: resuming from %s", tag, last)
        if csv_path.is_file():  # keep the log of the interrupted part; the logger starts a new file
            k = len(list(csv_path.parent.glob("metrics-part*.csv")))
            csv_path.rename(csv_path.parent / f"metrics-part{k}.csv")
    try:
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=resume)
    except SystemExit:  # Lightning turns Ctrl-C / SIGTERM into exit(1) after saving: keep it an interrupt
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    best = Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else last
    score = ckpt_cb.best_model_score
    best_score = float(score) if score is not None else None
    if trainer.is_global_zero:
        atomic_write_json(done, {"best_path": str(best), "best_score": best_score, "epochs": trainer.current_epoch,
                                 "monitor": monitor})
    return FitResult(best, best_score, int(trainer.current_epoch), read_history(csv_path))


def load_best(module: L.LightningModule, path: Path | str) -> L.LightningModule:
    """Load the weights of checkpoint ``path`` into ``module`` (in place) and return it."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    return module


@torch.no_grad()
def predict(module: L.LightningModule, loader: DataLoader, device: str | torch.device | None = None) -> np.ndarray:
    """Outputs of ``module.predict_step`` over ``loader`` (eval mode), as one numpy array."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = module.to(device).eval()
    outs = []
    for i, batch in enumerate(loader):
        if isinstance(batch, (list, tuple)):
            batch = [b.to(device) if torch.is_tensor(b) else b for b in batch]
        else:
            batch = batch.to(device)
        outs.append(module.predict_step(batch, i).float().cpu())
    return torch.cat(outs).numpy()
