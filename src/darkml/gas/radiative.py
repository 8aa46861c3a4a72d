"""CO radiative transfer, LTE column densities and the conversions to H2 column density.

Units: temperatures in K, velocities in km/s, optical depths dimensionless, column densities
in cm^-2, integrated intensities W in K km/s. Every function takes numpy arrays or torch
tensors (computations stay on the tensor's device) and broadcasts.

Brightness temperature of a uniform slab at excitation temperature ``Tex`` in front of the
cosmic background (Wilson, Rohlfs & Hüttemeister, *Tools of Radio Astronomy*, 2009, ch. 15):

    T_B = T0 [J(Tex) - J(Tbg)] (1 - exp(-tau)),   J(T) = 1 / (exp(T0/T) - 1),   T0 = h nu / k

with ``tau_12 = R tau_13`` for the same gas, ``R = 12C/13C``. The 13CO LTE column density
used for the survey (facts file; Wilson et al. 2009, 13CO J=1-0 with ``T0 = 5.3 K`` and
``J(Tbg) = 0.16``) is

    tau_13(v) = -ln(1 - T_B / (5.3 [J(Tex) - 0.16]))
    N(13CO)   = 3.0e14 Tex  \int tau_13 dv / (1 - exp(-5.3/Tex))          [cm^-2, v in km/s]
    N(H2)     = 7.5e5 N(13CO)                                             (H2/12CO = 1e4 x 12C/13C = 75)

and for 12CO ``N(H2) = X_CO W(12CO) / eta_mb`` with the MOPRA extended-beam efficiency
``eta_mb = 0.55`` (Ladd et al. 2005) and ``X_CO = 2e20 cm^-2 (K km/s)^-1`` (Bolatto, Wolfire
& Leroy 2013) unless a per-ring value is given.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..physics import constants as _const

__all__ = [
    "T_CMB_K",
    "NU_12CO_GHZ",
    "NU_13CO_GHZ",
    "T0_12CO_K",
    "T0_13CO_K",
    "LTE_T0_K",
    "LTE_J_BG",
    "LTE_COEFF",
    "H2_PER_13CO",
    "XCO_DEFAULT",
    "ETA_MB",
    "line_t0",
    "planck_j",
    "brightness_temperature",
    "saturation_temperature",
    "isotope_ratio",
    "tau_from_brightness",
    "lte_column_13co",
    "h2_from_12co",
    "gaussian_line_integral",
]

#: CMB temperature [K] (Fixsen 2009), from darkml.physics.constants.
T_CMB_K = _const.T_CMB
#: rest frequencies of the J=1-0 lines [GHz] (CDMS), from darkml.physics.constants.
NU_12CO_GHZ = _const.NU_12CO_10_GHZ
NU_13CO_GHZ = _const.NU_13CO_10_GHZ
#: constants of the textbook 13CO LTE conversion (facts file; Wilson et al. 2009).
LTE_T0_K = 5.3
LTE_J_BG = 0.16
LTE_COEFF = 3.0e14
#: H2 per 13CO molecule (1e4 H2 per 12CO times 12C/13C = 75), Karwin's conversion.
H2_PER_13CO = 7.5e5
#: Galactic CO-to-H2 factor [cm^-2 (K km/s)^-1] (Bolatto, Wolfire & Leroy 2013, ARA&A 51, 207).
XCO_DEFAULT = 2.0e20
#: MOPRA extended-beam efficiency at 115 GHz (Ladd et al. 2005, PASA 22, 62).
ETA_MB = 0.55


def _xp(x: Any):
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return torch
    except ImportError:  # pragma: no cover
        pass
    return np


def line_t0(nu_ghz: float) -> float:
    """T0 = h nu / k [K] of a line at ``nu_ghz`` [GHz]."""
    return float(_const.H_OVER_K * nu_ghz * 1e9)


T0_12CO_K = line_t0(NU_12CO_GHZ)
T0_13CO_K = line_t0(NU_13CO_GHZ)


def planck_j(t_k, t0_k):
    """Dimensionless J(T) = 1/(exp(T0/T) - 1) for temperature ``t_k`` [K] and ``t0_k`` = h nu/k [K]."""
    xp = _xp(t_k)
    return 1.0 / xp.expm1(t0_k / t_k)


def saturation_temperature(tex_k, t0_k, tbg_k: float = T_CMB_K):
    """Optically thick limit T0 [J(Tex) - J(Tbg)] [K] of the brightness temperature."""
    return t0_k * (planck_j(tex_k, t0_k) - planck_j(tbg_k + 0 * tex_k, t0_k))


def brightness_temperature(tau, tex_k, t0_k, tbg_k: float = T_CMB_K):
    """Brightness temperature [K] of a slab with optical depth ``tau`` at excitation ``tex_k`` [K]."""
    xp = _xp(tau)
    return saturation_temperature(tex_k, t0_k, tbg_k) * (-xp.expm1(-tau))


def isotope_ratio(r_gc_kpc):
    """12C/13C at Galactocentric radius ``r_gc_kpc`` [kpc]: 6.4 R + 25.9 (Milam et al. 2005, ApJ 634, 1126)."""
    return 6.4 * r_gc_kpc + 25.9


def tau_from_brightness(t_b, tex_k: float = 10.0, t0_k: float = LTE_T0_K, j_bg: float = LTE_J_BG, max_ratio: float = 0.99):
    """13CO optical depth from brightness temperature ``t_b`` [K] under LTE (inverse of the slab formula).

    ``T_B / (T0 [J(Tex) - J(Tbg)])`` is clipped to ``max_ratio`` so noisy voxels brighter than
    the saturation temperature give a large but finite depth; negative (noise) voxels give
    small negative depths, which keeps integrated noise unbiased.
    """
    xp = _xp(t_b)
    sat = t0_k * (planck_j(tex_k + 0 * t_b, t0_k) - j_bg)
    ratio = t_b / sat
    ratio = xp.clip(ratio, -max_ratio, max_ratio) if xp is np else ratio.clamp(-max_ratio, max_ratio)
    return -xp.log1p(-ratio)


def lte_column_13co(tau_integral_kms, tex_k=10.0, t0_k: float = LTE_T0_K, coeff: float = LTE_COEFF):
    """N(13CO) [cm^-2] from the velocity-integrated optical depth [km/s] (LTE, Wilson et al. 2009)."""
    if np.isscalar(tex_k):
        tex = float(tex_k)
        denom = -math.expm1(-t0_k / tex)
    else:
        tex = tex_k
        denom = -_xp(tex).expm1(-t0_k / tex)
    return coeff * tex * tau_integral_kms / denom


def h2_from_12co(w_kkms, xco=XCO_DEFAULT, eta_mb: float = ETA_MB):
    """N(H2) [cm^-2] from 12CO integrated intensity ``w_kkms`` [K km/s] (antenna scale): X_CO W / eta_mb."""
    return xco * w_kkms / eta_mb


def gaussian_line_integral(x, n_u: int = 801, u_max: float = 12.0):
    """F(x) = (1/sqrt(2 pi)) \\int (1 - exp(-x e^{-u^2/2})) du: the curve of growth of a Gaussian line.

    The integrated brightness of a Gaussian-profile line of peak depth ``tau_p`` and dispersion
    ``sigma_v`` is ``T_sat sigma_v sqrt(2 pi) F(tau_p)``. F(x) -> x for x -> 0 and grows like
    2 sqrt(2 ln x) / sqrt(2 pi) for x -> infinity (saturated core).
    """
    xp = _xp(x)
    if xp is np:
        u = np.linspace(-u_max, u_max, n_u)
        xx = np.asarray(x, dtype=float)[..., None]
        vals = -np.expm1(-xx * np.exp(-0.5 * u**2))
        return np.trapezoid(vals, u, axis=-1) / math.sqrt(2 * math.pi)
    import torch

    u = torch.linspace(-u_max, u_max, n_u, dtype=x.dtype, device=x.device)
    vals = -torch.expm1(-x[..., None] * torch.exp(-0.5 * u**2))
    return torch.trapezoid(vals, u, dim=-1) / math.sqrt(2 * math.pi)
