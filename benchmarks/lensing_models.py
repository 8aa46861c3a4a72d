"""Strong-lensing networks: training and inference images per second per model.

For every model of the lensing registry (ResNet50 and the equivariant C8 / D8 / Harmonic /
Equivariant-Transformer networks) on 64×64 single-channel images: one training step is
forward + cross-entropy + backward + Adam update; inference is a forward pass in eval mode
without gradients. CPU runs in float32 with ``--threads`` threads; on CUDA each model is
timed in float32 and with mixed precision (bf16 autocast) + channels-last memory format, and
the table says which helps. Warm-up steps (allocation, cuDNN autotuning, e2cnn basis
expansion caches) are excluded. Model widths come from a benchmark preset (``model_options``
of ``src/darkml/equivariant/presets/<preset>.yaml``), so the numbers describe the
networks the benchmark pipeline trains.

    .venv/bin/python benchmarks/lensing_models.py                         # quick widths, CPU (and CUDA if present)
    .venv/bin/python benchmarks/lensing_models.py --preset paper --models resnet50,c8
"""

from __future__ import annotations

import os
import sys

# this folder holds ssl.py (the name the SSL issue gave its benchmark), which would shadow the
# standard-library ssl module that torch's imports pull in
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from darkml.equivariant.study import load as load_benchmark_config  # noqa: E402
from darkml.equivariant.models import build_model, count_parameters  # noqa: E402
from darkml.runs import atomic_write_json, machine_info  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(name: str, options: dict, device: torch.device, batch: int, steps: int, warmup: int,
               amp: bool, channels_last: bool, size: int = 64) -> dict:
    """Training and inference images/s of one model in one mode."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_outputs=3, **options).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, size, size, device=device).to(memory_format=fmt)
    y = torch.randint(0, 3, (batch,), device=device)
    dtype = torch.bfloat16

    def train_step():
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(warmup):
        train_step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    _sync(device)
    train_rate = steps * batch / (time.perf_counter() - t0)

    model.eval()
    with torch.no_grad():
        for _ in range(warmup):
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                model(x)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                model(x)
        _sync(device)
    infer_rate = steps * batch / (time.perf_counter() - t0)
    return {"model": name, "device": device.type, "mode": ("bf16+channels_last" if amp and channels_last else
                                                           "bf16" if amp else "fp32"),
            "batch": batch, "params": count_parameters(model), "train_images_per_s": train_rate,
            "infer_images_per_s": infer_rate}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="quick", help="benchmark preset whose model widths to use (quick, paper)")
    ap.add_argument("--models", default="resnet50,c8,hnet,etn", help="comma-separated registry names")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--batch-cpu", type=int, default=32)
    ap.add_argument("--batch-cuda", type=int, default=256)
    ap.add_argument("--steps-cpu", type=int, default=3)
    ap.add_argument("--steps-cuda", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU runs")
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "lensing_models.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*dtype torch.uint8.*")
    cfg = load_benchmark_config(args.preset)
    names = [m.strip() for m in args.models.split(",") if m.strip()]

    runs = []
    if not args.no_cpu:
        runs.append((torch.device("cpu"), args.batch_cpu, args.steps_cpu, False, False))
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        dev = torch.device("cuda")
        runs += [(dev, args.batch_cuda, args.steps_cuda, False, False), (dev, args.batch_cuda, args.steps_cuda, True, True)]
    rows = []
    for dev, batch, steps, amp, cl in runs:
        for name in names:
            row = time_model(name, cfg.model_options.get(name, {}), dev, batch, steps,
                             max(args.warmup, 3 if dev.type == "cuda" else args.warmup), amp, cl)
            rows.append(row)
            print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    print(f"\n{'model':10s} {'device':6s} {'mode':20s} {'params':>10s} {'train img/s':>12s} {'infer img/s':>12s}")
    for r in rows:
        print(f"{r['model']:10s} {r['device']:6s} {r['mode']:20s} {r['params']:10d} {r['train_images_per_s']:12.1f} "
              f"{r['infer_images_per_s']:12.1f}")
    result = {
        "benchmark": "lensing_models",
        "preset": cfg.preset,
        "model_options": {n: cfg.model_options.get(n, {}) for n in names},
        "machine": machine_info(),
        "settings": vars(args) | {"json": str(args.json)},
        "rows": rows,
    }
    atomic_write_json(args.json, result)
    print(f"\nwritten {args.json}")
    return result


if __name__ == "__main__":
    main()
