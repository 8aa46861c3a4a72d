"""Accelerations from the steady-state collisionless Boltzmann equation.

At a position x, ``v·∇_x f + a·∇_v f = 0`` must hold for every velocity. Dividing by f,

    b_α + g_α · a = 0,   b_α = v_α·∇_x log f(x, v_α),   g_α = ∇_v log f(x, v_α),

for velocities v_α drawn from p(v|x). The paper minimises ``Σ_α |(v_α·∂_x + a·∂_v) f|²``, i.e.
the same residual weighted by f(x, v_α)² (``weighting="f"``); ``weighting="log"`` weights all
samples equally. Either way the minimiser is closed form (3×3 normal equations per position,
solved in float64), batched over positions on the device of the inputs.

Units: x kpc, v km/s, a (km/s)^2/kpc (multiply by ``constants.KMS2_PER_KPC_TO_KPC_PER_GYR2``
for kpc/Gyr^2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from .flows import log_f_and_grads, model_device

log = logging.getLogger(__name__)

__all__ = ["least_squares_acceleration", "solve_acceleration", "AccelerationResult", "AccelerationField", "WEIGHTINGS"]

WEIGHTINGS = ("f", "log")

LogF = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SampleV = Callable[..., torch.Tensor]


def least_squares_acceleration(v: torch.Tensor, gx: torch.Tensor, gv: torch.Tensor, log_f: torch.Tensor | None = None,
                               weighting: str = "f") -> tuple[torch.Tensor, torch.Tensor]:
    """a minimising Σ_α w_α (v_α·∇_x log f + a·∇_v log f)² for each position.

    Shapes: v, gx, gv (P, N, 3); log_f (P, N) (needed for ``weighting="f"``, w = f²).
    Returns (a (P, 3) in (km/s)^2/kpc, relative residual (P,): RMS residual / RMS of b).
    Differentiable (used by the autograd-divergence density estimator).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting = {weighting!r}: must be one of {WEIGHTINGS}")
    dt = torch.float64
    b = (v.to(dt) * gx.to(dt)).sum(-1)  # (P, N)
    A = gv.to(dt)
    if weighting == "f":
        if log_f is None:
            raise ValueError("weighting='f' needs log_f")
        lf = log_f.to(dt)
        w = torch.exp(2 * (lf - lf.max(dim=1, keepdim=True).values.detach()))
    else:
        w = torch.ones_like(b)
    M = torch.einsum("pn,pni,pnj->pij", w, A, A)
    r = torch.einsum("pn,pni,pn->pi", w, A, b)
    a = -torch.linalg.solve(M, r)
    res = b + (A * a[:, None, :]).sum(-1)
    rel = torch.sqrt((w * res**2).sum(1) / torch.clamp((w * b**2).sum(1), min=1e-300))
    return a, rel


@dataclass
class AccelerationResult:
    """Accelerations (P, 3) [(km/s)^2/kpc], relative residuals (P,), and the cost."""

    a: torch.Tensor
    residual: torch.Tensor
    n_evaluations: int


def solve_acceleration(log_f: LogF, sample_v: SampleV, x: torch.Tensor, n_velocities: int, weighting: str = "f",
                       batch_points: int = 200_000, generator: torch.Generator | None = None,
                       base: torch.Tensor | None = None) -> AccelerationResult:
    """Solve the Boltzmann equation for a(x) at positions x (P, 3) [kpc].

    ``log_f(x, v)`` returns log f for matching (M, 3) rows; ``sample_v(x, n, generator=, base=)``
    returns (P, n, 3) velocities from p(v|x) (a :class:`~darkml.phasespace.flows.PhaseSpaceFlow`
    provides both). Positions are processed in batches of ``batch_points`` // n_velocities.
    """
    if n_velocities < 4:
        raise ValueError(f"n_velocities = {n_velocities}: must be >= 4 (3 unknowns per position)")
    P = x.shape[0]
    per = max(1, batch_points // n_velocities)
    out_a, out_r = [], []
    for s in range(0, P, per):
        xb = x[s:s + per]
        with torch.no_grad():
            vb = sample_v(xb, n_velocities, generator=generator, base=base)
        p = xb.shape[0]
        xr = xb[:, None, :].expand(p, n_velocities, 3).reshape(-1, 3)
        lf, gx, gv = log_f_and_grads(log_f, xr, vb.reshape(-1, 3))
        a, rel = least_squares_acceleration(vb, gx.reshape(p, n_velocities, 3), gv.reshape(p, n_velocities, 3),
                                            lf.reshape(p, n_velocities), weighting)
        out_a.append(a)
        out_r.append(rel)
    return AccelerationResult(torch.cat(out_a), torch.cat(out_r), P * n_velocities)


class AccelerationField:
    """x (M, 3) [kpc] -> a (M, 3) [(km/s)^2/kpc] from a learned phase-space density.

    With ``common_random_numbers=True`` every position uses the same base-distribution draws
    (pushed through the conditional flow), so the Monte-Carlo estimate â(x) is a smooth,
    deterministic function of x — differences of â between nearby points, which is what a
    divergence needs, then carry far less noise than independent draws would give.
    ``differentiable=True`` keeps the graph (for the autograd divergence).
    """

    def __init__(self, model, n_velocities: int, weighting: str = "f", common_random_numbers: bool = True,
                 seed: int = 0, batch_points: int = 200_000):
        self.model = model
        self.n = int(n_velocities)
        self.weighting = weighting
        self.crn = bool(common_random_numbers)
        self.seed = int(seed)
        self.batch_points = int(batch_points)
        self.n_evaluations = 0
        self._gen: torch.Generator | None = None
        self._base: torch.Tensor | None = None

    def _device(self) -> torch.device:
        return model_device(self.model)

    def base(self) -> torch.Tensor:
        if self._base is None:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            self._base = torch.randn((self.n, 3), generator=g).to(self._device())
        return self._base

    def generator(self) -> torch.Generator:
        if self._gen is None:
            self._gen = torch.Generator(device=self._device()).manual_seed(self.seed + 1)
        return self._gen

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._device(), torch.float32)
        kw = {"base": self.base()} if self.crn else {"generator": self.generator()}
        res = solve_acceleration(self.model.log_prob, self.model.sample_v, x, self.n, self.weighting, self.batch_points, **kw)
        self.n_evaluations += res.n_evaluations
        return res.a

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """â(x) keeping the graph through sampling and gradients (for ∇·â by autograd); x (P, 3)."""
        x = x.to(self._device(), torch.float32)
        P = x.shape[0]
        v = self.model.sample_v(x, self.n, base=self.base())  # depends on x through the flow
        xr = x[:, None, :].expand(P, self.n, 3).reshape(-1, 3)
        lf, gx, gv = log_f_and_grads(self.model.log_prob, xr, v.reshape(-1, 3), create_graph=True)
        a, _ = least_squares_acceleration(v, gx.reshape(P, self.n, 3), gv.reshape(P, self.n, 3), lf.reshape(P, self.n),
                                          self.weighting)
        self.n_evaluations += P * self.n
        return a
