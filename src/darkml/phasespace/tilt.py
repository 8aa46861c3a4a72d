"""A maximum-likelihood vertical tilt of a trained position flow ν(x) (beyond the paper).

Affine flows smooth the thin disc's mid-plane: they recover 0.65–0.8 of the true curvature of
ln ν under the Sun, and through Gauss's law that is most of the position flow's share of the
density deficit (docs/phasespace.md, "Where the density bias comes from"). The tilt corrects
ν in exactly that direction and nowhere else, after training, with the member's own stars:

    ln ν_t(x) = ln ν(x) + Σ_k c_k φ_k(z) − ln Z(c),   φ_k(z) = (z/w)^k exp(−z²/2w²),  k = 0 … K−1,

z the height above the Galactic mid-plane (kpc). This is an exponential family with ν as its
base measure, so the log-likelihood of the training stars is concave in c and its maximum solves

    ⟨φ⟩_stars = E_ν_t[φ] = E_ν[φ e^{c·φ}] / E_ν[e^{c·φ}],

with the expectations under ν taken over samples drawn from the flow itself (Newton's method;
Z(c) by the same samples). If the flow is already right, c → 0 up to the stars' noise. The
tilt changes ln ν by a function of z alone, so the gradients the acceleration estimators use
change only in their z-component: the vertical flux, where the bias sits.

:class:`TiltedFlow` wraps a :class:`~darkml.phasespace.flows.PhaseSpaceFlow` and offers the same
``log_nu`` / ``log_prob`` / ``log_p_v`` / ``sample_v`` (velocities are untouched).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.stats
import torch
from torch import nn

from .flows import model_device

__all__ = ["TiltFit", "TiltedFlow", "fit_vertical_tilt", "tilt_basis"]


def tilt_basis(z: torch.Tensor, terms: int, width: float) -> torch.Tensor:
    """φ_k(z) = (z/w)^k exp(−z²/2w²), k = 0 … terms−1: shape z.shape + (terms,)."""
    u = z / width
    g = torch.exp(-0.5 * u * u)
    return torch.stack([u**k * g for k in range(terms)], -1)


@dataclass
class TiltFit:
    """The fitted tilt: coefficients, their standard errors, ln Z, and how much it gained."""

    coef: list[float]
    stderr: list[float]
    log_z: float
    width_kpc: float
    n_stars: int
    n_samples: int
    iterations: int
    train_gain: float  # nats per training star
    chi2: float  # Wald statistic of "no tilt": c·Cov(c)⁻¹·c, Cov(c) the stars' plus the samples' error
    p_value: float  # its χ²(terms) tail probability
    val_gain: float | None = None  # nats per validation star (held out: the honest check)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class TiltedFlow(nn.Module):
    """A trained flow with ν replaced by the tilted ν_t (module docstring); p(v|x) unchanged."""

    def __init__(self, flow: nn.Module, fit: TiltFit):
        super().__init__()
        self.flow, self.fit = flow, fit
        self.register_buffer("coef", torch.tensor(fit.coef, dtype=torch.float64, device=model_device(flow)))
        self.spec = getattr(flow, "spec", {})

    def tilt(self, x: torch.Tensor) -> torch.Tensor:
        """ln ν_t − ln ν at x (a function of the height x[..., 2] only)."""
        phi = tilt_basis(x[..., 2].to(torch.float64), len(self.fit.coef), self.fit.width_kpc)
        return (phi @ self.coef - self.fit.log_z).to(x.dtype)

    def log_nu(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_nu(x) + self.tilt(x)

    def log_prob(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x, v) + self.tilt(x)

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x, v)

    def log_p_v(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_p_v(v, x)

    def sample_v(self, *args, **kwargs) -> torch.Tensor:
        return self.flow.sample_v(*args, **kwargs)


def _samples(flow: nn.Module, n: int, seed: int, chunk: int = 100_000) -> torch.Tensor:
    """n positions from the flow's ν, reproducibly (the flow samples with torch's global generator)."""
    dev = model_device(flow)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        return torch.cat([flow.sample_x(min(chunk, n - i)) for i in range(0, n, chunk)])


def fit_vertical_tilt(flow: nn.Module, x_train: np.ndarray, terms: int, width_kpc: float, n_samples: int = 400_000,
                      seed: int = 0, x_val: np.ndarray | None = None, max_iter: int = 50, resampled: bool = False) -> TiltFit:
    """Maximum-likelihood tilt coefficients for ``flow``'s ν on the stars ``x_train`` (N, 3) kpc.

    ``flow`` needs ``sample_x(n)`` (positions from ν). Newton's method on the concave
    log-likelihood, with E_ν from ``n_samples`` flow samples. Standard errors: the inverse Fisher
    information of the exponential family, Cov_t[φ]⁻¹ (1/N + 1/M) for N stars and M samples — 2/N for
    ``resampled`` stars (a bootstrap resample: its mean scatters about the sample's as the sample's does
    about the population's); ``chi2`` and ``p_value`` test "no tilt" (c = 0) with it.
    """
    if terms < 1:
        raise ValueError(f"tilt terms = {terms}: must be >= 1")
    if not width_kpc > 0:
        raise ValueError(f"tilt width = {width_kpc}: must be > 0 kpc")
    if len(x_train) < 10 * terms:
        raise ValueError(f"{len(x_train)} stars is too few for a {terms}-term tilt (need >= {10 * terms})")
    with torch.no_grad():
        xs = _samples(flow, n_samples, seed)
        phi_s = tilt_basis(xs[:, 2].to(torch.float64).cpu(), terms, width_kpc)
    phi_d = tilt_basis(torch.as_tensor(np.asarray(x_train)[:, 2], dtype=torch.float64), terms, width_kpc).mean(0)
    eye = torch.eye(terms, dtype=torch.float64)

    def tilted(c: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """ln E_ν[e^{c·φ}], E_t[φ] and Cov_t[φ] (regularised) under the tilted ν, from the samples."""
        lw = phi_s @ c
        w = torch.softmax(lw, 0)
        mu = w @ phi_s
        d = phi_s - mu
        cov = d.T @ (d * w[:, None])
        return float(torch.logsumexp(lw, 0)) - math.log(len(phi_s)), mu, cov + 1e-12 * torch.trace(cov) * eye

    c = torch.zeros(terms, dtype=torch.float64)
    log_z, mu, cov = tilted(c)
    for it in range(1, max_iter + 1):
        step = torch.linalg.solve(cov, phi_d - mu)
        # the log-likelihood c·⟨φ⟩ − ln Z(c) is concave: halve the Newton step until it does not decrease
        ll0 = float(c @ phi_d) - log_z
        for _ in range(30):
            cn = c + step
            log_zn, mun, covn = tilted(cn)
            if float(cn @ phi_d) - log_zn >= ll0 - 1e-12:
                break
            step = step / 2
        c, log_z, mu, cov = cn, log_zn, mun, covn
        if float(step.abs().max()) < 1e-9:
            break
    else:
        raise RuntimeError(f"vertical tilt: Newton's method did not converge in {max_iter} iterations")
    # Cov(c) = Cov_t[φ]⁻¹ (1/N + 1/M): the stars' noise (doubled for a bootstrap resample) and the samples'
    hinv = torch.linalg.inv(cov)
    var_scale = (2.0 if resampled else 1.0) / len(x_train) + 1.0 / len(phi_s)
    stderr = torch.sqrt(torch.clamp(torch.diagonal(hinv), min=0) * var_scale)
    chi2 = float(c @ (cov @ c)) / var_scale
    fit = TiltFit(coef=c.tolist(), stderr=stderr.tolist(), log_z=log_z, width_kpc=float(width_kpc), n_stars=len(x_train),
                  n_samples=int(n_samples), iterations=it, train_gain=float(c @ phi_d) - log_z, chi2=chi2,
                  p_value=float(scipy.stats.chi2.sf(chi2, terms)))
    if x_val is not None and len(x_val):
        phi_v = tilt_basis(torch.as_tensor(np.asarray(x_val)[:, 2], dtype=torch.float64), terms, width_kpc).mean(0)
        fit.val_gain = float(c @ phi_v) - log_z
    return fit
