"""Self-supervised pre-training speed: images per second per method and encoder.

Times complete pre-training steps — drawing the views on the device, the forward passes of
all views (and of the EMA target / teacher for BYOL and DINO), the loss, the backward pass,
the optimizer step and the momentum update — on batches of 64×64 single-channel images, on
CPU (``--threads`` threads) and on CUDA when available (bf16 autocast there, as the training
uses mixed precision on GPUs). "images/s" counts source images, not views: SimCLR, BYOL and
SimSiam see 2 views per image, DINO 2 global views plus ``--local-crops`` 32×32 crops. Warm-up
steps are excluded. Prints a table and writes JSON.

    .venv/bin/python benchmarks/ssl.py                                   # small encoders, CPU (+CUDA)
    .venv/bin/python benchmarks/ssl.py --encoders resnet50 vit --steps 3 --batch-cpu 32
"""

from __future__ import annotations

import os
import sys

# this file is called ssl.py: keep its folder off sys.path so `import ssl` finds the standard library
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _here]

import argparse
import json
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

from darkml.learn.ssl import METHODS, build_method
from darkml.ssl.data import toy_images
from darkml.ssl.encoders import build_encoder
from darkml.runs import atomic_write_json, machine_info


def _step_rate(method: str, encoder: str, device: str, batch: int, steps: int, warmup: int, amp: bool,
               local_crops: int, patch_size: int) -> float:
    enc = build_encoder(encoder, image_size=64, patch_size=patch_size, seed=0)
    torch.manual_seed(0)
    m = build_method(method, enc, proj_hidden=2048, proj_dim=256, out_dim=4096, bottleneck_dim=256,
                     n_local=local_crops, local_size=32).to(device)
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    x = torch.as_tensor(toy_images(max(1, batch // 3 + 1), seed=0).images[:batch]).to(device)
    g = torch.Generator(device=device)

    def step(i: int) -> None:
        g.manual_seed(i)
        m.momentum_update()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            loss = m.ssl_loss(x, g)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--encoders", nargs="+", default=["resnet-tiny", "vit-tiny", "resnet18"],
                    help="CPU encoders (CUDA adds resnet50 and vit unless --cuda-encoders is given)")
    ap.add_argument("--cuda-encoders", nargs="+", default=None)
    ap.add_argument("--batch-cpu", type=int, default=64)
    ap.add_argument("--batch-cuda", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per (method, encoder) on CPU")
    ap.add_argument("--steps-cuda", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--local-crops", type=int, default=4)
    ap.add_argument("--patch-size", type=int, default=8)
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "ssl.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    plans = [("cpu", args.encoders, args.batch_cpu, args.steps, False)]
    if torch.cuda.is_available() and not args.no_cuda:
        cuda_enc = args.cuda_encoders or list(dict.fromkeys([*args.encoders, "resnet50", "vit"]))
        plans.append(("cuda", cuda_enc, args.batch_cuda, args.steps_cuda, True))
    rows = []
    for device, encoders, batch, steps, amp in plans:
        for enc in encoders:
            for meth in args.methods:
                rate = _step_rate(meth, enc, device, batch, steps, args.warmup, amp, args.local_crops, args.patch_size)
                rows.append({"device": device, "encoder": enc, "method": meth, "batch": batch,
                             "images_per_s": rate, "amp": "bf16" if amp else "fp32"})
                print(f"{device:5s} {enc:12s} {meth:16s} batch {batch:4d}  {rate:10.1f} images/s", flush=True)
    out = {
        "benchmark": "ssl-pretraining",
        "machine": machine_info(),
        "rows": rows,
    }
    print()
    print(f"{'device':6s} {'encoder':12s} " + " ".join(f"{m:>16s}" for m in args.methods))
    for device, encoders, *_ in plans:
        for enc in encoders:
            vals = {r["method"]: r["images_per_s"] for r in rows if r["device"] == device and r["encoder"] == enc}
            print(f"{device:6s} {enc:12s} " + " ".join(f"{vals.get(m, np.nan):16.1f}" for m in args.methods))
    atomic_write_json(args.json, out)
    print(f"\nJSON: {args.json}")
    return out


if __name__ == "__main__":
    main()
