"""SimSiam: one encoder, predictor, stop-gradient; negative cosine similarity of (B, D) embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from ..views import ViewAugment, default_views
from .module import SSLModule


class SimSiam(SSLModule):
    """SimSiam: one encoder + projector + predictor, symmetrised negative cosine similarity
    with a stop-gradient on the projection branch (no momentum network, no negatives)."""

    def __init__(self, encoder: nn.Module, views: ViewAugment | None = None, proj_hidden: int = 1024,
                 proj_dim: int = 1024, pred_hidden: int | None = None, **kw):
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

        super().__init__(encoder, views or default_views("simsiam"), **kw)
        self.projection = SimSiamProjectionHead(encoder.out_dim, proj_hidden, proj_dim)
        self.prediction = SimSiamPredictionHead(proj_dim, pred_hidden or max(8, proj_dim // 4), proj_dim)
        self.criterion = NegativeCosineSimilarity()

    def ssl_loss(self, x, g):
        v = torch.cat([self.views(x, g), self.views(x, g)])
        h = self.encoder(v)
        z = self.projection(h)
        p = self.prediction(z).float()
        z0, z1 = z.float().chunk(2)
        p0, p1 = p.chunk(2)
        loss = 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))
        return loss, h, z0
