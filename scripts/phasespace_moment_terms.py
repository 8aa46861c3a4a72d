"""Which term of the moment (Jeans) acceleration differs between ensemble members? (docs/phasespace.md)

    python scripts/phasespace_moment_terms.py RUN_DIR [--members 10] [--dz 0.1] [--velocities 4000]

At the observer ± dz (kpc) in height, the vertical moment acceleration of each trained member,
a_z = ∂_z⟨v_z²⟩ + ⟨v_z²⟩ ∂_z ln ν + (the x and y terms), split into those three parts; printed is
each part's difference between the two heights (the vertical flux through the kernel's faces),
per member, with the ensemble mean and spread beside the exact −∂Φ/∂z difference.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from darkml.phasespace.config import PhaseSpaceConfig
from darkml.phasespace.ensembles import load_trained_member
from darkml.phasespace.isolation import observer_truth
from darkml.runs import Run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--dz", type=float, default=0.1)
    ap.add_argument("--velocities", type=int, default=4000)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = Run.open(a.run_dir)
    cfg = run.load_config(PhaseSpaceConfig)
    pot, _, _, sun, _ = observer_truth(cfg)
    pts = torch.tensor([[sun[0], sun[1], sun[2] + a.dz], [sun[0], sun[1], sun[2] - a.dz]], dtype=torch.float32)
    base = torch.randn((a.velocities, 3), generator=torch.Generator().manual_seed(cfg.seed))
    true_az = pot.acceleration(pts.double())[:, 2]
    print(f"exact a_z(+{a.dz}) - a_z(-{a.dz}): {float(true_az[0] - true_az[1]):.1f} (km/s)^2/kpc")
    rows = []
    for k in range(a.members):
        flow = load_trained_member(run, "original", k)
        x = pts.clone().requires_grad_(True)
        v = flow.sample_v(x, a.velocities, base=base)
        m2 = torch.einsum("pni,pnj->pij", v, v) / a.velocities
        g = torch.autograd.grad(flow.log_nu(x).sum(), x, retain_graph=True)[0]

        def grad(t, x=x):
            return torch.autograd.grad(t.sum(), x, retain_graph=True)[0]

        t1 = grad(m2[:, 2, 2])[:, 2]
        t2 = m2[:, 2, 2] * g[:, 2]
        t3 = grad(m2[:, 0, 2])[:, 0] + grad(m2[:, 1, 2])[:, 1] + m2[:, 0, 2] * g[:, 0] + m2[:, 1, 2] * g[:, 1]
        diff = [float((t[0] - t[1]).detach()) for t in (t1, t2, t3, t1 + t2 + t3)]
        rows.append(diff)
        print(f"  m{k}: d<vz2>/dz {diff[0]:8.1f}   <vz2> dln nu/dz {diff[1]:8.1f}   x, y terms {diff[2]:7.1f}   "
              f"a_z {diff[3]:8.1f}   (dln nu/dz at +{a.dz}: {float(g[0, 2]):.3f} /kpc)")
    r = np.array(rows)
    print("  mean " + "  ".join(f"{m:8.1f}" for m in r.mean(0)) + "\n  std  " + "  ".join(f"{s:8.1f}" for s in r.std(0, ddof=1)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
