"""The mock galaxy's disc tracers: a rotating ``f(E, Lz)`` of one or more components, normalised
in the observed ball, with exact densities, velocity moments and samples (the truth the
study's estimators are tested against)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from .mocks import (
    OBSERVER_KPC,
    SUPPORT_RADIUS_KPC,
    MilkyWay2014,
    ball_integral,
    uniform_ball,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Two-integral disc DF
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscComponent:
    """One disc population: share of the stars in the observed ball, dispersion, scale length."""

    fraction: float = 1.0
    sigma_kms: float = 30.0
    scale_length_kpc: float = 2.5

log = logging.getLogger(__name__)


def _interp_np(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    return np.interp(x, xp, fp)


def _interp_torch(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (clamped) that matches ``np.interp``; differentiable in x."""
    xp = xp.to(x)
    fp = fp.to(x)
    xc = torch.clamp(x, xp[0], xp[-1])
    i = torch.clamp(torch.searchsorted(xp, xc.detach().contiguous(), right=True) - 1, 0, len(xp) - 2)
    x0, x1 = xp[i], xp[i + 1]
    f0, f1 = fp[i], fp[i + 1]
    return f0 + (f1 - f0) * (xc - x0) / (x1 - x0)




class _SplineFn(torch.autograd.Function):
    """A scipy CubicSpline as a torch function of R with its first derivative (for ∇ log ν)."""

    @staticmethod
    def forward(ctx, R, spline, dspline):
        ctx.save_for_backward(R)
        ctx.dspline = dspline
        return torch.as_tensor(spline(R.detach().cpu().numpy()), dtype=R.dtype, device=R.device)

    @staticmethod
    def backward(ctx, grad):
        (R,) = ctx.saved_tensors
        return grad * torch.as_tensor(ctx.dspline(R.detach().cpu().numpy()), dtype=R.dtype, device=R.device), None, None


