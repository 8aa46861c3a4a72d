"""The HEALPix grid on the device (pixel centres, local (l, b) bases, ring tables) and disc
queries as runs of consecutive RING pixels: the pair lists the signal-map kernels sum over."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import healpy as hp
import numpy as np
import torch


@dataclass(frozen=True)
class _Grid:
    nside: int
    npix: int
    n: torch.Tensor  # (3, npix) pixel-centre unit vectors
    basis: torch.Tensor  # (5, npix): e_l,x, e_l,y, e_b,x, e_b,y, e_b,z
    ring_theta: torch.Tensor  # (nring,) colatitude, increasing
    ring_cos: torch.Tensor
    ring_sin: torch.Tensor
    ring_start: torch.Tensor  # first RING pixel index
    ring_n: torch.Tensor  # pixels in ring
    ring_phi0: torch.Tensor  # longitude of the first pixel [rad]

    def rings_per_disc(self, radius_rad: float) -> int:
        """The most rings whose colatitudes fall in any window [θ, θ + 2R] (+ the 1e-6 rad margins)."""
        key = (self.nside, round(radius_rad, 12))
        if key not in _RINGS_PER_DISC:
            t = self.ring_theta.cpu().numpy()
            hi = np.searchsorted(t, t + 2 * radius_rad + 2e-6, side="right")
            _RINGS_PER_DISC[key] = int((hi - np.arange(len(t))).max())
        return _RINGS_PER_DISC[key]


_RINGS_PER_DISC: dict[tuple[int, float], int] = {}


def pixel_basis(nside: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors n, e_l, e_b (each (npix, 3)) of the RING pixel centres (Galactic axes)."""
    nside = check_nside(nside)
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside * nside))
    st, ct, sp, cp = np.sin(theta), np.cos(theta), np.sin(phi), np.cos(phi)
    n = np.stack([st * cp, st * sp, ct], axis=-1)
    e_l = np.stack([-sp, cp, np.zeros_like(cp)], axis=-1)
    e_b = np.stack([-ct * cp, -ct * sp, st], axis=-1)  # = -e_theta, towards increasing latitude
    return n, e_l, e_b


@functools.lru_cache(maxsize=8)
def _grid(nside: int, device: str) -> _Grid:
    n, e_l, e_b = pixel_basis(nside)
    npix = len(n)
    theta, phi = hp.pix2ang(nside, np.arange(npix))
    # rings: RING-ordered pixels are grouped by colatitude, longitudes equally spaced
    change = np.nonzero(np.diff(theta) != 0)[0] + 1
    start = np.concatenate([[0], change])
    count = np.diff(np.concatenate([start, [npix]]))
    t = lambda a, dt=torch.float64: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
    rt = theta[start]
    basis = np.stack([e_l[:, 0], e_l[:, 1], e_b[:, 0], e_b[:, 1], e_b[:, 2]])
    return _Grid(nside, npix, t(n.T), t(basis), t(rt), t(np.cos(rt)), t(np.sin(rt)), t(start, torch.int64),
                 t(count, torch.int64), t(phi[start]))


