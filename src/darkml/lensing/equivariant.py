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

__all__ = [
    "disc_mask",
    "steerable_conv",
    "SteerableCNN",
    "HarmonicNet",
    "LogPolarSampler",
    "PosePredictor",
    "EquivariantTransformerNet",
    "ConvNet",
    "c8",
    "d8",
    "hnet",
    "etn",
]


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


# ---------------------------------------------------------------------------------------
# C8 / D8 steerable CNN
# ---------------------------------------------------------------------------------------
class SteerableCNN(nn.Module):
    """C_N (or D_N with ``flip=True``) steerable CNN on regular representations.

    Layer ``i`` is a steerable convolution (``kernel_sizes[i]``, "same" padding) to
    ``channels[i]·width`` regular fields (each N channels for C_N, 2N for D_N), inner batch
    norm and ReLU; 2×2 average pooling follows the layers listed in ``pool_after``. Group
    max-pooling then makes every field invariant, global average pooling removes position,
    and an MLP head maps to ``num_outputs``. Default widths follow the layout of the e2cnn
    paper's C8 model (six layers, 7×7 then 5×5 filters), adapted to 64×64 inputs by pooling
    earlier.
    """

    def __init__(self, in_channels: int = 1, num_outputs: int = 3, rotations: int = 8, flip: bool = False,
                 channels: Sequence[int] = (16, 32, 32, 64, 64, 64), kernel_sizes: Sequence[int] = (7, 5, 5, 5, 5, 5),
                 pool_after: Sequence[int] = (0, 2, 4), width: float = 1.0, head_hidden: int = 64,
                 dropout: float = 0.0, mask: bool = True, blur_sigma: float = 0.66, maximum_offset: int | None = 0):
        super().__init__()
        conv_kw = {} if maximum_offset is None else {"maximum_offset": maximum_offset}
        if rotations < 1:
            raise ValueError(f"rotations = {rotations}: must be >= 1")
        if in_channels < 1 or num_outputs < 1:
            raise ValueError(f"in_channels = {in_channels}, num_outputs = {num_outputs}: both must be >= 1")
        _check_layout(kernel_sizes, channels, pool_after)
        gspaces, enn = _e2cnn()
        self.in_channels = in_channels
        self.gspace = gspaces.FlipRot2dOnR2(N=rotations) if flip else gspaces.Rot2dOnR2(N=rotations)
        self.mask = _Mask(mask)
        self.in_type = enn.FieldType(self.gspace, in_channels * [self.gspace.trivial_repr])
        fields = _fields(channels, width)
        layers: list = []
        t_in = self.in_type
        for i, (n, k) in enumerate(zip(fields, kernel_sizes)):
            t_out = enn.FieldType(self.gspace, n * [self.gspace.regular_repr])
            layers += [steerable_conv(t_in, t_out, kernel_size=k, padding=k // 2, bias=False, **conv_kw),
                       enn.InnerBatchNorm(t_out), enn.ReLU(t_out, inplace=True)]
            if i in pool_after:
                layers.append(blur_pool(t_out, blur_sigma))
            t_in = t_out
        self.features = enn.SequentialModule(*layers)
        self.gpool = enn.GroupPooling(t_in)
        self.n_invariant = self.gpool.out_type.size
        self.head = _head(self.n_invariant, head_hidden, num_outputs, dropout)

    def invariant_features(self, x: torch.Tensor) -> torch.Tensor:
        """Rotation-invariant feature vector ``(B, n_invariant)`` before the head."""
        from e2cnn import nn as enn

        _check_input(x, self.in_channels, type(self).__name__)
        g = enn.GeometricTensor(self.mask(x), self.in_type)
        g = self.gpool(self.features(g))
        return g.tensor.mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.invariant_features(x))