class DiscDF:
    """A rotating disc tracer population ``f(E, Lz)`` in an axisymmetric potential.

    ``f_i(E, Lz) ∝ exp(−R_c(Lz)/R_d,i − (E − E_c(Lz))/σ_i²)``, mixed so that component i holds
    ``fraction_i`` of the stars inside the ball ``(observer, radius)``. ``E_c`` and ``R_c`` are
    the energy and radius of the circular orbit of angular momentum Lz (tabulated on a fine
    grid; for Lz ≤ 0 the innermost circular orbit is used, which makes counter-rotating stars
    vanishingly rare). The normalised ``log_df`` integrates to one over the ball.
    """

    def __init__(self, potential: MilkyWay2014, components: Sequence[DiscComponent] = (DiscComponent(),),
                 observer: Sequence[float] = OBSERVER_KPC, radius: float = SUPPORT_RADIUS_KPC):
        if not components:
            raise ValueError("DiscDF needs at least one component")
        fr = np.array([c.fraction for c in components], dtype=float)
        if np.any(fr <= 0):
            raise ValueError(f"component fractions {fr.tolist()}: each must be > 0")
        self.pot = potential
        self.components = tuple(components)
        self.fractions = fr / fr.sum()
        self.observer = tuple(float(c) for c in observer)
        self.radius = float(radius)
        self._build_circular_tables()
        self._tables: dict[tuple, dict] = {}
        self._z_cache: dict[tuple, float] = {}
        self.log_norm = np.log(self.fractions) - np.log([self._ball_integral(i, self.radius) for i in range(len(self.components))])

    # -- circular orbits ----------------------------------------------------------------
    def _build_circular_tables(self) -> None:
        R = torch.logspace(-3, math.log10(400.0), 40000, dtype=torch.float64)
        aR, _ = self.pot.acceleration_Rz(R, torch.zeros_like(R))
        vc = torch.sqrt(-aR * R)
        Lc = (R * vc).numpy()
        Ec = (self.pot.potential_Rz(R, torch.zeros_like(R)) + 0.5 * vc**2).numpy()
        if np.any(np.diff(Lc) <= 0):
            raise ValueError("circular angular momentum is not monotonic in R for this potential")
        self._Lc, self._Ec, self._Rc = Lc, Ec, R.numpy()
        self._Lc_t, self._Ec_t, self._Rc_t = (torch.from_numpy(a) for a in (Lc, Ec, R.numpy()))

    def _circ_np(self, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _interp_np(L, self._Lc, self._Rc), _interp_np(L, self._Lc, self._Ec)

    def _circ_t(self, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _interp_torch(L, self._Lc_t, self._Rc_t), _interp_torch(L, self._Lc_t, self._Ec_t)

    # -- densities ---------------------------------------------------------------------
    def _vphi_exponent_np(self, i: int, R: np.ndarray, vphi: np.ndarray) -> np.ndarray:
        """log of the v_φ factor of component i, without the Φ(R,0) term: −R_c/R_d − (v²/2 − E_c)/σ²."""
        c = self.components[i]
        Rc, Ec = self._circ_np(R * vphi)
        return -Rc / c.scale_length_kpc - (0.5 * vphi**2 - Ec) / c.sigma_kms**2

    def _radial_table(self, i: int, R_lo: float, R_hi: float) -> dict:
        """Λ_i(R) = 2πσ² ∫ exp(−R_c/R_d − (v²/2 + Φ(R,0) − E_c)/σ²) dv_φ and the v_φ bounds."""
        c = self.components[i]
        Rg = np.linspace(max(R_lo, 1e-2), R_hi, 700)
        # v_phi grid wide enough for the exp(-32) tail of this component (hot components reach further), 0.4 km/s steps
        v_lo, v_hi = min(-300.0, -12.0 * c.sigma_kms), max(700.0, 230.0 + 12.0 * c.sigma_kms)
        v = np.linspace(v_lo, v_hi, int(round((v_hi - v_lo) / 0.4)) + 1)
        phi0 = self.pot.potential_Rz(torch.from_numpy(Rg), torch.zeros(len(Rg), dtype=torch.float64)).numpy()
        ex = self._vphi_exponent_np(i, Rg[:, None], v[None, :])  # (nR, nv)
        top = ex.max(axis=1)
        w = np.exp(ex - top[:, None])
        lam = np.log(np.trapezoid(w, v, axis=1)) + top - phi0 / c.sigma_kms**2 + math.log(2 * math.pi * c.sigma_kms**2)
        alive = ex - top[:, None] > -32.0
        idx = np.arange(len(v))
        lo = v[np.where(alive, idx, len(v) - 1).min(axis=1)] - 2.0
        hi = v[np.where(alive, idx, 0).max(axis=1)] + 2.0
        if np.any(lo <= v[0] + 1) or np.any(hi >= v[-1] - 1):
            raise ValueError("v_phi grid too narrow for this disc component (sigma too large?)")
        return {"R": Rg, "logLam": CubicSpline(Rg, lam), "top": CubicSpline(Rg, top), "lo": lo, "hi": hi,
                "lam_max": lam.max()}

    def _table(self, i: int, radius: float) -> dict:
        key = (i, round(radius, 9))
        if key not in self._tables:
            d = math.hypot(self.observer[0], self.observer[1])
            self._tables[key] = self._radial_table(i, d - radius - 0.05, d + radius + 0.05)
        return self._tables[key]

    def _log_nu_unnorm_np(self, i: int, R: np.ndarray, z: np.ndarray, radius: float) -> np.ndarray:
        c = self.components[i]
        tab = self._table(i, radius)
        Rt, zt = torch.from_numpy(np.asarray(R, float)), torch.from_numpy(np.asarray(z, float))
        dphi = (self.pot.potential_Rz(Rt, zt) - self.pot.potential_Rz(Rt, torch.zeros_like(zt))).numpy()
        return tab["logLam"](R) - dphi / c.sigma_kms**2

    def _ball_integral(self, i: int, radius: float) -> float:
        """∫_ball ν̃_i d^3x (unnormalised component density over the ball of ``radius``; cached)."""
        key = (i, round(float(radius), 9))
        if key not in self._z_cache:
            self._z_cache[key] = ball_integral(
                lambda p: self._log_nu_unnorm_np(i, np.hypot(p[:, 0], p[:, 1]), p[:, 2], radius), self.observer, radius,
                n_r=32, n_mu=80, n_phi=32, log=True)
        return self._z_cache[key]

    def number_density(self, x: torch.Tensor) -> torch.Tensor:
        """ν(x): the tracer density normalised to one over the observed ball [kpc^-3] (0 outside it)."""
        xn = x.detach().cpu().double().numpy()
        R = np.hypot(xn[..., 0], xn[..., 1])
        tot = np.zeros(R.shape)
        for i in range(len(self.components)):
            tot += np.exp(self.log_norm[i] + self._log_nu_unnorm_np(i, R, xn[..., 2], self.radius))
        inside = np.linalg.norm(xn - np.asarray(self.observer), axis=-1) <= self.radius
        return torch.as_tensor(np.where(inside, tot, 0.0), dtype=x.dtype, device=x.device)

    def log_nu(self, x: torch.Tensor) -> torch.Tensor:
        """log ν(x), normalised over the ball like :meth:`number_density`, differentiable in x (torch).

        ν_i(R, z) = Λ_i(R) exp(−(Φ(R, z) − Φ(R, 0))/σ_i²) — the construction of :meth:`number_density`
        — with the tabulated log Λ_i(R) differentiated through its cubic spline. No cut at the ball's
        edge (the formula continues smoothly beyond it).
        """
        x64 = x.to(torch.float64)
        R = torch.sqrt(x64[..., 0] ** 2 + x64[..., 1] ** 2)
        z = x64[..., 2]
        dphi = self.pot.potential_Rz(R, z) - self.pot.potential_Rz(R, torch.zeros_like(z))
        terms = []
        for i, c in enumerate(self.components):
            spline = self._table(i, self.radius)["logLam"]
            terms.append(float(self.log_norm[i]) + _SplineFn.apply(R, spline, spline.derivative()) - dphi / c.sigma_kms**2)
        return torch.logsumexp(torch.stack(terms, 0), 0).to(x.dtype)

    def log_df(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """log f(x, v) [kpc^-3 (km/s)^-3], normalised over the observed ball; differentiable (torch)."""
        R = torch.sqrt(x[..., 0] ** 2 + x[..., 1] ** 2)
        Lz = x[..., 0] * v[..., 1] - x[..., 1] * v[..., 0]
        E = 0.5 * (v**2).sum(-1) + self.pot.potential(x)
        Rc, Ec = self._circ_t(Lz)
        terms = []
        for i, c in enumerate(self.components):
            terms.append(float(self.log_norm[i]) - Rc / c.scale_length_kpc - (E - Ec) / c.sigma_kms**2)
        del R
        return torch.logsumexp(torch.stack(terms, 0), 0)

    # -- sampling -------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator, radius: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``n`` stars inside the ball of ``radius`` (default: the observed ball) around the observer.

        Returns (x [kpc], v [km/s], component index).
        """
        radius = self.radius if radius is None else float(radius)
        zs = np.array([self._ball_integral(i, radius) for i in range(len(self.components))]) if radius != self.radius else None
        if zs is None:
            p = self.fractions
        else:
            p = np.exp(self.log_norm) * zs
            p = p / p.sum()
        comp = rng.choice(len(self.components), size=n, p=p)
        x = np.empty((n, 3))
        v = np.empty((n, 3))
        for i in range(len(self.components)):
            sel = np.nonzero(comp == i)[0]
            if sel.size:
                xi, vi = self._sample_component(i, sel.size, rng, radius)
                x[sel], v[sel] = xi, vi
        return x, v, comp.astype(np.int8)

    def _sample_component(self, i: int, n: int, rng: np.random.Generator, radius: float):
        c = self.components[i]
        tab = self._table(i, radius)
        lmax = tab["lam_max"] + 1e-9
        xs, have, rate = [], 0, 0.2
        while have < n:
            m = int(min(max((n - have) / max(rate, 1e-3) * 1.2, 1000), 4_000_000))
            xp = uniform_ball(m, self.observer, radius, rng)
            R = np.hypot(xp[:, 0], xp[:, 1])
            lnu = self._log_nu_unnorm_np(i, R, xp[:, 2], radius)
            ok = np.log(rng.random(m)) < lnu - lmax
            rate = max(ok.mean(), 1e-3)
            xs.append(xp[ok])
            have += int(ok.sum())
        x = np.concatenate(xs)[:n]
        R = np.hypot(x[:, 0], x[:, 1])
        # v_phi | R by rejection from a uniform proposal on [lo(R), hi(R)] under the tabulated maximum
        lo = np.interp(R, tab["R"], tab["lo"])
        hi = np.interp(R, tab["R"], tab["hi"])
        top = tab["top"](R) + 0.01
        vphi = np.empty(n)
        todo = np.arange(n)
        violations = 0
        while todo.size:
            prop = lo[todo] + (hi[todo] - lo[todo]) * rng.random(todo.size)
            ex = self._vphi_exponent_np(i, R[todo], prop) - top[todo]
            violations += int((ex > 0).sum())
            ok = np.log(rng.random(todo.size)) < ex
            vphi[todo[ok]] = prop[ok]
            todo = todo[~ok]
        if violations:
            log.warning("disc DF sampler: %d proposals exceeded the tabulated bound (sampling slightly biased)", violations)
        vR = c.sigma_kms * rng.standard_normal(n)
        vz = c.sigma_kms * rng.standard_normal(n)
        cph, sph = x[:, 0] / R, x[:, 1] / R
        v = np.stack([vR * cph - vphi * sph, vR * sph + vphi * cph, vz], axis=1)
        return x, v

    def sampling_radius_for(self, parallax_err_mas: float) -> float:
        """Radius of the parent ball to sample so that stars scattered into the observed ball by
        parallax errors up to 4σ are included."""
        if parallax_err_mas <= 0:
            return self.radius
        plx = 1.0 / self.radius  # mas at the edge (distance in kpc)
        if plx <= 4 * parallax_err_mas:
            raise ValueError(
                f"parallax error {parallax_err_mas} mas: too large for a {self.radius} kpc ball "
                f"(must be < {plx / 4:.4f} mas so that distances stay defined)")
        return 1.0 / (plx - 4 * parallax_err_mas)

    def ball_fraction(self, radius: float) -> float:
        """Expected fraction of stars in a parent ball of ``radius`` that lie in the observed ball."""
        zs_big = np.array([self._ball_integral(i, radius) for i in range(len(self.components))])
        return float(1.0 / (np.exp(self.log_norm) * zs_big).sum())
