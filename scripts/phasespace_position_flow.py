"""Is the position flow's mid-plane error a lack of stars or of training? (docs/phasespace.md)

    python scripts/phasespace_position_flow.py RUN_DIR [--schedule plateau|cosine] [--epochs 150]
        [--transforms 4] [--hidden 48 48] [--seed 0] [--velocities-from RUN_DIR]

Trains only ν(x) — the study's own position flow (``flows.PhaseSpaceFlow.pos`` behind
``BallPreprocess``) — on the run's original stars (80 % train / 20 % validation), with

* ``plateau``: Adam 2e-3, the rate cut ×0.1 after 4 epochs without a lower validation loss,
  stopped after 10 epochs without an improvement of 1e-4 nats (the study's schedule, strictly);
* ``cosine``: Adam 2e-3 decayed as a half cosine to 0 over ``--epochs``, no early stopping;

then prints, against the mock's exact ν: the validation −⟨ln ν⟩ of both, ∂² ln ν/∂z² at the
mid-plane under the observer, the same curvature over the kernel's ±0.1 kpc (averaged over the
kernel's 1 × 1 kpc face), and the smoothed density at the observer with the learned ν and the
exact p(v|x) (isolation row c2; velocities drawn from member 0 of the run, or of
``--velocities-from`` — a trained run of the same mock — when RUN_DIR holds only a simulated dataset).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from darkml.phasespace import boltzmann, flows, gauss
from darkml.phasespace.config import PhaseSpaceConfig
from darkml.phasespace.dataset import load_stars
from darkml.phasespace.ensembles import load_trained_member
from darkml.phasespace.isolation import HybridModel, midplane_curvature, observer_truth
from darkml.runs import Run


def box_curvature(log_nu, sun, h: float = 0.1) -> float:
    """(ln ν(z0 + h) + ln ν(z0 − h) − 2 ln ν(z0)) / h², averaged over the 1 × 1 kpc face around the observer."""
    g = torch.linspace(-0.5, 0.5, 11, dtype=torch.float64)
    X, Y = torch.meshgrid(sun[0] + g, sun[1] + g, indexing="ij")
    X, Y = X.reshape(-1), Y.reshape(-1)
    with torch.no_grad():
        v = [log_nu(torch.stack([X, Y, torch.full_like(X, sun[2] + dz)], 1)).double() for dz in (-h, 0.0, h)]
    return float(((v[0] + v[2] - 2 * v[1]) / h**2).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--schedule", choices=("plateau", "cosine"), default="cosine")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--transforms", type=int, default=4)
    ap.add_argument("--hidden", type=int, nargs="+", default=[48, 48])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--velocities-from", default=None, help="a trained run of the same mock (velocity sampler)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    run = Run.open(a.run_dir)
    cfg = run.load_config(PhaseSpaceConfig)
    _, df, kernel, sun, truth = observer_truth(cfg)
    x, v = load_stars(run, cfg, "original")
    perm = np.random.default_rng(a.seed).permutation(len(x))
    n_val = len(x) // 5
    xva, xtr = (torch.tensor(x[i], dtype=torch.float32) for i in (perm[:n_val], perm[n_val:]))
    spec = flows.flow_spec(x[perm[n_val:]], v[perm[n_val:]], cfg.mock.observer_kpc, cfg.mock.radius_kpc,
                           transforms=a.transforms, hidden=a.hidden)
    model = flows.PhaseSpaceFlow(spec)
    params = list(model.pos.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    if a.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=4)
    gen = torch.Generator().manual_seed(a.seed + 1)
    best, bad, state, t0 = math.inf, 0, None, time.perf_counter()
    for ep in range(a.epochs):
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(order) - 2047, 2048):
            loss = -model.log_nu(xtr[order[i:i + 2048]]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = -model.log_nu(xva).mean().item()
        if a.schedule == "cosine":
            sched.step()
            best, state = val, {k: t.clone() for k, t in model.state_dict().items()}
        else:
            sched.step(val)
            if val < best - 1e-4:
                best, bad, state = val, 0, {k: t.clone() for k, t in model.state_dict().items()}
            else:
                bad += 1
            if bad > 10:
                break
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        exact_val = -df.log_nu(xva.double()).mean().item()
    R0 = math.hypot(sun[0], sun[1])
    k_f, k_t = midplane_curvature(lambda p: model.log_nu(p.float()), R0), midplane_curvature(df.log_nu, R0)
    b_f, b_t = box_curvature(lambda p: model.log_nu(p.float()), sun), box_curvature(df.log_nu, sun)
    vel = load_trained_member(Run.open(a.velocities_from) if a.velocities_from else run, "original", 0)

    class _Nu(torch.nn.Module):  # the learned ν with member 0's velocity sampler (p(v|x) itself is exact in c2)
        def log_nu(self, p):
            return model.log_nu(p.float())

        def sample_v(self, *args, **kwargs):
            return vel.sample_v(*args, **kwargs)

    m = cfg.measure
    field = boltzmann.AccelerationField(HybridModel(_Nu(), df, "learned", "exact"), m.fast_velocities, m.weighting,
                                        common_random_numbers=True, seed=cfg.seed, batch_points=m.batch_points)
    rho = gauss.density_fast(lambda p: field(p.to(torch.float64)).to(torch.float64), sun, kernel, *m.fast_nodes).rho
    print(f"{len(x)} stars, MAF {a.transforms} x {a.hidden}, {a.schedule} ({ep + 1} epochs, {time.perf_counter() - t0:.0f} s)")
    print(f"  validation -<ln nu>: flow {best:.4f}, exact {exact_val:.4f} (difference {best - exact_val:+.4f} nats/star)")
    print(f"  d2 ln nu/dz2 at the mid-plane: {k_f:.2f} / {k_t:.2f} kpc^-2 = {k_f / k_t:.3f}")
    print(f"  over the kernel's +-0.1 kpc:    {b_f:.2f} / {b_t:.2f} kpc^-2 = {b_f / b_t:.3f}")
    print(f"  smoothed density, learned nu and exact p(v|x): {100 * (rho / truth - 1):+.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