# ---------------------------------------------------------------------------------------
# Harmonic network (SO(2) irreps of orders 0 and 1)
# ---------------------------------------------------------------------------------------
class HarmonicNet(nn.Module):
    """Harmonic Network: rotation-order-0 and order-1 streams with circular-harmonic filters.

    Each layer has ``channels[i]·width`` order-0 fields and as many order-1 fields
    (2 real channels each); the steerable convolution couples every pair of streams with
    filters ``R(r) e^{i m φ}`` of the rotation order ``m`` that the pair requires (the
    H-Net cross-correlations of Worrall et al., Fig. 1 of the lensing paper). Order-0
    fields: batch norm + ReLU; order-1 fields: norm batch norm + norm-ReLU (a learned bias on
    the modulus, phase kept). 2×2 average pooling (linear, so equivariant for any order)
    after the layers in ``pool_after``. Read-out: order-0 channels and order-1 moduli,
    averaged over the image, then an MLP head.
    """

    def __init__(self, in_channels: int = 1, num_outputs: int = 3,
                 channels: Sequence[int] = (8, 16, 16, 32, 32, 32), kernel_sizes: Sequence[int] = (7, 5, 5, 5, 5, 5),
                 pool_after: Sequence[int] = (0, 2, 4), width: float = 1.0, head_hidden: int = 64,
                 dropout: float = 0.0, mask: bool = True, max_frequency: int = 2, blur_sigma: float = 0.66):
        super().__init__()
        if in_channels < 1 or num_outputs < 1:
            raise ValueError(f"in_channels = {in_channels}, num_outputs = {num_outputs}: both must be >= 1")
        if max_frequency < 1:
            raise ValueError(f"max_frequency = {max_frequency}: must be >= 1 (order-1 stream)")
        _check_layout(kernel_sizes, channels, pool_after)
        gspaces, enn = _e2cnn()
        self.in_channels = in_channels
        self.gspace = gspaces.Rot2dOnR2(N=-1, maximum_frequency=max_frequency)
        self.mask = _Mask(mask)
        self.in_type = enn.FieldType(self.gspace, in_channels * [self.gspace.trivial_repr])
        g = self.gspace
        fields = _fields(channels, width)
        layers: list = []
        t_in = self.in_type
        for i, (n, k) in enumerate(zip(fields, kernel_sizes)):
            t_out = enn.FieldType(g, n * [g.trivial_repr] + n * [g.irrep(1)])
            t0 = enn.FieldType(g, n * [g.trivial_repr])
            t1 = enn.FieldType(g, n * [g.irrep(1)])
            act = enn.MultipleModule(
                t_out, ["0"] * n + ["1"] * n,
                [(enn.SequentialModule(enn.InnerBatchNorm(t0), enn.ReLU(t0, inplace=True)), "0"),
                 (enn.SequentialModule(enn.NormBatchNorm(t1), enn.NormNonLinearity(t1, "n_relu")), "1")])
            layers += [steerable_conv(t_in, t_out, kernel_size=k, padding=k // 2, bias=False), act]
            if i in pool_after:
                layers.append(blur_pool(t_out, blur_sigma))
            t_in = t_out
        self.features = enn.SequentialModule(*layers)
        self.n_order0 = fields[-1]
        self.n_invariant = 2 * fields[-1]
        self.head = _head(self.n_invariant, head_hidden, num_outputs, dropout)

    def invariant_features(self, x: torch.Tensor) -> torch.Tensor:
        from e2cnn import nn as enn

        _check_input(x, self.in_channels, type(self).__name__)
        f = self.features(enn.GeometricTensor(self.mask(x), self.in_type)).tensor
        n = self.n_order0
        s = f[:, :n]                                               # order 0: invariant scalars
        v = f[:, n:].reshape(f.shape[0], n, 2, *f.shape[-2:])        # order 1: 2-vectors
        mod = torch.sqrt(v.pow(2).sum(dim=2) + 1e-12)              # moduli: invariant
        return torch.cat([s, mod], dim=1).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.invariant_features(x))


# ---------------------------------------------------------------------------------------
# Equivariant transformer network
# ---------------------------------------------------------------------------------------
class LogPolarSampler(nn.Module):
    """Resample square images on a log-polar grid about the image centre.

    Output ``(B, C, n_r, n_theta)``: row ``i`` is radius ``r_i = r_min·(r_max/r_min)^{i/(n_r−1)}``
    (in units of the image half-width), column ``j`` angle ``θ_j = 2πj/n_theta``. A rotation
    of the input by ``2πk/n_theta`` about the centre is a cyclic shift by ``k`` columns;
    scaling by ``s`` is a shift by ``ln s / Δln r`` rows. Bilinear interpolation commutes
    exactly with the 90° rotations of the pixel grid, so for ``n_theta`` divisible by 4 a
    ``torch.rot90`` of the input is an exact cyclic shift of the output.
    """

    def __init__(self, n_r: int = 32, n_theta: int = 64, r_min: float = 0.05, r_max: float = 1.0):
        super().__init__()
        if n_theta % 8:
            raise ValueError(f"n_theta = {n_theta}: must be a multiple of 8 (45° rotations = whole shifts)")
        if n_r < 2:
            raise ValueError(f"n_r = {n_r}: must be >= 2")
        if not 0 < r_min < r_max:
            raise ValueError(f"r_min = {r_min}, r_max = {r_max}: need 0 < r_min < r_max")
        self.n_r, self.n_theta = n_r, n_theta
        log_r = torch.linspace(math.log(r_min), math.log(r_max), n_r, dtype=torch.float64)
        theta = 2 * math.pi * torch.arange(n_theta, dtype=torch.float64) / n_theta
        r = log_r.exp()[:, None]
        grid = torch.stack([r * torch.cos(theta)[None, :], r * torch.sin(theta)[None, :]], dim=-1)  # (n_r, n_theta, 2)
        # float64 so that a float64 model is exact to double round-off; cast to the input's dtype
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer("theta", theta, persistent=False)
        self.register_buffer("log_r", log_r, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.grid.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _CircularConv(nn.Module):
    """Conv2d on a (log r, θ) grid: circular padding along θ (width), zeros along log r."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.p = k // 2
        self.conv = nn.Conv2d(c_in, c_out, k, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = F.pad(x, (self.p, self.p, 0, 0), mode="circular")
        x = F.pad(x, (0, 0, self.p, self.p))
        return F.relu(self.bn(self.conv(x)), inplace=True)


class PosePredictor(nn.Module):
    """Predict (angle [rad], ln scale) from the log-polar image, equivariantly.

    A CNN with circular padding along θ commutes with cyclic θ-shifts; its last 1×1 layer
    gives two maps. The rotation map is averaged over log r, soft-maxed over θ and reduced
    to the circular mean angle ``atan2(Σ p sin θ, Σ p cos θ)``; the scale map is averaged
    over θ (hence rotation-invariant), soft-maxed over log r and reduced to its mean minus
    the grid centre, bounded to ``±max_log_scale`` with a tanh.
    """

    def __init__(self, sampler: LogPolarSampler, in_channels: int, channels: Sequence[int] = (16, 32),
                 kernel_size: int = 5, scale: bool = True, max_log_scale: float = math.log(1.5)):
        super().__init__()
        self.sampler = sampler
        layers: list[nn.Module] = []
        c = in_channels
        for n in channels:
            layers.append(_CircularConv(c, n, kernel_size))
            c = n
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, 2, 1)
        self.scale = scale
        self.max_log_scale = float(max_log_scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lp = self.sampler(x)
        maps = self.out(self.body(lp))
        p_theta = torch.softmax(maps[:, 0].mean(dim=1), dim=-1)             # (B, n_theta)
        th = self.sampler.theta.to(x.dtype)
        angle = torch.atan2((p_theta * torch.sin(th)).sum(-1), (p_theta * torch.cos(th)).sum(-1))
        if not self.scale:
            return angle, torch.zeros_like(angle)
        p_r = torch.softmax(maps[:, 1].mean(dim=2), dim=-1)                 # (B, n_r)
        lr = self.sampler.log_r.to(x.dtype)
        mean_lr = (p_r * lr).sum(-1) - lr.mean()
        log_scale = self.max_log_scale * torch.tanh(mean_lr / self.max_log_scale)
        return angle, log_scale


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class ConvNet(nn.Module):
    """Plain CNN: per stage two 3×3 conv-BN-ReLU, 2×2 max-pooling between stages, global
    average pooling, MLP head. It is the backbone of :class:`EquivariantTransformerNet` and,
    on its own (registry name ``cnn``), the ETN's non-equivariant ablation and a cheap
    baseline for quick runs."""

    def __init__(self, in_channels: int = 1, num_outputs: int = 3, channels: Sequence[int] = (32, 64, 128, 256),
                 width: float = 1.0, head_hidden: int = 64, dropout: float = 0.0):
        super().__init__()
        if in_channels < 1 or num_outputs < 1:
            raise ValueError(f"in_channels = {in_channels}, num_outputs = {num_outputs}: both must be >= 1")
        self.in_channels = in_channels
        fields = _fields(channels, width)
        layers: list[nn.Module] = []
        c = in_channels
        for i, n in enumerate(fields):
            layers += _conv_bn_relu(c, n) + _conv_bn_relu(n, n)
            if i < len(fields) - 1:
                layers.append(nn.MaxPool2d(2))
            c = n
        self.features = nn.Sequential(*layers)
        self.n_features = c
        self.head = _head(c, head_hidden, num_outputs, dropout)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ConvNet: input shape {tuple(x.shape)}: expected (batch, {self.in_channels}, H, W)")
        return self.head(self.features(x).mean(dim=(-2, -1)))


class EquivariantTransformerNet(nn.Module):
    """Equivariant Transformer front end (rotation + scale, log-polar coordinates) + CNN.

    ``forward(x) = cnn(canonicalize(x))`` where ``canonicalize`` samples the image at
    ``s·R(φ)·p`` for the predicted pose ``(φ, ln s)``: if the input is rotated by α the
    predicted angle becomes φ+α and the canonical image is unchanged. The backbone is
    :class:`ConvNet` (two 3×3 conv-BN-ReLU per stage, max-pooling between stages, global
    average pooling, MLP head). Translation is not canonicalised: the lensing images are centred on
    the lens.
    """

    def __init__(self, in_channels: int = 1, num_outputs: int = 3, n_r: int = 32, n_theta: int = 64,
                 r_min: float = 0.05, pose_channels: Sequence[int] = (16, 32), pose_kernel: int = 5,
                 scale: bool = True, max_log_scale: float = math.log(1.5),
                 channels: Sequence[int] = (32, 64, 128, 256), width: float = 1.0, head_hidden: int = 64,
                 dropout: float = 0.0, mask: bool = True):
        super().__init__()
        if in_channels < 1 or num_outputs < 1:
            raise ValueError(f"in_channels = {in_channels}, num_outputs = {num_outputs}: both must be >= 1")
        if pose_kernel % 2 == 0:
            raise ValueError(f"pose_kernel = {pose_kernel}: must be odd")
        self.in_channels = in_channels
        self.mask = _Mask(mask)
        self.pose = PosePredictor(LogPolarSampler(n_r, n_theta, r_min), in_channels, _fields(pose_channels, width),
                                  pose_kernel, scale, max_log_scale)
        self.backbone = ConvNet(in_channels, num_outputs, channels, width, head_hidden, dropout)
        for mod in self.pose.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def canonicalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(canonical image, angle [rad], ln scale)`` — pose estimation and resampling in fp32."""
        _check_input(x, self.in_channels, type(self).__name__)
        dev_type = x.device.type if x.device.type in ("cuda", "cpu") else "cpu"
        with torch.autocast(device_type=dev_type, enabled=False):
            x = self.mask(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)
            angle, log_scale = self.pose(x)
            s = torch.exp(log_scale)
            cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
            zero = torch.zeros_like(cos)
            theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], dim=1)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            xc = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return xc, angle, log_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc, _, _ = self.canonicalize(x)
        return self.backbone(xc)


