"""Self-supervised pre-training for strong-lensing images: augmentations, encoders, methods.

Five pre-training methods, each a LightningModule built on lightly's losses, heads and
momentum utilities (our own training loop: :func:`darkml.learn.fit`):

=================  =====================================================================
``simclr-rotation`` contrastive NT-Xent; the two views are differently rotated (and flipped,
                    shifted) copies of an image
``simclr-noise``    contrastive NT-Xent; the two views carry independent Gaussian noise
``byol``            online/target networks, EMA target, predictor; random flips + rotations
``simsiam``         one encoder, predictor, stop-gradient, negative cosine similarity
``dino``            student/teacher, EMA teacher, 2 global views + local crops, centring
=================  =====================================================================

Augmentations act on batches of single-channel flux images ``(B, 1, H, W)`` on the device of
the batch and respect the physics of the data: sky rotations (exact D4 part plus a residual
angle by bilinear resampling), flips (parity), small integer shifts (circular, so flux is
conserved exactly), PSF changes (convolution with a unit-sum Gaussian in Fourier space:
total flux conserved, PSF variances add) and detector noise (zero-mean Gaussian). No colour
jitter, contrast or brightness changes: a single band of peak-normalised flux has no colour.
DINO's local crops keep the native pixel scale (no resizing, which would change the
apparent Einstein radius); the ResNets pool globally and the ViT interpolates its position
embedding, so both take the smaller crops directly.

Encoders (``ENCODERS``; all take ``(B, 1, H, W)`` and return ``(B, out_dim)`` features):

* ``resnet50`` / ``resnet18`` — torchvision ResNets, random init, 1-channel 7×7/2 stem,
  classifier removed (2048 / 512 features).
* ``vit`` — Vision Transformer, 12 pre-norm blocks, width 384, 6 heads, MLP ×4, patch size
  ``patch_size`` (default 8: 64×64 images → 8×8 = 64 patch tokens + a class token). The
  paper's "kernel size 32" would leave 4 tokens on a 64×64 image.
* ``vit-tiny`` — the same ViT with 4 blocks, width 64, 4 heads (CPU quick runs).
* ``resnet-tiny`` — a quarter-width ResNet-10 (one basic block per stage, 16→128 channels,
  128 features; ~2.5 M multiply-adds per image): CPU quick runs and tests.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ROTATIONS",
    "ViewAugment",
    "rotate_d4",
    "rotate",
    "shift",
    "blur_psf",
    "add_noise",
    "local_crops",
    "ResNetEncoder",
    "ViTEncoder",
    "TinyResNetEncoder",
    "ENCODERS",
    "build_encoder",
    "FineTuneModel",
    "embedding_std",
    "SSLModule",
    "SimCLR",
    "BYOL",
    "SimSiam",
    "DINO",
    "METHODS",
    "METHOD_LABELS",
    "build_method",
    "default_views",
    "extract_features",
]

ROTATIONS = ("none", "d4", "continuous")


# ---------------------------------------------------------------------------------------
# augmentations (batched, on the batch's device, every draw from an explicit generator)
# ---------------------------------------------------------------------------------------
def _as_batch(x: Tensor) -> tuple[Tensor, bool]:
    if x.ndim == 3:
        return x[None], True
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W) or (C, H, W); got shape {tuple(x.shape)}")
    return x, False


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def rotate_d4(x: Tensor, k: Tensor, flip: Tensor | None = None) -> Tensor:
    """Exact rotation by ``k[b]`` × 90° (counter-clockwise in array axes) after an optional
    left-right flip per sample: pixels are permuted, never resampled."""
    x, single = _as_batch(x)
    out = x
    if flip is not None and bool(flip.any()):
        out = torch.where(flip.view(-1, 1, 1, 1).to(x.device), out.flip(-1), out)
    k = k.to(x.device) % 4
    res = out.clone()
    for kk in range(1, 4):
        sel = k == kk
        if bool(sel.any()):
            res[sel] = torch.rot90(out[sel], kk, dims=(-2, -1))
    return res[0] if single else res


def rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate each image about its centre by ``angle[b]`` radians (counter-clockwise in array
    axes). The multiple of 90° nearest to the angle is applied exactly (a pixel permutation);
    only the residual in [-45°, 45°] is resampled bilinearly, with zeros outside the field."""
    x, single = _as_batch(x)
    angle = angle.to(x.device, torch.float32)
    k = torch.round(angle / (math.pi / 2))
    resid = angle - k * (math.pi / 2)
    out = rotate_d4(x, k.long())
    if bool((resid.abs() > 1e-7).any()):
        c, s = torch.cos(resid), torch.sin(resid)
        # grid_sample maps output coords to input coords: inverse rotation; normalised (x, y)
        # with x along the last (column) axis and y along rows. Square images assumed.
        theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=torch.float32)
        theta[:, 0, 0], theta[:, 0, 1] = c, -s
        theta[:, 1, 0], theta[:, 1, 1] = s, c
        grid = F.affine_grid(theta, list(out.shape), align_corners=False)
        out = F.grid_sample(out.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(x.dtype)
    return out[0] if single else out


def shift(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Circular integer shift of each image by (``dy[b]``, ``dx[b]``) pixels (flux conserved)."""
    x, single = _as_batch(x)
    B, C, H, W = x.shape
    dy = dy.to(x.device).long().view(B, 1)
    dx = dx.to(x.device).long().view(B, 1)
    iy = (torch.arange(H, device=x.device).view(1, H) - dy) % H
    ix = (torch.arange(W, device=x.device).view(1, W) - dx) % W
    out = x.gather(2, iy.view(B, 1, H, 1).expand(B, C, H, W))
    out = out.gather(3, ix.view(B, 1, 1, W).expand(B, C, H, W))
    return out[0] if single else out


def blur_psf(x: Tensor, sigma_px: Tensor) -> Tensor:
    """Convolve each image with a circular Gaussian of standard deviation ``sigma_px[b]`` pixels
    (periodic boundaries, via FFT): the kernel has unit sum so total flux is conserved exactly,
    and a PSF of variance s² becomes one of variance s² + sigma²."""
    x, single = _as_batch(x)
    B, C, H, W = x.shape
    sig = sigma_px.to(x.device, torch.float32).view(B, 1, 1, 1)
    fy = torch.fft.fftfreq(H, device=x.device).view(1, 1, H, 1)
    fx = torch.fft.rfftfreq(W, device=x.device).view(1, 1, 1, W // 2 + 1)
    transfer = torch.exp(-2.0 * math.pi**2 * sig**2 * (fy**2 + fx**2))
    out = torch.fft.irfft2(torch.fft.rfft2(x.float()) * transfer, s=(H, W)).to(x.dtype)
    return out[0] if single else out


def add_noise(x: Tensor, sigma: Tensor, g: torch.Generator) -> Tensor:
    """Add zero-mean Gaussian pixel noise of standard deviation ``sigma[b]`` (peak-normalised units)."""
    x, single = _as_batch(x)
    sig = sigma.to(x.device, x.dtype).view(-1, 1, 1, 1)
    out = x + sig * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    return out[0] if single else out


def local_crops(x: Tensor, size: int, g: torch.Generator) -> Tensor:
    """One random ``size``×``size`` window per image at the native pixel scale (no resizing)."""
    x, single = _as_batch(x)
    B, C, H, W = x.shape
    if not 1 <= size <= min(H, W):
        raise ValueError(f"local crop size = {size}: must lie in [1, {min(H, W)}]")
    y0 = torch.randint(0, H - size + 1, (B,), generator=g, device=x.device)
    x0 = torch.randint(0, W - size + 1, (B,), generator=g, device=x.device)
    ar = torch.arange(size, device=x.device)
    iy = (y0.view(B, 1) + ar).view(B, 1, size, 1).expand(B, C, size, W)
    out = x.gather(2, iy)
    ix = (x0.view(B, 1) + ar).view(B, 1, 1, size).expand(B, C, size, size)
    out = out.gather(3, ix)
    return out[0] if single else out


@dataclass(frozen=True)
class ViewAugment:
    """A random view of a batch: geometry (rotation, flip, shift), then optics (PSF), then
    detector noise. ``aug(x, generator)`` works on ``(B, 1, H, W)`` or one ``(1, H, W)`` image.

    rotate: ``none``, ``d4`` (multiples of 90°, exact) or ``continuous`` (uniform angle);
    flip: random left-right flip (parity); shift_px: integer shift uniform in [-s, s] per axis;
    noise_sigma: Gaussian noise std uniform in this range (peak-normalised units);
    psf_sigma_px: extra Gaussian PSF std uniform in this range (pixels).
    """

    rotate: str = "continuous"
    flip: bool = True
    shift_px: int = 0
    noise_sigma: tuple[float, float] = (0.0, 0.0)
    psf_sigma_px: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        if self.rotate not in ROTATIONS:
            raise ValueError(f"rotate = {self.rotate!r}: must be one of {', '.join(ROTATIONS)}")
        if self.shift_px < 0:
            raise ValueError(f"shift_px = {self.shift_px}: must be >= 0")
        for name in ("noise_sigma", "psf_sigma_px"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi):
                raise ValueError(f"{name} = {[lo, hi]}: need 0 <= low <= high")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if generator is None:
            raise ValueError("ViewAugment needs an explicit torch.Generator (no global random state)")
        x, single = _as_batch(x)
        B, dev, g = x.shape[0], x.device, generator
        if self.rotate == "continuous":
            flip = torch.rand(B, generator=g, device=dev) < 0.5 if self.flip else None
            if flip is not None:
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            x = rotate(x, _uniform(B, 0.0, 2 * math.pi, g, dev))
        elif self.rotate == "d4" or self.flip:
            k = torch.randint(0, 4, (B,), generator=g, device=dev) if self.rotate == "d4" else torch.zeros(B, dtype=torch.long, device=dev)
            flip = torch.rand(B, generator=g, device=dev) < 0.5 if self.flip else None
            x = rotate_d4(x, k, flip)
        if self.shift_px > 0:
            s = self.shift_px
            dy = torch.randint(-s, s + 1, (B,), generator=g, device=dev)
            dx = torch.randint(-s, s + 1, (B,), generator=g, device=dev)
            x = shift(x, dy, dx)
        if self.psf_sigma_px[1] > 0:
            x = blur_psf(x, _uniform(B, *self.psf_sigma_px, g, dev))
        if self.noise_sigma[1] > 0:
            x = add_noise(x, _uniform(B, *self.noise_sigma, g, dev), g)
        return x[0] if single else x


def default_views(method: str, max_shift_px: int = 2, noise_sigma: tuple[float, float] = (0.001, 0.01),
                  psf_sigma_px: tuple[float, float] = (0.0, 0.5)) -> ViewAugment:
    """The view recipe of each method (the pretext of the two contrastive variants)."""
    if method == "simclr-rotation":  # views differ by a sky rotation (and parity, a small shift)
        return ViewAugment("continuous", True, max_shift_px)
    if method == "simclr-noise":  # views differ only by their detector-noise realisation
        return ViewAugment("none", False, 0, noise_sigma)
    if method == "byol":  # the paper: random flips and random rotations
        return ViewAugment("continuous", True, 0)
    if method in ("simsiam", "dino"):  # everything physical
        return ViewAugment("continuous", True, max_shift_px, noise_sigma, psf_sigma_px)
    raise ValueError(f"method = {method!r}: unknown (choose from {', '.join(METHODS)})")


# ---------------------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------------------
class ResNetEncoder(nn.Module):
    """torchvision ResNet-18/50 (random init) with a 1-channel stem and no classifier."""

    def __init__(self, depth: int = 50, in_chans: int = 1):
        super().__init__()
        import torchvision

        if depth not in (18, 50):
            raise ValueError(f"resnet depth = {depth}: must be 18 or 50")
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ViTEncoder(nn.Module):
    """Vision Transformer: patch embedding, class token, learned position embedding
    (bicubically interpolated for other input sizes, e.g. DINO's local crops), pre-norm
    transformer blocks, final LayerNorm; returns the class token."""

    def __init__(self, image_size: int = 64, patch_size: int = 8, dim: int = 384, depth: int = 12, heads: int = 6,
                 mlp_ratio: float = 4.0, in_chans: int = 1, dropout: float = 0.0):
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"vit patch_size = {patch_size}: must divide the image size {image_size}")
        if dim % heads:
            raise ValueError(f"vit dim = {dim}: must be divisible by heads = {heads}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.patch = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + self.grid**2, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim
        self.depth = depth

    @property
    def n_tokens(self) -> int:
        return self.grid**2 + 1

    def _pos(self, gh: int, gw: int) -> Tensor:
        if gh == self.grid and gw == self.grid:
            return self.pos
        d = self.pos.shape[-1]
        p = self.pos[:, 1:].reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        p = F.interpolate(p, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([self.pos[:, :1], p.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}")
        t = self.patch(x)
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self._pos(gh, gw)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t[:, 0])


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.b1(self.c1(x)), inplace=True)
        return F.relu(self.b2(self.c2(y)) + self.skip(x), inplace=True)


class TinyResNetEncoder(nn.Module):
    """A ResNet-10 at a quarter of the width: ImageNet-style stem (7×7/2 conv, 3×3/2 max-pool),
    one basic block per stage with 16, 32, 64, 128 channels, global average pool (128 features).
    About 2.5 M multiply-adds per 64×64 image (ResNet-50: ~340 M): CPU quick runs and tests."""

    def __init__(self, in_chans: int = 1, width: int = 16):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, w[0], 7, 2, 3, bias=False), nn.BatchNorm2d(w[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(_BasicBlock(w[0], w[0], 1), _BasicBlock(w[0], w[1], 2),
                                    _BasicBlock(w[1], w[2], 2), _BasicBlock(w[2], w[3], 2))
        self.out_dim = w[3]

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean(dim=(-2, -1))


#: name -> builder(image_size, patch_size) -> encoder with ``.out_dim``
ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "resnet50": lambda image_size=64, patch_size=8: ResNetEncoder(50),
    "resnet18": lambda image_size=64, patch_size=8: ResNetEncoder(18),
    "vit": lambda image_size=64, patch_size=8: ViTEncoder(image_size, patch_size, dim=384, depth=12, heads=6),
    "vit-tiny": lambda image_size=64, patch_size=8: ViTEncoder(image_size, patch_size, dim=64, depth=4, heads=4),
    "resnet-tiny": lambda image_size=64, patch_size=8: TinyResNetEncoder(),
}


def build_encoder(name: str, image_size: int = 64, patch_size: int = 8, seed: int | None = None) -> nn.Module:
    """A freshly (randomly) initialised encoder from :data:`ENCODERS`; ``seed`` fixes the init."""
    if name not in ENCODERS:
        raise ValueError(f"encoder = {name!r}: unknown (choose from {', '.join(ENCODERS)})")
    if seed is None:
        return ENCODERS[name](image_size=image_size, patch_size=patch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return ENCODERS[name](image_size=image_size, patch_size=patch_size)


class FineTuneModel(nn.Module):
    """Encoder + fully connected head: ``out_dim`` = 3 logits (classification) or 1 value
    (regression). ``hidden=0`` gives a single linear layer. With ``freeze_encoder`` the
    encoder's weights stay fixed (and its BatchNorm statistics too)."""

    def __init__(self, encoder: nn.Module, out_dim: int, hidden: int = 256, dropout: float = 0.0,
                 freeze_encoder: bool = False):
        super().__init__()
        d = int(encoder.out_dim)
        self.encoder = encoder
        self.head = (nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
                     if hidden > 0 else nn.Linear(d, out_dim))
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


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
        self._t0 = 0.0
        self._n = 0

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
        self._n += x.shape[0] * max(1, self.trainer.world_size)
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

    def on_train_epoch_start(self) -> None:
        import time

        self._t0, self._n = time.perf_counter(), 0

    def on_train_epoch_end(self) -> None:
        import time

        dt = time.perf_counter() - self._t0
        if dt > 0 and self._n:
            self.log("train_images_per_s", self._n / dt)
        self.log("lr", self.optimizers().param_groups[0]["lr"])

    def configure_optimizers(self):
        from darkml.learn.modules import make_optimizer

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


@torch.no_grad()
def extract_features(encoder: nn.Module, images: np.ndarray | Tensor, batch_size: int = 256,
                     device: str | torch.device | None = None) -> np.ndarray:
    """Encoder features ``(N, out_dim)`` of un-augmented images (eval mode), as float32 numpy."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    was = encoder.training
    enc = encoder.to(device).eval()
    x = torch.as_tensor(images)
    out = []
    for i in range(0, len(x), batch_size):
        out.append(enc(x[i : i + batch_size].to(device, torch.float32)).float().cpu())
    encoder.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, int(encoder.out_dim)), np.float32)
