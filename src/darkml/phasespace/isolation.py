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
| e | a_z above the observer (z = 0.05 … 0.3 kpc), exact ν, with ∇_x log f and ∇_v log f of the
      Boltzmann least squares each taken from the learned p(v|x) or the exact one (:func:`gradient_swap`) |

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

import numpy as np
import torch
from torch import nn

from ..runs import Run
from . import boltzmann, gauss
from .config import PhaseSpaceConfig
from .dataset import truth_model

__all__ = ["HybridModel", "gradient_swap", "isolate", "midplane_curvature", "observer_truth"]


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


def gradient_swap(flow, df, pot, points: torch.Tensor, n_velocities: int = 4000, weighting: str = "f",
                  seed: int = 0) -> dict[str, Any]:
    """Which gradient of the learned p(v|x) biases the Boltzmann acceleration?

    At each point (P, 3), velocities are drawn from the learned p(v|x) and the least-squares
    acceleration is solved with ν exact and (∇_x log f, ∇_v log f, weights) taken from the exact
    DF or from exact ν × learned p(v|x), in the four combinations. Returns the exact
    acceleration and the four solutions (each (P, 3), (km/s)²/kpc): ``learned`` (both
    gradients learned: row c1's field), ``learned_x`` (∇_x learned, ∇_v exact), ``learned_v``
    (∇_x exact, ∇_v learned) and ``exact`` (both exact: must equal ``truth`` for any velocities)."""
    from .boltzmann import least_squares_acceleration
    from .flows import log_f_and_grads

    exact_m, learned_m = HybridModel(flow, df, "exact", "exact"), HybridModel(flow, df, "exact", "learned")
    g = torch.Generator().manual_seed(seed)
    p = points.shape[0]
    with torch.no_grad():
        v = flow.sample_v(points.float(), n_velocities, generator=g)  # (P, N, 3)
    x = points.float()[:, None, :].expand(p, n_velocities, 3).reshape(-1, 3)
    vv = v.reshape(-1, 3).float()
    lf_e, gx_e, gv_e = log_f_and_grads(exact_m.log_prob, x, vv)
    lf_l, gx_l, gv_l = log_f_and_grads(learned_m.log_prob, x, vv)

    def solve(gx, gv, lf):
        r = lambda t: t.reshape(p, n_velocities, *t.shape[1:])  # noqa: E731
        return least_squares_acceleration(r(vv), r(gx), r(gv), r(lf), weighting)[0]

    return {"truth": pot.acceleration(points.to(torch.float64)), "learned": solve(gx_l, gv_l, lf_l),
            "learned_x": solve(gx_l, gv_e, lf_e), "learned_v": solve(gx_e, gv_l, lf_e), "exact": solve(gx_e, gv_e, lf_e)}


def observer_truth(cfg: PhaseSpaceConfig) -> tuple[Any, Any, gauss.Kernel, list[float], float]:
    """The mock's exact potential and DF, the run's density kernel, the observer's position and the
    exact smoothed density there: what every exact-truth comparison at the observer starts from."""
    pot, df = truth_model(cfg)
    kernel = gauss.Kernel(tuple(cfg.measure.bandwidth_kpc), cfg.measure.truncation)
    sun = [float(c) for c in cfg.mock.observer_kpc]
    truth = gauss.smoothed_density(lambda p: pot.density(p.to(torch.float64)), sun, kernel)
    return pot, df, kernel, sun, truth


