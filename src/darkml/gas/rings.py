"""Galactocentric rings and their LSR velocity windows: the paper's 17 "velocity bins".

The companion data-preparation code of the paper (Karwin) integrates the MOPRA cubes over
17 Galactocentric rings with edges :data:`RING_EDGES_KPC` (kpc). Under pure circular
rotation gas at Galactocentric radius ``R`` seen at longitude ``l`` moves with

    V_LSR = (R0 / R * Theta(R) - Theta0) * sin(l) * cos(b)         [km/s]

(e.g. Binney & Merrifield, *Galactic Astronomy*, eq. 9.4) with the Clemens (1985, ApJ 295,
422, Table 5) rotation curve for R0 = 8.5 kpc, Theta0 = 220 km/s. A ring therefore maps
to a velocity interval per longitude; the windows are clipped to [-150, +50] km/s (the
range of the MOPRA "Vcrop" cubes). A line of sight at longitude ``l`` with ``cos l > 0``
never gets closer to the Galactic centre than the tangent radius ``R0 |sin l|``; rings
entirely inside it hold no gas in circular orbit and get an *empty* window (width 0) --
their planes are all zero, and every metric on them is reported as undefined (``None``),
never NaN.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "RING_EDGES_KPC",
    "N_RINGS",
    "R0_KPC",
    "THETA0_KMS",
    "V_CLIP_KMS",
    "clemens_rotation_curve",
    "v_lsr",
    "min_radius",
    "ring_windows",
    "ring_centres",
]

#: Galactocentric ring edges [kpc] (Karwin's data preparation for the paper): 17 rings.
RING_EDGES_KPC: tuple[float, ...] = (0.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.5, 7.0, 8.0, 10.0, 11.5,
                                     16.5, 19.0, 50.0)
N_RINGS = len(RING_EDGES_KPC) - 1
#: Sun's Galactocentric radius [kpc] and circular speed [km/s] of the Clemens (1985) curve.
R0_KPC = 8.5
THETA0_KMS = 220.0
#: velocity range of the MOPRA "Vcrop" cubes [km/s]; windows are clipped to it.
V_CLIP_KMS = (-150.0, 50.0)

# Clemens (1985) Table 5, R0 = 8.5 kpc, Theta0 = 220 km/s: Theta(R) = sum_i a_i R^i (R in kpc)
_CLEMENS_A = (0.0, 3069.81, -15809.8, 43980.1, -68287.3, 54904.0, -17731.0)            # R < 0.09 R0
_CLEMENS_B = (325.0912, -248.1467, 231.87099, -110.73531, 25.073006, -2.110625)         # 0.09 R0 <= R < 0.45 R0
_CLEMENS_C = (-2342.6564, 2507.60391, -1024.068760, 224.562732, -28.4080026, 2.0697271,
              -0.08050808, 0.00129348)                                                   # 0.45 R0 <= R < 1.6 R0
_CLEMENS_D = 234.88                                                                      # R >= 1.6 R0


def _poly(coef: Sequence[float], r: np.ndarray) -> np.ndarray:
    return np.polynomial.polynomial.polyval(r, np.asarray(coef, dtype=float))


def clemens_rotation_curve(r_kpc) -> np.ndarray:
    """Circular speed Theta(R) [km/s] at Galactocentric radius ``r_kpc`` [kpc] (Clemens 1985)."""
    r = np.asarray(r_kpc, dtype=float)
    out = np.full(r.shape, _CLEMENS_D)
    r1, r2, r3 = 0.09 * R0_KPC, 0.45 * R0_KPC, 1.6 * R0_KPC
    out = np.where(r < r3, _poly(_CLEMENS_C, r), out)
    out = np.where(r < r2, _poly(_CLEMENS_B, r), out)
    out = np.where(r < r1, _poly(_CLEMENS_A, r), out)
    return out


def _omega(r_kpc: np.ndarray) -> np.ndarray:
    """Angular speed Theta(R)/R [km/s/kpc]; finite at R -> 0 (Theta ~ 3069.81 R there)."""
    r = np.maximum(np.asarray(r_kpc, dtype=float), 1e-6)
    return clemens_rotation_curve(r) / r


def v_lsr(r_kpc, l_deg, b_deg=0.0) -> np.ndarray:
    """LSR velocity [km/s] of gas in circular orbit at radius ``r_kpc`` [kpc] seen at (l, b) [deg]."""
    l = np.deg2rad(np.asarray(l_deg, dtype=float))
    b = np.deg2rad(np.asarray(b_deg, dtype=float))
    return R0_KPC * (_omega(r_kpc) - THETA0_KMS / R0_KPC) * np.sin(l) * np.cos(b)


def min_radius(l_deg) -> np.ndarray:
    """Smallest Galactocentric radius [kpc] a line of sight at longitude ``l_deg`` reaches (b = 0)."""
    l = np.deg2rad(np.asarray(l_deg, dtype=float))
    return np.where(np.cos(l) > 0, R0_KPC * np.abs(np.sin(l)), R0_KPC)


def ring_windows(
    l_deg,
    edges_kpc: Sequence[float] = RING_EDGES_KPC,
    v_clip: tuple[float, float] = V_CLIP_KMS,
    n_grid: int = 257,
) -> dict[str, np.ndarray]:
    """Velocity window of every ring at every longitude.

    Returns a dict of arrays shaped ``(n_rings, *l.shape)``: ``v_lo``, ``v_hi`` [km/s] (the
    clipped window; ``v_lo == v_hi`` marks an empty ring), ``r_lo``, ``r_hi`` [kpc] (the part of
    the ring the line of sight actually crosses; ``r_lo == r_hi`` when empty) and ``empty``.
    The window is the min/max of V_LSR over the crossed radii (sampled on ``n_grid`` points,
    so it is right whether or not V_LSR is monotonic in R).
    """
    edges = np.asarray(edges_kpc, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"ring edges {list(edges)}: must be a strictly increasing list of >= 2 radii [kpc]")
    if not v_clip[0] < v_clip[1]:
        raise ValueError(f"v_clip = {v_clip}: must satisfy lo < hi")
    l = np.asarray(l_deg, dtype=float)
    rmin = min_radius(l)
    lo_e, hi_e = edges[:-1], edges[1:]
    shape = (edges.size - 1,) + l.shape
    r_lo = np.maximum(lo_e.reshape((-1,) + (1,) * l.ndim), rmin)
    r_hi = np.broadcast_to(hi_e.reshape((-1,) + (1,) * l.ndim), shape).copy()
    crossed = r_hi > r_lo
    r_lo = np.where(crossed, r_lo, r_hi)
    frac = np.linspace(0.0, 1.0, n_grid).reshape((-1,) + (1,) * (l.ndim + 1))
    r_grid = r_lo + frac * (r_hi - r_lo)                              # (n_grid, n_rings, *l)
    v = v_lsr(r_grid, l)
    v_lo = np.clip(v.min(axis=0), *v_clip)
    v_hi = np.clip(v.max(axis=0), *v_clip)
    empty = ~crossed | (v_hi <= v_lo)
    v_lo = np.where(empty, 0.0, v_lo)
    v_hi = np.where(empty, 0.0, v_hi)
    r_lo = np.where(empty, r_hi, r_lo)
    return {"v_lo": v_lo, "v_hi": v_hi, "r_lo": r_lo, "r_hi": r_hi, "empty": empty}


def ring_centres(edges_kpc: Sequence[float] = RING_EDGES_KPC, r_cap_kpc: float = 20.0) -> np.ndarray:
    """Representative radius [kpc] of each ring: the midpoint, with the outer edge capped at
    ``r_cap_kpc`` (the edge of the molecular disc; the last ring runs to 50 kpc)."""
    e = np.minimum(np.asarray(edges_kpc, dtype=float), r_cap_kpc)
    return 0.5 * (e[:-1] + e[1:])
