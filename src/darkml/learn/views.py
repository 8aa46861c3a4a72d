"""Batched, physics-respecting view augmentations for single-band flux images.

Augmentations act on batches of single-channel flux images ``(B, 1, H, W)`` on the device of
the batch and respect the physics of the data: sky rotations (exact D4 part plus a residual
angle by bilinear resampling), flips (parity), small integer shifts (circular, so flux is
conserved exactly), PSF changes (convolution with a unit-sum Gaussian in Fourier space:
total flux conserved, PSF variances add) and detector noise (zero-mean Gaussian). No colour
jitter, contrast or brightness changes: a single band of peak-normalised flux has no colour.
DINO's local crops keep the native pixel scale (no resizing, which would change the
apparent Einstein radius); the ResNets pool globally and the ViT interpolates its position
embedding, so both take the smaller crops directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .dihedral import as_batch, rotate_d4

ROTATIONS = ("none", "d4", "continuous")




def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate each image about its centre by ``angle[b]`` radians (counter-clockwise in array
    axes). The multiple of 90° nearest to the angle is applied exactly (a pixel permutation);
    only the residual in [-45°, 45°] is resampled bilinearly, with zeros outside the field."""
    x, single = as_batch(x)
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
    x, single = as_batch(x)
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
    x, single = as_batch(x)
    B, C, H, W = x.shape
    sig = sigma_px.to(x.device, torch.float32).view(B, 1, 1, 1)
    fy = torch.fft.fftfreq(H, device=x.device).view(1, 1, H, 1)
    fx = torch.fft.rfftfreq(W, device=x.device).view(1, 1, 1, W // 2 + 1)
    transfer = torch.exp(-2.0 * math.pi**2 * sig**2 * (fy**2 + fx**2))
    out = torch.fft.irfft2(torch.fft.rfft2(x.float()) * transfer, s=(H, W)).to(x.dtype)
    return out[0] if single else out


def add_noise(x: Tensor, sigma: Tensor, g: torch.Generator) -> Tensor:
    """Add zero-mean Gaussian pixel noise of standard deviation ``sigma[b]`` (peak-normalised units)."""
    x, single = as_batch(x)
    sig = sigma.to(x.device, x.dtype).view(-1, 1, 1, 1)
    out = x + sig * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    return out[0] if single else out


def local_crops(x: Tensor, size: int, g: torch.Generator) -> Tensor:
    """One random ``size``×``size`` window per image at the native pixel scale (no resizing)."""
    x, single = as_batch(x)
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
        x, single = as_batch(x)
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
    raise ValueError(f"method = {method!r}: unknown (choose from simclr-rotation, simclr-noise, byol, simsiam, dino)")
