"""Frontier claims, paired AUC differences and the learning-curve extrapolation."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from darkml.astrometry import frontier, study
from darkml.astrometry.config import Scenario
from darkml.cli import app


def test_equal_noise_pairs_of_the_default_grid():
    surveys = {k: Scenario(n_q=q, sigma_u=s) for k, (q, s) in frontier.FRONTIER_GRID.items()}
    pairs = frontier.equal_noise_pairs(surveys, 32)
    assert set(pairs) == {("A", "A'"), ("SKA20", "SKA20'"), ("C", "C'"), ("E", "E'"), ("B", "B'"), ("D", "D'")}
    assert len(frontier.FRONTIER_GRID) >= 12


def test_paired_difference_is_zero_for_identical_scores_and_detects_a_shift():
    rng = np.random.default_rng(0)
    n = 400
    y = np.tile([1, 0], n)
    pair = np.repeat(np.arange(n), 2)
    s = rng.standard_normal(2 * n) + 0.8 * y
    d = frontier.paired_auc_difference(y, s, s.copy(), pair, n_boot=200)
    assert d["value"] == 0 and d["lo"] == 0 and d["hi"] == 0
    better = s + 0.8 * y
    d2 = frontier.paired_auc_difference(y, better, s, pair, n_boot=200)
    assert d2["lo"] > 0 and d2["value"] > 3 * d2["sd"]


def test_extrapolation_recovers_a_power_law_and_respects_the_ceiling():
    sizes = [250, 500, 1000, 2000, 4000]
    beta, d0 = 0.4, 0.3
    aucs = [{"value": float(frontier.auc_from_dprime(d0 * (n / 250) ** beta)), "lo": None, "hi": None} for n in sizes]
    for a in aucs:
        a["lo"], a["hi"] = a["value"] - 0.01, a["value"] + 0.01
    ex = frontier.extrapolate_learning_curve(sizes, aucs, 25_000, oracle_auc=0.999, n_draws=300)
    assert ex["beta"] == pytest.approx(beta, abs=1e-6)
    assert ex["auc"] == pytest.approx(float(frontier.auc_from_dprime(d0 * 100**beta)), abs=1e-6)
    assert ex["lo"] < ex["auc"] < ex["hi"]
    capped = frontier.extrapolate_learning_curve(sizes, aucs, 25_000, oracle_auc=0.7, n_draws=50)
    assert capped["auc"] == pytest.approx(0.7) and capped["capped"]
    chance = [{"value": 0.5, "lo": 0.48, "hi": 0.52}] * 5
    none = frontier.extrapolate_learning_curve(sizes, chance, 25_000)
    assert none["auc"] is None and "chance" in none["reason"]


def test_tiny_frontier_and_learning_curve_end_to_end(tmp_path):
    sets = ["data.scenarios=[D,Dp]", "data.custom_scenarios={Dp: {n_q: 3.0e+9, sigma_u: 0.17321}}",
            "evaluate.frontier=true", "train.train_sizes=[6,24]", "train.curve_scenarios=[D]", "evaluate.attribution_maps=2"]
    args = ["astrometry", "frontier", "--preset", "tiny", "--run-dir", str(tmp_path / "r")]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "r" / "metrics.json").read_text())["evaluation"]
    fr = ev["frontier"]
    assert [(p["a"], p["b"]) for p in fr["claim1_per_pixel_noise_only"]["pairs"]] == [("D", "Dp")]
    assert fr["claim2_ska20_auc_0p8"]["point"] is None
    lc = ev["learning_curve"]["D"]
    assert lc["sizes"] == [6, 24] and len(lc["auc"]) == 2 and "extrapolation" in lc
    assert set(ev["ceiling"]) == {"D", "Dp"}
    assert ev["ceiling"]["D"]["oracle_auc"]["value"] == pytest.approx(ev["ceiling"]["Dp"]["oracle_auc"]["value"], rel=1e-3)
    assert set(ev["attribution"]["methods"]) == {"integrated gradients", "random attribution", "smoothed chi2 map"}
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Sensitivity frontier" in html and "Learning curve" in html and "Physical ceiling" in html


@pytest.mark.parametrize("sets, match", [
    (["data.custom_scenarios={X: {n_q: 0, sigma_u: 1}}", "data.scenarios=[X]"], "n_q"),
    (["data.custom_scenarios={X: {n_q: 1e9, sigma_u: -1}}", "data.scenarios=[X]"], "sigma_u"),
    (["data.custom_scenarios={X: {n_q: 100, sigma_u: 1}}", "data.scenarios=[X]"], "fewer quasars than the 768 pixels"),
    (["data.scenarios=[]"], "data.scenarios"),
    (["train.train_sizes=[10,99]"], "exceeds data.n_train"),
])
def test_bad_frontier_grids_fail_before_any_work(tmp_path, sets, match):
    with pytest.raises(Exception, match=match):
        study.load("tiny", sets)
