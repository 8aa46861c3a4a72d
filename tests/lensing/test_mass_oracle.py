"""The Bayes-optimal axion-mass estimate (the regression's physical ceiling) on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from darkml.lensing.config import AxionCfg, MainLensCfg
from darkml.lensing.mass_oracle import axion_mass_oracle, summarise_oracle
from darkml.lensing.params import LensingSimConfig, draw_records, vortex_half_length


def _axion(cfg, log10_m, seed=1):
    rec = draw_records(cfg, np.random.default_rng(seed), np.full(len(log10_m), 2, dtype=np.int64))
    rec.scalars["log10_m_axion"][:] = log10_m
    rec.scalars["vortex_L_half"][:] = vortex_half_length(10.0 ** np.asarray(log10_m), cfg.axion.length_scale)
    return rec


def test_a_long_vortex_is_measured_to_the_grid_step():
    cfg = LensingSimConfig(lens=MainLensCfg(mode="fixed"))
    truth = np.array([-23.83, -23.51])  # L_half 2.0" and 1.0": the vortex crosses the arcs
    res = axion_mass_oracle(_axion(cfg, truth), cfg, grid_points=41, show_progress=False)
    step = float(res["grid_step"])
    assert np.all(np.abs(res["mean"] - truth) < step), (res["mean"], truth)
    assert np.all(res["std"] < step)


def test_an_invisible_vortex_leaves_the_prior():
    """A 100 Msun vortex changes no pixel measurably: the posterior is the uniform prior, whose
    mean is the centre of the range and whose spread is that of the uniform grid (width/sqrt(12)
    times sqrt((N+1)/(N-1)) for N points)."""
    cfg = LensingSimConfig(lens=MainLensCfg(mode="fixed"), axion=AxionCfg(vortex_mass=100.0))
    res = axion_mass_oracle(_axion(cfg, np.array([-23.9, -22.1])), cfg, grid_points=41, show_progress=False)
    assert np.allclose(res["mean"], -23.0, atol=0.02)
    assert np.allclose(res["std"], 2.0 / np.sqrt(12.0) * np.sqrt(42 / 40), rtol=0.002)
    s = summarise_oracle(res, n_boot=50)
    assert s["resolved_fraction"] == 0.0 and abs(s["rmse"]["value"] - 0.9) < 0.03


def test_only_axion_records_are_accepted():
    cfg = LensingSimConfig()
    rec = draw_records(cfg, np.random.default_rng(0), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="axion"):
        axion_mass_oracle(rec, cfg, show_progress=False)
