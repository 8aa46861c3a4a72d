"""Speed of the gas-skymap study: GP per velocity bin, patch-CNN training throughput, full-map inference.

    python benchmarks/gas.py                       # CPU (and CUDA when available), paper grid (120 px)
    python benchmarks/gas.py --pixels 32 --quick   # smaller, for a loaded laptop

Prints a table and writes benchmarks/results/gas.json. Timings on a shared machine vary with
its load; the load average is recorded next to them.

* GP: one velocity bin = 2 batched GPs (horizontal + vertical 9-px lines) on ``--gp-points``
  training patches each; exact marginal likelihood, Adam steps timed and scaled to
  ``--gp-iters``; prediction of the bin's test region (10 tiles of 120 x 120 px) with the
  cross-covariance posterior mean.
* CNN: LAMB training steps of the paper's network (7x7, 128 filters, hidden 64-32) on
  batches of 8192 patches gathered from real synthetic-sky planes (gather included).
* Inference: the test region (10 tiles x 17 rings) fully convolutionally and patch by patch.
"""

from __future__ import annotations

import sys
from pathlib import Path

# running "python benchmarks/gas.py" puts benchmarks/ first on sys.path, where benchmarks/ssl.py
# would shadow the standard-library ssl module imported by torch's dependencies
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from darkml.runs import atomic_write_json, machine_info  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sky_planes(pixels: int, n_tiles: int) -> np.ndarray:
    from darkml.gas.config import ConversionCfg, SkyCfg
    from darkml.gas.patches import preprocess
    from darkml.gas.synthetic import TileSpec, simulate_tile

    sky = SkyCfg(pixels_per_tile=pixels, channel_kms=2.0)
    src = []
    for t in range(n_tiles):
        d = simulate_tile(sky, ConversionCfg(), 0, TileSpec(40 + t, 40 + t, 0))
        s, _, _ = preprocess(d["co12"], d["co13"], d["noise13"])
        src.append(s)
    src = np.concatenate(src)
    return (src / max(np.percentile(src[src > 0], 99), 1e-30)).astype(np.float32)


def bench_gp(planes: np.ndarray, n_points: int, iters: int, test_tiles: int, device: str) -> dict:
    from darkml.gas.gp import fit_exact_gp, posterior_weights, predict_mean
    from darkml.gas.patches import line_patches, pad_planes

    p, h, w = planes.shape
    padded = pad_planes(torch.as_tensor(planes), 4)
    rng = np.random.default_rng(0)
    pp = torch.as_tensor(rng.integers(0, p, n_points))
    ii = torch.as_tensor(rng.integers(0, h, n_points))
    jj = torch.as_tensor(rng.integers(0, w, n_points))
    x = torch.stack([line_patches(padded, pp, ii, jj, 9, 4, o) for o in ("horizontal", "vertical")]).to(device)
    y = torch.as_tensor(planes[pp.numpy(), ii.numpy(), jj.numpy()]).expand(2, -1).contiguous().to(device)
    n_timed = min(iters, 10)
    fit_exact_gp(x, y, iters=1)                                   # warm-up
    _sync(device)
    t0 = time.perf_counter()
    model, _ = fit_exact_gp(x, y, iters=n_timed)
    _sync(device)
    per_iter = (time.perf_counter() - t0) / n_timed
    n_test = test_tiles * h * w
    q = torch.as_tensor(rng.integers(0, p, n_test))
    qi = torch.as_tensor(rng.integers(0, h, n_test))
    qj = torch.as_tensor(rng.integers(0, w, n_test))
    xt = [line_patches(padded, q, qi, qj, 9, 4, o).to(device) for o in ("horizontal", "vertical")]
    _sync(device)
    t0 = time.perf_counter()
    alpha = posterior_weights(model)
    predict_mean(model, xt, 4096, alpha, [0, 1])
    _sync(device)
    pred = time.perf_counter() - t0
    return {"gp_points": n_points, "gp_iters": iters, "fit_s_per_iter": per_iter, "fit_s": per_iter * iters,
            "predict_points": 2 * n_test, "predict_s": pred, "fit_plus_predict_s_per_bin": per_iter * iters + pred}


