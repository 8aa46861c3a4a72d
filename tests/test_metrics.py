import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc

from darkml import metrics


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # many ties
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = metrics.roc_curve(y, s)
    f2, t2, _ = sk_roc(y, s, drop_intermediate=False)
    assert np.allclose(fpr, f2) and np.allclose(tpr, t2)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.auc(y, s), abs=1e-12)


def test_macro_auc_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet(np.ones(3), 300)
    p[np.arange(300), y] += 0.3
    p /= p.sum(1, keepdims=True)
    assert metrics.macro_auc_ovr(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))


def test_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(2)
    small = rng.normal(size=100)
    big = rng.normal(size=10000)
    a = metrics.bootstrap_ci(np.mean, small, n_boot=400)
    b = metrics.bootstrap_ci(np.mean, big, n_boot=400)
    # the 68% bootstrap half-width of a mean estimates sigma / sqrt(n)
    assert (a["hi"] - a["lo"]) / 2 == pytest.approx(1 / np.sqrt(100), rel=0.25)
    assert (b["hi"] - b["lo"]) < (a["hi"] - a["lo"]) / 5
    assert a["lo"] <= a["value"] <= a["hi"]


def test_regression_and_degenerate_cases():
    r = metrics.regression_metrics([0, 0, 0, 0], [1, -1, 1, -1], n_boot=50)
    assert r["rmse"]["value"] == pytest.approx(1) and r["mae"]["value"] == pytest.approx(1) and r["mse"]["value"] == 1
    assert np.isnan(metrics.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([0, 1], [np.nan, 1])
