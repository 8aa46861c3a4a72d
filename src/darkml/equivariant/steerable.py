"""Rotation-equivariant networks for strong-lensing images.

Four architectures, each an ``nn.Module`` mapping images ``(B, C, H, W)`` to ``(B, num_outputs)``
logits (classification) or values (regression), invariant to rotations of the input about the
image centre:

* :class:`SteerableCNN` — ``c8`` / ``d8``: E(2)-steerable convolutions (Weiler & Cesa 2019, via
  ``e2cnn``) on regular representations of the cyclic group C8 (``flip=True``: dihedral D8,
  adding reflections); group pooling to invariant fields, global average pooling, MLP head.
  Exactly invariant to 90° rotations (and, for D8, to the pixel-grid reflections); invariant
  to 45° rotations up to the sampling of the filters on the pixel grid.
* :class:`HarmonicNet` — ``hnet``: a Harmonic Network (Worrall et al. 2017) built from
  ``e2cnn``'s SO(2) irreducible representations: every layer carries a rotation-order-0 stream
  (scalars) and a rotation-order-1 stream (2-vectors, i.e. complex numbers of order 1); the
  filters between streams are circular harmonics times learned radial profiles. Order-1
  fields use norm non-linearities and norm batch-normalisation, order-0 fields ReLU. The
  invariant read-out is the order-0 channels plus the moduli of the order-1 fields.
* :class:`EquivariantTransformerNet` — ``etn``: an Equivariant Transformer (Tai et al. 2019)
  front end. The image is resampled on a log-polar grid (canonical coordinates in which a
  rotation about the centre is a cyclic shift along θ and a scaling a shift along log r); a
  small CNN, translation-equivariant on that grid (circular padding in θ), predicts the pose
  as the circular mean (angle) and the mean (log-scale) of softmax distributions along the
  two axes; the image is then rotated and rescaled back to a canonical pose and classified by
  an ordinary CNN. Because the predicted angle shifts exactly with a grid-exact rotation of
  the input, the whole network is invariant to 90° rotations up to floating point.

All three are built for square images with the rotation centre at the image centre (the
strong-lensing datasets are centred on the lens). An optional soft disc mask (``mask=True``)
zeroes the corners, which a rotation by a non-multiple of 90° would move off the grid.

``e2cnn`` 0.2.3 predates numpy 2 (``ndarray.tostring``); :func:`_patch_e2cnn_for_numpy2`
replaces the affected ``__hash__`` methods with ``tobytes``-based equivalents at import.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["disc_mask", "steerable_conv", "blur_pool"]


# ---------------------------------------------------------------------------------------
# e2cnn compatibility
# ---------------------------------------------------------------------------------------
def _patch_e2cnn_for_numpy2() -> None:
    """Make e2cnn 0.2.3's kernel-basis hashes work on numpy 2 (no ``ndarray.tostring``)."""
    if hasattr(np.ndarray, "tostring"):
        return
    from e2cnn.kernels import irreps_basis as ib

    def _h(a) -> int:
        return hash(a.tobytes()) if isinstance(a, np.ndarray) else hash(a)

    def _hash(self):  # same fields as e2cnn's own __hash__, bytes instead of tostring()
        return hash(self.in_irrep) + hash(self.out_irrep) + _h(self.mu) + _h(self.gamma)

    for name in ("R2FlipsSolution", "R2ContinuousRotationsSolution", "R2FlipsDiscreteRotationsSolution",
                 "R2FlipsContinuousRotationsSolution"):
        cls = getattr(ib, name, None)
        if cls is not None:
            cls.__hash__ = _hash

    # e2cnn's 2x2 harmonic helpers call np.array(scalar, copy=False), an error on numpy 2;
    # the kernel bases look them up in irreps_basis's namespace, so rebinding there suffices.
    def _col(a) -> np.ndarray:
        return np.asarray(a).reshape(-1, 1)

    def _flip_sign(s) -> np.ndarray:
        return _col(np.where(np.asarray(s) > 0, -1, 1))

    def psi(theta, k=1, gamma=0.0, out=None):
        """2x2 rotation matrices of angle k·θ + γ, shape (2, 2, len(k), len(θ))."""
        x = _col(k) * np.asarray(theta, dtype=float).reshape(1, -1) + _col(gamma)
        out = np.empty((2, 2) + x.shape) if out is None else out
        c, s = np.cos(x), np.sin(x)
        out[0, 0], out[0, 1], out[1, 0], out[1, 1] = c, -s, s, c
        return out

    def chi(s, out=None):
        """diag(1, ±1): the reflection (s > 0) or identity, shape (2, 2, len(s), 1)."""
        f = _flip_sign(s)
        out = np.empty((2, 2, f.shape[0], 1)) if out is None else out
        out[0, 0], out[0, 1], out[1, 0], out[1, 1] = 1, 0, 0, f
        return out

    def psichi(theta, s, k=1, gamma=0.0, out=None):
        """psi(θ, k, γ) @ chi(s) along the first two axes."""
        f = _flip_sign(s)
        x = _col(k) * np.asarray(theta, dtype=float).reshape(1, -1) + _col(gamma)
        out = np.empty((2, 2) + x.shape) if out is None else out
        c, sn = np.cos(x), np.sin(x)
        out[0, 0], out[0, 1], out[1, 0], out[1, 1] = c, -f * sn, sn, f * c
        return out

    ib.psi, ib.chi, ib.psichi = psi, chi, psichi


