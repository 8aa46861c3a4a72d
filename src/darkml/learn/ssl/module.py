"""The common self-supervised pre-training LightningModule: per-step seeded views, AdamW with
warm-up and cosine decay, throughput, learning-rate and collapse logging. A method subclasses
:class:`SSLModule` and fills in only ``ssl_loss`` (and its momentum update).
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darkml.learn.modules import make_optimizer

from ..views import ViewAugment

__all__ = ["SSLModule", "embedding_std"]


# ---------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------
def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SSLModule(L.LightningModule):
    """Common pre-training loop: per-step views drawn on the batch's device from a generator
    seeded by (seed, epoch, batch), AdamW with linear warm-up then cosine decay per step,
    logging of ``train_loss``, ``val_loss``, the collapse index of the encoder features
    (``embed_std``) and of the projector outputs (``proj_std``), and ``train_images_per_s``.

    Subclasses implement :meth:`ssl_loss(x, g) -> (loss, features, projections)`.
    """

    def __init__(self, encoder: nn.Module, views: ViewAugment, lr: float = 1e-3, weight_decay: float = 0.05,
                 warmup_epochs: int = 0, optimizer: str = "adamw", seed: int = 0):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr = {lr}: must be > 0")
        self.encoder = encoder
        self.views = views
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.optimizer_name = optimizer
        self.seed = seed

    # -- hooks --------------------------------------------------------------
    def ssl_loss(self, x: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def momentum_update(self) -> None:
        """EMA update of target/teacher networks (BYOL, DINO); nothing for the others."""

    def representation_encoder(self) -> nn.Module:
        """The encoder whose features are the learned representation (DINO: the teacher)."""
        return self.encoder

    @torch.no_grad()
    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(representation features, projector output) of un-augmented images, for the collapse
        index; DINO's projector output is the teacher's centred, sharpened distribution."""
        h = self.representation_encoder()(x)
        return h, self.projection(h)

    def _generator(self, device, *parts: int) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(_seed_of(self.seed, *parts))
        return g

    @staticmethod
    def _images(batch) -> Tensor:
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def training_step(self, batch, batch_idx):
        x = self._images(batch)
        self.momentum_update()
        g = self._generator(x.device, self.current_epoch, batch_idx)
        loss, h, z = self.ssl_loss(x, g)
        bs = x.shape[0]
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        if bs > 1:
            self.log("embed_std", embedding_std(h), on_step=False, on_epoch=True, batch_size=bs)
            self.log("proj_std", embedding_std(z), on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch, batch_idx):
        x = self._images(batch)
        g = self._generator(x.device, 1_000_003, batch_idx)  # the same views every epoch
        loss, h, z = self.ssl_loss(x, g)
        bs = x.shape[0]
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        if bs > 1:
            self.log("val_embed_std", embedding_std(h), on_epoch=True, batch_size=bs)
            self.log("val_proj_std", embedding_std(z), on_epoch=True, batch_size=bs)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = make_optimizer(self.optimizer_name, params, self.lr, self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, int(self.trainer.max_epochs or 1))
        warm = min(total - 1, int(round(total * self.warmup_epochs / epochs)))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _ema_momentum(self, start: float) -> float:
        """EMA momentum now: cosine from ``start`` to 1 over the training steps (the BYOL/DINO
        schedule); ``start`` itself when the module runs outside a Lightning trainer."""
        from lightly.utils.scheduler import cosine_schedule

        trainer = self._trainer
        if trainer is None:
            return start
        total = max(1, int(trainer.estimated_stepping_batches))
        return cosine_schedule(min(int(self.global_step), total - 1), total, start, 1.0)


# ---------------------------------------------------------------------------------------
# collapse diagnostic
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def embedding_std(z: Tensor) -> float:
    """Collapse index of a batch of embeddings: the per-dimension standard deviation across the
    batch of the L2-normalised vectors, averaged over dimensions and multiplied by sqrt(dim).
    About 1 for embeddings spread isotropically over the sphere, 0 for a collapsed (constant)
    embedding (the SimSiam paper's diagnostic, rescaled)."""
    z = F.normalize(z.detach().float().flatten(1), dim=1)
    if z.shape[0] < 2:
        return float("nan")
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[1]))
