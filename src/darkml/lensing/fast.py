"""Batched torch backend: SIE + shear + point-mass ray shooting, Sérsic source, PSF, noise.

Renders the same parameter records as the lenstronomy reference (``simulate.py``) with the
same conventions, vectorised over a batch of lens systems, on CPU or CUDA:

* deflections [arcsec]: lenstronomy's SIE (the NIE of Keeton & Kochanek with a 1e-10″ core,
  θ_E in the product-average convention, q capped at 0.99999999), external shear about the
  origin, point masses α = θ_E² (x − x_i)/|x − x_i|². The point masses of a batch are padded
  to the batch's largest count (zero-mass points far away) and summed in blocks of at most
  ``PM_BLOCK`` (the last block as wide as what remains), so memory does not grow with the
  number of subhalos; systems are sorted by point-mass count first so that padding is small;
* source: elliptical Sérsic I = amp exp(−b_n((R/R_s)^{1/n} − 1)) with lenstronomy's b_n and
  product-average radius R (floored at 1e-4″);
* rays at ``supersampling``² sub-pixel centres, averaged to pixels, times the pixel area
  (→ e-/s per pixel), then convolved with the separable pixel PSF kernel (zero padding,
  'same' size — what scipy's fftconvolve does in lenstronomy);
* noise: n = z sqrt(σ_bkg² + max(f,0)/t) with the record's standard-normal field z.

Per-image geometry (axis ratio, rotation, b_n …) is computed in float64 numpy; the ray
arithmetic runs in ``dtype`` (float32 by default: agreement with lenstronomy ~1e-6 of the
peak; float64 agrees to round-off). ``compile=True`` wraps the kernels in ``torch.compile``
(several times faster on CPU after a one-off compilation of ~20–60 s, cached on disk by torch;
falls back to eager with a warning if compilation is unavailable); compiled float32 kernels
evaluate atan, atanh, exp and log with the fused polynomials of :mod:`.fastmath`.
"""

from __future__ import annotations

import logging
import types
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..learn.devices import resolve_device as _resolve_device
from . import fastmath
from .params import (
    LensingSimConfig,
    Records,
    noise_fields,
    noise_sigmas,
    pixel_grid,
    point_masses,
    psf_kernel_1d,
)
from .profiles import LENS_PROFILES, SOURCE_PROFILE, PointMass

log = logging.getLogger(__name__)

__all__ = ["render_torch", "add_noise_torch", "simulate_torch", "resolve_device"]