def _e2cnn():
    from e2cnn import gspaces
    from e2cnn import nn as enn

    _patch_e2cnn_for_numpy2()
    return gspaces, enn


# ---------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------
def disc_mask(size: int, edge: float = 2.0) -> torch.Tensor:
    """Soft disc mask for a ``size``×``size`` image [pixels]: 1 inside radius size/2 − edge,
    falling linearly to 0 at size/2, measured from the image centre ((size−1)/2, (size−1)/2).

    The mask is symmetric under the dihedral group of the pixel grid, so masking commutes
    with 90° rotations and reflections exactly.
    """
    if size < 4:
        raise ValueError(f"image size = {size}: must be >= 4 pixels")
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot(xx - c, yy - c)
    m = np.clip((size / 2.0 - r) / edge, 0.0, 1.0)
    return torch.as_tensor(m, dtype=torch.float32)


class _Mask(nn.Module):
    """Multiply square inputs by a cached :func:`disc_mask` (identity when disabled)."""

    def __init__(self, enabled: bool):
        super().__init__()
        self.enabled = enabled
        self._cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        key = (x.shape[-1], x.device, x.dtype)
        m = self._cache.get(key)
        if m is None:
            m = disc_mask(x.shape[-1]).to(device=x.device, dtype=x.dtype)
            self._cache[key] = m
        return x * m


def _check_input(x: torch.Tensor, in_channels: int, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{name}: input shape {tuple(x.shape)}: expected (batch, {in_channels}, H, W)")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name}: input {x.shape[-2]}x{x.shape[-1]}: images must be square (rotation about the centre)")


def _fields(channels: Sequence[int], width: float) -> list[int]:
    if width <= 0:
        raise ValueError(f"width = {width}: must be > 0")
    return [max(1, int(round(c * width))) for c in channels]


def _head(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ELU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(hidden, n_out))


def _check_layout(kernel_sizes: Sequence[int], channels: Sequence[int], pool_after: Sequence[int]) -> None:
    if len(kernel_sizes) != len(channels):
        raise ValueError(f"kernel_sizes has {len(kernel_sizes)} entries but channels has {len(channels)}")
    for k in kernel_sizes:
        if k % 2 == 0 or k < 1:
            raise ValueError(f"kernel size {k}: must be odd (a centred filter keeps grid rotations exact)")
    for p in pool_after:
        if not 0 <= p < len(channels):
            raise ValueError(f"pool_after index {p}: must be in [0, {len(channels) - 1}]")


