"""Strong-lensing simulator speed: images per second per class, lenstronomy vs torch.

Renders the *same* parameter records (64x64 pixels, supersampling 2, PSF, noise: the paper
presets) with the lenstronomy reference (one process, numpy) and the batched torch backend
(eager and torch.compile'd; CPU with ``--threads`` threads, and CUDA when available), and prints
a table plus a JSON file. Warm-up (first batch, and compilation) is excluded and reported
separately.

    .venv/bin/python benchmarks/lensing.py                       # euclid + hst, all classes
    .venv/bin/python benchmarks/lensing.py --presets euclid --n-torch 512 --n-lenstronomy 48
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# this folder holds other scripts (e.g. ssl.py) that would shadow standard-library modules
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import numpy as np
import torch

from darkml.lensing.params import CLASS_NAMES, draw_records
from darkml.lensing.simulate import observe
from darkml.lensing.dataset import load_sim_config
from darkml.runs import atomic_write_json, machine_info


def _timed(fn) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["euclid", "hst"])
    ap.add_argument("--classes", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n-lenstronomy", type=int, default=24, help="images per class for lenstronomy")
    ap.add_argument("--n-torch", type=int, default=256, help="images per class for torch on CPU")
    ap.add_argument("--n-cuda", type=int, default=4096, help="images per class for torch on CUDA")
    ap.add_argument("--batch-cpu", type=int, default=16, help="torch eager CPU batch (cache-sized)")
    ap.add_argument("--batch-cpu-compiled", type=int, default=64, help="torch compiled CPU batch")
    ap.add_argument("--batch-cuda", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (median reported)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile variants")
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "lensing.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info()

    variants = [("torch-cpu", "cpu", False, args.batch_cpu, args.n_torch)]
    if not args.no_compile:
        variants.append(("torch-cpu-compiled", "cpu", True, args.batch_cpu_compiled, args.n_torch))
    if torch.cuda.is_available():
        variants.append(("torch-cuda", "cuda", False, args.batch_cuda, args.n_cuda))
        if not args.no_compile:
            variants.append(("torch-cuda-compiled", "cuda", True, args.batch_cuda, args.n_cuda))

    rows = []
    for preset in args.presets:
        cfg = load_sim_config(preset)
        for label in args.classes:
            rng = np.random.default_rng([123, label])
            n_max = max([args.n_lenstronomy] + [v[4] for v in variants])
            rec = draw_records(cfg, rng, np.full(n_max, label))
            lt_rec = rec.subset(np.arange(args.n_lenstronomy))
            observe(lt_rec.subset([0]), cfg, "lenstronomy")  # imports / warm-up
            row = {"preset": preset, "class": CLASS_NAMES[label]}
            runs = {"lenstronomy": (lambda: observe(lt_rec, cfg, "lenstronomy"), args.n_lenstronomy)}
            for name, dev, comp, bs, n in variants:
                r = rec.subset(np.arange(n))
                kw = dict(device=dev, batch_size=bs, compile=comp)
                t0 = time.perf_counter()
                observe(r, cfg, "torch", **kw)  # warm-up: compiles every kernel shape the timed runs use
                if dev == "cuda":
                    torch.cuda.synchronize()
                row[f"{name}_warmup_s"] = time.perf_counter() - t0
                runs[name] = ((lambda r=r, kw=kw: observe(r, cfg, "torch", **kw)), n)
            # interleaved repeats: every backend is timed once per round, so a change in the
            # machine's speed between rounds affects the per-round ratios equally
            t = {k: [] for k in runs}
            for _ in range(args.repeats):
                for k, (fn, n) in runs.items():
                    t[k].append(_timed(fn))
            for k, (fn, n) in runs.items():
                wall, cpu = np.array(t[k]).T
                row[k], row[f"{k}_per_cpu_s"] = n / float(np.median(wall)), n / float(np.median(cpu))
                if k != "lenstronomy":
                    lt_wall = np.array(t["lenstronomy"])[:, 0]
                    ratios = (n / wall) / (args.n_lenstronomy / lt_wall)
                    row[f"{k}_speedup_rounds"] = [round(float(x), 2) for x in ratios]
            rows.append(row)
            print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    names = [v[0] for v in variants]
    head = f"{'preset':8s} {'class':16s} {'lenstronomy':>12s} " + " ".join(f"{n:>20s}" for n in names) + "   speed-up"
    print("\nimages per wall-clock second (median of %d interleaved rounds); speed-up = fastest CPU torch /"
          " lenstronomy; per-CPU-second speed-up (robust to other load) in brackets" % args.repeats)
    print(head)
    for r in rows:
        cpu_best = max(r[n] for n in names if "cpu" in n)
        per_cpu = max(r[f"{n}_per_cpu_s"] for n in names if "cpu" in n) / r["lenstronomy_per_cpu_s"]
        r["speedup_wall"], r["speedup_per_cpu_s"] = cpu_best / r["lenstronomy"], per_cpu
        fastest = max((n for n in names if "cpu" in n), key=lambda n: r[n])
        rounds = r[f"{fastest}_speedup_rounds"]
        print(f"{r['preset']:8s} {r['class']:16s} {r['lenstronomy']:12.1f} " + " ".join(f"{r[n]:20.1f}" for n in names)
              + f"   {r['speedup_wall']:6.1f}x  [{per_cpu:.1f}x]  rounds {min(rounds):.1f}-{max(rounds):.1f}x")
    result = {
        "rows": rows,
        "machine": machine | {"load_average_end": os.getloadavg()},
        "settings": vars(args) | {"json": str(args.json)},
        "note": "lenstronomy runs in one process (numpy); torch uses --threads CPU threads. Both include noise.",
    }
    atomic_write_json(args.json, result)
    print(f"\nwritten {args.json}")
    return result


if __name__ == "__main__":
    main()