def bench_cnn(planes: np.ndarray, batch: int, steps: int, device: str) -> dict:
    from pytorch_optimizer import Lamb

    from darkml.gas.patch_cnn import PatchCNN, wmae_gamma, wmae_loss
    from darkml.gas.patches import PatchDataset, PatchPlanes

    p = planes.shape[0]
    pl = PatchPlanes(planes, planes, planes, np.zeros(p, int), np.zeros(p, int), np.full(p, 5.0, np.float32))
    ds = PatchDataset(pl, 7)
    model = PatchCNN(7, 128, (64, 32)).to(device)
    opt = Lamb(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def step():
        x, ring, y, w = ds[rng.integers(0, len(ds), batch)]
        x, ring, y, w = x.to(device), ring.to(device), y.to(device), w.to(device)
        loss = wmae_loss(model(x, ring).reshape(-1), y, wmae_gamma(0.3, w, 30.0))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    return {"batch": batch, "steps": steps, "train_patches_per_s": batch * steps / dt}


def bench_inference(planes: np.ndarray, device: str, patchwise: bool) -> dict:
    from darkml.gas.patch_cnn import PatchCNN, predict_map, predict_patchwise

    model = PatchCNN(7, 128, (64, 32)).eval()
    ring = np.full(planes.shape[0], 5.0, np.float32)
    predict_map(model, planes[:2], ring[:2], device=device)
    _sync(device)
    t0 = time.perf_counter()
    predict_map(model, planes, ring, device=device)
    _sync(device)
    out = {"planes": int(planes.shape[0]), "pixels": int(planes.size), "fully_convolutional_s": time.perf_counter() - t0}
    if patchwise:
        t0 = time.perf_counter()
        predict_patchwise(model, planes, ring, device=device)
        _sync(device)
        out["patchwise_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=120, help="pixels per 1-deg tile (paper grid: 120)")
    ap.add_argument("--gp-points", type=int, default=1500, help="training patches per GP (paper: 7840)")
    ap.add_argument("--gp-iters", type=int, default=100)
    ap.add_argument("--cnn-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="fewer test tiles and steps")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gas.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    test_tiles = 2 if args.quick else 10
    planes = sky_planes(args.pixels, 2)
    test_planes = np.concatenate([planes] * (test_tiles // 2))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results: dict = {"machine": machine_info(), "args": vars(args), "devices": {}}
    rows = []
    for dev in devices:
        r = {"gp": bench_gp(planes, args.gp_points, args.gp_iters, test_tiles, dev)}
        r["cnn"] = [bench_cnn(planes, b, args.cnn_steps if dev == "cpu" else 50, dev) for b in (1024, 8192)]
        r["inference"] = bench_inference(test_planes, dev, patchwise=True)
        results["devices"][dev] = r
        rows += [
            (dev, f"GP fit ({args.gp_iters} it, 2x{args.gp_points} pts) + predict per bin",
             f"{r['gp']['fit_s']:.1f} s + {r['gp']['predict_s']:.1f} s"),
            *[(dev, f"CNN training, batch {c['batch']}", f"{c['train_patches_per_s']:,.0f} patches/s") for c in r["cnn"]],
            (dev, f"full-map inference, {r['inference']['planes']} planes of {args.pixels}^2",
             f"{r['inference']['fully_convolutional_s']:.2f} s (patch by patch {r['inference']['patchwise_s']:.2f} s)"),
        ]
    width = max(len(r[1]) for r in rows)
    print(f"{'device':6s}  {'measurement':{width}s}  result")
    for dev, what, val in rows:
        print(f"{dev:6s}  {what:{width}s}  {val}")
    print(f"load average {results['machine']['load_average']}")
    out = Path(args.out)
    atomic_write_json(out, results)
    print(f"written {out}")


if __name__ == "__main__":
    main()
