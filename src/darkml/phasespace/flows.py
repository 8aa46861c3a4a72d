"""Normalizing flows for the stellar phase-space density f(x, v) = ν(x) p(v | x).

* ν(x): an unconditional masked autoregressive flow (zuko) on positions, after a fixed,
  differentiable preprocessing of the observed ball into R^3 (shift to the observer, scale to
  the unit ball, ``w ↦ w/|w| · atanh|w|``, then standardise). Its log-Jacobian is part of
  ``log_nu`` so that ν is a density in kpc^-3 and its x-gradient is exact.
* p(v | x): a conditional MAF on standardised velocities whose context is the preprocessed
  position.

Both use smooth activations (GELU by default): the method differentiates log f.
Training: :class:`DensityModule` (a LightningModule minimising −⟨log f⟩) is driven by
``darkml.learn.fit`` (checkpoints, resume, early stopping on a validation split).
:func:`train_ensemble` trains members on bootstrap resamples for the statistical error.

Units: x in kpc, v in km/s; ``log_prob`` is log f in kpc^-3 (km/s)^-3.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import numpy as np
import torch
import zuko
from torch import nn

from ..learn import ArrayDataset, fit, make_loader
from ..learn.modules import (
    SCHEDULES,
    count_parameters,  # noqa: F401 (re-exported)
    cosine_optimizers,
    plateau_optimizers,
)

log = logging.getLogger(__name__)

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "BallPreprocess",
    "PhaseSpaceFlow",
    "DensityModule",
    "flow_spec",
    "count_parameters",
    "train_member",
    "train_ensemble",
    "load_member",
    "log_f_and_grads",
    "SupportError",
    "check_support",
    "TrainSettings",
    "member_split",
    "model_device",
    "torch_threads",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh}


class SupportError(ValueError):
    """A requested position lies outside the region the data (and the flows) cover."""


def _maf(features: int, context: int, transforms: int, hidden: Sequence[int], activation: str, residual: bool) -> nn.Module:
    return zuko.flows.MAF(features=features, context=context, transforms=transforms, hidden_features=tuple(hidden),
                          activation=ACTIVATIONS[activation], residual=residual)


def _nsf(features: int, context: int, transforms: int, hidden: Sequence[int], activation: str, residual: bool) -> nn.Module:
    return zuko.flows.NSF(features=features, context=context, transforms=transforms, hidden_features=tuple(hidden),
                          activation=ACTIVATIONS[activation], residual=residual, bins=8)


#: flow architectures by name (affine MAF as in the paper; rational-quadratic spline NSF as an option —
#: C¹ only, fine for accelerations, not for second derivatives)
MODELS: dict[str, Callable[..., nn.Module]] = {"maf": _maf, "nsf": _nsf}


class BallPreprocess(nn.Module):
    """x (kpc) in the ball (center, radius) -> standardised y in R^3, with log|det ∂y/∂x|.

    ``z_stretch`` = s (kpc, optional): first replace the height above the Galactic mid-plane z
    by ζ = s·asinh(z/s) (the ball's centre likewise) — a smooth map that stretches the layer
    |z| ≲ s and compresses what lies beyond. Its log-Jacobian −½ ln(1 + z²/s²) carries a
    mid-plane curvature −1/s² of ln ν by construction, so a flow need not build the thin disc's
    sharp mid-plane itself (flows smooth it: docs/phasespace.md). The map keeps the ball inside
    itself (|ζ| ≤ |z|), and is exactly invertible.
    """

    def __init__(self, center: Sequence[float], radius: float, mean: Sequence[float] = (0, 0, 0), std: Sequence[float] = (1, 1, 1),
                 z_stretch: float | None = None):
        super().__init__()
        self.z_stretch = float(z_stretch) if z_stretch else None
        self.register_buffer("center", torch.tensor(list(center), dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))
        # a hair beyond the data radius so that stars on the boundary map to finite points
        self.radius = float(radius) * (1.0 + 1e-3)

    def _stretch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.z_stretch is None:
            return x, torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        s = self.z_stretch
        z = x[..., 2]
        zeta = s * torch.asinh(z / s)
        return torch.stack([x[..., 0], x[..., 1], zeta], dim=-1), -0.5 * torch.log1p((z / s) ** 2)

    def unstandardised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, ladj_s = self._stretch(x)
        c = self.center.to(x)
        if self.z_stretch is not None:
            c = torch.stack([c[0], c[1], self.z_stretch * torch.asinh(c[2] / self.z_stretch)])
        w = (x - c) / self.radius
        r2 = (w**2).sum(-1, keepdim=True)
        r = torch.sqrt(torch.clamp(r2, min=1e-24))
        r = torch.clamp(r, max=1 - 1e-7)
        small = r < 1e-3
        ratio = torch.where(small, 1 + r2 / 3 + r2**2 / 5, torch.atanh(r) / torch.where(small, torch.ones_like(r), r))
        y = w * ratio
        rr = r.squeeze(-1)
        ladj = -3 * math.log(self.radius) - torch.log1p(-rr**2) + 2 * torch.log(ratio.squeeze(-1)) + ladj_s
        return y, ladj

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, ladj = self.unstandardised(x)
        z = (y - self.mean.to(x)) / self.std.to(x)
        return z, ladj - torch.log(self.std.to(x)).sum()

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        y = z * self.std.to(z) + self.mean.to(z)
        r = torch.sqrt(torch.clamp((y**2).sum(-1, keepdim=True), min=1e-24))
        w = y * torch.tanh(r) / r
        c = self.center.to(z)
        if self.z_stretch is None:
            return c + w * self.radius
        s = self.z_stretch
        c = torch.stack([c[0], c[1], s * torch.asinh(c[2] / s)])
        x = c + w * self.radius
        return torch.stack([x[..., 0], x[..., 1], s * torch.sinh(x[..., 2] / s)], dim=-1)

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.center.to(x)) ** 2).sum(-1) <= (self.radius / (1 + 1e-3)) ** 2


def flow_spec(x: np.ndarray, v: np.ndarray, observer: Sequence[float], radius: float, model: str = "maf", transforms: int = 5,
              hidden: Sequence[int] = (64, 64), activation: str = "gelu", residual: bool = False,
              z_stretch: float | None = None) -> dict[str, Any]:
    """A JSON-able description of a flow pair, with preprocessing statistics taken from (x, v)."""
    if model not in MODELS:
        raise ValueError(f"flow model = {model!r}: must be one of {sorted(MODELS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation = {activation!r}: must be one of {sorted(ACTIVATIONS)}")
    pre = BallPreprocess(observer, radius, z_stretch=z_stretch)
    with torch.no_grad():
        y, _ = pre.unstandardised(torch.as_tensor(np.asarray(x), dtype=torch.float32))
    return {
        "model": model, "transforms": int(transforms), "hidden": [int(h) for h in hidden], "activation": activation,
        "residual": bool(residual), "observer": [float(c) for c in observer], "radius": float(radius),
        "z_stretch": float(z_stretch) if z_stretch else None,
        "x_mean": y.mean(0).tolist(), "x_std": y.std(0).tolist(),
        "v_mean": np.asarray(v).mean(0).tolist(), "v_std": np.asarray(v).std(0).tolist(),
    }


class PhaseSpaceFlow(nn.Module):
    """f(x, v) = ν(x) p(v|x) from a spec (see :func:`flow_spec`); ``forward(x, v)`` returns log f."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = dict(spec)
        build = MODELS[spec["model"]]
        self.pre = BallPreprocess(spec["observer"], spec["radius"], spec["x_mean"], spec["x_std"], spec.get("z_stretch"))
        self.register_buffer("v_mean", torch.tensor(spec["v_mean"], dtype=torch.float32))
        self.register_buffer("v_std", torch.tensor(spec["v_std"], dtype=torch.float32))
        args = (spec["transforms"], spec["hidden"], spec["activation"], spec.get("residual", False))
        self.pos = build(3, 0, *args)
        self.vel = build(3, 3, *args)

    # -- densities ---------------------------------------------------------------------
    def context(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pre(x)

    def log_nu(self, x: torch.Tensor) -> torch.Tensor:
        """log ν(x), ν normalised to one over the observed ball [kpc^-3]."""
        z, ladj = self.pre(x)
        return self.pos().log_prob(z) + ladj

    def log_p_v(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(v | x) [(km/s)^-3]."""
        z, _ = self.pre(x)
        u = (v - self.v_mean.to(v)) / self.v_std.to(v)
        return self.vel(z).log_prob(u) - torch.log(self.v_std.to(v)).sum()

    def log_prob(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """log f(x, v) = log ν(x) + log p(v|x) [kpc^-3 (km/s)^-3]."""
        z, ladj = self.pre(x)
        u = (v - self.v_mean.to(v)) / self.v_std.to(v)
        return self.pos().log_prob(z) + ladj + self.vel(z).log_prob(u) - torch.log(self.v_std.to(v)).sum()

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x, v)

    # -- sampling ----------------------------------------------------------------------
    def sample_v(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None,
                 base: torch.Tensor | None = None) -> torch.Tensor:
        """Velocities from p(v|x): shape (P, n, 3) for positions x (P, 3).

        ``base`` (n, 3) fixes the base-distribution draws (the same for every position: common
        random numbers, which make the Monte-Carlo acceleration a smooth function of x).
        """
        P = x.shape[0]
        z, _ = self.pre(x)
        ctx = z[:, None, :].expand(P, n, 3).reshape(P * n, 3)
        if base is None:
            u = torch.randn((P * n, 3), generator=generator, device=x.device, dtype=x.dtype) if generator is not None \
                else torch.randn((P * n, 3), device=x.device, dtype=x.dtype)
        else:
            u = base.to(x)[None].expand(P, n, 3).reshape(P * n, 3)
        vs = self.vel(ctx).transform.inv(u)
        return (vs * self.v_std.to(x) + self.v_mean.to(x)).reshape(P, n, 3)

    @torch.no_grad()
    def sample_x(self, n: int) -> torch.Tensor:
        """Positions from ν (kpc)."""
        z = self.pos().sample((n,))
        return self.pre.inverse(z)


def log_f_and_grads(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor,
                    create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log f(x, v) and its gradients ∇_x log f [1/kpc] and ∇_v log f [1/(km/s)] by autograd.

    ``model(x, v)`` is any callable returning log f (a :class:`PhaseSpaceFlow` or an exact DF).
    """
    with torch.enable_grad():
        xx = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        vv = v if (create_graph and v.requires_grad) else v.detach().requires_grad_(True)
        lf = model(xx, vv)
        gx, gv = torch.autograd.grad(lf.sum(), (xx, vv), create_graph=create_graph)
    return (lf if create_graph else lf.detach()), gx, gv


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
class DensityModule(L.LightningModule):
    """Maximum-likelihood training of a :class:`PhaseSpaceFlow` on (B, 6) batches of (x, v).

    Adam, with ``schedule="plateau"`` the learning rate cut by ``plateau_factor`` when the
    validation loss stalls (1e-3 then 1e-4 in the reported setup); with ``schedule="cosine"`` a
    linear warm-up over ``warmup_fraction`` of the steps and a half-cosine to 0 at the last step
    (flows trained so keep more of the thin disc's mid-plane curvature than with the plateau
    schedule and early stopping at the same likelihood: docs/phasespace.md, "Removing the bias").
    Logs ``train_loss``/``val_loss`` (= −⟨log f⟩).
    """

    def __init__(self, spec: dict[str, Any], lr: float = 1e-3, weight_decay: float = 0.0,
                 plateau_patience: int = 10, plateau_factor: float = 0.1, min_lr: float = 1e-5,
                 schedule: str = "plateau", warmup_fraction: float = 0.0):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr = {lr}: must be > 0")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule = {schedule!r}: must be one of {SCHEDULES}")
        self.save_hyperparameters()
        self.model = PhaseSpaceFlow(spec)

    def forward(self, xv: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob(xv[:, :3], xv[:, 3:])

    def _loss(self, batch) -> torch.Tensor:
        xv = batch[0] if isinstance(batch, (list, tuple)) else batch
        return -self(xv.float()).mean(), xv.shape[0]

    def training_step(self, batch, batch_idx):
        loss, n = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, n = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=n)

    def configure_optimizers(self):
        h = self.hparams
        if h.get("schedule", "plateau") == "cosine":
            return cosine_optimizers(self.parameters(), "adam", h.lr, h.weight_decay,
                                     max(1, int(self.trainer.estimated_stepping_batches)), h.get("warmup_fraction", 0.0))
        return plateau_optimizers(self.parameters(), "adam", h.lr, h.weight_decay, h.plateau_factor, h.plateau_patience,
                                  min_lr=h.min_lr)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Temporarily set torch's intra-op CPU threads (``None``: leave as is).

    Small flows gain little from threads, and on an oversubscribed CPU an OpenMP pool that
    spins for cores it does not get is many times slower than one thread (measured here: a
    training epoch 2.5 s with 1 thread vs 46 s with 2 under a load of 9 on 2 cores).
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class TrainSettings:
    """What :func:`train_member` needs beyond the data (mirrors the study's train config)."""

    batch_size: int = 1024
    lr: float = 1e-3
    max_epochs: int = 200
    patience: int = 20
    plateau_patience: int = 8
    val_fraction: float = 0.2
    bootstrap: bool = True
    accelerator: str = "auto"
    devices: Any = "auto"
    cpu_threads: int | None = 1
    tensorboard: bool = False
    schedule: str = "plateau"  # or "cosine": all max_epochs, no early stopping
    warmup_fraction: float = 0.0


def member_split(n: int, member: int, seed: int, val_fraction: float, bootstrap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices of ensemble member ``member``: a fresh validation split, then a
    bootstrap resample (with replacement) of the training part."""
    rng = np.random.default_rng([int(seed), 7001, int(member)])
    perm = rng.permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    val, train = np.sort(perm[:n_val]), perm[n_val:]
    if bootstrap:
        train = train[rng.integers(0, len(train), len(train))]
    return np.sort(train), val


def train_member(x: np.ndarray, v: np.ndarray, spec_kwargs: dict[str, Any], settings: TrainSettings, ckpt_dir: Path,
                 member: int, seed: int, log_dir: Path | None = None, tag: str = "flow"):
    """Train ensemble member ``member`` on (x, v); returns ``darkml.learn.FitResult``."""
    tr, va = member_split(len(x), member, seed, settings.val_fraction, settings.bootstrap)
    spec = flow_spec(x[tr], v[tr], **spec_kwargs)
    data = np.concatenate([x, v], axis=1).astype(np.float32)
    member_seed = int(np.random.default_rng([int(seed), 7002, int(member)]).integers(0, 2**31 - 1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(member_seed)
        module = DensityModule(spec, lr=settings.lr, plateau_patience=settings.plateau_patience, schedule=settings.schedule,
                               warmup_fraction=settings.warmup_fraction)
    # a cosine schedule runs to its end: early stopping would cut it mid-decay
    patience = None if settings.schedule == "cosine" else settings.patience
    train = make_loader(ArrayDataset(data[tr]), batch_size=settings.batch_size, shuffle=True, seed=member_seed, drop_last=len(tr) > settings.batch_size)
    val = make_loader(ArrayDataset(data[va]), batch_size=max(settings.batch_size, 4096), shuffle=False, seed=member_seed)
    with torch_threads(settings.cpu_threads):
        return fit(module, train, val, ckpt_dir=ckpt_dir, max_epochs=settings.max_epochs, patience=patience,
                   accelerator=settings.accelerator, devices=settings.devices, precision="32-true", log_dir=log_dir,
                   tag=tag, seed=member_seed, gradient_clip_val=5.0, tensorboard=settings.tensorboard,
                   sample_unit="stars")


def train_ensemble(x: np.ndarray, v: np.ndarray, spec_kwargs: dict[str, Any], settings: TrainSettings, ckpt_root: Path,
                   n_members: int, seed: int, log_dir: Path | None = None, tag: str = "flow") -> list:
    """Train (or resume) ``n_members`` bootstrap members under ``ckpt_root/m<k>``."""
    results = []
    for k in range(n_members):
        log.info("%s: training member %d/%d on %d stars", tag, k + 1, n_members, len(x))
        results.append(train_member(x, v, spec_kwargs, settings, Path(ckpt_root) / f"m{k}", k, seed, log_dir, f"{tag}-m{k}"))
    return results


def load_member(path: Path | str, device: str | torch.device = "cpu") -> PhaseSpaceFlow:
    """The flow of a :class:`DensityModule` checkpoint, in eval mode on ``device``."""
    module = DensityModule.load_from_checkpoint(str(path), map_location="cpu", weights_only=False)
    model = module.model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def model_device(model: Any) -> torch.device:
    """The device of a model's buffers (the flows keep their statistics there); CPU for a plain
    callable or a module without buffers."""
    buf = next(iter(model.buffers()), None) if hasattr(model, "buffers") else None
    return buf.device if buf is not None else torch.device("cpu")


def check_support(points: np.ndarray, observer: Sequence[float], radius: float, reach: float = 0.0, what: str = "position") -> None:
    """Raise :class:`SupportError` if any point (plus ``reach`` kpc, e.g. a kernel's extent) leaves the
    ball (observer, radius) that the data and the flows cover."""
    pts = np.atleast_2d(np.asarray(points, dtype=float))
    d = np.linalg.norm(pts - np.asarray(observer, dtype=float), axis=1) + reach
    bad = np.nonzero(d > radius * (1 + 1e-9))[0]
    if bad.size:
        p = pts[bad[0]]
        extra = f" + {reach:.3g} kpc kernel reach" if reach else ""
        raise SupportError(f"{what} ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) kpc is {d[bad[0]] - reach:.3f} kpc from the observer"
                           f"{extra}: outside the data's support (radius {radius} kpc); {bad.size} point(s) affected")
