"""Preprocessing, spatial splits and patches: what the GP and the patch CNN see.

Preprocessing follows Sec. 2.1 of the paper:

* a Gaussian filter of ``sigma = 1`` pixel on source (12CO) and target (13CO) planes, which
  fills the zero-valued scan stripes;
* 13CO pixels below ``3 sigma`` of the (filtered) noise are set to zero. The noise map of a
  plane is propagated through the same filter (squared filter weights on the variance,
  reflection at the tile edges included), so the cut is 3 sigma of the noise actually left
  in the filtered plane;
* spatially disjoint regions: train on tiles in l = 300-340 deg, test on 340-350 deg; the
  validation split holds out whole training tiles (overlapping patches of one tile never
  land on both sides).

Patches: a ``D x D`` window of the source around every pixel (the CNN), or 9-pixel
horizontal and vertical lines (the GP). Planes are reflect-padded, so every pixel of a map
has a patch and predictions cover whole maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy.ndimage import correlate1d
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
)

__all__ = [
    "gaussian_kernel1d",
    "smooth_planes",
    "smoothed_noise",
    "preprocess",
    "wmae_weights",
    "tiles_in_region",
    "split_tiles",
    "pad_planes",
    "gather_patches",
    "line_patches",
    "grid_centres",
    "PatchPlanes",
    "PatchDataset",
    "patch_loader",
]


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised sampled Gaussian of width ``sigma`` [px], radius ``ceil(truncate sigma)``."""
    if sigma <= 0:
        return np.ones(1)
    r = int(np.ceil(truncate * sigma))
    x = np.arange(-r, r + 1, dtype=float)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def smooth_planes(planes: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian filter (``sigma_px``, reflect at the tile edges) over the last two axes."""
    if sigma_px <= 0:
        return np.asarray(planes, dtype=np.float32).copy()
    w = gaussian_kernel1d(sigma_px)
    out = correlate1d(np.asarray(planes, dtype=np.float32), w, axis=-1, mode="reflect")
    return correlate1d(out, w, axis=-2, mode="reflect")


def _filter_matrix(n: int, sigma_px: float) -> np.ndarray:
    """The ``n x n`` matrix of the 1-D reflect-mode Gaussian filter (rows: outputs)."""
    return correlate1d(np.eye(n), gaussian_kernel1d(sigma_px), axis=0, mode="reflect")


def smoothed_noise(noise: np.ndarray, sigma_px: float) -> np.ndarray:
    """1-sigma noise left after :func:`smooth_planes`, for independent pixel noise of std ``noise``.

    ``Var(out) = (M_b^2) Var(in) (M_l^2)^T`` with ``M`` the filter matrices, elementwise
    squared; exact at the tile edges too, where reflection counts a pixel twice.
    """
    noise = np.asarray(noise, dtype=np.float64)
    if sigma_px <= 0:
        return noise.astype(np.float32)
    mb = _filter_matrix(noise.shape[-2], sigma_px) ** 2
    ml = _filter_matrix(noise.shape[-1], sigma_px) ** 2
    var = mb @ noise**2 @ ml.T
    return np.sqrt(var).astype(np.float32)


def preprocess(co12: np.ndarray, co13: np.ndarray, noise13: np.ndarray, sigma_px: float = 1.0,
               mask_nsigma: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source, target and the target's cut level, all ``(..., H, W)`` float32.

    ``src = G * co12``, ``tgt = G * co13`` set to 0 where ``tgt <= mask_nsigma sigma_f`` (and
    where it is negative), ``sigma_f`` the filtered noise. Non-finite input values (FITS
    blanks) count as 0.
    """
    src = smooth_planes(np.nan_to_num(co12, nan=0.0, posinf=0.0, neginf=0.0), sigma_px)
    tgt = smooth_planes(np.nan_to_num(co13, nan=0.0, posinf=0.0, neginf=0.0), sigma_px)
    thr = (mask_nsigma * smoothed_noise(np.nan_to_num(noise13, nan=0.0), sigma_px)).astype(np.float32)
    tgt = np.where((tgt > thr) & (tgt > 0), tgt, 0.0).astype(np.float32)
    return src.astype(np.float32), tgt, thr


def wmae_weights(tgt: np.ndarray, sigma_px: float = 2.0) -> np.ndarray:
    """Rescale(T) of Sec. 2.3: the target smoothed with a Gaussian, rescaled to [0, 1] per plane."""
    s = smooth_planes(tgt, sigma_px)
    lo = s.min(axis=(-2, -1), keepdims=True)
    hi = s.max(axis=(-2, -1), keepdims=True)
    span = hi - lo
    return np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def tiles_in_region(l_lo_deg: Sequence[float], region: tuple[float, float], tile_deg: float = 1.0) -> np.ndarray:
    """Indices of tiles whose whole extent ``[l_lo, l_lo + tile_deg]`` lies inside ``region`` [deg]."""
    l_lo = np.asarray(l_lo_deg, dtype=float)
    inside = (l_lo >= region[0] - 1e-6) & (l_lo + tile_deg <= region[1] + 1e-6)
    return np.nonzero(inside)[0]


def split_tiles(tiles: Sequence[int], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(val_fraction * n)`` (at least 1 when n > 1) random tiles for validation."""
    tiles = np.asarray(tiles, dtype=int)
    n_val = int(round(val_fraction * tiles.size))
    n_val = min(max(n_val, 1 if tiles.size > 1 else 0), max(tiles.size - 1, 0))
    perm = np.random.default_rng([int(seed), 7]).permutation(tiles.size)
    return np.sort(tiles[perm[n_val:]]), np.sort(tiles[perm[:n_val]])


def pad_planes(planes: torch.Tensor, half: int) -> torch.Tensor:
    """Reflect-pad ``(P, H, W)`` planes by ``half`` pixels on every side (``half < H, W``)."""
    if half == 0:
        return planes
    return torch.nn.functional.pad(planes[:, None], (half, half, half, half), mode="reflect")[:, 0]


def gather_patches(padded: torch.Tensor, p: torch.Tensor, i: torch.Tensor, j: torch.Tensor, window: int,
                   pad: int) -> torch.Tensor:
    """``(B, window, window)`` windows of padded planes centred on pixels ``(p, i, j)`` of the unpadded planes."""
    h = window // 2
    d = torch.arange(-h, h + 1, device=padded.device)
    ii = (i + pad)[:, None, None] + d[None, :, None]
    jj = (j + pad)[:, None, None] + d[None, None, :]
    return padded[p[:, None, None], ii, jj]


def line_patches(padded: torch.Tensor, p: torch.Tensor, i: torch.Tensor, j: torch.Tensor, length: int, pad: int,
                 orientation: str) -> torch.Tensor:
    """``(B, length)`` horizontal (along l) or vertical (along b) lines centred on ``(p, i, j)``."""
    h = length // 2
    d = torch.arange(-h, h + 1, device=padded.device)
    if orientation == "horizontal":
        return padded[p[:, None], (i + pad)[:, None].expand(-1, length), (j + pad)[:, None] + d[None]]
    if orientation == "vertical":
        return padded[p[:, None], (i + pad)[:, None] + d[None], (j + pad)[:, None].expand(-1, length)]
    raise ValueError(f"orientation = {orientation!r}: must be 'horizontal' or 'vertical'")


def grid_centres(h: int, w: int, stride: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres on a ``stride`` grid whose ``margin``-pixel neighbourhood fits inside an h x w plane.

    For 120-pixel tiles, ``stride = 8`` and 9-pixel patches (``margin = 4``) this gives the
    14 x 14 = 196 centres per tile behind the paper's 7840 patch pairs (40 training tiles).
    """
    ii = np.arange(margin, h - margin, stride)
    jj = np.arange(margin, w - margin, stride)
    if ii.size == 0 or jj.size == 0:
        ii = np.array([h // 2])
        jj = np.array([w // 2])
    gi, gj = np.meshgrid(ii, jj, indexing="ij")
    return gi.ravel(), gj.ravel()


@dataclass
class PatchPlanes:
    """Preprocessed planes ``(P, H, W)`` of one region, with their (tile, ring) labels.

    ``src``/``tgt`` are in units of ``src_scale``/``tgt_scale`` (set by the caller so values
    are O(1)); ``weight`` is Rescale(T) for the WMAE loss; ``ring_r`` the ring radius [kpc].
    """

    src: np.ndarray
    tgt: np.ndarray
    weight: np.ndarray
    tile: np.ndarray
    ring: np.ndarray
    ring_r: np.ndarray
    thr: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.src.shape)  # type: ignore[return-value]

    def select(self, keep: np.ndarray) -> "PatchPlanes":
        keep = np.asarray(keep)
        return PatchPlanes(self.src[keep], self.tgt[keep], self.weight[keep], self.tile[keep], self.ring[keep],
                           self.ring_r[keep], None if self.thr is None else self.thr[keep],
                           {k: v[keep] for k, v in self.extra.items()})


class PatchDataset(Dataset):
    """All ``window x window`` source patches of some planes, fetched a whole batch at a time.

    ``ds[idx_array]`` returns ``(x, ring_r, y, w)``: patches ``(B, 1, D, D)``, ring radius
    ``(B,)`` [kpc/10], target ``(B,)`` and WMAE weight ``(B,)``. Index ``n`` is pixel
    ``n % (H W)`` of plane ``n // (H W)``; an optional ``subset`` restricts the pixels.
    """

    def __init__(self, planes: PatchPlanes, window: int, subset: np.ndarray | None = None):
        self.window = int(window)
        self.pad = self.window // 2
        p, h, w = planes.shape
        if self.pad >= min(h, w):
            raise ValueError(f"window {window} too large for {h}x{w} planes")
        self.h, self.w = h, w
        self.padded = pad_planes(torch.as_tensor(planes.src, dtype=torch.float32), self.pad).contiguous()
        self.tgt = torch.as_tensor(planes.tgt, dtype=torch.float32).reshape(-1)
        self.wt = torch.as_tensor(planes.weight, dtype=torch.float32).reshape(-1)
        self.ring_r = torch.as_tensor(planes.ring_r, dtype=torch.float32) / 10.0
        self.subset = None if subset is None else torch.as_tensor(np.asarray(subset, dtype=np.int64))
        self.n_total = p * h * w

    def __len__(self) -> int:
        return self.n_total if self.subset is None else int(self.subset.numel())

    def __getitem__(self, idx):
        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64)) if not torch.is_tensor(idx) else idx.long()
        scalar = idx.ndim == 0
        idx = idx.reshape(-1)
        if self.subset is not None:
            idx = self.subset[idx]
        hw = self.h * self.w
        p = idx // hw
        r = idx % hw
        i, j = r // self.w, r % self.w
        x = gather_patches(self.padded, p, i, j, self.window, self.pad)[:, None]
        out = (x, self.ring_r[p], self.tgt[idx], self.wt[idx])
        return tuple(t[0] for t in out) if scalar else out


def patch_loader(ds: PatchDataset, batch_size: int, shuffle: bool, seed: int = 0, num_samples: int | None = None,
                 num_workers: int = 0) -> DataLoader:
    """Batches of ``batch_size`` patches fetched in one gather each; ``num_samples`` random patches
    per epoch (seeded; a new draw every epoch) when given, else every patch once."""
    if shuffle:
        g = torch.Generator().manual_seed(int(seed))
        n = None if num_samples is None else min(int(num_samples), len(ds))
        sampler = RandomSampler(range(len(ds)), num_samples=n, generator=g)
    else:
        sampler = SequentialSampler(range(len(ds)))
    return DataLoader(ds, sampler=BatchSampler(sampler, batch_size=batch_size, drop_last=False), batch_size=None,
                      num_workers=num_workers, persistent_workers=num_workers > 0)
