"""BYOL: online/target networks, EMA target, predictor; loss 2 - 2 cos on (B, D) embeddings.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..views import ViewAugment, default_views
from .module import SSLModule


class BYOL(SSLModule):
    """BYOL: online encoder + projector + predictor regress the EMA target's projection of the
    other view (symmetrised negative cosine similarity); the target momentum rises from
    ``momentum`` to 1 on a cosine schedule (lightly's ``update_momentum``)."""

    def __init__(self, encoder: nn.Module, views: ViewAugment | None = None, proj_hidden: int = 1024,
                 proj_dim: int = 256, momentum: float = 0.99, **kw):
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__(encoder, views or default_views("byol"), **kw)
        self.projection = BYOLProjectionHead(encoder.out_dim, proj_hidden, proj_dim)
        self.prediction = BYOLPredictionHead(proj_dim, proj_hidden, proj_dim)
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projection = copy.deepcopy(self.projection)
        deactivate_requires_grad(self.target_encoder)
        deactivate_requires_grad(self.target_projection)
        self.momentum = momentum
        self.criterion = NegativeCosineSimilarity()

    def momentum_update(self) -> None:
        from lightly.models.utils import update_momentum

        m = self._ema_momentum(self.momentum)
        update_momentum(self.encoder, self.target_encoder, m)
        update_momentum(self.projection, self.target_projection, m)

    def ssl_loss(self, x, g):
        v = torch.cat([self.views(x, g), self.views(x, g)])
        h = self.encoder(v)
        z = self.projection(h)
        p = self.prediction(z).float()
        with torch.no_grad():
            t = self.target_projection(self.target_encoder(v)).float()
        p0, p1 = p.chunk(2)
        t0, t1 = t.chunk(2)
        loss = 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        return loss, h, z.chunk(2)[0]
