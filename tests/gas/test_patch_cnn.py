"""Patch CNN: patch-by-patch == fully convolutional; WMAE schedule; Poisson loss; a short fit."""

import math

import numpy as np
import pytest
import torch

from darkml.gas.patch_cnn import (
    MODELS,
    PatchCNN,
    PatchRegressor,
    anneal_scale,
    build_model,
    poisson_loss,
    predict_map,
    predict_patchwise,
    wmae_gamma,
    wmae_loss,
)


@pytest.mark.parametrize("ring_feature, positive, window", [(True, False, 7), (False, True, 5), (True, True, 3)])
def test_patchwise_equals_fully_convolutional(ring_feature, positive, window):
    torch.manual_seed(0)
    model = PatchCNN(window=window, filters=16, hidden=(8, 4), dropout=0.3, ring_feature=ring_feature, positive=positive)
    # make batch-norm statistics non-trivial, then evaluate in eval mode
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, 1, window, window), torch.rand(64))
    src = np.random.default_rng(0).random((3, 13, 11)).astype(np.float32)
    ring = np.array([3.0, 5.5, 12.0], np.float32)
    a = predict_map(model, src, ring, clamp=False)
    b = predict_patchwise(model, src, ring, batch_size=100, clamp=False)
    assert a.shape == (3, 13, 11)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_patch_output_is_one_value_per_patch():
    m = PatchCNN(window=7, filters=8, hidden=(4,))
    out = m.eval()(torch.randn(5, 1, 7, 7), torch.rand(5))
    assert out.shape == (5, 1, 1)
    assert build_model("patch_cnn", window=3).window == 3 and "patch_cnn" in MODELS
    with pytest.raises(ValueError, match="odd"):
        PatchCNN(window=4)
    with pytest.raises(ValueError, match="ring"):
        m(torch.randn(2, 1, 7, 7))


def test_wmae_schedule_text_form():
    r = torch.tensor([0.0, 0.5, 1.0])
    s0 = 30 - 30 / (1 + math.exp(5))                 # t = 0: ~29.8
    np.testing.assert_allclose(wmae_gamma(0.0, r, 30.0), [1, 1 + s0 / 2, 1 + s0], rtol=1e-6)
    np.testing.assert_allclose(wmae_gamma(0.5, r, 30.0), [1, 1 + 7.5, 16], rtol=1e-6)      # s(1/2) = sigma/2
    g1 = wmae_gamma(1.0, r, 30.0)
    assert g1[0] == 1 and g1[2] == pytest.approx(1 + 30 / (1 + math.exp(5)), rel=1e-6)   # ~1.2: annealed to ~1
    assert anneal_scale(0.0, 30) > anneal_scale(0.3, 30) > anneal_scale(0.7, 30) > anneal_scale(1.0, 30)


def test_wmae_schedule_literal_form_has_constant_ratio():
    r = torch.tensor([0.0, 1.0])
    for t in (0.0, 0.4, 1.0):
        g = wmae_gamma(t, r, 30.0, form="literal")
        assert g[1] / g[0] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        wmae_gamma(0.0, r, 30.0, form="other")


def test_losses():
    pred = torch.tensor([1.0, 2.0, 4.0])
    tgt = torch.tensor([1.5, 2.0, 3.0])
    assert wmae_loss(pred, tgt, torch.tensor([2.0, 1.0, 1.0])).item() == pytest.approx((1.0 + 0 + 1) / 3)
    # Poisson log-likelihood is minimised at f = T (gradient 1 - T/f = 0)
    f = torch.tensor([2.0], requires_grad=True)
    poisson_loss(f, torch.tensor([2.0])).backward()
    assert abs(f.grad.item()) < 1e-5
    assert poisson_loss(torch.tensor([2.0]), torch.tensor([2.0])) < poisson_loss(torch.tensor([3.0]), torch.tensor([2.0]))


@pytest.mark.slow
def test_regressor_learns_a_local_relation(tmp_path):
    from darkml.gas.patches import PatchDataset, PatchPlanes, patch_loader
    from darkml.learn import fit, load_best

    rng = np.random.default_rng(0)
    src = rng.random((6, 16, 16)).astype(np.float32)
    tgt = (src**2).astype(np.float32)                       # a pixel-local relation
    planes = PatchPlanes(src, tgt, tgt / tgt.max(), np.zeros(6, int), np.zeros(6, int), np.full(6, 5.0, np.float32))
    model = PatchCNN(window=3, filters=16, hidden=(16,), dropout=0.0)
    mod = PatchRegressor(model, lr=3e-3, loss="wmae", max_weight=1.0, max_epochs=8, optimizer="adam")
    tl = patch_loader(PatchDataset(planes, 3), 128, True, 0)
    vl = patch_loader(PatchDataset(planes, 3), 512, False)
    before = float(np.abs(predict_map(model, src, planes.ring_r, clamp=False) - tgt).mean())
    res = fit(mod, tl, vl, tmp_path, max_epochs=8, accelerator="cpu", progress=False)
    load_best(mod, res.best_path)
    after = float(np.abs(predict_map(model, src, planes.ring_r) - tgt).mean())
    assert after < 0.4 * before and after < 0.1
