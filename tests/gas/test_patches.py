"""Preprocessing, splits and patch extraction."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from darkml.gas.patches import (
    PatchDataset,
    PatchPlanes,
    gather_patches,
    grid_centres,
    line_patches,
    pad_planes,
    preprocess,
    smooth_planes,
    smoothed_noise,
    split_tiles,
    tiles_in_region,
    wmae_weights,
)


def test_smoothing_matches_scipy_gaussian_filter():
    x = np.random.default_rng(0).normal(size=(3, 20, 24)).astype(np.float32)
    ref = gaussian_filter(x, sigma=(0, 1.0, 1.0), mode="reflect", truncate=4.0)
    np.testing.assert_allclose(smooth_planes(x, 1.0), ref, atol=1e-5)


def test_smoothed_noise_against_monte_carlo():
    rng = np.random.default_rng(1)
    sigma = np.where(np.arange(40)[None, :] < 20, 1.0, 3.0) * np.ones((40, 40))
    sims = smooth_planes(rng.normal(size=(1000, 40, 40)) * sigma, 1.0)
    emp = sims.std(axis=0)
    pred = smoothed_noise(sigma, 1.0)
    np.testing.assert_allclose(emp, pred, rtol=0.15)                      # includes the edges and the step
    for sl in (np.s_[5:35, 5:15], np.s_[5:35, 25:35], np.s_[:, 18:22]):
        assert emp[sl].mean() == pytest.approx(pred[sl].mean(), rel=0.02)
    assert pred[20, 5] == pytest.approx(1 / (2 * np.sqrt(np.pi)), rel=0.02)   # white noise through a sigma=1 Gaussian


def test_three_sigma_cut():
    co13 = np.zeros((1, 30, 30), np.float32)
    co13[0, 10:20, 10:20] = 10.0
    noise = np.ones_like(co13)
    src, tgt, thr = preprocess(co13, co13, noise, 1.0, 3.0)
    assert np.all((tgt == 0) | (tgt > thr))
    assert tgt[0, 15, 15] > 0 and tgt[0, 2, 2] == 0
    np.testing.assert_allclose(thr, 3 * smoothed_noise(noise, 1.0))


def test_blanks_become_zero():
    co = np.full((1, 8, 8), np.nan, np.float32)
    src, tgt, thr = preprocess(co, co, np.zeros_like(co))
    assert np.all(src == 0) and np.all(tgt == 0)


def test_wmae_weights_in_unit_interval():
    t = np.random.default_rng(2).random((4, 16, 16)).astype(np.float32)
    t[1] = 0
    w = wmae_weights(t)
    assert w.min() >= 0 and w.max() <= 1
    assert np.allclose(w[0].max(), 1) and np.all(w[1] == 0)


def test_regions_and_split():
    lows = np.arange(300.0, 350.0)
    tr = tiles_in_region(lows, (300, 340))
    te = tiles_in_region(lows, (340, 350))
    assert len(tr) == 40 and len(te) == 10 and not set(tr) & set(te)
    a, b = split_tiles(tr, 0.2, seed=0)
    assert len(b) == 8 and not set(a) & set(b) and set(a) | set(b) == set(tr)
    a2, b2 = split_tiles(tr, 0.2, seed=0)
    np.testing.assert_array_equal(b, b2)


def test_patches_match_naive_slicing():
    x = torch.arange(2 * 9 * 11, dtype=torch.float32).reshape(2, 9, 11)
    pad = 3
    xp = pad_planes(x, pad)
    ref = torch.nn.functional.pad(x[:, None], (pad,) * 4, mode="reflect")[:, 0]
    p, i, j = torch.tensor([0, 1, 1]), torch.tensor([0, 4, 8]), torch.tensor([0, 5, 10])
    got = gather_patches(xp, p, i, j, 7, pad)
    for n in range(3):
        np.testing.assert_array_equal(got[n], ref[p[n], i[n]:i[n] + 7, j[n]:j[n] + 7])
    h = line_patches(xp, p, i, j, 7, pad, "horizontal")
    v = line_patches(xp, p, i, j, 7, pad, "vertical")
    np.testing.assert_array_equal(h[1], got[1][3])
    np.testing.assert_array_equal(v[1], got[1][:, 3])
    assert h[1, 3] == x[1, 4, 5]


def test_grid_centres_give_the_papers_count():
    gi, gj = grid_centres(120, 120, 8, 4)
    assert gi.size == 196 and 40 * gi.size == 7840
    assert gi.min() >= 4 and gi.max() <= 115


def test_patch_dataset_batch_fetch():
    rng = np.random.default_rng(0)
    src = rng.random((3, 12, 12)).astype(np.float32)
    planes = PatchPlanes(src, src * 2, src * 0, np.zeros(3, int), np.arange(3), np.array([5.0, 6.0, 7.0], np.float32))
    ds = PatchDataset(planes, 5)
    x, ring, y, w = ds[np.array([0, 12 * 12 + 13])]
    assert x.shape == (2, 1, 5, 5)
    assert y[1] == pytest.approx(2 * src[1, 1, 1])
    assert x[1, 0, 2, 2] == pytest.approx(src[1, 1, 1])
    assert ring.tolist() == pytest.approx([0.5, 0.6])