#: point masses per block of the deflection sum (the last block of a batch holds the rest)
PM_BLOCK = 8
_LOG2E = 1.4426950408889634


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> cuda if available else cpu; an unavailable 'cuda' is an error."""
    return _resolve_device(device, field="device")


# ---------------------------------------------------------------------------------------
# kernels: plain tensor functions, (b, 1) per-image parameters against (N,) ray coordinates
# ---------------------------------------------------------------------------------------
def _macro_deflection(gx, gy, cx, cy, cos, sin, q, b, s, eps, g1, g2):
    """Source-plane positions (gx, gy) - alpha [arcsec] for SIE (rotated NIE, core s) + shear.

    ``b`` is b_NIE / sqrt(1 - q^2) and ``eps`` = sqrt(1 - q^2) (both from float64 per-image
    scalars), so near-round lenses need no series: atan(eps u) keeps full relative precision.
    """
    x_ = gx - cx
    y_ = gy - cy
    xr = cos * x_ + sin * y_
    yr = cos * y_ - sin * x_
    psi = torch.sqrt(q * q * (s * s + xr * xr) + yr * yr)
    if fastmath.use_fast_math(gx):
        fxr = b * fastmath.atan_ratio(eps * xr, psi + s)
        fyr = b * fastmath.atanh_ratio(eps * yr, psi + q * q * s)
    else:
        fxr = b * torch.atan(eps * xr / (psi + s))
        fyr = b * torch.atanh(eps * yr / (psi + q * q * s))
    bx = gx - (cos * fxr - sin * fyr + g1 * gx + g2 * gy)
    by = gy - (sin * fxr + cos * fyr + g2 * gx - g1 * gy)
    return bx, by


def _point_mass_block(bx, by, gx, gy, px, py, te2):
    """Subtract the deflection of a block of point masses (columns of px, py, te2 = theta_E^2)
    from the source-plane positions (bx, by)."""
    for k in range(px.shape[1]):
        dx = gx - px[:, k : k + 1]
        dy = gy - py[:, k : k + 1]
        f = te2[:, k : k + 1] / torch.clamp(dx * dx + dy * dy, min=1e-30)
        bx = bx - f * dx
        by = by - f * dy
    return bx, by


def _point_mass_block_inplace(bx, by, gx, gy, px, py, te2):
    """Eager variant of :func:`_point_mass_block` with in-place updates (less memory traffic)."""
    for k in range(px.shape[1]):
        dx = gx - px[:, k : k + 1]
        dy = gy - py[:, k : k + 1]
        r2 = (dx * dx).addcmul_(dy, dy).clamp_(min=1e-30)
        f = torch.div(te2[:, k : k + 1], r2, out=r2)
        bx.addcmul_(f, dx, value=-1.0)
        by.addcmul_(f, dy, value=-1.0)
    return bx, by


def _source_psf(bx, by, sx, sy, c11, c12, c22, amp, rs2, bn, half_inv_n, k1d, n_pix: int, s: int, area: float):
    """Sérsic surface brightness at source-plane rays -> pixel-averaged, PSF-convolved image.

    Rays come in ``s*s`` sub-pixel planes of ``n_pix`` x ``n_pix`` (see :func:`ray_grid`), so the
    sub-pixel average is a sum over planes that fuses with the Sérsic evaluation.
    I = amp exp(b_n - b_n (R^2/R_s^2)^(1/(2n))) with R floored at 1e-4 arcsec; the Gaussian
    kernel is separable (k = k1d k1d^T), applied as two 1-D passes with zero padding.
    """
    xs = bx - sx
    ys = by - sy
    xe = c11 * xs + c12 * ys
    ye = c12 * xs + c22 * ys
    r2 = torch.clamp(xe * xe + ye * ye, min=1e-8)
    if fastmath.use_fast_math(r2):
        bnl = bn * _LOG2E
        rn = fastmath.exp2((fastmath.log2(r2) - fastmath.log2(rs2)) * half_inv_n)  # (R/R_s)^(1/n)
        sb = amp * fastmath.exp2(bnl - bnl * rn)
    else:
        sb = amp * torch.exp(bn - bn * torch.exp(torch.log(r2 / rs2) * half_inv_n))
    img = sb.view(-1, s * s, n_pix, n_pix).sum(1, keepdim=True) * (area / (s * s))
    r = k1d.shape[0] // 2
    n = n_pix
    p = F.pad(img, (r, r, r, r))
    rows = k1d[0] * p[..., :, 0:n]
    for t in range(1, 2 * r + 1):
        rows = rows + k1d[t] * p[..., :, t : t + n]
    out = k1d[0] * rows[..., 0:n, :]
    for t in range(1, 2 * r + 1):
        out = out + k1d[t] * rows[..., t : t + n, :]
    return out


def ray_grid(num_pix: int, pixel_scale: float, s: int, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray coordinates (gx, gy) [arcsec], each (s*s*num_pix**2,), in sub-pixel planes.

    Ray k <-> plane k // num_pix**2 = (sub-row i, sub-column j) = divmod(plane, s), then pixel
    (row, column) = divmod(k % num_pix**2, num_pix): every plane is one sub-pixel position of all
    pixels, image-ordered, so averaging sub-pixels is a sum over planes. Sub-pixel positions are
    those of :func:`darkml.lensing.params.pixel_grid` (lenstronomy's convention).
    """
    g = torch.as_tensor(pixel_grid(num_pix, pixel_scale, s), dtype=dtype, device=device).view(num_pix, s).t()
    gx = g[None, :, None, :].expand(s, s, num_pix, num_pix)  # [i, j, row, col] -> x of (col, j)
    gy = g[:, None, :, None].expand(s, s, num_pix, num_pix)  # -> y of (row, i)
    return gx.reshape(-1).contiguous(), gy.reshape(-1).contiguous()


