"""Physical constants and unit conversions, SI unless the name says otherwise.

Values are taken from :mod:`astropy.constants` / :mod:`astropy.units` (CODATA 2018, IAU 2015)
at import time so the whole package uses one consistent set. Add new constants here rather
than defining them in a study module.
"""

from __future__ import annotations

import math

import astropy.constants as _c
import astropy.units as _u

#: Newton's constant [m^3 kg^-1 s^-2]
G = float(_c.G.si.value)
#: speed of light [m/s]
C = float(_c.c.si.value)
#: solar mass [kg]
M_SUN = float(_c.M_sun.si.value)
#: parsec, kiloparsec, megaparsec [m]
PC = float(_u.pc.to(_u.m))
KPC = 1e3 * PC
MPC = 1e6 * PC
#: one arcsecond [rad]
ARCSEC = math.pi / (180.0 * 3600.0)
#: microarcsecond [rad]
MUAS = 1e-6 * ARCSEC
#: electronvolt [J]
EV = float(_u.eV.to(_u.J))
#: year (Julian) [s]
YEAR = float(_u.yr.to(_u.s))
#: G in kpc (km/s)^2 / Msun
G_KPC_KMS2_MSUN = float(_c.G.to(_u.kpc * _u.km**2 / _u.s**2 / _u.M_sun).value)

__all__ = ["G", "C", "M_SUN", "PC", "KPC", "MPC", "ARCSEC", "MUAS", "EV", "YEAR", "G_KPC_KMS2_MSUN"]

# --- phase-space study (appended) -------------------------------------------------------------
#: transverse velocity [km/s] of a star at 1 kpc with a proper motion of 1 mas/yr (= 1 au/yr in km/s)
KMS_PER_MASYR_KPC = float((1 * _u.mas / _u.yr * _u.kpc).to(_u.km / _u.s, equivalencies=_u.dimensionless_angles()).value)
#: 1 km/s in kpc/Gyr
KPC_PER_GYR_PER_KMS = float((1 * _u.km / _u.s).to(_u.kpc / _u.Gyr).value)
#: an acceleration of 1 (km/s)^2/kpc in kpc/Gyr^2
KPC_PER_GYR2_PER_KMS2_PER_KPC = KPC_PER_GYR_PER_KMS**2

__all__ += ["KMS_PER_MASYR_KPC", "KPC_PER_GYR_PER_KMS", "KPC_PER_GYR2_PER_KMS2_PER_KPC"]

# --- astrometric-lensing study (appended) -----------------------------------------------------
#: milliarcsecond [rad]
MAS = 1e-3 * ARCSEC
#: kilometre [m]
KM = 1e3
#: 4 G Msun / (c^2 kpc) [dimensionless]: a point mass M [Msun] at impact parameter b [kpc]
#: deflects light by 4GM/(c^2 b) = FOUR_G_OVER_C2_KPC_PER_MSUN * M / b radians (≈ 1.914e-16)
FOUR_G_OVER_C2_KPC_PER_MSUN = float((4 * _c.G * _c.M_sun / _c.c**2 / _u.kpc).decompose().value)
#: 1 km/s expressed in kpc/yr (≈ 1.0227e-9)
KPC_PER_YR_PER_KMS = float((1 * _u.km / _u.s * _u.yr).to(_u.kpc).value)
#: 1 radian in µas (≈ 2.0626e11)
MUAS_PER_RAD = float((1 * _u.rad).to(_u.uas).value)
#: Hubble constant unit 100 km/s/Mpc expressed in 1/s (multiply by h)
H100_PER_S = float((100 * _u.km / _u.s / _u.Mpc).to(1 / _u.s).value)
#: Newton's constant in kpc^3 / (Msun s^2)
G_KPC3_MSUN_S2 = float(_c.G.to(_u.kpc**3 / _u.M_sun / _u.s**2).value)

__all__ += ["MAS", "KM", "FOUR_G_OVER_C2_KPC_PER_MSUN", "KPC_PER_YR_PER_KMS", "MUAS_PER_RAD", "H100_PER_S",
            "G_KPC3_MSUN_S2"]

# ---- radio lines (gas study) ----
#: h / k_B [K s]: h nu / k = H_OVER_K * nu [K] for nu in Hz
H_OVER_K = float((_c.h / _c.k_B).si.value)
#: CMB temperature [K] (Fixsen 2009, ApJ 707, 916)
T_CMB = 2.72548
#: rest frequencies of the CO J=1-0 lines [GHz] (CDMS catalogue)
NU_12CO_10_GHZ = 115.2712018
NU_13CO_10_GHZ = 110.2013543

__all__ += ["H_OVER_K", "T_CMB", "NU_12CO_10_GHZ", "NU_13CO_10_GHZ"]
