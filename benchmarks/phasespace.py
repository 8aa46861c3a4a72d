"""Phase-space study benchmark: cost of accelerations and densities from a flow pair.

Prints a table and writes JSON (default ``benchmarks/results/phasespace.json``)::

    python benchmarks/phasespace.py                 # CPU (and CUDA when available)
    python benchmarks/phasespace.py --device cpu --threads 1 --paper-velocities 10000

Measured per device, for a flow pair of the paper preset's size (8 MAF transforms, 64×64
hidden; timings do not depend on the weights, so the flows are untrained):

* acceleration point: seconds and network evaluations (log f with both gradients + sampling)
  for N velocities (10,000 as in the paper, and 1,000);
* density point, fast estimator: 192-node symmetric cubature × ``--fast-velocities`` velocities
  per node (256 and 1,000 by default) with common random numbers;
* density point, the paper's estimator: 3,200 kernel points × 10,000 velocities ≈ 3.2e7
  evaluations. On a CPU this takes tens of minutes, so unless ``--full-paper`` is given it is
  timed on ``--paper-subset`` kernel points and extrapolated linearly in the number of
  evaluations (the work is a batched loop over identical chunks, so time ∝ evaluations);
* the accuracy of both density estimators on the *exact* MWPotential2014 acceleration field
  at the Sun (against the kernel-smoothed truth), which isolates the estimator from the flows;
* mock sampling speed (stars/s) and the Jeans baseline's time;
* with ``--qdf-bias``: the equilibrium bias of galpy's quasi-isothermal disc DF at the Sun (the
  mock the issue suggested; ours, f(E, Lz), has none by construction).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path, where a sibling script may shadow a
# standard-library module (benchmarks/ssl.py shadows `ssl`, which torch imports); drop it.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from darkml.phasespace import boltzmann, disc, flows, gauss, jeans, mocks  # noqa: E402
from darkml.runs import atomic_write_json, machine_info  # noqa: E402


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, dev, repeat=1, warm=True):
    if warm:
        fn()  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    _sync(dev)
    return (time.perf_counter() - t0) / repeat, out


def bench_device(dev: torch.device, model_cpu: flows.PhaseSpaceFlow, args) -> dict:
    model = model_cpu.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    obs = torch.tensor([mocks.OBSERVER_KPC])
    bp = args.batch_points or (50_000 if dev.type == "cpu" else 500_000)
    out: dict = {"device": str(dev), "batch_points": bp}
    for n in (args.paper_velocities, 1000):
        field = boltzmann.AccelerationField(model, n, "f", common_random_numbers=False, seed=0, batch_points=bp)
        t, _ = _timed(lambda: field(obs), dev)
        out[f"acceleration_s_per_point_N{n}"] = t
        out[f"acceleration_evals_per_point_N{n}"] = n
    kern = gauss.Kernel()
    out["fast"] = []
    for nf in args.fast_velocities:
        fast = boltzmann.AccelerationField(model, nf, "f", common_random_numbers=True, seed=1, batch_points=bp)
        t_fast, r = _timed(lambda: gauss.density_fast(fast, mocks.OBSERVER_KPC, kern), dev, warm=False)
        out["fast"].append({"velocities": nf, "s_per_point": t_fast, "evals_per_point": r.n_points * nf})
    paper_field = boltzmann.AccelerationField(model, args.paper_velocities, "f", common_random_numbers=False, seed=2,
                                              batch_points=bp)
    n_full = 3200
    n_run = n_full if (args.full_paper or dev.type == "cuda") else args.paper_subset
    t_sub, _ = _timed(lambda: gauss.density_paper(paper_field, mocks.OBSERVER_KPC, kern, n_run - n_run // 4, n_run // 4), dev,
                      warm=False)
    out["paper_density_kernel_points_timed"] = n_run
    out["paper_density_s_per_point"] = t_sub * n_full / n_run
    out["paper_density_extrapolated"] = n_run != n_full
    out["paper_density_evals_per_point"] = n_full * args.paper_velocities
    for f in out["fast"]:
        f["speedup_time"] = out["paper_density_s_per_point"] / f["s_per_point"]
        f["speedup_evals"] = out["paper_density_evals_per_point"] / f["evals_per_point"]
    # divergence (point density) by autograd through the CRN field
    fast = boltzmann.AccelerationField(model, args.fast_velocities[0], "f", common_random_numbers=True, seed=1, batch_points=bp)
    t_div, _ = _timed(lambda: gauss.density_divergence(fast.differentiable, mocks.OBSERVER_KPC), dev)
    out["autograd_point_density_s"] = t_div
    return out


def bench_estimators_exact() -> dict:
    """Both density estimators on the exact MWPotential2014 field at the Sun vs the smoothed truth."""
    mw = mocks.MilkyWay2014()
    kern = gauss.Kernel()
    truth = gauss.smoothed_density(mw.density, mocks.OBSERVER_KPC, kern)
    point = mw.density(torch.tensor([mocks.OBSERVER_KPC], dtype=torch.float64)).item()
    fast = gauss.density_fast(mw.acceleration, mocks.OBSERVER_KPC, kern)
    papers = [gauss.density_paper(mw.acceleration, mocks.OBSERVER_KPC, kern, 2400, 800, seed=s) for s in range(20)]
    rel = np.array([p.rho / truth - 1 for p in papers])
    return {"smoothed_truth_msun_kpc3": truth, "point_truth_msun_kpc3": point, "smoothed_over_point": truth / point,
            "fast_rel_error": fast.rho / truth - 1, "paper_mc_rel_error_mean": float(rel.mean()),
            "paper_mc_rel_error_rms": float(np.sqrt((rel**2).mean())), "paper_mc_reported_error": papers[0].error / truth}


def qdf_equilibrium_bias(n: int = 1500, seed: int = 0) -> dict:
    """Equilibrium bias of galpy's quasi-isothermal disc DF (the issue's suggested mock) at the Sun.

    Velocities from the qDF at the Sun; ∂ log f by central differences of the qDF itself; the
    axisymmetric Boltzmann equation v_R∂_R f + v_z∂_z f + (v_T²/R)∂_{v_R} f − (v_R v_T/R)∂_{v_T} f
    + a_R ∂_{v_R} f + a_z ∂_{v_z} f = 0 solved for (a_R, a_z) by least squares. An exact steady
    state would return −∇Φ exactly (as our f(E, Lz) mock does); the difference is the qDF's bias.
    """
    from galpy.actionAngle import actionAngleStaeckel
    from galpy.df import quasiisothermaldf
    from galpy.potential import MWPotential2014

    ro, vo = 8.0, 220.0
    np.random.seed(seed)  # galpy's sampler uses numpy's global generator
    aA = actionAngleStaeckel(pot=MWPotential2014, delta=0.45, c=True)
    qdf = quasiisothermaldf(1.0 / 3.0, 0.2, 0.1, 1.0, 1.0, pot=MWPotential2014, aA=aA, cutcounter=True)
    R0, z0 = mocks.OBSERVER_KPC[0] / ro, mocks.OBSERVER_KPC[2] / ro
    t0 = time.perf_counter()
    vs = qdf.sampleV(R0, z0, n=n)
    t_sample = time.perf_counter() - t0
    vR, vT, vz = vs[:, 0], vs[:, 1], vs[:, 2]

    def lf(R, a, b, z, c):
        return np.log(np.ravel(qdf(np.full(n, R), a, b, np.full(n, z), c)))

    h = 1e-4
    gR = (lf(R0 + h, vR, vT, z0, vz) - lf(R0 - h, vR, vT, z0, vz)) / (2 * h)
    gz = (lf(R0, vR, vT, z0 + h, vz) - lf(R0, vR, vT, z0 - h, vz)) / (2 * h)
    gvR = (lf(R0, vR + h, vT, z0, vz) - lf(R0, vR - h, vT, z0, vz)) / (2 * h)
    gvT = (lf(R0, vR, vT + h, z0, vz) - lf(R0, vR, vT - h, z0, vz)) / (2 * h)
    gvz = (lf(R0, vR, vT, z0, vz + h) - lf(R0, vR, vT, z0, vz - h)) / (2 * h)
    b = vR * gR + vz * gz + (vT**2 / R0) * gvR - (vR * vT / R0) * gvT
    sol, *_ = np.linalg.lstsq(np.stack([gvR, gvz], 1), -b, rcond=None)
    aR, az = sol * vo**2 / ro
    tR, tz = mocks.MilkyWay2014().acceleration_Rz(torch.tensor([mocks.OBSERVER_KPC[0]], dtype=torch.float64),
                                                 torch.tensor([mocks.OBSERVER_KPC[2]], dtype=torch.float64))
    tR, tz = tR.item(), tz.item()
    return {"a_R": aR, "a_z": az, "true_a_R": tR, "true_a_z": tz, "radial_rel_bias": aR / tR - 1,
            "vertical_bias_over_norm": (az - tz) / abs(tR), "n_velocities": n, "qdf_sampling_stars_per_s": n / t_sample}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--transforms", type=int, default=8)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    ap.add_argument("--paper-velocities", type=int, default=10_000)
    ap.add_argument("--fast-velocities", type=int, nargs="+", default=[256, 1000])
    ap.add_argument("--paper-subset", type=int, default=32, help="kernel points timed on CPU before extrapolating to 3200")
    ap.add_argument("--full-paper", action="store_true", help="time all 3200 kernel points on CPU too (slow)")
    ap.add_argument("--batch-points", type=int, default=None, help="default: 5e4 on CPU, 5e5 on CUDA")
    ap.add_argument("--qdf-bias", action="store_true", help="also measure galpy's quasi-isothermal DF equilibrium bias (~1 min)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "phasespace.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    mw = mocks.MilkyWay2014()
    df = disc.DiscDF(mw, [disc.DiscComponent(0.8, 25.0, 2.5), disc.DiscComponent(0.2, 45.0, 2.5)])
    t0 = time.perf_counter()
    x, v, _ = df.sample(100_000, np.random.default_rng(0))
    t_sample = time.perf_counter() - t0
    torch.manual_seed(0)
    model = flows.PhaseSpaceFlow(flows.flow_spec(x, v, mocks.OBSERVER_KPC, mocks.SUPPORT_RADIUS_KPC,
                                                 transforms=args.transforms, hidden=args.hidden))
    t0 = time.perf_counter()
    jeans.jeans_estimate(x, v, np.array([mocks.OBSERVER_KPC]), mocks.OBSERVER_KPC, mocks.SUPPORT_RADIUS_KPC,
                         jeans.JeansSettings(n_boot=20))
    t_jeans = time.perf_counter() - t0

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    results = {"machine": machine_info(), "flow_parameters": flows.count_parameters(model),
               "flow": {"transforms": args.transforms, "hidden": args.hidden},
               "mock_sampling_stars_per_s": 100_000 / t_sample, "jeans_s_100k_stars_20_bootstraps": t_jeans,
               "estimators_on_exact_field": bench_estimators_exact(), "devices": []}
    for dev in devices:
        results["devices"].append(bench_device(dev, model, args))
    if args.qdf_bias:
        results["qdf_equilibrium_bias"] = qdf_equilibrium_bias()

    rows = [("mock sampling [stars/s]", f"{results['mock_sampling_stars_per_s']:.0f}"),
            ("Jeans (100k stars, 20 bootstraps) [s]", f"{t_jeans:.2f}"),
            ("fast estimator on exact field: rel. error", f"{results['estimators_on_exact_field']['fast_rel_error']:+.2e}"),
            ("paper MC on exact field: rms rel. error", f"{results['estimators_on_exact_field']['paper_mc_rel_error_rms']:.2e}"),
            ("smoothed / point density at the Sun", f"{results['estimators_on_exact_field']['smoothed_over_point']:.3f}")]
    for d in results["devices"]:
        dn = d["device"]
        rows += [(f"[{dn}] acceleration, N={args.paper_velocities} [s/point]", f"{d[f'acceleration_s_per_point_N{args.paper_velocities}']:.3f}"),
                 (f"[{dn}] acceleration, N=1000 [s/point]", f"{d['acceleration_s_per_point_N1000']:.4f}"),
                 (f"[{dn}] density paper MC [s/point] ({d['paper_density_evals_per_point']:.3g} evals)"
                  + (" (extrapolated)" if d["paper_density_extrapolated"] else ""), f"{d['paper_density_s_per_point']:.1f}")]
        for f in d["fast"]:
            rows += [(f"[{dn}] density fast, {f['velocities']} vel/node [s/point] ({f['evals_per_point']:.3g} evals)",
                      f"{f['s_per_point']:.2f}"),
                     (f"[{dn}]   speed-up over paper: time / evaluations", f"{f['speedup_time']:.0f}x / {f['speedup_evals']:.0f}x")]
        rows += [(f"[{dn}] point density by autograd [s]", f"{d['autograd_point_density_s']:.2f}")]
    if "qdf_equilibrium_bias" in results:
        q = results["qdf_equilibrium_bias"]
        rows += [("quasi-isothermal DF at the Sun: a_R bias / a_z bias over |a|",
                  f"{q['radial_rel_bias']:+.2e} / {q['vertical_bias_over_norm']:+.2e}"),
                 ("quasi-isothermal DF: galpy sampleV [stars/s]", f"{q['qdf_sampling_stars_per_s']:.0f}")]
    w = max(len(r[0]) for r in rows)
    print(f"phase-space benchmark — {results['flow_parameters']} flow parameters, torch threads {results['machine']['torch_threads']}, "
          f"load {results['machine']['load_average'][0]:.1f}")
    for k, val in rows:
        print(f"  {k:<{w}}  {val}")
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