_COMPILED: dict[str, Callable] = {}
_COMPILE_FAILED: list[str] = []


def _with_fallback(name: str, compiled: Callable, eager: Callable) -> Callable:
    """Call the compiled kernel; if compilation fails (no C++ compiler / triton), warn once and
    use the eager kernel from then on (same results to float32 round-off)."""

    def call(*args):
        if not _COMPILE_FAILED:
            try:
                return compiled(*args)
            except Exception as exc:  # torch._dynamo/inductor errors have no common public base
                _COMPILE_FAILED.append(f"{type(exc).__name__}: {exc}"[:300])
                log.warning("torch.compile of the lensing kernels failed (%s); using eager kernels", _COMPILE_FAILED[0])
        return eager(*args)

    call.__name__ = f"compiled_{name}"
    return call


def _kernels(compile: bool) -> types.SimpleNamespace:
    """The kernel set: macro, pm, source, noise (compiled or eager).

    Each is compiled on its own: fusing the first point-mass block into the macro kernel or the
    last into the source kernel made inductor's CPU code ~1.5x slower per image (measured)."""
    eager = types.SimpleNamespace(macro=_macro_deflection, pm=_point_mass_block_inplace,
                                  source=_source_psf, noise=add_noise_torch)
    if not compile:
        return eager
    if not _COMPILED:
        for name, fn in vars(eager).items():
            if name != "pm":
                _COMPILED[name] = _with_fallback(name, torch.compile(fn, dynamic=False), fn)
        # one compiled copy per block width 1..PM_BLOCK (each its own recompilation budget); the
        # eager fallback is the out-of-place kernel (in-place updates do not compile)
        widths = {w: _with_fallback(f"pm{w}", torch.compile(_fresh_copy(_point_mass_block), dynamic=False),
                                    _point_mass_block) for w in range(1, PM_BLOCK + 1)}
        _COMPILED["pm"] = lambda bx, by, gx, gy, px, py, te2: widths[px.shape[1]](bx, by, gx, gy, px, py, te2)
    return types.SimpleNamespace(**_COMPILED)


