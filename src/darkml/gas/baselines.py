"""Baselines and noise-floor predictors (no learning beyond a line fit).

* :class:`RingLinear` -- per-ring least-squares regression of 13CO on 12CO (facts file).
* :func:`physics_inverse` -- the generating relation inverted: the 12CO integrated intensity
  of a Gaussian line, ``W12 = T_sat,12 sigma_v sqrt(2 pi) F(R_iso tau_p)`` (``F`` the curve of
  growth, radiative.gaussian_line_integral), is solved for the peak 13CO depth ``tau_p`` and
  turned into the survey's LTE 13CO column ``7.5e5 * 3e14 Tex tau_p sigma_v sqrt(2 pi) /
  (1 - exp(-5.3/Tex))``. With the *known* Tex, isotope ratio (ring radius) and mean line
  width it is the facts file's physics baseline; with the per-pixel truths of the synthetic
  sky it is the *oracle* used for the noise floor.
* :class:`ConditionalMedian` -- a Monte-Carlo estimate of the best single-pixel predictor
  under absolute error, ``median[13CO | 12CO]``, learnt from independent realizations of the
  same tile (the generating process is known) -- the other noise-floor estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .radiative import (
    H2_PER_13CO,
    T0_12CO_K,
    gaussian_line_integral,
    lte_column_13co,
    saturation_temperature,
)

__all__ = ["RingLinear", "curve_of_growth_inverse", "physics_inverse", "ConditionalMedian"]


@dataclass
class RingLinear:
    """``T = a_k S + c_k`` per ring ``k`` (clipped at 0); rings with too few non-zero targets use a pooled fit."""

    n_rings: int = 17
    min_active: int = 20
    coef: dict[int, tuple[float, float]] = field(default_factory=dict)
    pooled: tuple[float, float] = (0.0, 0.0)

    @staticmethod
    def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        if x.size < 2 or np.ptp(x) == 0:
            return 0.0, float(y.mean()) if y.size else 0.0
        A = np.stack([x, np.ones_like(x)], axis=1)
        (a, c), *_ = np.linalg.lstsq(A, y, rcond=None)
        return float(a), float(c)

    def fit(self, src: np.ndarray, tgt: np.ndarray, ring: np.ndarray) -> "RingLinear":
        xs, ys = [], []
        for k in range(self.n_rings):
            sel = ring == k
            x, y = src[sel].ravel(), tgt[sel].ravel()
            if np.count_nonzero(y) >= self.min_active:
                self.coef[k] = self._fit(x, y)
                xs.append(x)
                ys.append(y)
        if xs:
            self.pooled = self._fit(np.concatenate(xs), np.concatenate(ys))
        return self

    def predict(self, src: np.ndarray, ring: np.ndarray) -> np.ndarray:
        out = np.empty_like(src, dtype=np.float32)
        for q in range(src.shape[0]):
            a, c = self.coef.get(int(ring[q]), self.pooled)
            out[q] = np.maximum(a * src[q] + c, 0.0)
        return out


_X_GRID = np.logspace(-5, 7, 1200)
_F_GRID = gaussian_line_integral(_X_GRID)


def curve_of_growth_inverse(f: np.ndarray) -> np.ndarray:
    """x with F(x) = f (F the Gaussian-line curve of growth); f <= 0 -> 0, beyond the table -> its end."""
    f = np.asarray(f, dtype=float)
    x = np.exp(np.interp(f, _F_GRID, np.log(_X_GRID)))
    return np.where(f <= _F_GRID[0], np.maximum(f, 0.0), x)


def physics_inverse(co12_h2, ratio, sigma_v_kms, tex_k, xco, lte_tex_k: float = 10.0, tau_max: float = 3.0) -> np.ndarray:
    """Predicted survey 13CO plane N(H2) [cm^-2] from the 12CO plane N(H2) [cm^-2].

    ``ratio`` (12C/13C), ``sigma_v_kms`` and ``tex_k`` broadcast against the planes; ``xco``
    [cm^-2/(K km/s)] is the factor used to make the 12CO plane (``N = X_CO W_A*/eta_mb =
    X_CO W_mb``, so the main-beam integrated intensity is ``N / X_CO``).
    """
    co12 = np.asarray(co12_h2, dtype=float)
    w12_mb = co12 / np.asarray(xco, dtype=float)           # W(12CO) on the main-beam scale [K km/s]
    sat12 = saturation_temperature(np.asarray(tex_k, dtype=float), T0_12CO_K)
    width = np.asarray(sigma_v_kms, dtype=float) * math.sqrt(2 * math.pi)
    x = curve_of_growth_inverse(np.maximum(w12_mb, 0.0) / (sat12 * width))
    x = np.minimum(x, tau_max * np.asarray(ratio, dtype=float))
    tau_p = x / np.asarray(ratio, dtype=float)
    return (H2_PER_13CO * lte_column_13co(tau_p * width, tex_k=lte_tex_k)).astype(np.float32)


@dataclass
class ConditionalMedian:
    """Binned estimate of median[target | source] per key (e.g. per tile position and ring)."""

    n_bins: int = 24
    tables: dict = field(default_factory=dict)

    def fit(self, src: np.ndarray, tgt: np.ndarray, keys: np.ndarray) -> "ConditionalMedian":
        """``src``/``tgt`` ``(P, H, W)`` planes of independent realizations; ``keys`` ``(P,)`` hashable labels."""
        for key in np.unique(keys, axis=0):
            sel = np.all(keys == key, axis=-1) if keys.ndim > 1 else keys == key
            x = src[sel].ravel()
            y = tgt[sel].ravel()
            if x.size == 0:
                continue
            qs = np.unique(np.quantile(x, np.linspace(0, 1, self.n_bins + 1)))
            if qs.size < 2:
                self.tables[self._k(key)] = (np.array([x.mean()]), np.array([np.median(y)]))
                continue
            b = np.clip(np.searchsorted(qs, x, side="right") - 1, 0, qs.size - 2)
            xc = np.array([np.median(x[b == i]) if np.any(b == i) else np.nan for i in range(qs.size - 1)])
            yc = np.array([np.median(y[b == i]) if np.any(b == i) else np.nan for i in range(qs.size - 1)])
            ok = np.isfinite(xc)
            self.tables[self._k(key)] = (xc[ok], yc[ok])
        return self

    @staticmethod
    def _k(key) -> tuple:
        return tuple(np.atleast_1d(key).tolist())

    def predict(self, src: np.ndarray, keys: np.ndarray) -> np.ndarray:
        out = np.zeros_like(src, dtype=np.float32)
        for q in range(src.shape[0]):
            tab = self.tables.get(self._k(keys[q]))
            if tab is None:
                continue
            xc, yc = tab
            out[q] = np.interp(src[q], xc, yc) if xc.size > 1 else yc[0]
        return out
