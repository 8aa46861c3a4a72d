"""Benchmark: astrometric-lensing signal maps per second, darkml vs a plain reference.

Times :func:`darkml.astrometry.sky.signal_map` (velocity maps of full ~1,200-subhalo populations,
20° cut) at nside 32 and 128 on the CPU (eager kernel with 1 and 2 torch threads, and the
``torch.compile``-fused kernel), and on CUDA when available (one map per call and batches of
maps with ``signal_maps``), against ``benchmarks/reference_astrometry.py`` (a plain numpy loop
over subhalos with ``healpy.query_disc``). Every timed path is checked to agree with the
reference to 1e-6 relative (max |difference| / max |reference| on the same population).

    .venv/bin/python benchmarks/astrometry.py                 # prints a table, writes JSON
    .venv/bin/python benchmarks/astrometry.py --nside 32 --repeats 20 --out /tmp/a.json

Wall-clock and process CPU time are both recorded: on a shared machine the wall time depends
on the load (recorded too, from os.getloadavg).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# other scripts in benchmarks/ must not shadow standard modules (the script's folder is sys.path[0])
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from darkml.astrometry import population, sky  # noqa: E402
from darkml.runs import atomic_write_json, machine_info  # noqa: E402

_spec = importlib.util.spec_from_file_location("reference_astrometry", HERE / "reference_astrometry.py")
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)
reference_signal_map = _ref.reference_signal_map

TOL = 1e-6


def _agree(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def _time(fn, cats, sync=None) -> dict:
    """Mean wall and CPU time per map, and the best single-map wall time (least disturbed by other load)."""
    walls = []
    c0 = time.process_time()
    for cat in cats:
        w = time.perf_counter()
        fn(cat)
        if sync:
            sync()
        walls.append(time.perf_counter() - w)
    cpu = time.process_time() - c0
    n = len(cats)
    wall = float(np.sum(walls))
    return {"maps": n, "wall_s_per_map": wall / n, "best_wall_s_per_map": float(np.min(walls)), "cpu_s_per_map": cpu / n,
            "maps_per_s": n / wall, "maps_per_s_best": 1.0 / float(np.min(walls))}


def _worker(args: tuple) -> tuple[float, float, int]:
    """One process of the machine-throughput run: warm up, wait at the barrier, time ``n`` maps."""
    kind, nside, max_angle, seed, n, rank, procs, rendezvous = args
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    cats = [population.draw_population(None, rng) for _ in range(n)]
    if kind == "reference":
        fn = lambda c: reference_signal_map(c, nside, max_angle)  # noqa: E731
    else:
        fn = lambda c: sky.signal_map(c, nside=nside, max_angle_deg=max_angle, threads=1,  # noqa: E731
                                      compile=kind.startswith("compiled"), precision="mixed" if "mixed" in kind else "double")
    fn(cats[0])  # warm-up (compilation)
    # start together once every process has compiled/warmed up (a folder of marker files as the
    # barrier: no multiprocessing semaphores to leak)
    Path(rendezvous, f"ready-{rank}").touch()
    while len(list(Path(rendezvous).glob("ready-*"))) < procs:
        time.sleep(0.01)
    t0 = time.perf_counter()
    for c in cats:
        fn(c)
    return t0, time.perf_counter(), n


def _machine_throughput(kind: str, nside: int, max_angle: float, n: int, procs: int, seed: int) -> dict:
    """Maps/s of ``procs`` concurrent single-threaded processes (what ``simulate --workers N`` does)."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as rendezvous, ctx.Pool(procs) as pool:
        res = pool.map(_worker, [(kind, nside, max_angle, seed + 1000 * (i + 1), n, i, procs, rendezvous)
                                 for i in range(procs)], chunksize=1)
    wall = max(r[1] for r in res) - min(r[0] for r in res)
    total = sum(r[2] for r in res)
    return {"maps": total, "processes": procs, "wall_s": wall, "maps_per_s": total / wall, "wall_s_per_map": wall / total}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nside", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--repeats", type=int, default=10, help="maps timed per configuration (distinct populations)")
    ap.add_argument("--reference-maps", type=int, default=2, help="maps timed with the reference")
    ap.add_argument("--max-angle", type=float, default=20.0)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile path")
    ap.add_argument("--paired-rounds", type=int, default=5,
                    help="rounds alternating one reference map and --paired-maps maps of the fastest CPU path (0 = skip)")
    ap.add_argument("--paired-maps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                    help="machine throughput: this many concurrent 1-thread processes (0 = skip)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "astrometry.json")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    cats = [population.draw_population(None, rng) for _ in range(max(args.repeats, args.reference_maps))]
    t_pop = (time.perf_counter() - t0) / len(cats)
    result = {
        "machine": machine_info(),
        "subhalos_per_map": [len(c["m200"]) for c in cats],
        "population_draw_s_per_map": t_pop,
        "max_angle_deg": args.max_angle,
        "tolerance": TOL,
        "results": {},
    }
    rows = []
    for nside in args.nside:
        ref_cats = cats[: args.reference_maps]
        refs = []
        ref = _time(lambda c: refs.append(reference_signal_map(c, nside, args.max_angle)), ref_cats)
        res = {"reference": ref}
        rows.append((nside, "reference (numpy + query_disc)", ref, None))
        paths = [("cpu eager, 1 thread", dict(device="cpu", threads=1)),
                 ("cpu eager, 2 threads", dict(device="cpu", threads=2))]
        paths.append(("cpu eager mixed, 1 thread", dict(device="cpu", threads=1, precision="mixed")))
        if not args.no_compile:
            paths.append(("cpu compiled, 1 thread", dict(device="cpu", threads=1, compile=True)))
            paths.append(("cpu compiled mixed, 1 thread", dict(device="cpu", threads=1, compile=True, precision="mixed")))
        if torch.cuda.is_available():
            paths.append(("cuda", dict(device="cuda")))
            paths.append(("cuda compiled", dict(device="cuda", compile=True)))
            paths.append(("cuda mixed", dict(device="cuda", precision="mixed")))
        for name, kw in paths:
            fn = lambda c, kw=kw: sky.signal_map(c, nside=nside, max_angle_deg=args.max_angle, **kw)  # noqa: E731
            w0 = time.perf_counter()
            first = fn(ref_cats[0])  # warm-up (compilation, caches)
            warm = time.perf_counter() - w0
            err = max(_agree(fn(c) if i else first, r) for i, (c, r) in enumerate(zip(ref_cats, refs)))
            sync = torch.cuda.synchronize if kw.get("device") == "cuda" else None
            t = _time(fn, cats[: args.repeats], sync)
            t.update({"first_call_s": warm, "max_rel_diff_vs_reference": err, "agrees": err < TOL,
                      "speedup_vs_reference": ref["wall_s_per_map"] / t["wall_s_per_map"],
                      "speedup_vs_reference_best": ref["best_wall_s_per_map"] / t["best_wall_s_per_map"],
                      "speedup_vs_reference_cpu": ref["cpu_s_per_map"] / t["cpu_s_per_map"]})
            res[name] = t
            rows.append((nside, name, t, err))
        if args.paired_rounds > 0:
            # the machine's speed drifts between the timings above (minutes apart); here the
            # reference and the last CPU path listed (compiled mixed unless --no-compile)
            # alternate round by round, so a drift hits both
            name, kw = [p for p in paths if p[1]["device"] != "cuda"][-1]
            ratios, fast_walls, ref_walls = [], [], []
            for i in range(args.paired_rounds):
                c = cats[i % len(cats)]
                w = time.perf_counter()
                reference_signal_map(c, nside, args.max_angle)
                ref_walls.append(time.perf_counter() - w)
                w = time.perf_counter()
                for _ in range(args.paired_maps):
                    sky.signal_map(c, nside=nside, max_angle_deg=args.max_angle, **kw)
                fast_walls.append((time.perf_counter() - w) / args.paired_maps)
                ratios.append(ref_walls[-1] / fast_walls[-1])
            res["paired"] = {"path": name, "rounds": args.paired_rounds, "maps_per_round": args.paired_maps,
                             "speedup_rounds": ratios, "speedup_median": float(np.median(ratios)),
                             "maps_per_s_median": 1.0 / float(np.median(fast_walls)),
                             "reference_maps_per_s_median": 1.0 / float(np.median(ref_walls))}
            print(f"nside {nside}: {name} vs reference in {args.paired_rounds} alternating rounds: speed-up median "
                  f"{np.median(ratios):.1f}x (rounds {min(ratios):.1f}-{max(ratios):.1f}x)", flush=True)
        if torch.cuda.is_available():
            batch = cats[: args.repeats]
            fn = lambda cs: sky.signal_maps(cs, nside=nside, max_angle_deg=args.max_angle, device="cuda")  # noqa: E731
            fn(batch)
            torch.cuda.synchronize()
            w0 = time.perf_counter()
            out = fn(batch)
            torch.cuda.synchronize()
            wall = time.perf_counter() - w0
            err = max(_agree(out[i], r) for i, r in enumerate(refs))
            t = {"maps": len(batch), "wall_s_per_map": wall / len(batch), "maps_per_s": len(batch) / wall,
                 "max_rel_diff_vs_reference": err, "agrees": err < TOL, "speedup_vs_reference": ref["wall_s_per_map"] * len(batch) / wall}
            res[f"cuda batched ({len(batch)} maps per call)"] = t
            rows.append((nside, f"cuda batched x{len(batch)}", t, err))
        if args.processes > 1:
            # machine throughput: every core busy, as in `darkml astrometry simulate --workers N`
            n_ref = max(1, args.reference_maps)
            mref = _machine_throughput("reference", nside, args.max_angle, n_ref, args.processes, args.seed)
            res[f"reference, {args.processes} processes"] = mref
            rows.append((nside, f"reference x{args.processes} procs", mref, None))
            for kind in ("eager",) + (() if args.no_compile else ("compiled", "compiled mixed")):
                mt = _machine_throughput(kind, nside, args.max_angle, args.repeats, args.processes, args.seed)
                mt["speedup_vs_reference"] = mt["maps_per_s"] / mref["maps_per_s"]
                res[f"cpu {kind}, {args.processes} processes"] = mt
                rows.append((nside, f"{kind} x{args.processes} procs", mt, None))
        result["results"][str(nside)] = res
    result["machine"]["load_average_end"] = os.getloadavg()

    print(f"{'nside':>5}  {'path':<30} {'maps/s':>8} {'best':>8} {'wall s/map':>11} {'cpu s/map':>10} "
          f"{'vs ref':>7} {'(best)':>7} {'(cpu)':>7} {'max rel diff':>13}")
    nan = float("nan")
    for nside, name, t, err in rows:
        print(f"{nside:>5}  {name:<30} {t['maps_per_s']:>8.2f} {t.get('maps_per_s_best', nan):>8.2f} "
              f"{t['wall_s_per_map']:>11.4f} {t.get('cpu_s_per_map', nan):>10.4f} "
              f"{t.get('speedup_vs_reference', 1.0):>6.1f}x {t.get('speedup_vs_reference_best', 1.0):>6.1f}x "
              f"{t.get('speedup_vs_reference_cpu', 1.0):>6.1f}x {'' if err is None else f'{err:.1e}':>13}")
    for nside, r in result["results"].items():
        if "paired" in r:
            pr = r["paired"]
            print(f"nside {nside} paired ({pr['path']} vs reference, {pr['rounds']} alternating rounds): "
                  f"{pr['speedup_median']:.1f}x median, rounds {min(pr['speedup_rounds']):.1f}-{max(pr['speedup_rounds']):.1f}x")
    print(f"population draw: {t_pop * 1e3:.1f} ms/map; load average {result['machine']['load_average']} -> "
          f"{result['machine']['load_average_end']}")
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    bad = [(n, k) for n, r in result["results"].items() for k, v in r.items() if "agrees" in v and not v["agrees"]]
    if bad:
        raise SystemExit(f"disagreement with the reference above {TOL}: {bad}")
    return result


if __name__ == "__main__":
    main()
