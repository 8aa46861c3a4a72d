"""Mock stellar phase-space catalogues whose accelerations and densities are known exactly.

Units throughout: positions kpc, velocities km/s, potentials (km/s)^2, accelerations
(km/s)^2/kpc, mass densities Msun/kpc^3, phase-space densities per kpc^3 per (km/s)^3.

Two models:

* :class:`Plummer` — a Plummer sphere with its isotropic ergodic distribution function
  ``f(E) ∝ (-E)^{7/2}`` (closed forms for potential, acceleration, density and f), for tests
  and fast end-to-end runs.
* :class:`MilkyWay2014` + :class:`DiscDF` — the axisymmetric bulge + Miyamoto–Nagai disc +
  NFW halo of galpy's ``MWPotential2014`` (re-implemented in torch, checked against galpy in
  the tests) traced by a rotating disc population with a two-integral distribution function
  ``f(E, Lz) = Σ_i w_i exp(-R_c(Lz)/R_d,i − (E − E_c(Lz))/σ_i²)`` (Shu-type; one term per
  thin/thick component). Any ``f(E, Lz)`` is an exact steady state of the collisionless
  Boltzmann equation (Jeans theorem), so the mock carries *no* equilibrium bias: whatever the
  pipeline gets wrong is the method's. The price is ``σ_R = σ_z`` within each component.

Sampling is exact rejection sampling with vectorised proposals (≈10^5–10^6 stars/s): the
v_R and v_z of a component are exactly Gaussian, ν_i(R, z) = Λ_i(R) exp(−(Φ(R,z) − Φ(R,0))/σ_i²)
factorises with a 1-D table Λ_i(R), and v_φ | R is drawn by rejection under a tabulated bound.

:func:`smear` adds Gaia-like measurement errors (parallax, proper motion, radial velocity) in
the observer's frame (the paper's "smeared" dataset).
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import torch

from ..physics import constants as const
from ..physics import nfw

log = logging.getLogger(__name__)

__all__ = [
    "OBSERVER_KPC",
    "SUPPORT_RADIUS_KPC",
    "SUN_PECULIAR_KMS",
    "Plummer",
    "MilkyWay2014",
    "smear",
    "uniform_ball",
    "to_cylindrical",
    "ball_integral",
]

#: the paper's observer (the "Sun") in the simulation frame, kpc
OBSERVER_KPC = (8.122, 0.0, 0.0208)
#: the paper's observing radius around the observer, kpc
SUPPORT_RADIUS_KPC = 3.5
#: the Sun's motion relative to the local circular velocity (Schönrich, Binney & Dehnen 2010), km/s,
#: in the (x, y, z) frame with the observer on the +x axis and rotation towards +y
SUN_PECULIAR_KMS = (-11.1, 12.24, 7.25)


def _G() -> float:
    return const.G_KPC_KMS2_MSUN


def _t(a, like: torch.Tensor | None = None, dtype=torch.float64) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    dev = like.device if like is not None else None
    return torch.as_tensor(np.asarray(a), dtype=like.dtype if like is not None else dtype, device=dev)


def to_cylindrical(x: torch.Tensor, v: torch.Tensor | None = None):
    """(x, y, z) kpc [and velocities km/s] -> R, phi, z [and v_R, v_phi, v_z]."""
    R = torch.sqrt(x[..., 0] ** 2 + x[..., 1] ** 2)
    phi = torch.atan2(x[..., 1], x[..., 0])
    if v is None:
        return R, phi, x[..., 2]
    c, s = x[..., 0] / R, x[..., 1] / R
    vR = v[..., 0] * c + v[..., 1] * s
    vphi = -v[..., 0] * s + v[..., 1] * c
    return R, phi, x[..., 2], vR, vphi, v[..., 2]


def uniform_ball(n: int, center: Sequence[float], radius: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniform in a ball (kpc)."""
    d = rng.standard_normal((n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = radius * rng.random(n) ** (1.0 / 3.0)
    return np.asarray(center, dtype=float) + d * r[:, None]


def ball_integral(fn, center: Sequence[float], radius: float, n_r: int = 40, n_mu: int = 96, n_phi: int = 48,
                  log: bool = False) -> float:
    """∫ fn(x) d^3x over a ball [kpc^3 × fn] by Gauss–Legendre quadrature in spherical coordinates about
    its centre (``fn`` maps (M, 3) numpy positions to values, or to log-values with ``log=True``)."""
    t, wt = np.polynomial.legendre.leggauss(n_r)
    r = 0.5 * radius * (t + 1)
    wr = 0.5 * radius * wt * r**2
    mu, wmu = np.polynomial.legendre.leggauss(n_mu)
    ph = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    RR, MU, PH = np.meshgrid(r, mu, ph, indexing="ij")
    st = np.sqrt(1 - MU**2)
    pts = np.stack([center[0] + RR * st * np.cos(PH), center[1] + RR * st * np.sin(PH), center[2] + RR * MU], -1).reshape(-1, 3)
    vals = np.asarray(fn(pts), dtype=float).reshape(RR.shape)
    w = wr[:, None, None] * wmu[None, :, None] * (2 * np.pi / n_phi)
    if not log:
        return float((w * vals).sum())
    top = vals.max()
    return float((w * np.exp(vals - top)).sum()) * math.exp(top)


# ---------------------------------------------------------------------------------------------
# Plummer sphere
# ---------------------------------------------------------------------------------------------
class Plummer:
    """Plummer sphere (mass ``mass_msun``, scale ``scale_kpc``) with its isotropic DF.

    ``log_df`` is normalised to one over phase space (a probability density for one star), so
    ``∫ f d^3v = ρ(x)/M`` — checked by quadrature in the tests.
    """

    def __init__(self, mass_msun: float = 1.0e11, scale_kpc: float = 3.0, center: Sequence[float] = (0.0, 0.0, 0.0)):
        if mass_msun <= 0 or scale_kpc <= 0:
            raise ValueError(f"Plummer mass = {mass_msun}, scale = {scale_kpc}: both must be > 0")
        self.M = float(mass_msun)
        self.b = float(scale_kpc)
        self.center = tuple(float(c) for c in center)

    def _r2(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - _t(self.center, x)) ** 2).sum(-1)

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """Φ(x) in (km/s)^2 for positions x (..., 3) in kpc."""
        return -_G() * self.M / torch.sqrt(self._r2(x) + self.b**2)

    def acceleration(self, x: torch.Tensor) -> torch.Tensor:
        """a = −∇Φ in (km/s)^2/kpc for positions x (..., 3) in kpc."""
        d = x - _t(self.center, x)
        return -_G() * self.M * d / (self._r2(x) + self.b**2)[..., None] ** 1.5

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Mass density in Msun/kpc^3."""
        return 3.0 * self.M / (4.0 * math.pi * self.b**3) * (1.0 + self._r2(x) / self.b**2) ** (-2.5)

    def dispersion2(self, x: torch.Tensor) -> torch.Tensor:
        """One-dimensional velocity dispersion squared (km/s)^2: σ² = −Φ/6 for the isotropic Plummer DF."""
        return -self.potential(x) / 6.0

    def log_df(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """log f(x, v), f normalised to 1 over phase space [kpc^-3 (km/s)^-3]; −inf where unbound."""
        E = 0.5 * (v**2).sum(-1) + self.potential(x)
        norm = math.log(24.0 * math.sqrt(2.0) / (7.0 * math.pi**3)) + 2 * math.log(self.b) - 5 * math.log(_G() * self.M)
        negE = torch.clamp(-E, min=1e-300)
        out = norm + 3.5 * torch.log(negE)
        return torch.where(E < 0, out, torch.full_like(out, -math.inf))

    def sample(self, n: int, rng: np.random.Generator, within: tuple[Sequence[float], float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` stars (x kpc, v km/s); ``within=(center, radius)`` keeps only stars in that ball."""
        xs, vs, have = [], [], 0
        while have < n:
            m = max(2 * (n - have), 1024)
            u = rng.random(m) * (1 - 1e-12) + 1e-12
            r = self.b / np.sqrt(u ** (-2.0 / 3.0) - 1.0)
            d = rng.standard_normal((m, 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            x = np.asarray(self.center) + d * r[:, None]
            if within is not None:
                keep = np.linalg.norm(x - np.asarray(within[0], dtype=float), axis=1) <= within[1]
                x, r = x[keep], r[keep]
            k = len(r)
            # q = v / v_esc has density ∝ q^2 (1 - q^2)^{7/2} on [0, 1]; its maximum is < 0.1
            q = np.empty(k)
            todo = np.arange(k)
            while todo.size:
                qq = rng.random(todo.size)
                yy = 0.1 * rng.random(todo.size)
                ok = yy < qq**2 * (1 - qq**2) ** 3.5
                q[todo[ok]] = qq[ok]
                todo = todo[~ok]
            vesc = np.sqrt(2 * _G() * self.M / np.sqrt(r**2 + self.b**2))
            dv = rng.standard_normal((k, 3))
            dv /= np.linalg.norm(dv, axis=1, keepdims=True)
            xs.append(x)
            vs.append(dv * (q * vesc)[:, None])
            have += k
        return np.concatenate(xs)[:n], np.concatenate(vs)[:n]


# ---------------------------------------------------------------------------------------------
# MWPotential2014 in torch
# ---------------------------------------------------------------------------------------------
class MilkyWay2014:
    """galpy's ``MWPotential2014`` (Bovy 2015) in torch, float64, on any device.

    Bulge: ρ ∝ r^-α exp(−(r/r_c)²), α = 1.8, r_c = 1.9 kpc; disc: Miyamoto–Nagai a = 3 kpc,
    b = 0.28 kpc; halo: NFW with scale 16 kpc. Amplitudes follow galpy's ``normalize``: the
    three components give 5%, 60% and 35% of the radial force of a v_c = 220 km/s circular
    orbit at R = 8 kpc. Only these structural numbers are taken from the paper by Bovy; the
    formulas are ours and are compared with galpy in the tests.
    """

    def __init__(self, ro_kpc: float = 8.0, vo_kms: float = 220.0, fractions=(0.05, 0.6, 0.35),
                 bulge_alpha: float = 1.8, bulge_rc_kpc: float = 1.9, disc_a_kpc: float = 3.0,
                 disc_b_kpc: float = 0.28, halo_a_kpc: float = 16.0):
        self.alpha = float(bulge_alpha)
        self.rc = float(bulge_rc_kpc)
        self.da = float(disc_a_kpc)
        self.db = float(disc_b_kpc)
        self.ha = float(halo_a_kpc)
        g = _G()
        target = vo_kms**2 / ro_kpc  # total radial force at (ro, 0)
        r = torch.tensor([ro_kpc], dtype=torch.float64)
        # unit-amplitude radial forces at (ro, 0): bulge (ρ0 = 1), disc (M = 1), halo (ρ0 = 1)
        fb = g * self._bulge_mass(r, 1.0).item() / ro_kpc**2
        fd = g * ro_kpc / (ro_kpc**2 + (self.da + self.db) ** 2) ** 1.5
        fh = g * self._nfw_mass(r, 1.0).item() / ro_kpc**2
        self.rho_b = fractions[0] * target / fb
        self.M_d = fractions[1] * target / fd
        self.rho_h = fractions[2] * target / fh

    # -- components -----------------------------------------------------------------------
    def _bulge_mass(self, r: torch.Tensor, rho0: float) -> torch.Tensor:
        s = (3.0 - self.alpha) / 2.0
        return (2 * math.pi * rho0 * self.rc ** (3 - self.alpha) * math.gamma(s)
                * torch.special.gammainc(torch.tensor(s, dtype=r.dtype, device=r.device), (r / self.rc) ** 2))

    def _nfw_mass(self, r: torch.Tensor, rho0: float) -> torch.Tensor:
        return nfw.enclosed_mass_3d(r, rho0, self.ha)

    def _bulge_potential(self, r: torch.Tensor) -> torch.Tensor:
        s2 = (2.0 - self.alpha) / 2.0
        outer = (2 * math.pi * self.rho_b * self.rc ** (2 - self.alpha) * math.gamma(s2)
                 * torch.special.gammaincc(torch.tensor(s2, dtype=r.dtype, device=r.device), (r / self.rc) ** 2))
        return -_G() * (self._bulge_mass(r, self.rho_b) / r + outer)

    # -- public API (cylindrical) ---------------------------------------------------------
    def potential_Rz(self, R: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Φ(R, z) in (km/s)^2 (R, z in kpc)."""
        g = _G()
        r = torch.sqrt(R**2 + z**2)
        zeta = torch.sqrt(z**2 + self.db**2)
        disc = -g * self.M_d / torch.sqrt(R**2 + (self.da + zeta) ** 2)
        halo = -4 * math.pi * g * self.rho_h * self.ha**3 * torch.log1p(r / self.ha) / r
        return self._bulge_potential(r) + disc + halo

    def acceleration_Rz(self, R: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_R, a_z) = −∇Φ in (km/s)^2/kpc."""
        g = _G()
        r = torch.sqrt(R**2 + z**2)
        zeta = torch.sqrt(z**2 + self.db**2)
        D3 = (R**2 + (self.da + zeta) ** 2) ** 1.5
        Msph = self._bulge_mass(r, self.rho_b) + self._nfw_mass(r, self.rho_h)
        sph = -g * Msph / r**3
        aR = sph * R - g * self.M_d * R / D3
        az = sph * z - g * self.M_d * z * (self.da + zeta) / (zeta * D3)
        return aR, az

    #: the components: the bulge and the Miyamoto-Nagai disc are baryons, the NFW halo is dark matter
    PARTS = ("bulge", "disc", "halo")
    BARYONS = ("bulge", "disc")

    def density_Rz(self, R: torch.Tensor, z: torch.Tensor, parts: tuple[str, ...] = PARTS) -> torch.Tensor:
        """Mass density in Msun/kpc^3 of the components ``parts`` (default: all, the total)."""
        bad = set(parts) - set(self.PARTS)
        if bad:
            raise ValueError(f"parts = {parts}: unknown component(s) {sorted(bad)} (allowed: {self.PARTS})")
        r = torch.sqrt(R**2 + z**2)
        out = torch.zeros_like(r)
        if "bulge" in parts:
            out = out + self.rho_b * r ** (-self.alpha) * torch.exp(-((r / self.rc) ** 2))
        if "halo" in parts:
            out = out + nfw.nfw_density(r, self.rho_h, self.ha)
        if "disc" in parts:
            zeta = torch.sqrt(z**2 + self.db**2)
            num = self.da * R**2 + (self.da + 3 * zeta) * (self.da + zeta) ** 2
            den = (R**2 + (self.da + zeta) ** 2) ** 2.5 * zeta**3
            out = out + self.db**2 * self.M_d / (4 * math.pi) * num / den
        return out

    def circular_velocity(self, R: torch.Tensor) -> torch.Tensor:
        """v_c(R) in the midplane, km/s."""
        aR, _ = self.acceleration_Rz(R, torch.zeros_like(R))
        return torch.sqrt(torch.clamp(-aR * R, min=0.0))

    # -- public API (Cartesian) -----------------------------------------------------------
    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """Φ(x) in (km/s)^2 for positions x (..., 3) in kpc."""
        R = torch.sqrt(x[..., 0] ** 2 + x[..., 1] ** 2)
        return self.potential_Rz(R, x[..., 2])

    def acceleration(self, x: torch.Tensor) -> torch.Tensor:
        """a = −∇Φ in (km/s)^2/kpc for positions x (..., 3) in kpc."""
        R = torch.sqrt(x[..., 0] ** 2 + x[..., 1] ** 2)
        aR, az = self.acceleration_Rz(R, x[..., 2])
        return torch.stack([aR * x[..., 0] / R, aR * x[..., 1] / R, az], dim=-1)

    def density(self, x: torch.Tensor, parts: tuple[str, ...] = PARTS) -> torch.Tensor:
        """Mass density in Msun/kpc^3 at positions x (..., 3) in kpc (components ``parts``, default all)."""
        R = torch.sqrt(x[..., 0] ** 2 + x[..., 1] ** 2)
        return self.density_Rz(R, x[..., 2], parts)












# ---------------------------------------------------------------------------------------------
# Measurement errors
# ---------------------------------------------------------------------------------------------
def smear(x: np.ndarray, v: np.ndarray, observer: Sequence[float], v_observer: Sequence[float],
          parallax_mas: float, pm_masyr: float, rv_kms: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaia-like errors: Gaussian parallax [mas], proper-motion [mas/yr] and radial-velocity
    [km/s] errors applied in the observer's frame; returns (x_obs kpc, v_obs km/s, valid), where
    ``valid`` is False for non-positive observed parallaxes."""
    k = const.KMS_PER_MASYR_KPC
    obs = np.asarray(observer, dtype=float)
    vo = np.asarray(v_observer, dtype=float)
    dx = x - obs
    d = np.linalg.norm(dx, axis=1)
    nhat = dx / d[:, None]
    dv = v - vo
    vr = (dv * nhat).sum(1)
    mu = (dv - vr[:, None] * nhat) / (k * d[:, None])  # mas/yr, tangential
    plx = 1.0 / d + parallax_mas * rng.standard_normal(len(d))
    e = rng.standard_normal((len(d), 3))
    e -= (e * nhat).sum(1, keepdims=True) * nhat  # isotropic 2-D error in the tangent plane
    mu_o = mu + pm_masyr * e
    vr_o = vr + rv_kms * rng.standard_normal(len(d))
    valid = plx > 0
    d_o = np.where(valid, 1.0 / np.where(valid, plx, 1.0), np.inf)
    x_o = obs + nhat * np.where(valid, d_o, 0.0)[:, None]
    v_o = vo + vr_o[:, None] * nhat + k * np.where(valid, d_o, 0.0)[:, None] * mu_o
    return x_o, v_o, valid


def _ball_weights(R: np.ndarray, z: np.ndarray, center: Sequence[float], radius: float) -> np.ndarray:
    """Azimuthal extent Δφ(R, z) of the circle of radius R at height z inside the ball."""
    d = math.hypot(center[0], center[1])
    rho2 = radius**2 - (z - center[2]) ** 2
    out = np.zeros(np.broadcast(R, z).shape)
    ok = rho2 > 0
    rho = np.sqrt(np.where(ok, rho2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        cosang = (R**2 + d**2 - rho**2) / (2 * R * d)
    full = ok & (R + d <= rho)  # circle entirely inside (only when the ball contains the axis)
    part = ok & ~full & (np.abs(cosang) <= 1)
    inside = ok & ~full & (cosang < -1)
    out = np.where(part, 2 * np.arccos(np.clip(cosang, -1, 1)), out)
    out = np.where(full | inside, 2 * math.pi, out)
    return out
