"""Encoders for self-supervised learning on strong-lensing images.

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darkml.learn.heads import create_head
from darkml.learn.registry import create_encoder, register_model
from darkml.learn.resnet import narrow_resnet, resnet


# ---------------------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------------------
class ResNetEncoder(nn.Module):
    """torchvision ResNet-18/50 (random init) with a 1-channel stem and no classifier."""

    def __init__(self, depth: int = 50, in_chans: int = 1, width: int = 64):
        super().__init__()
        if depth not in (18, 50):
            raise ValueError(f"resnet depth = {depth}: must be 18 or 50")
        if width == 64:
            self.net = resnet(depth, in_chans, num_outputs=None, stem_init=False)  # the one ResNet builder
            self.out_dim = self.net.out_dim
        else:  # same topology, every stage narrower (CPU-sized runs): drop the classifier
            self.net = narrow_resnet(depth, in_chans, 1, width)[:-1]
            self.out_dim = 8 * width * (4 if depth == 50 else 1)

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


# the encoders, registered by name (``create_encoder(name, image_size=…, patch_size=…)``)
for _name, _build in {
    "resnet50": lambda image_size=64, patch_size=8: ResNetEncoder(50),
    "resnet18": lambda image_size=64, patch_size=8: ResNetEncoder(18),
    "resnet50-w16": lambda image_size=64, patch_size=8: ResNetEncoder(50, width=16),
    "vit": lambda image_size=64, patch_size=8: ViTEncoder(image_size, patch_size, dim=384, depth=12, heads=6),
    "vit-tiny": lambda image_size=64, patch_size=8: ViTEncoder(image_size, patch_size, dim=64, depth=4, heads=4),
    "resnet-tiny": lambda image_size=64, patch_size=8: TinyResNetEncoder(),
}.items():
    register_model(_name, kind="encoder", description=_name)(_build)

#: encoder names, in the order the docs list them
ENCODERS: tuple[str, ...] = ("resnet50", "resnet18", "vit", "vit-tiny", "resnet-tiny", "resnet50-w16")


def build_encoder(name: str, image_size: int = 64, patch_size: int = 8, seed: int | None = None) -> nn.Module:
    """A freshly (randomly) initialised encoder from :data:`ENCODERS`; ``seed`` fixes the init."""
    if name not in ENCODERS:
        raise ValueError(f"encoder = {name!r}: unknown (choose from {', '.join(ENCODERS)})")
    if seed is None:
        return create_encoder(name, image_size=image_size, patch_size=patch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return create_encoder(name, image_size=image_size, patch_size=patch_size)


class FineTuneModel(nn.Module):
    """Encoder + fully connected head: ``out_dim`` = 3 logits (classification) or 1 value
    (regression). ``hidden=0`` gives a single linear layer. With ``freeze_encoder`` the
    encoder's weights stay fixed (and its BatchNorm statistics too)."""

    def __init__(self, encoder: nn.Module, out_dim: int, hidden: int = 256, dropout: float = 0.0,
                 freeze_encoder: bool = False):
        super().__init__()
        d = int(encoder.out_dim)
        self.encoder = encoder
        self.head = (create_head("mlp", d, out_dim, hidden=hidden, dropout=dropout) if hidden > 0
                     else create_head("linear", d, out_dim))
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
