"""Gaussian processes: the paper's kernel, hyper-parameter recovery, mean vs gpytorch, line patches."""

import math

import gpytorch
import numpy as np
import pytest
import torch

from darkml.gas.gp import (
    LinePatchGP,
    MaternWhiteGP,
    fit_exact_gp,
    matern32_constant,
    predict_mean,
)
from darkml.gas.patches import PatchPlanes


def test_kernel_is_the_papers_matern_plus_constant():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 3)
    lik = gpytorch.likelihoods.GaussianLikelihood(batch_shape=torch.Size([1]))
    m = MaternWhiteGP(x, torch.zeros(1, 6), lik)
    scale, const = m.covar_module.kernels
    scale.outputscale = torch.tensor([1.7])
    scale.base_kernel.lengthscale = torch.tensor([[[0.8]]])
    const.constant = torch.tensor([[0.3]])
    k = m.covar_module(x, x).to_dense()[0].detach().numpy()
    xx = x[0].numpy()
    r = np.linalg.norm(xx[:, None] - xx[None], axis=-1) / 0.8
    ref = 1.7 * (1 + math.sqrt(3) * r) * np.exp(-math.sqrt(3) * r) + 0.3
    np.testing.assert_allclose(k, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(matern32_constant(x[0], x[0], 1.7, 0.8, 0.3).numpy(), ref, rtol=1e-5, atol=1e-6)


def _sample_gp(n, d, lengthscale, outputscale, noise, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 4, size=(n, d))
    r = np.linalg.norm(x[:, None] - x[None], axis=-1) / lengthscale
    k = outputscale * (1 + math.sqrt(3) * r) * np.exp(-math.sqrt(3) * r)
    f = np.linalg.cholesky(k + 1e-8 * np.eye(n)) @ rng.standard_normal(n)
    return x, f, f + math.sqrt(noise) * rng.standard_normal(n)


def test_recovers_hyperparameters_and_function():
    truths = [(0.7, 1.0, 0.01), (1.5, 2.0, 0.04)]                # (lengthscale, outputscale, noise) per batch member
    xs, fs, ys = zip(*[_sample_gp(160, 2, *t, seed=i) for i, t in enumerate(truths)])
    x = torch.tensor(np.stack(xs), dtype=torch.float32)
    y = torch.tensor(np.stack(ys), dtype=torch.float32)
    model, hist = fit_exact_gp(x, y, iters=80, lr=0.08)
    assert hist[-1] < hist[0]
    hp = model.hyperparameters()
    for i, (ls, os_, nz) in enumerate(truths):
        assert hp["lengthscale"][i] == pytest.approx(ls, rel=0.35)
        assert hp["noise"][i] == pytest.approx(nz, rel=0.6)
    mean = predict_mean(model, x).numpy()
    for i in range(2):
        resid = mean[i] - fs[i]
        assert np.sqrt(np.mean(resid**2)) < 0.7 * math.sqrt(truths[i][2]) + 0.02   # denoised below the noise level


def test_cross_covariance_mean_equals_gpytorch_prediction():
    x, f, y = _sample_gp(120, 3, 1.0, 1.0, 0.05, seed=3)
    xt = torch.tensor(x[None], dtype=torch.float32)
    model, _ = fit_exact_gp(xt, torch.tensor(y[None], dtype=torch.float32), iters=20)
    xs = torch.rand(1, 40, 3) * 4
    with gpytorch.settings.max_cholesky_size(10000), gpytorch.settings.fast_pred_var(False), torch.no_grad():
        ref = model(xs).mean
    np.testing.assert_allclose(predict_mean(model, xs, chunk=7).numpy(), ref.numpy(), rtol=1e-3, atol=1e-4)


def test_line_patch_gp_on_toy_planes():
    rng = np.random.default_rng(0)
    from darkml.gas.synthetic import gaussian_random_field

    src = np.stack([np.exp(0.5 * gaussian_random_field(32, 4.0, rng)) for _ in range(6)]).astype(np.float32)
    src /= src.max()
    tgt = (0.5 * src**1.5).astype(np.float32)                  # smooth maps: a 9-px line ~ its centre
    ring = np.array([3, 3, 3, 5, 5, 5])
    planes = PatchPlanes(src, tgt, tgt, np.arange(6), ring, np.full(6, 5.0, np.float32))
    gp = LinePatchGP(stride=4, iters=40, lr=0.1, n_rings=7, min_active=5).fit(planes)
    assert set(gp.member_of_ring) == set(range(7))
    assert gp.pooled_rings == [0, 1, 2, 4, 6]                    # rings without training data use the pooled GP
    pred = gp.predict(planes)
    assert pred.shape == src.shape and np.all(pred >= 0)
    r = np.corrcoef(pred.ravel(), tgt.ravel())[0, 1]
    assert r > 0.95
    test = PatchPlanes(src[:2], tgt[:2], tgt[:2], np.arange(2), np.array([6, 6]), np.full(2, 5.0, np.float32))
    assert np.corrcoef(gp.predict(test).ravel(), tgt[:2].ravel())[0, 1] > 0.9
    # persistence round trip
    gp2 = LinePatchGP.from_state(gp.state())
    np.testing.assert_allclose(gp2.predict(planes), pred, rtol=1e-5, atol=1e-6)
