"""Data-parallel training (DDP) on two CPU processes with the gloo backend.

Lightning's DDP launcher re-executes the training script for rank 1, so the training runs in a
script of its own. Slow-marked (spawns two interpreters, ~25 s); `make test-slow` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from darkml import metrics
from darkml.learn import ArrayDataset, ClassifierModule, load_best, make_loader, predict

SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    import numpy as np, torch
    from torch import nn
    from darkml.learn import ArrayDataset, ClassifierModule, fit, make_loader

    out = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    train = make_loader(ArrayDataset(x[:192], y[:192]), 32, True, seed=0)
    val = make_loader(ArrayDataset(x[192:], y[192:]), 16, False)
    torch.manual_seed(0)
    mod = ClassifierModule(nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)), num_classes=2, lr=1e-2)
    res = fit(mod, train, val, out / "ck", max_epochs=3, log_dir=out / "logs", tag="m", devices=2, accelerator="cpu")
    if os.environ.get("LOCAL_RANK", "0") == "0":
        (out / "result.json").write_text(json.dumps({
            "world": mod.trainer.world_size, "strategy": type(mod.trainer.strategy).__name__,
            "epochs": res.epochs, "history": res.history}))
''')


@pytest.mark.slow
def test_two_process_ddp_on_cpu_logs_whole_validation_set_metrics(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["world"] == 2 and res["strategy"] == "DDPStrategy" and res["epochs"] == 3
    # the logged val_auc of the last epoch is the AUC of the *whole* validation set (gathered over
    # both ranks), as an independent single-process prediction with the last checkpoint shows
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    mod = ClassifierModule(nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)), num_classes=2, lr=1e-2)
    p = predict(load_best(mod, tmp_path / "ck" / "last.ckpt"), make_loader(ArrayDataset(x[192:], y[192:]), 64, False))
    assert res["history"][-1]["val_auc"] == pytest.approx(metrics.auc(y[192:] == 1, p[:, 1]), abs=1e-6)
    assert res["history"][-1]["val_auc"] > 0.9
    assert torch.distributed.is_available()
