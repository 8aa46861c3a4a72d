"""Which stage of the method carries the density bias? The mock's exact truth, one stage at a time.

    python -m darkml.phasespace.isolation RUN_DIR [--member 0] [--json out.json]

For a trained run on the disc mock, the smoothed density at the observer (the paper's kernel)
and the mid-plane curvature of ln ν are computed with every ingredient of the method replaced
in turn by the exact one (``DiscDF.log_df`` and ``DiscDF.log_nu``, both differentiable in torch):

| row | ν(x) | p(v|x) | acceleration | density |
|---|---|---|---|---|
| a | — | — | exact −∇Φ | Gauss (fast estimator) |
| b | exact | exact | Boltzmann least squares | Gauss |
| c1 | exact | learned | Boltzmann | Gauss |
| c2 | learned | exact | Boltzmann | Gauss |
| c3 | learned | learned | Boltzmann | Gauss (the method) |
| d | ∂² ln ν/∂z² at the mid-plane under the observer: learned / exact | | | |

Velocities are always drawn from the learned p(v|x) (the least-squares solution is exact for
any velocity sample when f is exact, so rows a and b must agree). The bias of the method is
c3 − truth; c1 and c2 split it between the two flows.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runs import Run
from . import boltzmann, gauss
from .config import PhaseSpaceConfig
from .dataset import truth_model

__all__ = ["HybridModel", "isolate", "midplane_curvature"]


class HybridModel(nn.Module):
    """log f = log ν + log p(v|x) with each factor exact or learned; velocities from the flow."""

    def __init__(self, flow, df, nu: str = "learned", pv: str = "learned"):
        super().__init__()
        if nu not in ("learned", "exact") or pv not in ("learned", "exact"):
            raise ValueError(f"nu = {nu!r}, pv = {pv!r}: each must be 'learned' or 'exact'")
        self.flow, self.df, self.nu, self.pv = flow, df, nu, pv

    def log_prob(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.nu == "learned" and self.pv == "learned":
            return self.flow.log_prob(x, v)
        x64, v64 = x.to(torch.float64), v.to(torch.float64)
        log_nu = self.flow.log_nu(x).to(torch.float64) if self.nu == "learned" else self.df.log_nu(x64)
        if self.pv == "learned":
            log_pv = self.flow.log_p_v(v, x).to(torch.float64)
        else:
            log_pv = self.df.log_df(x64, v64) - self.df.log_nu(x64)
        return (log_nu + log_pv).to(x.dtype)

    def sample_v(self, *args, **kwargs) -> torch.Tensor:
        return self.flow.sample_v(*args, **kwargs)


def midplane_curvature(log_nu, R: float, h: float = 0.01) -> float:
    """∂² ln ν/∂z² at (R, 0, 0) by a central difference (step h kpc)."""
    pts = torch.tensor([[R, 0.0, -h], [R, 0.0, 0.0], [R, 0.0, h]], dtype=torch.float64)
    with torch.no_grad():
        v = log_nu(pts).to(torch.float64)
    return float((v[0] - 2 * v[1] + v[2]) / h**2)


def isolate(cfg: PhaseSpaceConfig, run: Run, member: int = 0, dataset: str = "original") -> dict[str, Any]:
    """The isolation table for one trained ensemble member (module docstring)."""
    from .flows import load_member

    pot, df = truth_model(cfg)
    m = cfg.measure
    kernel = gauss.Kernel(tuple(m.bandwidth_kpc), m.truncation)
    sun = [float(c) for c in cfg.mock.observer_kpc]
    done = run.checkpoints / dataset / f"m{member}" / "done.json"
    if not done.is_file():
        raise FileNotFoundError(f"{done}: no trained member {member} of {dataset}; run the train stage first")
    flow = load_member(json.loads(done.read_text())["best_path"]).eval()
    truth = gauss.smoothed_density(lambda p: pot.density(p.to(torch.float64)), sun, kernel)
    rows: dict[str, Any] = {"truth_smoothed": truth}

    def exact_acc(p: torch.Tensor) -> torch.Tensor:
        return pot.acceleration(p.to(torch.float64))

    rows["a"] = gauss.density_fast(exact_acc, sun, kernel, *m.fast_nodes).rho
    for key, nu, pv in (("b", "exact", "exact"), ("c1", "exact", "learned"), ("c2", "learned", "exact"),
                        ("c3", "learned", "learned")):
        field = boltzmann.AccelerationField(HybridModel(flow, df, nu, pv), m.fast_velocities, m.weighting,
                                            common_random_numbers=True, seed=cfg.seed, batch_points=m.batch_points)
        rows[key] = gauss.density_fast(lambda p: field(p.to(torch.float64)).to(torch.float64), sun, kernel,
                                       *m.fast_nodes).rho
    R0 = math.hypot(sun[0], sun[1])
    k_true = midplane_curvature(df.log_nu, R0)
    k_flow = midplane_curvature(lambda p: flow.log_nu(p.float()), R0)
    out = {"member": member, "dataset": dataset, "n_stars": cfg.mock.n_stars,
           "z_stretch_kpc": cfg.flow.z_stretch_kpc, "flow": f"{cfg.flow.model} {cfg.flow.transforms} x {cfg.flow.hidden}",
           "rho_smoothed_truth": truth,
           "rows": {k: {"rho": v, "error": v / truth - 1.0} for k, v in rows.items() if k != "truth_smoothed"},
           "curvature": {"exact": k_true, "learned": k_flow, "ratio": k_flow / k_true}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Isolate the stage that carries the phase-space density bias")
    ap.add_argument("run_dir")
    ap.add_argument("--member", type=int, default=0)
    ap.add_argument("--dataset", default="original")
    ap.add_argument("--json", default=None, help="write the result here (default RUN_DIR/isolation.json)")
    args = ap.parse_args(argv)
    run = Run.open(args.run_dir)
    cfg = run.load_config(PhaseSpaceConfig)
    torch.set_num_threads(cfg.measure.cpu_threads or torch.get_num_threads())
    res = isolate(cfg, run, args.member, args.dataset)
    path = Path(args.json or Path(args.run_dir) / "isolation.json")
    path.write_text(json.dumps(res, indent=1) + "\n")
    names = {"a": "Gauss on the exact acceleration", "b": "Boltzmann, exact f", "c1": "exact ν, learned p(v|x)",
             "c2": "learned ν, exact p(v|x)", "c3": "learned ν and p(v|x) (the method)"}
    print(f"smoothed truth {res['rho_smoothed_truth']:.4g} Msun/kpc^3 ({res['n_stars']} stars, {res['flow']}, "
          f"z_stretch {res['z_stretch_kpc']})")
    for k, r in res["rows"].items():
        print(f"  ({k}) {names[k]:40s} {r['rho']:.4g}  {100 * r['error']:+.1f} %")
    c = res["curvature"]
    print(f"  (d) d2 ln nu/dz2 at the mid-plane: learned {c['learned']:.2f}, exact {c['exact']:.2f} kpc^-2, ratio {c['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
