"""The strong-lensing model registry: ``MODELS[name](in_channels=1, num_outputs=3, **kw)``.

* ``resnet18`` / ``resnet50`` — torchvision ResNets, trained from scratch (no weights can be
  downloaded), first convolution replaced for ``in_channels`` input channels. The stem is
  torchvision's (7×7 stride-2 conv + max-pool), so a 64×64 image reaches the last stage at
  2×2 pixels, as in the paper's use of a stock ResNet50.
* ``c8``, ``d8``, ``hnet``, ``etn`` — the rotation-equivariant networks of
  :mod:`darkml.equivariant.steerable`; each takes ``width`` (a multiplier of the channel
  counts) and further architecture keywords.
* ``cnn`` — a plain CNN, the ETN's backbone without its canonicalising front end: the
  ETN's ablation and a cheap non-equivariant baseline for quick runs and tests.

Every model returns ``(batch, num_outputs)``: class logits (``num_outputs=3``: no
substructure / CDM / axion) or regression values (``num_outputs=1``: log10 of the axion mass).
Training logic lives in :mod:`darkml.learn`, not here.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from darkml.equivariant.steerable import (
    _check_input,
    _check_layout,
    _e2cnn,
    _fields,
    _head,
    _Mask,
    blur_pool,
    steerable_conv,
)
from darkml.learn import resnet as _resnet  # noqa: F401 (registers resnet18 / resnet50)
from darkml.learn.modules import count_parameters  # noqa: F401 (re-exported)
from darkml.learn.registry import create_model, model_entry, register_model


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
@register_model("c8", description="C8 steerable CNN", tags=("equivariant",))
def c8(in_channels: int = 1, num_outputs: int = 3, **kw) -> SteerableCNN:
    """C8-steerable CNN (regular representations, group pooling)."""
    return SteerableCNN(in_channels, num_outputs, rotations=8, flip=False, **kw)


@register_model("d8", description="D8 steerable CNN", tags=("equivariant",))
def d8(in_channels: int = 1, num_outputs: int = 3, **kw) -> SteerableCNN:
    """D8-steerable CNN (rotations by 45° and reflections)."""
    return SteerableCNN(in_channels, num_outputs, rotations=8, flip=True, **kw)


@register_model("hnet", description="Harmonic Net", tags=("equivariant",))
def hnet(in_channels: int = 1, num_outputs: int = 3, **kw) -> HarmonicNet:
    """Harmonic Network (SO(2) orders 0 and 1)."""
    return HarmonicNet(in_channels, num_outputs, **kw)


@register_model("cnn", description="plain CNN", tags=())
def cnn(in_channels: int = 1, num_outputs: int = 3, **kw) -> ConvNet:
    """Plain CNN (the ETN backbone without its canonicalising front end)."""
    return ConvNet(in_channels, num_outputs, **kw)


@register_model("etn", description="Equivariant Transformer", tags=("equivariant",))
def etn(in_channels: int = 1, num_outputs: int = 3, **kw) -> EquivariantTransformerNet:
    """Equivariant Transformer network (log-polar rotation + scale canonicalisation, CNN)."""
    return EquivariantTransformerNet(in_channels, num_outputs, **kw)


#: the networks of the equivariant-network benchmark (names as the CLI and presets spell them)
MODELS: tuple[str, ...] = ("resnet18", "resnet50", "cnn", "c8", "d8", "hnet", "etn")
#: names as the paper's tables print them
DESCRIPTIONS: dict[str, str] = {name: model_entry(name).description for name in MODELS}
#: models invariant (exactly for 90° grid rotations) to rotations about the image centre
EQUIVARIANT = frozenset(n for n in MODELS if "equivariant" in model_entry(n).tags)


def build_model(name: str, in_channels: int = 1, num_outputs: int = 3, **kwargs) -> nn.Module:
    """Instantiate benchmark model ``name`` from the registry; unknown names and keywords fail with one line."""
    if name not in MODELS:
        raise ValueError(f"model = {name!r}: unknown model (choose from {', '.join(sorted(MODELS))})")
    return create_model(name, in_channels=in_channels, num_outputs=num_outputs, **kwargs)
