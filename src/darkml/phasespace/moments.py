"""Accelerations from the velocity moments of the learned flows (the Jeans equations of f).

    python -m darkml.phasespace.moments RUN_DIR [--members 3] [--velocities 2000] [--exact-nu]

The paper solves the collisionless Boltzmann equation point by point in velocity space (least
squares over velocities drawn from p(v|x), :mod:`.boltzmann`). Taking its first velocity moment
instead gives the steady-state Jeans equations in Cartesian coordinates,

    ν a_j = ∂_i (ν ⟨v_i v_j⟩)   ⇒   a_j = ∂_i ⟨v_i v_j⟩ + ⟨v_i v_j⟩ ∂_i ln ν,

with the second moments ⟨v_i v_j⟩(x) (streaming included) taken from the learned p(v|x) by
Monte Carlo and differentiated by autograd through the flow's sampling (common random numbers:
the same base draws at every x, so the estimate is a smooth function of x). No assumption on
the potential, the symmetry or the velocity ellipsoid is made — the same information as the
Boltzmann solve, weighted differently.

Why it exists (docs/phasespace.md, "Where the density bias comes from"): in the least squares,
a_z near the mid-plane is a small number solved jointly with the ~25× larger a_R through the
learned ∇_v log p(v|x); a small error in the learned velocity ellipsoid's orientation leaks a_R
into a_z (measured: with exact ν and exact ∇_x log f, the learned ∇_v log f alone takes a_z at
z = 0.05 kpc to 0.73 of the truth). In the moment form a_z contains a_R nowhere; a tilt error
enters only through its slow radial derivative.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .flows import model_device

__all__ = ["MomentField", "moment_acceleration"]


def moment_acceleration(sample_v: Callable[..., torch.Tensor], log_nu: Callable[[torch.Tensor], torch.Tensor],
                        x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """a (P, 3) [(km/s)²/kpc] at positions x (P, 3) [kpc] from the Jeans equations of the flows.

    ``sample_v(x, n, base=base)`` must return velocities (P, n, 3) differentiable in x (a flow's
    sampling with fixed base draws); ``log_nu(x)`` the log number density (P,)."""
    x = x.detach().to(torch.float32).requires_grad_(True)
    p = x.shape[0]
    with torch.enable_grad():
        v = sample_v(x, base.shape[0], base=base)
        m2 = torch.einsum("pni,pnj->pij", v, v) / base.shape[0]  # ⟨v_i v_j⟩ (P, 3, 3)
        ln = log_nu(x)
        g_ln = torch.autograd.grad(ln.sum(), x, retain_graph=True)[0]
        a = torch.einsum("pij,pi->pj", m2, g_ln)
        div = torch.zeros(p, 3, dtype=a.dtype, device=a.device)
        for i in range(3):
            for j in range(i, 3):  # symmetric: one backward pass per pair
                g = torch.autograd.grad(m2[:, i, j].sum(), x, retain_graph=True)[0]
                div[:, j] = div[:, j] + g[:, i]
                if j != i:
                    div[:, i] = div[:, i] + g[:, j]
    return (a + div).detach()


class MomentField:
    """x (M, 3) → a (M, 3) [(km/s)²/kpc] from a learned phase-space flow by the Jeans equations;
    the interface of :class:`darkml.phasespace.boltzmann.AccelerationField`."""

    def __init__(self, model, n_velocities: int, seed: int = 0, batch_points: int = 16,
                 log_nu: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if n_velocities < 16:
            raise ValueError(f"n_velocities = {n_velocities}: must be >= 16")
        self.model = model
        self.n = int(n_velocities)
        self.batch_points = max(1, int(batch_points))
        self.log_nu = log_nu or model.log_nu
        self.device = model_device(model)
        self.base = torch.randn((self.n, 3), generator=torch.Generator().manual_seed(seed)).to(self.device)
        self.n_evaluations = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        out = [moment_acceleration(self.model.sample_v, self.log_nu, x[s : s + self.batch_points], self.base).cpu()
               for s in range(0, x.shape[0], self.batch_points)]
        self.n_evaluations += x.shape[0] * self.n
        return torch.cat(out).to(torch.float64)


def density_at_observer(run_dir: Path | str, members: int = 3, n_velocities: int = 2000, exact_nu: bool = False,
                        dataset: str = "original") -> dict[str, Any]:
    """The smoothed density at the observer (fast estimator, the run's kernel and nodes) with the
    moment accelerations of each trained member, beside the mock's truth."""
    from ..runs import Run
    from . import gauss
    from .config import PhaseSpaceConfig
    from .ensembles import measured_member
    from .isolation import observer_truth

    run = Run.open(run_dir)
    cfg = run.load_config(PhaseSpaceConfig)
    _, df, kernel, sun, truth = observer_truth(cfg)
    ln = (lambda p: df.log_nu(p.to(torch.float64)).to(torch.float32)) if exact_nu else None
    rows = []
    for k in range(members):
        field = MomentField(measured_member(run, cfg, dataset, k), n_velocities, seed=cfg.seed, log_nu=ln)
        rho = gauss.density_fast(field, sun, kernel, *cfg.measure.fast_nodes).rho
        rows.append({"member": k, "rho": rho, "error": rho / truth - 1.0})
    err = np.array([r["error"] for r in rows])
    return {"run": str(run_dir), "n_stars": cfg.mock.n_stars, "exact_nu": exact_nu, "n_velocities": n_velocities,
            "rho_smoothed_truth": truth, "members": rows, "mean_error": float(err.mean()),
            "sem": float(err.std(ddof=1) / np.sqrt(len(err))) if len(err) > 1 else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Smoothed density at the observer from moment (Jeans) accelerations of the flows")
    ap.add_argument("run_dir")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--velocities", type=int, default=2000)
    ap.add_argument("--exact-nu", action="store_true", help="use the mock's exact ν(x) (isolates p(v|x))")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = density_at_observer(args.run_dir, args.members, args.velocities, args.exact_nu)
    for r in res["members"]:
        print(f"  member {r['member']}: {r['rho']:.4g} Msun/kpc^3  {100 * r['error']:+.1f} %")
    print(f"mean {100 * res['mean_error']:+.1f} % ± {100 * res['sem']:.1f} % (truth {res['rho_smoothed_truth']:.4g}; "
          f"{res['n_stars']} stars, exact ν: {res['exact_nu']})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
