"""Milky Way subhalo populations (Sec. II B of Vattis, Toomey & Koushiappas).

:func:`draw_population` is a pure function of (parameters, numpy Generator): it does no I/O and
touches no global random state. One call draws one map's population:

* **Number and masses**, eq. (9): dN/dM = A0 M^slope (slope -1.9), A0 fixed by requiring
  ``n_norm`` = 150 subhalos in [1e8, 1e10] Msun (Hütten et al. 2016). The number in the drawn
  range [m_min, m_max] = [1e7, 1e10] Msun is Poisson with mean
  150 (m_min^(1+s) - m_max^(1+s)) / (1e8^(1+s) - 1e10^(1+s)) = 1208.2; masses by inverse CDF.
* **Concentration and profile**: c200 from eq. (14) (M in h^-1 Msun) and (rho_s, r_s) from
  eq. (13), both with h = ``params.h`` (default 0.7, see :mod:`darkml.physics.cosmology`).
* **Galactocentric radius**: pdf ∝ r^2 rho_E(r) on [r_min, r_max] = [0, 300] kpc by default, with
  the Einasto shape of eq. (10), rho_E ∝ exp{-(2/γ)[(r/r_E)^γ - 1]}, r_E = 199 kpc, γ = 0.678.
  Substituting s = (2/γ)(r/r_E)^γ turns the CDF into the regularised lower incomplete gamma
  function P(3/γ, s), so radii are drawn exactly with scipy's ``gammaincinv``. 300 kpc is our
  choice of outer edge (about the Milky Way's virial radius; the paper does not state one).
  Directions about the Galactic centre are isotropic.
* **Velocities**: the Standard Halo Model of eq. (11) in the Galactic rest frame, an isotropic
  Maxwellian truncated at |v| = v_esc: speed pdf ∝ v^2 exp(-v^2/v0^2) for v < v_esc (v0 = 220,
  v_esc = 550 km/s), i.e. WITH the v^2 phase-space factor; the CDF is P(3/2, v^2/v0^2), drawn
  exactly by ``gammaincinv``. Directions isotropic.
* **Sun**: at galactocentric radius ``r_sun_kpc`` = 8.3 kpc in the Galactic plane (z = 0), the
  value of the public code the paper modified, moving with (U, V, W) = (11, 232, 7) km/s
  (towards the Galactic centre, along rotation, towards the north Galactic pole; eq. 12 and
  Schönrich, Binney & Dehnen 2010 plus a 220 km/s circular speed). Heliocentric velocities are
  v - v_sun (the Galilean transformation of eq. 12).

Frames: heliocentric Galactic Cartesian axes x towards (l, b) = (0, 0), y towards (90°, 0),
z towards b = 90°. The Galactic centre is at (r_sun, 0, 0).

Output catalogue (dict of float64 arrays, one entry per subhalo):
``m200`` [Msun], ``c200``, ``r_s`` [kpc], ``rho_s`` [Msun/kpc^3], ``l``, ``b`` [deg] (l in [0,
360)), ``distance`` [kpc, heliocentric], ``v_l``, ``v_b``, ``v_r`` [km/s]: the heliocentric
velocity along the subhalo's own e_l, e_b and line of sight. This is everything
:func:`darkml.astrometry.sky.signal_map` needs to recompute a map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from ..physics.cosmology import H_DEFAULT, concentration_c200
from ..physics.nfw import nfw_params

__all__ = [
    "PopulationParams",
    "draw_population",
    "expected_count",
    "mass_normalisation",
    "sample_masses",
    "sample_radii",
    "sample_speeds",
    "isotropic_directions",
    "galactocentric_to_catalogue",
    "R_SUN_KPC",
    "CATALOGUE_COLUMNS",
]

#: Sun's galactocentric radius [kpc] (public halometry code the paper modified)
R_SUN_KPC = 8.3
CATALOGUE_COLUMNS = ("m200", "c200", "r_s", "rho_s", "l", "b", "distance", "v_l", "v_b", "v_r")


@dataclass(frozen=True)
class PopulationParams:
    """Defaults of the paper; any object with these attributes (e.g. the study's PopulationCfg) works."""

    m_min: float = 1e7
    m_max: float = 1e10
    slope: float = -1.9
    n_norm: float = 150.0
    m_norm_min: float = 1e8
    m_norm_max: float = 1e10
    r_einasto_kpc: float = 199.0
    gamma_einasto: float = 0.678
    r_min_kpc: float = 0.0
    r_max_kpc: float = 300.0
    v0_kms: float = 220.0
    vesc_kms: float = 550.0
    v_sun_kms: tuple[float, float, float] = (11.0, 232.0, 7.0)
    h: float = H_DEFAULT
    r_sun_kpc: float = R_SUN_KPC


def _get(params: Any, name: str) -> Any:
    default = getattr(PopulationParams, name)
    return getattr(params, name, default) if params is not None else default


def _check(params: Any) -> dict[str, Any]:
    p = {name: _get(params, name) for name in PopulationParams.__dataclass_fields__}
    for name in ("m_min", "m_max", "m_norm_min", "m_norm_max", "n_norm", "r_einasto_kpc", "gamma_einasto",
                 "r_max_kpc", "v0_kms", "vesc_kms", "h", "r_sun_kpc"):
        if not p[name] > 0:
            raise ValueError(f"population.{name} = {p[name]}: must be > 0")
    if not p["m_min"] < p["m_max"]:
        raise ValueError(f"population.m_min = {p['m_min']:g} must be < population.m_max = {p['m_max']:g} (mass range inverted)")
    if not p["m_norm_min"] < p["m_norm_max"]:
        raise ValueError(f"population.m_norm_min = {p['m_norm_min']:g} must be < population.m_norm_max = {p['m_norm_max']:g}")
    if p["slope"] == -1.0:
        raise ValueError("population.slope = -1: must differ from -1 (logarithmic mass function not supported)")
    if not 0 <= p["r_min_kpc"] < p["r_max_kpc"]:
        raise ValueError(f"population.r_min_kpc = {p['r_min_kpc']} must be in [0, r_max_kpc = {p['r_max_kpc']})")
    if len(p["v_sun_kms"]) != 3:
        raise ValueError(f"population.v_sun_kms = {p['v_sun_kms']}: must have 3 components (U, V, W)")
    return p


def mass_normalisation(n_norm: float, m_norm_min: float, m_norm_max: float, slope: float) -> float:
    """A0 of eq. (9) [Msun^(-1-slope)] such that ∫ A0 M^slope dM over [m_norm_min, m_norm_max] = n_norm."""
    a = slope + 1.0
    return n_norm * a / (m_norm_max**a - m_norm_min**a)


def expected_count(params: Any = None) -> float:
    """Mean number of subhalos per map in [m_min, m_max] (1208.2 for the paper's values)."""
    p = _check(params)
    a = p["slope"] + 1.0
    a0 = mass_normalisation(p["n_norm"], p["m_norm_min"], p["m_norm_max"], p["slope"])
    return a0 * (p["m_max"] ** a - p["m_min"] ** a) / a


def sample_masses(n: int, m_min: float, m_max: float, slope: float, rng: np.random.Generator) -> np.ndarray:
    """n masses [Msun] from dN/dM ∝ M^slope on [m_min, m_max] by inverse CDF."""
    a = slope + 1.0
    u = rng.random(n)
    lo, hi = m_min**a, m_max**a
    return (lo + u * (hi - lo)) ** (1.0 / a)


def sample_radii(n: int, r_min: float, r_max: float, r_e: float, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """n galactocentric radii [kpc] from pdf ∝ r^2 exp{-(2/γ)[(r/r_E)^γ - 1]} on [r_min, r_max]."""
    k = 3.0 / gamma
    s = lambda r: (2.0 / gamma) * (r / r_e) ** gamma  # noqa: E731
    p_lo, p_hi = special.gammainc(k, s(r_min)), special.gammainc(k, s(r_max))
    u = rng.random(n)
    sv = special.gammaincinv(k, p_lo + u * (p_hi - p_lo))
    r = r_e * (gamma * sv / 2.0) ** (1.0 / gamma)
    return np.clip(r, r_min, r_max)


def sample_speeds(n: int, v0: float, vesc: float, rng: np.random.Generator) -> np.ndarray:
    """n speeds [km/s] from pdf ∝ v^2 exp(-v^2/v0^2) on [0, vesc] (truncated Maxwellian, eq. 11)."""
    p_hi = special.gammainc(1.5, (vesc / v0) ** 2)
    u = rng.random(n)
    s = special.gammaincinv(1.5, u * p_hi)
    return np.minimum(v0 * np.sqrt(s), vesc)


def isotropic_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    """n unit vectors (n, 3) uniform on the sphere."""
    z = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2.0 * math.pi, n)
    rho = np.sqrt(1.0 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=-1)


def galactocentric_to_catalogue(pos_gc_kpc: np.ndarray, vel_gc_kms: np.ndarray, r_sun_kpc: float,
                                v_sun_kms) -> dict[str, np.ndarray]:
    """Heliocentric (l [deg], b [deg], distance [kpc], v_l, v_b, v_r [km/s]) of galactocentric positions/velocities.

    Axes as in the module docstring; the Sun sits at (-r_sun, 0, 0) from the Galactic centre and
    moves with ``v_sun_kms`` = (U, V, W).
    """
    pos = np.asarray(pos_gc_kpc, dtype=np.float64) + np.array([r_sun_kpc, 0.0, 0.0])
    vel = np.asarray(vel_gc_kms, dtype=np.float64) - np.asarray(v_sun_kms, dtype=np.float64)
    d = np.linalg.norm(pos, axis=-1)
    lon = np.arctan2(pos[..., 1], pos[..., 0])
    lat = np.arcsin(np.clip(pos[..., 2] / d, -1.0, 1.0))
    cl, sl, cb, sb = np.cos(lon), np.sin(lon), np.cos(lat), np.sin(lat)
    e_l = np.stack([-sl, cl, np.zeros_like(cl)], axis=-1)
    e_b = np.stack([-sb * cl, -sb * sl, cb], axis=-1)
    e_r = np.stack([cb * cl, cb * sl, sb], axis=-1)
    return {
        "l": np.degrees(lon) % 360.0,
        "b": np.degrees(lat),
        "distance": d,
        "v_l": (vel * e_l).sum(-1),
        "v_b": (vel * e_b).sum(-1),
        "v_r": (vel * e_r).sum(-1),
    }


def draw_population(params: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One map's subhalo catalogue (columns :data:`CATALOGUE_COLUMNS`) drawn from ``rng``.

    ``params``: the study's ``PopulationCfg`` or :class:`PopulationParams` (missing attributes
    take the defaults of :class:`PopulationParams`). Draw order (fixed, for reproducibility): N,
    masses, radii, position directions, speeds, velocity directions.
    """
    p = _check(params)
    n = int(rng.poisson(expected_count(params)))
    m200 = sample_masses(n, p["m_min"], p["m_max"], p["slope"], rng)
    r = sample_radii(n, p["r_min_kpc"], p["r_max_kpc"], p["r_einasto_kpc"], p["gamma_einasto"], rng)
    pos = r[:, None] * isotropic_directions(n, rng)
    speed = sample_speeds(n, p["v0_kms"], p["vesc_kms"], rng)
    vel = speed[:, None] * isotropic_directions(n, rng)
    c200 = concentration_c200(m200, h=p["h"])
    rho_s, r_s, _ = nfw_params(m200, c200, h=p["h"])
    helio = galactocentric_to_catalogue(pos, vel, p["r_sun_kpc"], p["v_sun_kms"])
    cat = {"m200": m200, "c200": np.asarray(c200), "r_s": np.asarray(r_s), "rho_s": np.asarray(rho_s), **helio}
    return {name: np.asarray(cat[name], dtype=np.float64).reshape(n) for name in CATALOGUE_COLUMNS}
