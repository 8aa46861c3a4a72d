"""Navarro-Frenk-White halos: parameters from (M200, c200), density, 3-D and projected mass.

Units: lengths in kpc, masses in Msun, densities in Msun/kpc^3.

* eq. (8):  rho(r) = rho_s / [(r/r_s) (1 + r/r_s)^2]  (untruncated; the astrometric study applies
  only a hard angular cut on the sky, as the paper does).
* eq. (13): M200 = 4 pi rho_s r_s^3 f(c200), f(c) = ln(1+c) - c/(1+c), with r200 = c200 r_s
  enclosing a mean density 200 rho_c.
* eq. (2), the mass inside a cylinder of radius b around the line of sight, in closed form with
  x = b / r_s and A = 4 pi rho_s r_s^3::

      M(b)   = A [ln(x/2) + F(x)]
      M'(b)  = (A / r_s)   x g(u)
      M''(b) = (A / r_s^2) [g(u) - 2 x^2 g'(u)]

  where u = 1 - x^2, F = atanh(sqrt u)/sqrt u (x < 1) or atan(sqrt(-u))/sqrt(-u) (x > 1) — one
  analytic function of u with F(0) = 1 — and g(u) = (F - 1)/u = sum_k u^k / (2k + 3).
  M'(b) = 2 pi b Sigma(b) with the usual NFW surface density. Near x = 1 (|u| < 0.1) g and g'
  come from their Taylor series (17 terms, truncation < 1e-18), elsewhere from the closed
  form; for x < 1, M(b) uses a rearrangement free of the ln(x/2) + F cancellation.
  b = 0 is guarded: x is clamped to >= 1e-12 (M -> 0, M' -> 0, M'' ~ ln(2/x) is finite there).
* Far field: an untruncated NFW has no finite total mass; M(b) grows as A [ln(b / 2 r_s) + pi r_s
  / (2 b) + O(b^-2)] and M(b) / M_3D(b) -> 1 as b -> infinity (both ~ A ln b). Tests check these.

All functions accept numpy arrays / Python floats (and return numpy) or torch tensors (and
return tensors on the same device, float64 unless given float32), broadcasting their arguments.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .cosmology import H_DEFAULT, critical_density

__all__ = [
    "nfw_f",
    "nfw_params",
    "nfw_density",
    "enclosed_mass_3d",
    "projected_mass",
    "X_MIN",
    "U_SERIES",
]

#: smallest x = b / r_s used (guards b = 0)
X_MIN = 1e-12
#: |u| = |1 - x^2| below which the Taylor series of g(u) is used
U_SERIES = 0.1
_N_SERIES = 17


def _to_torch(*args: Any) -> tuple[list[torch.Tensor], bool]:
    """Convert arguments to broadcast-compatible tensors; report whether the caller used numpy."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if tensors:
        dev = tensors[0].device
        dtype = tensors[0].dtype if tensors[0].is_floating_point() else torch.float64
        return [a.to(dev, dtype) if isinstance(a, torch.Tensor) else torch.as_tensor(a, dtype=dtype, device=dev) for a in args], False
    return [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in args], True


def _out(t: torch.Tensor, numpy: bool):
    if not numpy:
        return t
    a = t.numpy()
    return a.item() if a.ndim == 0 else a


def nfw_f(c):
    """f(c) = ln(1 + c) - c / (1 + c) of eq. (13) (dimensionless)."""
    (c,), numpy = _to_torch(c)
    return _out(torch.log1p(c) - c / (1 + c), numpy)


def nfw_params(m200_msun, c200, h: float = H_DEFAULT):
    """(rho_s [Msun/kpc^3], r_s [kpc], r200 [kpc]) of an NFW halo from M200 [Msun] and c200, eq. (13).

    r200 = (3 M200 / (4 pi 200 rho_c))^(1/3) with rho_c = :func:`critical_density` (h), r_s = r200 /
    c200, rho_s = M200 / (4 pi r_s^3 f(c200)).
    """
    (m, c), numpy = _to_torch(m200_msun, c200)
    rho_c = critical_density(h)
    r200 = (3.0 * m / (4.0 * math.pi * 200.0 * rho_c)) ** (1.0 / 3.0)
    r_s = r200 / c
    rho_s = m / (4.0 * math.pi * r_s**3 * (torch.log1p(c) - c / (1 + c)))
    return _out(rho_s, numpy), _out(r_s, numpy), _out(r200, numpy)


