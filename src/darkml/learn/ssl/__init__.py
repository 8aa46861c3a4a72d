"""Self-supervised pre-training methods, one per file, each a :class:`SSLModule` that fills in
only its loss (built on lightly's losses, heads and momentum utilities; the training loop is
:func:`darkml.learn.fit`):

=================  =====================================================================
``simclr-rotation`` contrastive NT-Xent; the two views are differently rotated (and flipped,
                    shifted) copies of an image
``simclr-noise``    contrastive NT-Xent; the two views carry independent Gaussian noise
``byol``            online/target networks, EMA target, predictor; random flips + rotations
``simsiam``         one encoder, predictor, stop-gradient, negative cosine similarity
``dino``            student/teacher, EMA teacher, 2 global views + local crops, centring
=================  =====================================================================
"""

from __future__ import annotations

from torch import nn

from ..views import ViewAugment
from .byol import BYOL
from .dino import DINO
from .module import SSLModule
from .simclr import SimCLR
from .simsiam import SimSiam

#: method name -> LightningModule class (and its fixed keyword arguments)
METHODS: dict[str, tuple[type[SSLModule], dict]] = {
    "simclr-rotation": (SimCLR, {"pretext": "rotation"}),
    "simclr-noise": (SimCLR, {"pretext": "noise"}),
    "byol": (BYOL, {}),
    "simsiam": (SimSiam, {}),
    "dino": (DINO, {}),
}


#: the paper's names for the methods
METHOD_LABELS = {
    "simclr-rotation": "Contrastive (Rotational Pretext)",
    "simclr-noise": "Contrastive (Gaussian Noise Pretext)",
    "byol": "BYOL",
    "simsiam": "SimSiam",
    "dino": "DINO",
}


def build_method(name: str, encoder: nn.Module, views: ViewAugment | None = None, **kw) -> SSLModule:
    """A pre-training LightningModule for method ``name`` around ``encoder``.

    ``kw`` are the method's options (``proj_hidden``, ``proj_dim``, ``temperature``, ``out_dim``,
    ``n_local``, ``local_size``, ``momentum`` …) and the common ones (``lr``, ``weight_decay``,
    ``warmup_epochs``, ``optimizer``, ``seed``); options a method does not take are dropped.
    """
    if name not in METHODS:
        raise ValueError(f"method = {name!r}: unknown (choose from {', '.join(METHODS)})")
    cls, fixed = METHODS[name]
    import inspect

    accepted = set()
    for klass in cls.__mro__:
        if klass in (SSLModule, SimCLR, BYOL, SimSiam, DINO):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    kw = {k: v for k, v in kw.items() if k in accepted}
    return cls(encoder, views=views, **fixed, **kw)  # each method defaults to default_views(name)
