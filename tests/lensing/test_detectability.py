"""The detectability measurement on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darkml import metrics
from darkml.lensing import params as P
from darkml.lensing.config import MainLensCfg
from darkml.lensing.detectability import MACRO_FIELDS, SmoothModel, detectability, refit, strip_substructure, summarise
from darkml.lensing.fast import render_torch
from darkml.lensing.params import LensingSimConfig, Records, draw_records


@pytest.fixture(scope="module")
def cfg():
    return LensingSimConfig(lens=MainLensCfg(mode="fixed"))


def _smooth_record(cfg, seed=3) -> Records:
    rec = draw_records(cfg, np.random.default_rng(seed), np.zeros(1, dtype=np.int64))
    rec.scalars["src_x"][:] = 0.05  # a bright, extended arc system near the caustic centre
    rec.scalars["src_y"][:] = -0.03
    return rec


def _with_subhalo(cfg, rec: Records, x: float, y: float, mass: float) -> Records:
    scal = {k: v.copy() for k, v in rec.scalars.items()}
    scal["label"][:] = 1
    scal["n_sub"][:] = 1
    scal["sub_mass_total"][:] = mass
    sub = {"index": np.zeros(1, np.int64), "x": np.array([x]), "y": np.array([y]), "mass": np.array([mass]),
           "theta_E": P.einstein_radius(np.array([mass]), cfg.cosmology)}
    return Records(scal, sub)


def test_smooth_model_renders_what_the_torch_backend_renders(cfg):
    rec = draw_records(cfg, np.random.default_rng(0), P.class_labels(0, 9))
    m = SmoothModel(cfg)
    a = m(m.encode(rec)).reshape(9, 1, 64, 64)
    b = render_torch(strip_substructure(rec), cfg, "cpu", torch.float64, return_tensor=True)
    assert float((a - b).abs().max() / b.abs().max()) < 1e-12
    # and the stripped records really lose the substructure
    s = strip_substructure(rec)
    assert s.subhalos["x"].size == 0 and np.all(s.scalars["vortex_n"] == 0)


def test_refit_absorbs_a_shift_of_the_main_lens_mass(cfg):
    rec = _smooth_record(cfg)
    m = SmoothModel(cfg)
    theta_true = m.encode(rec)
    shifted = theta_true.clone()
    shifted[:, MACRO_FIELDS.index("lens_theta_E")] += np.log(1.01)  # 2 % more mass
    target = m(shifted)
    sb, t = P.noise_sigmas(cfg.instrument)
    sigma = torch.sqrt(sb**2 + target.clamp(min=0) / t)
    raw = float((((target - m(theta_true)) / sigma) ** 2).sum())
    theta, chi2, _ = refit(m, theta_true, target, sigma)
    assert np.sqrt(raw) > 20  # plainly visible against the unshifted lens ...
    assert float(chi2[0]) < 1e-6 * raw  # ... and entirely absorbed by the refit
    assert float(theta[0, 0].exp()) == pytest.approx(float(shifted[0, 0].exp()), rel=1e-6)


def test_a_distant_subhalo_is_absorbed_one_on_the_arc_is_not(cfg):
    rec = _smooth_record(cfg)
    img = render_torch(rec, cfg, "cpu", torch.float64)[0, 0]
    grid = P.pixel_grid(64, cfg.instrument.pixel_scale)
    iy, ix = np.unravel_index(np.argmax(img), img.shape)  # brightest arc pixel
    far = _with_subhalo(cfg, rec, 9.0, 6.0, 1e11)  # 10.8" away: a uniform deflection + tidal shear at the arc
    on_arc = _with_subhalo(cfg, rec, grid[ix], grid[iy], 1e9)
    both = Records({k: np.concatenate([far.scalars[k], on_arc.scalars[k]]) for k in far.scalars},
                   {k: np.concatenate([far.subhalos[k], on_arc.subhalos[k] + (1 if k == "index" else 0)])
                    for k in far.subhalos})
    res = detectability(both, cfg, show_progress=False)
    raw, fit = np.sqrt(res["chi2_raw"]), np.sqrt(res["chi2_refit"])
    assert raw[0] > 10 and fit[0] < 0.1 * raw[0]  # the far subhalo moves the image, the macro model follows
    assert raw[1] > 10 and fit[1] > 0.5 * raw[1]  # a local perturbation of the arc stays
    summary = summarise(res, n_boot=20)
    assert summary["cdm"]["n_images"] == 2
    assert summary["cdm"]["refit"]["sqrt_chi2"]["median"] <= summary["cdm"]["raw"]["sqrt_chi2"]["median"]


def test_known_template_auc():
    assert metrics.known_template_auc(np.zeros(5), n_boot=0)["value"] == pytest.approx(0.5)
    assert metrics.known_template_auc(np.full(5, 12.0), n_boot=0)["value"] == pytest.approx(1.0)
    # against a direct simulation of the likelihood-ratio statistic for SNR = 1.5
    rng = np.random.default_rng(0)
    s1, s0 = rng.normal(1.5, 1.0, 200_000), rng.normal(0.0, 1.0, 200_000)
    assert metrics.known_template_auc(np.array([1.5]), n_boot=0)["value"] == pytest.approx(np.mean(s1 > s0), abs=0.003)
