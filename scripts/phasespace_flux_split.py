"""Where does each acceleration estimator's density error sit: in the vertical or the horizontal flux?

    python scripts/phasespace_flux_split.py RUN_DIR [--members 10] [--velocities 2000]

For each trained member, the smoothed density at the observer (the run's kernel, fast
estimator) from the Boltzmann least-squares accelerations and from the moment (Jeans)
accelerations, each three times: with only a_z learned (a_x, a_y exact), with only a_x, a_y
learned (a_z exact), and all learned — relative to the smoothed truth, ensemble mean ± spread.
Gauss's law being linear in a, the hybrid (a_x, a_y from the least squares, a_z from the moments)
follows member by member. Then the vertical flux difference a_z(z0 + z) − a_z(z0 − z) over the truth's, for z = 0.05 … 0.4 kpc,
and, at z0 ± 0.1 kpc, the moment a_z = ∂_z⟨v_z²⟩ + ⟨v_z²⟩ ∂_z ln ν + (the x and y terms) split into those three
parts (their differences between the two heights, ensemble mean and spread): which term differs between members.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from darkml.phasespace import boltzmann, gauss
from darkml.phasespace.config import PhaseSpaceConfig
from darkml.phasespace.ensembles import measured_member
from darkml.phasespace.isolation import observer_truth
from darkml.phasespace.moments import MomentField
from darkml.runs import Run


def moment_terms(flow, pts: torch.Tensor, base: torch.Tensor) -> list[float]:
    """[∂_z⟨v_z²⟩, ⟨v_z²⟩ ∂_z ln ν, x and y terms, their sum] of the moment a_z, each as its difference
    between the two positions ``pts`` (2, 3) — the first velocity moment of the Boltzmann equation,
    as in :func:`darkml.phasespace.moments.moment_acceleration`, term by term — and ∂_z ln ν at the first."""
    x = pts.clone().requires_grad_(True)
    v = flow.sample_v(x, base.shape[0], base=base)
    m2 = torch.einsum("pni,pnj->pij", v, v) / base.shape[0]
    g = torch.autograd.grad(flow.log_nu(x).sum(), x, retain_graph=True)[0]

    def grad(t):
        return torch.autograd.grad(t.sum(), x, retain_graph=True)[0]

    t1 = grad(m2[:, 2, 2])[:, 2]
    t2 = m2[:, 2, 2] * g[:, 2]
    t3 = grad(m2[:, 0, 2])[:, 0] + grad(m2[:, 1, 2])[:, 1] + m2[:, 0, 2] * g[:, 0] + m2[:, 1, 2] * g[:, 1]
    return [float((t[0] - t[1]).detach()) for t in (t1, t2, t3, t1 + t2 + t3)] + [float(g[0, 2])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--velocities", type=int, default=2000)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = Run.open(a.run_dir)
    cfg = run.load_config(PhaseSpaceConfig)
    pot, df, kernel, sun, truth = observer_truth(cfg)
    nodes, m = cfg.measure.fast_nodes, cfg.measure

    def exact(p):
        return pot.acceleration(p.to(torch.float64))

    zs = [0.05, 0.1, 0.2, 0.3, 0.4]
    zpts = torch.tensor([[sun[0], sun[1], sun[2] + s * z] for z in zs for s in (1, -1)], dtype=torch.float64)
    tz = exact(zpts)
    tdiff = (tz[0::2, 2] - tz[1::2, 2]).numpy()
    tpts = torch.tensor([[sun[0], sun[1], sun[2] + 0.1], [sun[0], sun[1], sun[2] - 0.1]], dtype=torch.float32)
    tbase = torch.randn((4000, 3), generator=torch.Generator().manual_seed(cfg.seed))
    terms = []
    rows: dict[str, list] = {"boltzmann": [], "moments": []}
    prof: dict[str, list] = {"boltzmann": [], "moments": []}
    for k in range(a.members):
        flow = measured_member(run, cfg, "original", k)  # with the run's ν tilt, if it has one
        terms.append(moment_terms(flow, tpts, tbase))
        fields = {"boltzmann": boltzmann.AccelerationField(flow, m.fast_velocities, m.weighting, common_random_numbers=True,
                                                           seed=cfg.seed, batch_points=m.batch_points),
                  "moments": MomentField(flow, a.velocities, seed=cfg.seed)}
        for name, field in fields.items():
            cache: dict[bytes, torch.Tensor] = {}

            def learned(p, field=field, cache=cache):
                key = p.numpy().tobytes()
                if key not in cache:
                    cache[key] = field(p.to(torch.float64)).to(torch.float64)
                return cache[key]

            only_z = gauss.density_fast(lambda p: torch.cat([exact(p)[:, :2], learned(p)[:, 2:]], 1), sun, kernel, *nodes).rho
            only_xy = gauss.density_fast(lambda p: torch.cat([learned(p)[:, :2], exact(p)[:, 2:]], 1), sun, kernel, *nodes).rho
            full = gauss.density_fast(learned, sun, kernel, *nodes).rho
            rows[name].append([only_z / truth - 1, only_xy / truth - 1, full / truth - 1])
            az = learned(zpts)[:, 2]
            prof[name].append((az[0::2] - az[1::2]).numpy() / tdiff)
    print(f"{a.run_dir}: smoothed density at the observer vs truth, {a.members} members (mean ± spread)")
    for name, vals in rows.items():
        r = 100 * np.array(vals)
        mu, sd = r.mean(0), r.std(0, ddof=1)
        print(f"  {name:9s}  only a_z learned {mu[0]:+6.1f} ± {sd[0]:4.1f} %   only a_x, a_y learned {mu[1]:+6.1f} ± {sd[1]:4.1f} %"
              f"   all learned {mu[2]:+6.1f} ± {sd[2]:4.1f} %")
    # Gauss's law is linear in a: a_x, a_y from the Boltzmann solve with a_z from the moments has, member by
    # member, the error of the Boltzmann horizontal part plus that of the moment vertical part
    hyb = 100 * (np.array(rows["moments"])[:, 0] + np.array(rows["boltzmann"])[:, 1])
    print(f"  hybrid     a_x, a_y Boltzmann + a_z moments: {hyb.mean():+6.1f} ± {hyb.std(ddof=1):4.1f} %")
    print("  [a_z(z0+z) - a_z(z0-z)] / truth, z = " + ", ".join(f"{z}" for z in zs) + " kpc:")
    for name, vals in prof.items():
        p = np.array(vals)
        print(f"  {name:9s}  " + "  ".join(f"{mu:.3f}±{sd:.3f}" for mu, sd in zip(p.mean(0), p.std(0, ddof=1))))
    t = np.array(terms)
    print(f"  moment a_z(z0+0.1) - a_z(z0-0.1) by term (exact a_z: {float(tz[2, 2] - tz[3, 2]):.1f} (km/s)^2/kpc):"
          f"\n  {'':9s}  d<vz2>/dz   <vz2> dln nu/dz   x, y terms   sum")
    print(f"  mean       {t[:, 0].mean():8.1f}   {t[:, 1].mean():14.1f}   {t[:, 2].mean():10.1f}   {t[:, 3].mean():8.1f}")
    print(f"  spread     {t[:, 0].std(ddof=1):8.1f}   {t[:, 1].std(ddof=1):14.1f}   {t[:, 2].std(ddof=1):10.1f}   {t[:, 3].std(ddof=1):8.1f}")
    p = tpts[:1].double().requires_grad_(True)
    exact_slope = float(torch.autograd.grad(df.log_nu(p).sum(), p)[0][0, 2])
    print(f"  dln nu/dz at z0 + 0.1 kpc: members {t[:, 4].min():.3f} ... {t[:, 4].max():.3f}, exact {exact_slope:.3f} /kpc")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