def isolate(cfg: PhaseSpaceConfig, run: Run, member: int = 0, dataset: str = "original", swap: bool = True) -> dict[str, Any]:
    """The isolation table for one trained ensemble member (module docstring); ``swap=False`` skips row (e)."""
    from .ensembles import measured_member

    pot, df, kernel, sun, truth = observer_truth(cfg)
    m = cfg.measure
    flow = measured_member(run, cfg, dataset, member)  # with the run's ν tilt, if it has one
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
           "z_stretch_kpc": cfg.flow.z_stretch_kpc, "nu_tilt_terms": cfg.flow.nu_tilt_terms, "flow": f"{cfg.flow.model} {cfg.flow.transforms} x {cfg.flow.hidden}",
           "rho_smoothed_truth": truth,
           "rows": {k: {"rho": v, "error": v / truth - 1.0} for k, v in rows.items() if k != "truth_smoothed"},
           "curvature": {"exact": k_true, "learned": k_flow, "ratio": k_flow / k_true}}
    if not swap:
        return out
    zs = [0.05, 0.1, 0.2, 0.3]
    pts = torch.tensor([[sun[0], sun[1], sun[2] + z] for z in zs], dtype=torch.float64)
    sw = gradient_swap(flow, df, pot, pts, weighting=m.weighting, seed=cfg.seed)
    out["gradient_swap"] = {"z_kpc": zs, "truth_az": sw["truth"][:, 2].tolist(),
                            **{k: (sw[k][:, 2].double() / sw["truth"][:, 2]).tolist()
                               for k in ("learned", "learned_x", "learned_v", "exact")}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Isolate the stage that carries the phase-space density bias")
    ap.add_argument("run_dir")
    ap.add_argument("--member", type=int, default=0)
    ap.add_argument("--members", type=int, default=None,
                    help="rows (a)-(d) for members 0 … N-1 and their mean ± spread (no row e)")
    ap.add_argument("--dataset", default="original")
    ap.add_argument("--json", default=None, help="write the result here (default RUN_DIR/isolation.json)")
    args = ap.parse_args(argv)
    run = Run.open(args.run_dir)
    cfg = run.load_config(PhaseSpaceConfig)
    torch.set_num_threads(cfg.measure.cpu_threads or torch.get_num_threads())
    names = {"a": "Gauss on the exact acceleration", "b": "Boltzmann, exact f", "c1": "exact ν, learned p(v|x)",
             "c2": "learned ν, exact p(v|x)", "c3": "learned ν and p(v|x) (the method)"}
    if args.members:
        res = [isolate(cfg, run, k, args.dataset, swap=False) for k in range(args.members)]
        path = Path(args.json or Path(args.run_dir) / "isolation-members.json")
        path.write_text(json.dumps(res, indent=1) + "\n")
        print(f"{args.members} members ({res[0]['n_stars']} stars, {res[0]['flow']}, ν tilt terms {res[0]['nu_tilt_terms']}): "
              "mean ± spread")
        for k in ("c1", "c2", "c3"):
            e = np.array([r["rows"][k]["error"] for r in res]) * 100
            print(f"  ({k}) {names[k]:40s} {e.mean():+.1f} ± {e.std(ddof=1):.1f} %   members " + " ".join(f"{x:+.1f}" for x in e))
        q = np.array([r["curvature"]["ratio"] for r in res])
        print(f"  (d) curvature ratio                         {q.mean():.2f} ± {q.std(ddof=1):.2f}")
        return 0
    res = isolate(cfg, run, args.member, args.dataset)
    path = Path(args.json or Path(args.run_dir) / "isolation.json")
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"smoothed truth {res['rho_smoothed_truth']:.4g} Msun/kpc^3 ({res['n_stars']} stars, {res['flow']}, "
          f"z_stretch {res['z_stretch_kpc']})")
    for k, r in res["rows"].items():
        print(f"  ({k}) {names[k]:40s} {r['rho']:.4g}  {100 * r['error']:+.1f} %")
    c = res["curvature"]
    print(f"  (d) d2 ln nu/dz2 at the mid-plane: learned {c['learned']:.2f}, exact {c['exact']:.2f} kpc^-2, ratio {c['ratio']:.2f}")
    sw = res["gradient_swap"]
    print("  (e) a_z / exact above the observer, exact nu:   z [kpc]: " + "  ".join(f"{z:6.2f}" for z in sw["z_kpc"]))
    for k, name in (("learned", "grad_x, grad_v learned"), ("learned_x", "grad_x learned, grad_v exact"),
                    ("learned_v", "grad_x exact, grad_v learned"), ("exact", "both exact")):
        print(f"      {name:34s}" + "  ".join(f"{r:6.3f}" for r in sw[k]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