def disc_runs(grid: _Grid, theta0: torch.Tensor, phi0: torch.Tensor,
              radius_rad: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pixels within ``radius_rad`` of each subhalo, as runs of consecutive RING indices.

    ``theta0, phi0`` (n,): colatitude and longitude [rad] of the subhalos. On each HEALPix ring
    the angular distance grows monotonically with |phi - phi0|, so the pixels of a ring inside
    the disc form one contiguous run |phi - phi0| <= acos(c), c = (cos R - cos(theta_r)
    cos(theta0)) / (sin(theta_r) sin(theta0)); rings with c > 1 miss the disc and rings with
    c <= -1 lie inside it; a run that wraps past longitude 0 is split in two. Returns
    (subhalo index, first pixel, pixel count) per non-empty run, ordered by subhalo then ring.
    Equivalent to ``healpy.query_disc`` (non-inclusive) up to ties within 1e-12 rad of the edge.
    """
    run_pix0, run_cnt = _dense_runs(grid, theta0, phi0, radius_rad)
    run_sub = torch.arange(len(theta0), device=theta0.device)[:, None].expand_as(run_cnt).reshape(-1)
    run_pix0, run_cnt = run_pix0.reshape(-1), run_cnt.reshape(-1)
    keep = (run_cnt > 0).nonzero(as_tuple=True)[0]
    return run_sub[keep], run_pix0[keep], run_cnt[keep]


def _dense_runs(grid: _Grid, theta0: torch.Tensor, phi0: torch.Tensor,
                radius_rad: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(first pixel, pixel count) of each subhalo's runs, each (n, 2 n_k), in ring order; runs a
    disc does not reach have count 0 (see :func:`disc_runs`)."""
    dev = theta0.device
    cos_r = math.cos(radius_rad)
    lo = torch.searchsorted(grid.ring_theta, theta0 - radius_rad - 1e-6)
    # dense (subhalo, k) layout over the at most n_k rings a disc of this radius can cross: purely
    # elementwise, so torch.compile fuses it into one loop (no repeat_interleave)
    n_k = grid.rings_per_disc(radius_rad)
    hi = torch.searchsorted(grid.ring_theta, theta0 + radius_rad + 1e-6, right=True)
    ring = lo[:, None] + torch.arange(n_k, device=dev)
    inside = ring < hi[:, None]
    ring = ring.clamp_max(len(grid.ring_theta) - 1)
    st0, ct0 = torch.sin(theta0)[:, None], torch.cos(theta0)[:, None]
    denom = (st0 * grid.ring_sin[ring]).clamp_min(1e-300)
    c = (cos_r - grid.ring_cos[ring] * ct0) / denom
    dphi = torch.acos(c.clamp(-1.0, 1.0)) + 1e-12
    n = grid.ring_n[ring]
    step = (2 * math.pi) / n.to(torch.float64)
    rel = phi0[:, None] - grid.ring_phi0[ring]
    jlo = torch.ceil((rel - dphi) / step).to(torch.int64)
    jhi = torch.floor((rel + dphi) / step).to(torch.int64)
    full = c <= -1.0
    cnt = torch.where(full, n, (jhi - jlo + 1).clamp(min=0).minimum(n))
    cnt = torch.where((c > 1.0) | ~inside, torch.zeros_like(cnt), cnt)
    jlo = torch.where(full, torch.zeros_like(jlo), torch.remainder(jlo, n))
    cnt1 = torch.minimum(cnt, n - jlo)
    run_cnt = torch.stack([cnt1, cnt - cnt1], -1).reshape(len(theta0), -1)
    start = grid.ring_start[ring]
    run_pix0 = torch.stack([start + jlo, start], -1).reshape(len(theta0), -1)
    return run_pix0, run_cnt


def expand_runs(run_sub: torch.Tensor, run_pix0: torch.Tensor, run_cnt: torch.Tensor,
                total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(subhalo index, pixel index) of every pixel of the runs, via two cumulative sums (no per-pair gathers).

    ``total`` = run_cnt.sum() when the caller knows it (avoids a device sync / graph break).
    """
    dev = run_sub.device
    if total is None:
        total = int(run_cnt.sum()) if len(run_cnt) else 0
    if total == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        return empty, empty
    start = torch.cumsum(run_cnt, 0) - run_cnt
    step_pix = torch.ones(total, dtype=torch.int64, device=dev)
    prev_end = torch.cat([run_pix0.new_ones(1), run_pix0[:-1] + run_cnt[:-1]]) - 1
    step_pix[start] = run_pix0 - prev_end
    step_sub = torch.zeros(total, dtype=torch.int64, device=dev)
    step_sub[start] = run_sub - torch.cat([run_sub.new_zeros(1), run_sub[:-1]])
    return torch.cumsum(step_sub, 0), torch.cumsum(step_pix, 0)


def disc_pairs(grid: _Grid, theta0: torch.Tensor, phi0: torch.Tensor, radius_rad: float) -> tuple[torch.Tensor, torch.Tensor]:
    """All (subhalo index, RING pixel index) pairs with the pixel centre within ``radius_rad`` (see :func:`disc_runs`)."""
    return expand_runs(*disc_runs(grid, theta0, phi0, radius_rad))


def disc_slots(run_pix0: torch.Tensor, run_cnt: torch.Tensor, slots: torch.Tensor,
               npix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each subhalo's disc pixels as a dense (n, width) table: (pixel per slot, pixel count (n, 1)).

    ``run_pix0, run_cnt`` (n, R) from :func:`_dense_runs`; ``slots`` = arange(width), width >=
    every disc's pixel count. Slot k < count[s] of subhalo s holds the k-th pixel of its runs in
    order (the order of :func:`expand_runs`); later slots hold some pixel in [0, npix) and must
    be masked by the caller. pix[s, k] = k + base(s, k) with base = first pixel - first slot of
    the run holding k; base is piecewise constant, so it is the cumulative sum of its jumps
    scattered at the runs' first slots (the jumps of empty runs land on one slot and telescope).
    Exact integer arithmetic; eager on purpose (inductor's CPU scan is slower than aten's cumsum).
    """
    n, width = run_cnt.shape[0], slots.shape[0]
    off = torch.cumsum(run_cnt, 1) - run_cnt  # first slot of each run
    base = run_pix0 - off
    jump = torch.cat([base[:, :1], base[:, 1:] - base[:, :-1]], 1)
    acc = torch.zeros(n, width + 1, dtype=run_cnt.dtype, device=run_cnt.device)
    acc.scatter_add_(1, off.clamp_max(width), jump)  # runs starting at `width` are empty
    return acc[:, :width].cumsum(1).add_(slots).clamp_(max=npix - 1), run_cnt.sum(1, keepdim=True)


def check_nside(nside: int) -> int:
    nside = int(nside)
    if nside < 1 or nside & (nside - 1) or nside > 2**13:
        raise ValueError(f"nside = {nside}: must be a power of two between 1 and 8192")
    return nside
