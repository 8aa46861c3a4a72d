"""Float32 transcendentals as plain tensor arithmetic, for the compiled lensing kernels.

``torch.compile`` on CPU lowers ``atan``/``atanh``/``exp``/``log`` to calls into SLEEF's
1-ulp vector routines (2–3 ns per element each on this project's reference CPU); written as
polynomials in ordinary tensor operations they fuse into the surrounding loop as a handful of
FMAs. Each function here is accurate to a few float32 ulp over its whole domain (the tests
compare against float64 numpy on dense grids); they are used by :mod:`darkml.lensing.fast`
only for float32 CPU tensors inside compiled kernels (see :func:`use_fast_math`), so eager,
float64 and CUDA paths keep torch's own functions.

* ``log2(x)``, ``exp2(y)``: exponent/mantissa split by bit casts, mantissa polynomial;
* ``log1p(z)``: log of 1+z with the rounding of 1+z corrected (relative precision at small z);
* ``atan_ratio(u, v)`` = atan(u/v) for v > 0, reduced to [0, 1] by swapping u and v;
* ``atanh_ratio(u, v)`` = atanh(u/v) for |u| < v, as log1p(2u/(v − u))/2.

Polynomial coefficients are least-squares Chebyshev fits in float64 made once at import
(deterministic); their accuracy is what the tests check, not their digits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["log2", "exp2", "log1p", "atan_ratio", "atanh_ratio", "use_fast_math"]

_SQRT2 = math.sqrt(2.0)
_LN2 = math.log(2.0)


def _fit(fn, lo: float, hi: float, degree: int) -> tuple[float, ...]:
    """Power-basis coefficients (lowest first) of a Chebyshev least-squares fit on [lo, hi]."""
    t = np.cos(np.pi * (np.arange(4096) + 0.5) / 4096)  # Chebyshev nodes: near-minimax fit
    x = lo + (hi - lo) * (t + 1) / 2
    cheb = np.polynomial.chebyshev.Chebyshev.fit(x, fn(x), degree, domain=[lo, hi])
    return tuple(float(c) for c in cheb.convert(kind=np.polynomial.Polynomial).coef)


def _lnratio(f):  # ln(1+f)/f, with its limit 1 at f = 0
    f = np.asarray(f, dtype=np.float64)
    safe = np.where(f == 0, 1.0, f)
    return np.where(f == 0, 1.0, np.log1p(safe) / safe)


def _atan_over_t(s):  # atan(t)/t as a function of s = t^2, limit 1 at s = 0
    t = np.sqrt(np.asarray(s, dtype=np.float64))
    safe = np.where(t == 0, 1.0, t)
    return np.where(t == 0, 1.0, np.arctan(safe) / safe)


#: ln(1+f) = f P(f) for the reduced mantissa f in [1/sqrt2 - 1, sqrt2 - 1]
_LN_COEF = _fit(_lnratio, 1 / _SQRT2 - 1, _SQRT2 - 1, 8)  # fit error 3e-8
#: 2^f for f in [-1/2, 1/2]
_EXP2_COEF = _fit(lambda f: np.exp2(f), -0.5, 0.5, 6)  # relative fit error 3e-9
#: atan(t) = t Q(t^2) for t in [0, tan(pi/8)]; larger t is reduced by atan(t) = pi/4 + atan((t-1)/(t+1))
_TAN_PI_8 = math.tan(math.pi / 8)
_ATAN_COEF = _fit(_atan_over_t, 0.0, _TAN_PI_8**2, 4)  # fit error 2e-8


def _horner(coef: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    p = x * coef[-1] + coef[-2]
    for c in coef[-3::-1]:
        p = p * x + c
    return p


def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x > 0 (normal float32) -> (e, f) with x = 2^e (1 + f), f in [1/sqrt2 - 1, sqrt2 - 1)."""
    bits = x.view(torch.int32)
    e = (bits >> 23) - 127
    m = ((bits & 0x007FFFFF) | 0x3F800000).view(torch.float32)  # mantissa in [1, 2)
    big = m > _SQRT2
    m = torch.where(big, m * 0.5, m)
    e = torch.where(big, e + 1, e)
    return e.to(torch.float32), m - 1.0


def log2(x: torch.Tensor) -> torch.Tensor:
    """log2(x) for positive normal float32 x."""
    e, f = _split(x)
    return e + f * _horner(_LN_COEF, f) * (1.0 / _LN2)


def exp2(y: torch.Tensor) -> torch.Tensor:
    """2^y for float32 y; results below 2^-126 are flushed to zero, above 2^127 capped."""
    y = torch.clamp(y, -127.0, 127.0)
    n = torch.round(y)
    p = _horner(_EXP2_COEF, y - n)
    scale = ((n.to(torch.int32) + 127) << 23).view(torch.float32)  # 2^n; n = -127 gives 0
    return p * scale


def log1p(z: torch.Tensor) -> torch.Tensor:
    """ln(1 + z) for z > -1, with relative precision for small |z|."""
    y = 1.0 + z
    e, f = _split(y)
    corr = (z - (y - 1.0)) / y  # first-order correction for the rounding of 1 + z
    return e * _LN2 + f * _horner(_LN_COEF, f) + corr


def atan_ratio(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """atan(u / v) for v > 0 (any sign of u, any magnitude, v may be tiny)."""
    a = torch.abs(u)
    swap = a > v
    t = torch.where(swap, v, a) / torch.where(swap, a, v)  # in [0, 1]
    shift = t > _TAN_PI_8
    t = torch.where(shift, (t - 1.0) / (t + 1.0), t)  # in [tan(-pi/8), tan(pi/8)]
    r = t * _horner(_ATAN_COEF, t * t)
    r = torch.where(shift, r + math.pi / 4, r)
    r = torch.where(swap, math.pi / 2 - r, r)
    return torch.copysign(r, u)


def atanh_ratio(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """atanh(u / v) for |u| < v."""
    return 0.5 * log1p(2.0 * u / (v - u))


def use_fast_math(x: torch.Tensor) -> bool:
    """True inside a torch.compile trace of a float32 CPU kernel: use this module's functions.

    (On CUDA, Triton's libdevice functions are already fast; the bit-cast path is not used there.)
    """
    return x.dtype == torch.float32 and x.device.type == "cpu" and torch.compiler.is_compiling()