def _steerable_conv_cls():
    _, enn = _e2cnn()

    class SteerableConv(enn.R2Conv):
        """``e2cnn.nn.R2Conv`` that always expands its filter from the basis coefficients.

        The stock R2Conv caches the expanded filter as a *persistent buffer* in eval mode and
        deletes it in train mode, so its state-dict keys depend on the mode at save time — a
        checkpoint saved during validation then fails to load into a training-mode model, and
        weights loaded in eval mode would run with a stale cached filter. Expanding on every
        forward costs one small matmul per layer and makes the state dict mode-independent.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for name in ("filter", "expanded_bias"):
                if name in self._buffers:
                    del self._buffers[name]
                if name in self.__dict__:
                    del self.__dict__[name]

        def train(self, mode: bool = True):
            return nn.Module.train(self, mode)

        def forward(self, input):  # noqa: A002 - e2cnn's signature
            assert input.type == self.in_type
            weight, bias = self.expand_parameters()
            x = input.tensor
            if self.padding_mode == "zeros":
                out = F.conv2d(x, weight, bias=bias, stride=self.stride, padding=self.padding,
                               dilation=self.dilation, groups=self.groups)
            else:
                x = F.pad(x, self._reversed_padding_repeated_twice, self.padding_mode)
                out = F.conv2d(x, weight, bias=bias, stride=self.stride, dilation=self.dilation, groups=self.groups)
            return enn.GeometricTensor(out, self.out_type)

    return SteerableConv


def _blur_pool_cls():
    _, enn = _e2cnn()

    class BlurPool(enn.EquivariantModule):
        """Gaussian blur (σ pixels, odd kernel, same size) then 2×2 average pooling.

        Both steps act channel-wise and linearly, so they commute with the fibre action of
        any representation; the centred odd blur kernel and 2×2 windows on an even-sized map
        map onto themselves under 90° grid rotations and reflections, keeping those exact,
        while the blur suppresses the aliasing that makes strided pooling break the
        approximate 45° equivariance (cf. Zhang 2019, "Making CNNs shift-invariant again").
        """

        def __init__(self, in_type, sigma: float = 0.66):
            super().__init__()
            self.in_type = self.out_type = in_type
            self.sigma = float(sigma)
            if sigma > 0:
                rad = max(1, int(math.ceil(3 * sigma)))
                t = torch.arange(-rad, rad + 1, dtype=torch.float64)
                g = torch.exp(-0.5 * (t / sigma) ** 2)
                k2 = torch.outer(g, g)
                k2 = (k2 / k2.sum()).float()
                self.register_buffer("kernel", k2.expand(in_type.size, 1, *k2.shape).clone(), persistent=False)
                self.rad = rad

        def forward(self, input):  # noqa: A002
            x = input.tensor
            if self.sigma > 0:
                x = F.conv2d(x, self.kernel.to(x.dtype), padding=self.rad, groups=x.shape[1])
            if x.shape[-1] % 2 or x.shape[-2] % 2:
                raise ValueError(f"feature map {x.shape[-2]}x{x.shape[-1]}: 2x2 pooling needs even sizes "
                                 "(use inputs whose side is divisible by 2**len(pool_after))")
            return enn.GeometricTensor(F.avg_pool2d(x, 2), self.out_type)

        def evaluate_output_shape(self, input_shape):
            b, c, h, w = input_shape
            return b, c, h // 2, w // 2

    return BlurPool


_BLUR_POOL = None


def blur_pool(in_type, sigma: float = 0.66):
    """Anti-aliased 2×2 pooling for any e2cnn field type (see ``BlurPool``)."""
    global _BLUR_POOL
    if _BLUR_POOL is None:
        _BLUR_POOL = _blur_pool_cls()
    return _BLUR_POOL(in_type, sigma)


_STEERABLE_CONV = None


def steerable_conv(*args, **kwargs):
    """A mode-independent ``e2cnn`` steerable convolution (``R2Conv`` arguments; e2cnn is
    imported lazily because it takes seconds to import)."""
    global _STEERABLE_CONV
    if _STEERABLE_CONV is None:
        _STEERABLE_CONV = _steerable_conv_cls()
    return _STEERABLE_CONV(*args, **kwargs)
