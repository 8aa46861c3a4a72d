"""Classifier and regressor metrics with bootstrap confidence intervals.

* ROC curve and AUC (ties handled by rank averaging: AUC = P(s+ > s-) + 0.5 P(s+ = s-)).
* Macro one-vs-rest AUC for multi-class probabilities (the strong-lensing papers' metric).
* Accuracy; RMSE / MSE / MAE for regression.
* ``bootstrap_ci``: percentile intervals from resampling the test set with replacement
  (default 68%, i.e. the 16th–84th percentiles, 1000 resamples, explicit seed).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "roc_curve",
    "auc",
    "macro_auc_ovr",
    "accuracy",
    "mse",
    "rmse",
    "mae",
    "bootstrap_ci",
    "binary_report",
    "multiclass_report",
    "regression_metrics",
    "known_template_auc",
]


def _check_binary(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(s, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape}) and scores ({s.shape}) differ in shape")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    return y, s


def roc_curve(y_true, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (descending), from (0,0) to (1,1)."""
    y, s = _check_binary(y_true, score)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    P, N = max(int(y.sum()), 1), max(int(y.size - y.sum()), 1)
    tpr = np.r_[0.0, tps / P]
    fpr = np.r_[0.0, fps / N]
    thr = np.r_[np.inf, s[distinct]]
    return fpr, tpr, thr


def auc(y_true, score) -> float:
    """Area under the ROC curve via the Mann–Whitney rank statistic; NaN if one class is absent."""
    y, s = _check_binary(y_true, score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc_ovr(y_true, probs) -> float:
    """Unweighted mean over classes of the one-vs-rest AUC of that class's probability."""
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(f"probs must be (n_samples, n_classes); got {p.shape} for {y.size} labels")
    vals = [auc(y == k, p[:, k]) for k in range(p.shape[1])]
    return float(np.nanmean(vals))


def accuracy(y_true, pred) -> float:
    y = np.asarray(y_true).ravel()
    p = np.asarray(pred).ravel()
    return float(np.mean(y == p)) if y.size else float("nan")


def mse(y, yhat) -> float:
    d = np.asarray(yhat, float).ravel() - np.asarray(y, float).ravel()
    return float(np.mean(d**2))


def rmse(y, yhat) -> float:
    return float(np.sqrt(mse(y, yhat)))


def mae(y, yhat) -> float:
    d = np.asarray(yhat, float).ravel() - np.asarray(y, float).ravel()
    return float(np.mean(np.abs(d)))


def bootstrap_ci(
    fn: Callable[..., float],
    *arrays: Any,
    n_boot: int = 1000,
    level: float = 0.68,
    seed: int = 0,
) -> dict[str, float]:
    """``fn(*arrays)`` with a percentile bootstrap interval over resampled rows.

    Returns ``{"value", "lo", "hi", "level", "n_boot"}``; resamples where ``fn`` is undefined
    (NaN, e.g. one class absent) are dropped.
    """
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: must be in (0, 1)")
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    value = float(fn(*arrays))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        stats[b] = fn(*(a[idx] for a in arrays))
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        lo = hi = float("nan")
    else:
        lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return {"value": value, "lo": float(lo), "hi": float(hi), "level": level, "n_boot": int(n_boot)}


def binary_report(y_true, score, n_boot: int = 1000, level: float = 0.68, seed: int = 0) -> dict[str, Any]:
    """AUC with bootstrap interval and the ROC curve (downsampled to ≤ 512 points) for JSON."""
    fpr, tpr, _ = roc_curve(y_true, score)
    if fpr.size > 512:
        keep = np.unique(np.r_[0, np.linspace(0, fpr.size - 1, 510).astype(int), fpr.size - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return {"auc": bootstrap_ci(auc, y_true, score, n_boot=n_boot, level=level, seed=seed), "roc": {"fpr": fpr, "tpr": tpr}}


def multiclass_report(y_true, probs, n_boot: int = 1000, level: float = 0.68, seed: int = 0) -> dict[str, Any]:
    """Accuracy and macro OvR AUC (bootstrap intervals) plus per-class ROC curves."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(probs, float)
    out: dict[str, Any] = {
        "accuracy": bootstrap_ci(lambda a, b: accuracy(a, b.argmax(1)), y, p, n_boot=n_boot, level=level, seed=seed),
        "macro_auc": bootstrap_ci(macro_auc_ovr, y, p, n_boot=n_boot, level=level, seed=seed),
        "roc": {},
    }
    for k in range(p.shape[1]):
        fpr, tpr, _ = roc_curve(y == k, p[:, k])
        out["roc"][str(k)] = {"fpr": fpr, "tpr": tpr, "auc": auc(y == k, p[:, k])}
    return out


def regression_metrics(y, yhat, n_boot: int = 1000, level: float = 0.68, seed: int = 0) -> dict[str, dict[str, float]]:
    """RMSE, MSE and MAE, each with a bootstrap interval."""
    y = np.asarray(y, float).ravel()
    yhat = np.asarray(yhat, float).ravel()
    return {name: bootstrap_ci(f, y, yhat, n_boot=n_boot, level=level, seed=seed) for name, f in (("rmse", rmse), ("mse", mse), ("mae", mae))}


def known_template_auc(snr, n_boot: int = 1000, level: float = 0.68, seed: int = 0) -> dict[str, Any]:
    """The oracle (known-template) AUC of signal against no signal over a population:
    E[Φ(SNR/√2)] with a bootstrap percentile interval over the population.

    With Gaussian noise the likelihood-ratio statistic of a known signal template is N(SNR, 1)
    with the signal and N(0, 1) without, so one signal case is told from a random null case with
    probability Φ(SNR/√2); no method that does not know the template can do better.
    """
    from scipy.special import ndtr

    p = ndtr(np.asarray(snr, dtype=np.float64) / np.sqrt(2.0))
    if n_boot > 0 and p.size > 1:
        return bootstrap_ci(np.mean, p, n_boot=n_boot, level=level, seed=seed)
    return {"value": float(p.mean()), "lo": None, "hi": None}
