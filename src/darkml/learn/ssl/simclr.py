"""SimCLR (NT-Xent contrastive loss) with a rotation or a noise pretext.
"""

from __future__ import annotations

import torch
from torch import nn

from ..views import ViewAugment, default_views
from .module import SSLModule


class SimCLR(SSLModule):
    """Contrastive learning with NT-Xent (lightly's ``NTXentLoss``) between two views;
    ``pretext`` = ``rotation`` (differently rotated copies) or ``noise`` (independent noise)."""

    def __init__(self, encoder: nn.Module, pretext: str = "rotation", views: ViewAugment | None = None,
                 proj_hidden: int = 512, proj_dim: int = 128, temperature: float = 0.5, **kw):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        if pretext not in ("rotation", "noise"):
            raise ValueError(f"pretext = {pretext!r}: must be 'rotation' or 'noise'")
        super().__init__(encoder, views or default_views(f"simclr-{pretext}"), **kw)
        self.pretext = pretext
        self.projection = SimCLRProjectionHead(encoder.out_dim, proj_hidden, proj_dim)
        self.criterion = NTXentLoss(temperature=temperature)

    def ssl_loss(self, x, g):
        v = torch.cat([self.views(x, g), self.views(x, g)])
        h = self.encoder(v)
        z = self.projection(h).float()
        z0, z1 = z.chunk(2)
        return self.criterion(z0, z1), h, z0