def _fresh_copy(fn: Callable) -> Callable:
    """A copy of ``fn`` with its own code object, hence its own torch.compile cache."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


# ---------------------------------------------------------------------------------------
# per-image parameters (float64 numpy) -> tensors
# ---------------------------------------------------------------------------------------
def _lens_scalars(sc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for prof in LENS_PROFILES for k, v in prof.kernel_params(sc).items()}


def _source_scalars(sc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return SOURCE_PROFILE.kernel_params(sc)


#: column order of the per-image parameter matrix handed to the kernels (owned by the profiles)
_LENS_KEYS = tuple(k for prof in LENS_PROFILES for k in prof.kernel_keys)
_SRC_KEYS = SOURCE_PROFILE.kernel_keys


def _padded_point_masses(rec: Records, cfg: LensingSimConfig) -> tuple[np.ndarray, np.ndarray]:
    """(counts (n_rec,), table (3, n_rec, max count)) of point-mass x, y, theta_E^2 per record;
    padding columns are massless points far away (x = y = 1e4 arcsec, theta_E = 0: they add
    exactly zero deflection)."""
    pm = point_masses(rec, cfg.cosmology)
    n_rec = len(rec)
    counts = np.bincount(pm["index"], minlength=n_rec)
    table = np.zeros((3, n_rec, int(counts.max(initial=0))))
    table[:2] = 1e4
    starts = np.concatenate([[0], np.cumsum(counts)])
    slot = np.arange(len(pm["index"])) - starts[pm["index"]]
    for row, values in enumerate(PointMass.kernel_params(pm).values()):  # x, y, theta_E^2
        table[row, pm["index"], slot] = values
    return counts, table


def render_torch(
    rec: Records,
    cfg: LensingSimConfig,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 32,
    compile: bool = False,
    return_tensor: bool = False,
):
    """Noise-free images [e-/s per pixel], shape (B, 1, n, n), of a record batch.

    Systems are sorted by their number of point masses and rendered ``batch_size`` at a
    time (padding within a batch uses zero-mass points far away); the output is in record
    order. Returns a numpy array in ``dtype``, or the tensor on ``device`` if ``return_tensor``.
    """
    dev = resolve_device(device)
    n_rec = len(rec)
    npx, s = cfg.image.num_pix, cfg.image.supersampling
    d = cfg.instrument.pixel_scale
    gx, gy = ray_grid(npx, d, s, dtype, dev)
    k1d = torch.as_tensor(psf_kernel_1d(cfg.instrument), dtype=dtype, device=dev)
    area = d * d

    counts, pm_table = _padded_point_masses(rec, cfg)
    order = np.argsort(counts, kind="stable")
    lens, src = _lens_scalars(rec.scalars), _source_scalars(rec.scalars)
    # one (n_rec, 19) parameter matrix, moved once; per-image (b, 1) columns are views of it
    prm = torch.as_tensor(np.stack([lens[k] for k in _LENS_KEYS] + [src[k] for k in _SRC_KEYS], axis=1),
                          dtype=dtype).to(dev)
    pm_all = torch.as_tensor(pm_table, dtype=dtype).to(dev)
    kern = _kernels(compile)
    src_args = (k1d, npx, s, area)
    out = torch.empty((n_rec, 1, npx, npx), dtype=dtype, device=dev)

    for b0 in range(0, n_rec, batch_size):
        idx = order[b0 : b0 + batch_size]
        nb = len(idx)
        if compile and nb < batch_size:  # keep static shapes for the compiled kernels
            idx = np.concatenate([idx, np.full(batch_size - nb, idx[-1])])
        rows = torch.as_tensor(idx, device=dev)
        P = prm[rows]
        cols = [P[:, j : j + 1] for j in range(P.shape[1])]
        lens_cols, src_cols = cols[: len(_LENS_KEYS)], cols[len(_LENS_KEYS) :]
        kmax = int(counts[idx].max(initial=0))
        bx, by = kern.macro(gx, gy, *lens_cols)
        for k0 in range(0, kmax, PM_BLOCK):  # (3, b, width) slices of the padded table: x, y, theta_E^2
            bx, by = kern.pm(bx, by, gx, gy, *pm_all[:, rows, k0 : min(k0 + PM_BLOCK, kmax)].contiguous())
        img = kern.source(bx, by, *src_cols, *src_args)
        out[rows[:nb]] = img[:nb]
    if return_tensor:
        return out
    return out.cpu().numpy()


def add_noise_torch(clean: torch.Tensor, z: torch.Tensor, sigma_bkg: float, t_tot: float) -> torch.Tensor:
    """clean + z sqrt(sigma_bkg^2 + max(clean, 0)/t_tot)  (all e-/s per pixel; z standard normal)."""
    return clean + z * torch.sqrt(sigma_bkg * sigma_bkg + torch.clamp(clean, min=0.0) / t_tot)


def simulate_torch(
    rec: Records,
    cfg: LensingSimConfig,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 32,
    compile: bool = False,
    noise: bool | None = None,
) -> np.ndarray:
    """Observed images [e-/s per pixel] (B, 1, n, n) in ``dtype``: render + (optionally) noise."""
    dev = resolve_device(device)
    clean = render_torch(rec, cfg, dev, dtype, batch_size, compile, return_tensor=True)
    if noise is None:
        noise = cfg.image.noise
    if noise:
        sigma, t_tot = noise_sigmas(cfg.instrument)
        z = torch.from_numpy(noise_fields(rec.scalars["noise_seed"], cfg.image.num_pix)).to(dev, dtype)
        clean = _kernels(compile).noise(clean, z, sigma, t_tot)
    return clean.cpu().numpy()