def nfw_density(r_kpc, rho_s, r_s):
    """NFW density rho(r) [Msun/kpc^3] at radius r [kpc], eq. (8)."""
    (r, rho_s, r_s), numpy = _to_torch(r_kpc, rho_s, r_s)
    x = r / r_s
    return _out(rho_s / (x * (1 + x) ** 2), numpy)


def enclosed_mass_3d(r_kpc, rho_s, r_s):
    """Mass inside a sphere of radius r [kpc]: 4 pi rho_s r_s^3 f(r/r_s) [Msun]."""
    (r, rho_s, r_s), numpy = _to_torch(r_kpc, rho_s, r_s)
    x = r / r_s
    return _out(4.0 * math.pi * rho_s * r_s**3 * (torch.log1p(x) - x / (1 + x)), numpy)


def _g_series(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """g(u) = sum_k u^k/(2k+3) and g'(u) = sum_k k u^(k-1)/(2k+3) by Horner's rule."""
    g = torch.zeros_like(u)
    gp = torch.zeros_like(u)
    for kk in range(_N_SERIES - 1, -1, -1):
        g = g * u + 1.0 / (2 * kk + 3)
        if kk >= 1:
            gp = gp * u + kk / (2 * kk + 3)
    return g, gp


def _cylinder_terms(x: torch.Tensor, order: int) -> tuple[torch.Tensor, ...]:
    """Dimensionless m(x) = M/A, x g(u) = M' r_s/A and g - 2 x^2 g' = M'' r_s^2/A."""
    shape = x.shape
    x = x.reshape(-1).clamp_min(X_MIN)
    u = (1.0 - x) * (1.0 + x)
    small = u.abs() < U_SERIES
    below = x < 1.0
    # closed form, evaluated with a safe |u| where the series takes over
    ua = torch.where(small, torch.ones_like(u), u.abs())
    s = torch.sqrt(ua)
    us = torch.where(small, torch.ones_like(u), u)
    logx = torch.log(x)
    F = torch.where(below, (torch.log1p(s) - logx) / s, torch.atan(s) / s)
    # M/A: x < 1 rearranged as [(s - 1) ln(x/2) + ln((1+s)/2)] / s with s - 1 = -x^2/(1+s)
    x2 = x * x
    log_half_x = logx - math.log(2.0)
    m_below = (-x2 / (1.0 + s) * log_half_x + torch.log1p(-x2 / (2.0 * (1.0 + s)))) / s
    m = torch.where(below, m_below, log_half_x + F)
    g = (F - 1.0) / us
    if order >= 2:
        Fu = (1.0 / x2 - F) / (2.0 * us)  # dF/du
        gp = (Fu - g) / us
    if bool(small.any()):
        idx = small.nonzero(as_tuple=True)
        gs, gps = _g_series(u[idx])
        g = g.index_put(idx, gs)
        m = m.index_put(idx, log_half_x[idx] + 1.0 + u[idx] * gs)
        if order >= 2:
            gp = gp.index_put(idx, gps)
    out: tuple[torch.Tensor, ...] = (m,)
    if order >= 1:
        out += (x * g,)
    if order >= 2:
        out += (g - 2.0 * x2 * gp,)
    return tuple(t.reshape(shape) for t in out)


def projected_mass(b_kpc, rho_s, r_s, order: int = 0):
    """Mass [Msun] inside the cylinder of radius b [kpc] around the halo centre, eq. (2).

    ``order`` = 0 returns M(b); 1 returns (M, M') with M' = dM/db [Msun/kpc]; 2 returns
    (M, M', M'') with M'' [Msun/kpc^2]. Closed forms in the module docstring.
    """
    if order not in (0, 1, 2):
        raise ValueError(f"order = {order}: must be 0, 1 or 2")
    (b, rho_s, r_s), numpy = _to_torch(b_kpc, rho_s, r_s)
    b, rho_s, r_s = torch.broadcast_tensors(b, rho_s, r_s)
    amp = 4.0 * math.pi * rho_s * r_s**3
    terms = _cylinder_terms(b / r_s, order)
    res = [amp * terms[0]]
    if order >= 1:
        res.append(amp / r_s * terms[1])
    if order >= 2:
        res.append(amp / r_s**2 * terms[2])
    res = [_out(t, numpy) for t in res]
    return res[0] if order == 0 else tuple(res)
