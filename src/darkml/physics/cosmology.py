"""Background cosmology needed by halo models: critical density and the c200(M200) relation.

Choices (see also ``docs/astrometry.md``):

* ``H_DEFAULT = 0.7``: the dimensionless Hubble parameter h = H0 / (100 km/s/Mpc) used by
  default. The astrometric-lensing paper (Vattis, Toomey & Koushiappas) does not state h; the
  public code it says it modified (Mishra-Sharma, Van Tilburg & Weiner 2020) uses h = 0.7 (a
  later version uses the Planck 2018 value 0.6732, which changes the maps by 1-4 %). Every
  function takes ``h`` explicitly so either can be used.
* Critical density ``rho_c = 3 H0^2 / (8 pi G)`` with G from :mod:`darkml.physics.constants`
  (astropy, CODATA 2018): 277.537 h^2 Msun/kpc^3.
* Concentration: eq. (14) of the paper, the z = 0 fit of Sánchez-Conde & Prada 2014
  (MNRAS 442, 2271, eq. 1) for field halos, ``c200 = sum_i c_i [ln(M200 / (h^-1 Msun))]^i`` with
  M200 in h^-1 Msun, i.e. the polynomial is evaluated at ln(M200[Msun] * h).
"""

from __future__ import annotations

import math

import numpy as np

from . import constants as k

#: default h = H0 / (100 km/s/Mpc): the value of the public halometry code the paper modified
H_DEFAULT = 0.7

#: coefficients c_0 … c_5 of eq. (14) (Sánchez-Conde & Prada 2014, z = 0)
C200_COEFFS = (37.5153, -1.5093, 1.636e-2, 3.66e-4, -2.89237e-5, 5.32e-7)

__all__ = ["H_DEFAULT", "C200_COEFFS", "critical_density", "concentration_c200"]


def critical_density(h: float = H_DEFAULT) -> float:
    """Critical density of the Universe today, 3 H0^2 / (8 pi G) [Msun/kpc^3], with H0 = 100 h km/s/Mpc."""
    if not h > 0:
        raise ValueError(f"h = {h}: must be > 0")
    h0 = h * k.H100_PER_S  # 1/s
    return 3.0 * h0 * h0 / (8.0 * math.pi * k.G_KPC3_MSUN_S2)


def concentration_c200(m200_msun, h: float = H_DEFAULT):
    """Concentration c200 of a field halo of mass ``m200_msun`` [Msun] at z = 0, eq. (14).

    The fit takes the mass in h^-1 Msun, so the polynomial variable is ln(M200 * h). Accepts
    scalars, numpy arrays or torch tensors (returns the same kind).
    """
    if not h > 0:
        raise ValueError(f"h = {h}: must be > 0")
    try:
        import torch

        if isinstance(m200_msun, torch.Tensor):
            lnm = torch.log(m200_msun * h)
            out = torch.zeros_like(lnm)
            for c in reversed(C200_COEFFS):
                out = out * lnm + c
            return out
    except ImportError:  # pragma: no cover
        pass
    lnm = np.log(np.asarray(m200_msun, dtype=np.float64) * h)
    out = np.zeros_like(lnm)
    for c in reversed(C200_COEFFS):
        out = out * lnm + c
    return out
