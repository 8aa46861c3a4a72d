"""simulate.py: the pure chunk simulator, noise, normalisation and bad input."""

import numpy as np
import pytest

from darkml.config import validate
from darkml.lensing import simulate as S
from darkml.lensing.params import (
    SCALAR_FIELDS,
    LensingSimConfig,
    RecordError,
    class_labels,
    draw_records,
    noise_sigmas,
)


def small_cfg(**image):
    return validate(LensingSimConfig, {"image": {"num_pix": 32, **image}}, prefix="lensing")


def test_simulate_chunk_is_pure_and_labelled():
    cfg = small_cfg()
    a, ta = S.simulate(cfg, seed=3, chunk_id=2, start=90, n=9)
    b, tb = S.simulate(cfg, seed=3, chunk_id=2, start=90, n=9)
    c, _ = S.simulate(cfg, seed=3, chunk_id=3, start=90, n=9)
    t, _ = S.simulate(cfg, seed=3, chunk_id=2, start=90, n=9, split="test")
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True)
    assert not np.array_equal(a["images"], c["images"])
    assert not np.array_equal(a["images"], t["images"])
    assert a["images"].shape == (9, 1, 32, 32) and a["images"].dtype == np.float32
    assert list(a["label"]) == [0, 1, 2] * 3
    assert a["images"].reshape(9, -1).max(1) == pytest.approx(np.ones(9))
    assert np.all(np.isnan(a["log10_m_axion"][a["label"] != 2]))
    assert np.all(np.isfinite(a["log10_m_axion"][a["label"] == 2]))
    assert a["params"].shape == (9, len(SCALAR_FIELDS))
    sub = ta["subhalos"]
    assert set(np.unique(sub["sample"])) <= {91, 94, 97}
    assert len(sub["sample"]) == int(a["params"][:, SCALAR_FIELDS.index("n_sub")].sum())


def test_backends_give_the_same_observed_images():
    cfg = small_cfg()
    rec = draw_records(cfg, np.random.default_rng(8), class_labels(0, 3))
    lt = S.simulate_records(rec, cfg, backend="lenstronomy")
    tt = S.simulate_records(rec, cfg, backend="torch")
    assert np.abs(lt["images"] - tt["images"]).max() < 1e-3
    assert np.allclose(lt["flux_scale"], tt["flux_scale"], rtol=1e-3)


def test_noise_level_in_empty_sky_matches_sigma_bkg():
    cfg = small_cfg(num_pix=64)
    rec = draw_records(cfg, np.random.default_rng(9), np.zeros(12, int))
    clean = S.render(rec, cfg, "torch")
    noisy = S.observe(rec, cfg, "torch")
    corners = (slice(None), 0, np.r_[0:6, 58:64][:, None], np.r_[0:6, 58:64][None, :])  # > 3.7" from the lens
    resid = (noisy - clean)[corners].ravel()
    sigma, t = noise_sigmas(cfg.instrument)
    assert clean[corners].max() / t < 0.05 * sigma**2  # source shot noise negligible in the corners
    assert resid.std() == pytest.approx(sigma, rel=0.05)
    assert abs(resid.mean()) < 5 * sigma / np.sqrt(resid.size)
    # bright pixels: total variance = sigma_bkg^2 + f/t (Gaussian limit of Poisson)
    bright = clean > 0.3 * clean.max()
    pull = (noisy - clean)[bright] / np.sqrt(sigma**2 + clean[bright] / t)
    assert pull.std() == pytest.approx(1.0, rel=0.05)


def test_noise_can_be_switched_off():
    cfg = small_cfg(noise=False)
    rec = draw_records(cfg, np.random.default_rng(1), class_labels(0, 3))
    assert np.array_equal(S.observe(rec, cfg, "torch"), S.render(rec, cfg, "torch"))


def test_bad_backend_split_and_degenerate_images():
    cfg = small_cfg()
    rec = draw_records(cfg, np.random.default_rng(0), class_labels(0, 3))
    with pytest.raises(ValueError, match="unknown backend"):
        S.observe(rec, cfg, backend="galfit")
    with pytest.raises(ValueError, match="split"):
        S.simulate(cfg, 0, 0, 0, 3, split="valid")
    rec.scalars["src_amp"][1] = np.nan
    with pytest.raises(RecordError, match="record 1: src_amp"):
        S.observe(rec, cfg, "torch")
    img = np.ones((2, 1, 4, 4))
    img[1, 0, 2, 2] = np.nan
    with pytest.raises(S.SimulationError, match="image 1"):
        S._check_images(img)
    with pytest.raises(S.SimulationError, match="no positive pixel"):
        S._check_images(-np.ones((1, 1, 4, 4)))
