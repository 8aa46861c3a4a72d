"""Map metrics on hand-computable cases; undefined cases are None, never NaN."""

import json
import math

import numpy as np
import pytest

from darkml.gas.metrics import (
    heatmap,
    nan_to_none,
    plane_metrics,
    score_planes,
    summarize,
    trend,
)


def test_hand_computed_plane():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    o = np.array([0.0, 1.0, 2.0, 5.0])
    m = plane_metrics(t, o)
    assert m["scaled_abs_error"] == pytest.approx((2 / 3) / 4)
    # mean 1.5, std sqrt(1.25) = 1.118 -> only T = 3 is a hot spot; its error 2 / max 3
    assert m["n_hot"] == 1 and m["hotspot_abs_error"] == pytest.approx(2 / 3)
    # Pearson by hand: dt = (-1.5,-.5,.5,1.5), do = (-2,-1,0,3)
    num = 1.5 * 2 + 0.5 * 1 + 0 + 1.5 * 3
    den = math.sqrt(1.5**2 * 2 + 0.5**2 * 2) * math.sqrt(4 + 1 + 0 + 9)
    assert m["pearson"] == pytest.approx(num / den)


def test_perfect_and_anticorrelated():
    t = np.random.default_rng(0).random(50)
    assert plane_metrics(t, 3 * t + 1)["pearson"] == pytest.approx(1.0)
    assert plane_metrics(t, -t)["pearson"] == pytest.approx(-1.0)
    assert plane_metrics(t, t)["scaled_abs_error"] == 0.0


def test_constant_target_is_invalid_and_constant_prediction_is_zero():
    zero = np.zeros((8, 8))
    m = plane_metrics(zero, np.random.default_rng(1).random((8, 8)))
    assert all(math.isnan(m[k]) for k in ("pearson", "scaled_abs_error", "hotspot_abs_error"))
    t = np.random.default_rng(2).random((8, 8))
    assert plane_metrics(t, np.zeros((8, 8)))["pearson"] == 0.0


def test_nan_input_refused():
    with pytest.raises(ValueError, match="NaN"):
        plane_metrics(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def test_all_zero_tiles_give_none_not_nan():
    targets = np.zeros((3, 4, 4))
    sc = score_planes(targets, np.ones_like(targets))
    s = summarize(sc["pearson"], n_boot=10)
    assert s["value"] is None and s["n_valid"] == 0 and s["n_planes"] == 3
    text = json.dumps(nan_to_none({"x": sc["pearson"], "y": float("nan"), "z": [np.float32(1.5)]}))
    assert "NaN" not in text and json.loads(text)["z"] == [1.5]


def test_summary_ignores_invalid_planes():
    v = np.array([0.1, np.nan, 0.3, 0.2])
    s = summarize(v, n_boot=200, seed=0)
    assert s["value"] == pytest.approx(0.2) and s["n_valid"] == 3
    assert s["lo"] <= s["value"] <= s["hi"]


def test_heatmap_and_trend():
    g = heatmap(np.array([1.0, 2.0, 3.0]), np.array([40, 41, 41]), np.array([0, 0, 2]), [40, 41], 3)
    assert g[0, 0] == 1 and g[0, 1] == 2 and g[2, 1] == 3 and math.isnan(g[1, 0])
    tr = trend([0.5, 1.5, 2.5, 3.5], [1.0, 1.2, 1.4, 1.6])
    assert tr["slope"] == pytest.approx(0.2)
    assert trend([1, 2], [1, 2])["slope"] is None


def test_hot_spot_rules_by_hand():
    from darkml.gas.metrics import bin_maxima, hot_thresholds

    bright = np.zeros((4, 4))
    bright[0, :2] = [10.0, 6.0]
    faint = np.zeros((4, 4))
    faint[3, 3] = 1.0
    t = np.stack([bright, faint])
    ring = np.array([5, 5])
    # the velocity bin: 32 pixels, values 10, 6, 1 -> mean 17/32, std sqrt(137/32 - (17/32)^2)
    mean = 17 / 32
    thr_bin = mean + math.sqrt(137 / 32 - mean**2)
    np.testing.assert_allclose(hot_thresholds(t, ring, "bin"), [thr_bin, thr_bin])
    # per plane: every non-constant plane has hot spots, the faint one its single pixel
    thr_plane = hot_thresholds(t, ring, "plane")
    assert thr_plane[1] < 1.0 < thr_bin
    pred = t + 0.5
    by_bin = score_planes(t, pred, hot_thresholds(t, ring, "bin"))
    by_plane = score_planes(t, pred, thr_plane)
    assert math.isnan(by_bin["hotspot_abs_error"][1]) and by_plane["hotspot_abs_error"][1] == pytest.approx(0.5)
    # bright plane: hot spots 10 and 6 (both above 2.5 = thr_bin), error 0.5 / max 10
    assert by_bin["n_hot"][0] == 2 and by_bin["hotspot_abs_error"][0] == pytest.approx(0.05)
    # Table 1's formula verbatim divides by all 16 pixels: never above the scaled error
    verb = score_planes(t, pred, hot_thresholds(t, ring, "bin"), hot_norm="all")
    assert verb["hotspot_abs_error"][0] == pytest.approx(2 * 0.05 / 16)
    assert verb["hotspot_abs_error"][0] <= verb["scaled_abs_error"][0]
    # normalised-bin rule: planes divided by their maxima before the bin statistics
    norm = np.stack([bright / 10, faint])
    thr_n = norm.mean() + norm.std()
    np.testing.assert_allclose(hot_thresholds(t, ring, "bin_normalised"), [thr_n * 10, thr_n * 1])
    # the bin's maximum as denominator
    np.testing.assert_allclose(bin_maxima(t, ring), [10.0, 10.0])
    sc = score_planes(t, pred, scales=bin_maxima(t, ring))
    assert sc["scaled_abs_error"][1] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="hot-spot rule"):
        hot_thresholds(t, ring, "galaxy")


def test_docs_tables_are_generated_from_the_committed_results():
    """docs/gas.md's result tables equal what darkml.gas.tables makes from docs/results/gas-cpu.json."""
    from pathlib import Path

    from darkml.gas.tables import update_markdown

    root = Path(__file__).resolve().parents[2]
    res = json.loads((root / "docs/results/gas-cpu.json").read_text())
    text = (root / "docs/gas.md").read_text()
    new, n = update_markdown(text, "cpu", res)
    assert n >= 3
    assert new == text, "regenerate: python -m darkml.gas.tables --name cpu --update docs/gas.md"