# ---------------------------------------------------------------------------------------
# registry constructors
# ---------------------------------------------------------------------------------------
def c8(in_channels: int = 1, num_outputs: int = 3, **kw) -> SteerableCNN:
    """C8-steerable CNN (regular representations, group pooling)."""
    return SteerableCNN(in_channels, num_outputs, rotations=8, flip=False, **kw)


def d8(in_channels: int = 1, num_outputs: int = 3, **kw) -> SteerableCNN:
    """D8-steerable CNN (rotations by 45° and reflections)."""
    return SteerableCNN(in_channels, num_outputs, rotations=8, flip=True, **kw)


def hnet(in_channels: int = 1, num_outputs: int = 3, **kw) -> HarmonicNet:
    """Harmonic Network (SO(2) orders 0 and 1)."""
    return HarmonicNet(in_channels, num_outputs, **kw)


def cnn(in_channels: int = 1, num_outputs: int = 3, **kw) -> ConvNet:
    """Plain CNN (the ETN backbone without its canonicalising front end)."""
    return ConvNet(in_channels, num_outputs, **kw)


def etn(in_channels: int = 1, num_outputs: int = 3, **kw) -> EquivariantTransformerNet:
    """Equivariant Transformer network (log-polar rotation + scale canonicalisation, CNN)."""
    return EquivariantTransformerNet(in_channels, num_outputs, **kw)
