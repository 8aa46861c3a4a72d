"""The cosine learning-rate schedule of the supervised modules."""

from __future__ import annotations

import math

import pytest
import torch

from darkml.learn.modules import ClassifierModule, cosine_optimizers


def _rates(total: int, warm: float) -> list[float]:
    p = [torch.nn.Parameter(torch.zeros(1))]
    conf = cosine_optimizers(p, "adam", 1e-3, 0.0, total, warm)
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_warms_up_then_decays_to_zero_at_the_last_step():
    r = _rates(100, 0.1)
    assert r[0] == pytest.approx(1e-3 / 11)  # first of 10 warm-up steps
    assert max(r) == pytest.approx(1e-3)
    assert r.index(max(r)) == 10
    # half-way through the decay the rate is half the peak; the last step is near zero
    assert r[10 + 45] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert r[-1] < 1e-3 * 1e-2
    assert all(a >= b for a, b in zip(r[10:], r[11:]))


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule"):
        ClassifierModule(torch.nn.Linear(2, 3), num_classes=3, lr=1e-3, schedule="linear")
    with pytest.raises(ValueError, match="total_steps"):
        cosine_optimizers([torch.nn.Parameter(torch.zeros(1))], "adam", 1e-3, 0.0, 0)


def test_a_cosine_run_ends_at_zero_rate_and_resumes_on_the_same_curve(tmp_path):
    """Stepped per batch through Lightning: the logged rate falls each epoch and the run that is
    interrupted after 2 of 4 epochs continues on the same schedule (its state is checkpointed)."""
    import numpy as np
    from torch import nn

    from darkml.learn import ArrayDataset, fit, make_loader, split_indices

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    tr, va = split_indices(len(x), (0.75, 0.25), seed=0)
    train = make_loader(ArrayDataset(x[tr], y[tr]), 32, True, seed=0)
    val = make_loader(ArrayDataset(x[va], y[va]), 64, False)

    def module():
        torch.manual_seed(0)
        return ClassifierModule(nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)), num_classes=2, lr=1e-2,
                                schedule="cosine", warmup_fraction=0.1)

    full = fit(module(), train, val, tmp_path / "a", max_epochs=4, log_dir=tmp_path / "la", tag="a")
    lrs = [h["lr"] for h in full.history]
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] < 0.2e-2
    assert full.history[-1]["val_auc"] > 0.95
    part = module()
    fit(part, train, val, tmp_path / "b", max_epochs=2, log_dir=tmp_path / "lb", tag="b")
    (tmp_path / "b" / "done.json").unlink()
    rest = fit(part, train, val, tmp_path / "b", max_epochs=4, log_dir=tmp_path / "lb", tag="b")
    assert rest.history[-1]["lr"] == pytest.approx(lrs[-1], rel=1e-6)
