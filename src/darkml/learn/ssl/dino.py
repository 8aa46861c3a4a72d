"""DINO: student/teacher, EMA teacher, 2 global views + local crops, centred teacher softmax over (B, K) prototypes.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..views import ViewAugment, default_views, local_crops
from .module import SSLModule


class DINO(SSLModule):
    """DINO: the student sees 2 global views and ``n_local`` local crops, the EMA teacher only
    the global views; cross-entropy between the teacher's centred, sharpened distribution and
    the student's (lightly's ``DINOLoss``, which keeps the centre as a running mean). The last
    layer of the student head is frozen during the first epoch."""

    def __init__(self, encoder: nn.Module, views: ViewAugment | None = None, proj_hidden: int = 1024,
                 bottleneck_dim: int = 128, out_dim: int = 2048, n_local: int = 4, local_size: int = 32,
                 momentum: float = 0.996, teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04,
                 warmup_teacher_temp_epochs: int = 1, student_temp: float = 0.1, center_momentum: float = 0.9, **kw):
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__(encoder, views or default_views("dino"), **kw)
        if n_local < 0:
            raise ValueError(f"n_local = {n_local}: must be >= 0")
        self.head = DINOProjectionHead(encoder.out_dim, proj_hidden, bottleneck_dim, out_dim, freeze_last_layer=1)
        self.teacher_encoder = copy.deepcopy(encoder)
        self.teacher_head = DINOProjectionHead(encoder.out_dim, proj_hidden, bottleneck_dim, out_dim)
        self.teacher_head.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.teacher_encoder)
        deactivate_requires_grad(self.teacher_head)
        self.n_local = n_local
        self.local_size = local_size
        self.momentum = momentum
        self.criterion = DINOLoss(output_dim=out_dim, warmup_teacher_temp=warmup_teacher_temp, teacher_temp=teacher_temp,
                                  warmup_teacher_temp_epochs=max(1, warmup_teacher_temp_epochs),
                                  student_temp=student_temp, center_momentum=center_momentum)

    def momentum_update(self) -> None:
        from lightly.models.utils import update_momentum

        m = self._ema_momentum(self.momentum)
        update_momentum(self.encoder, self.teacher_encoder, m)
        update_momentum(self.head, self.teacher_head, m)

    def ssl_loss(self, x, g):
        B = x.shape[0]
        glob = torch.cat([self.views(x, g), self.views(x, g)])
        h = self.encoder(glob)
        s_out = list(self.head(h).float().chunk(2))
        if self.n_local:
            loc = torch.cat([local_crops(self.views(x, g), self.local_size, g) for _ in range(self.n_local)])
            s_out += list(self.head(self.encoder(loc)).float().chunk(self.n_local))
        with torch.no_grad():
            t_out = list(self.teacher_head(self.teacher_encoder(glob)).float().chunk(2))
            t_probs = self._teacher_probs(t_out[0])  # for the collapse index: uniform or one-hot → 0
        if self.training:
            loss = self.criterion(t_out, s_out, epoch=self.current_epoch)
        else:  # evaluate without moving the centre
            c = self.criterion.center.clone()
            loss = self.criterion(t_out, s_out, epoch=self.current_epoch)
            self.criterion.center.copy_(c)
        return loss, h[:B], t_probs

    def on_after_backward(self) -> None:
        self.head.cancel_last_layer_gradients(self.current_epoch)

    def representation_encoder(self) -> nn.Module:
        """DINO evaluates the EMA teacher (as in the DINO paper)."""
        return self.teacher_encoder

    def _teacher_probs(self, logits: Tensor) -> Tensor:
        return torch.softmax((logits.float() - self.criterion.center.view(1, -1)) / self.criterion.teacher_temp, dim=-1)

    @torch.no_grad()
    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.teacher_encoder(x)
        return h, self._teacher_probs(self.teacher_head(h))
