"""Per-plane map metrics of the paper (Table 1, Fig. 4): correlation, scaled and hot-spot error.

For a target plane ``T`` and prediction ``O`` (one velocity bin of one 1-deg tile):

* Pearson correlation ``sum (T - T̄)(O - Ō) / sqrt(sum (T - T̄)^2 sum (O - Ō)^2)``;
* scaled absolute error ``(1/N) sum |O - T| / max|T|``;
* hot-spot scaled absolute error: the same mean over hot-spot pixels only, still divided by the
  plane's ``max|T|``. The paper (Sec. 3): "we normalize each velocity bin and select only
  locations in the image that are at least one standard deviation above the velocity bin mean";
  Fig. 4's caption adds that some planes have "no available hot-spots". Three readings
  (:data:`HOTSPOT_RULES`), the threshold ``mean + std`` taken over

  - ``bin`` (default): every test pixel of the velocity bin (all tiles of that ring), so a faint
    tile of a bright ring has few or no hot spots -- the only reading under which a plane can
    lack hot spots, as Fig. 4 says;
  - ``bin_normalised``: the same after dividing each plane by its maximum;
  - ``plane``: the plane alone (every non-constant plane has hot spots: in a faint plane they
    are its noise peaks).

  The formula in Table 1 divides the sum over hot spots by ``N``, the number of *all* pixels;
  that makes the hot-spot error at most the scaled error, while the paper's Table 1 has it
  1.7-1.9x larger, so the table was computed as a mean over the hot spots (``hot_norm =
  "hot"``); ``"all"`` gives the formula verbatim (reported beside, docs/gas.md).

Undefined cases are *invalid* (the white cells of Fig. 4), reported as ``None`` -- never NaN:
a target plane that is constant (e.g. all zero: an empty ring, an all-zero tile, or every
pixel below the 3-sigma cut) has no correlation, no scale and no hot spots. A constant
*prediction* against a varying target has correlation 0 (no linear association), so a model
cannot dodge the metric by predicting zeros. Medians (Table 1) are over valid planes, with
the number of valid planes and a bootstrap interval over planes.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["METRICS", "HOTSPOT_RULES", "hot_thresholds", "bin_maxima", "plane_metrics", "score_planes", "summarize", "heatmap", "nan_to_none", "trend"]

METRICS = ("pearson", "scaled_abs_error", "hotspot_abs_error")
HOTSPOT_RULES = ("bin", "bin_normalised", "plane")


def hot_thresholds(targets: np.ndarray, ring: np.ndarray, rule: str = "bin") -> np.ndarray:
    """Per-plane hot-spot threshold ``(P,)`` in the plane's own units (NaN: no threshold).

    ``targets`` ``(P, H, W)``, ``ring`` ``(P,)`` the velocity bin of each plane; see the module
    docstring for the rules. For ``bin_normalised`` the threshold of a plane is the bin's
    threshold on normalised values times the plane's maximum.
    """
    t = np.asarray(targets, dtype=np.float64)
    ring = np.asarray(ring)
    out = np.full(t.shape[0], np.nan)
    if rule == "plane":
        flat = t.reshape(t.shape[0], -1)
        ok = flat.std(axis=1) > 0
        out[ok] = (flat.mean(axis=1) + flat.std(axis=1))[ok]
        return out
    if rule not in HOTSPOT_RULES:
        raise ValueError(f"hot-spot rule {rule!r}: must be one of {HOTSPOT_RULES}")
    mx = np.abs(t).reshape(t.shape[0], -1).max(axis=1)
    for k in np.unique(ring):
        sel = np.nonzero((ring == k) & (mx > 0))[0]
        if sel.size == 0:
            continue
        v = t[sel] / mx[sel, None, None] if rule == "bin_normalised" else t[sel]
        thr = v.mean() + v.std()
        if v.std() == 0:
            continue
        out[sel] = thr * mx[sel] if rule == "bin_normalised" else thr
    return out


def bin_maxima(targets: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Per-plane denominator ``(P,)``: the maximum of the plane's velocity bin over all test planes."""
    mx = np.abs(np.asarray(targets, dtype=np.float64)).reshape(len(targets), -1).max(axis=1)
    out = np.empty_like(mx)
    for k in np.unique(ring):
        out[ring == k] = mx[ring == k].max()
    return out


def plane_metrics(target: np.ndarray, pred: np.ndarray, hot_threshold: float | None = None,
                  hot_norm: str = "hot", scale: float | None = None) -> dict[str, float]:
    """Metrics of one plane; NaN marks "undefined" (converted to None by :func:`nan_to_none`).

    ``hot_threshold``: hot spots are pixels above it (None: the plane's mean + std; NaN: none);
    ``hot_norm``: the hot-spot error is a mean over the hot spots (``"hot"``) or their sum over
    all pixels (``"all"``, Table 1's formula verbatim); ``scale``: the errors' denominator (None:
    the plane's ``max|T|``; e.g. the velocity bin's maximum over the test region)."""
    t = np.asarray(target, dtype=np.float64).ravel()
    o = np.asarray(pred, dtype=np.float64).ravel()
    if t.shape != o.shape:
        raise ValueError(f"target {np.shape(target)} and prediction {np.shape(pred)} differ in shape")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(o))):
        raise ValueError("target or prediction contains NaN/inf; preprocess blanks to 0 first")
    out = {"pearson": np.nan, "scaled_abs_error": np.nan, "hotspot_abs_error": np.nan, "n_hot": 0}
    if t.size == 0:
        return out
    tmax = np.abs(t).max()
    st = t.std()
    if tmax > 0:
        err = np.abs(o - t) / (tmax if scale is None else scale)
        out["scaled_abs_error"] = float(err.mean())
        thr = t.mean() + st if hot_threshold is None else hot_threshold
        if st > 0 and np.isfinite(thr):
            hot = t > thr
            out["n_hot"] = int(hot.sum())
            if hot.any():
                out["hotspot_abs_error"] = float(err[hot].sum() / (hot.sum() if hot_norm == "hot" else t.size))
    if st > 0:
        so = o.std()
        if so > 0:
            out["pearson"] = float(np.clip(np.mean((t - t.mean()) * (o - o.mean())) / (st * so), -1.0, 1.0))
        else:
            out["pearson"] = 0.0
    return out


def score_planes(targets: np.ndarray, preds: np.ndarray, thresholds: np.ndarray | None = None,
                 hot_norm: str = "hot", scales: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`plane_metrics` for every plane of ``(P, H, W)`` arrays -> arrays ``(P,)`` (NaN = invalid);
    ``thresholds`` ``(P,)`` from :func:`hot_thresholds` (None: per plane)."""
    targets = np.asarray(targets)
    preds = np.asarray(preds)
    if targets.shape != preds.shape:
        raise ValueError(f"targets {targets.shape} and predictions {preds.shape} differ in shape")
    thr = [None] * len(targets) if thresholds is None else list(thresholds)
    sc = [None] * len(targets) if scales is None else list(scales)
    rows = [plane_metrics(t, o, h, hot_norm, c) for t, o, h, c in zip(targets, preds, thr, sc)]
    return {k: np.array([r[k] for r in rows], dtype=float) for k in (*METRICS, "n_hot")}


def summarize(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.68) -> dict[str, Any]:
    """Median over valid planes with a bootstrap percentile interval; None when no plane is valid."""
    v = np.asarray(values, dtype=float)
    ok = v[np.isfinite(v)]
    res: dict[str, Any] = {"value": None, "lo": None, "hi": None, "mean": None, "n_valid": int(ok.size), "n_planes": int(v.size)}
    if ok.size == 0:
        return res
    res["value"] = float(np.median(ok))
    res["mean"] = float(ok.mean())
    if n_boot > 0 and ok.size > 1:
        rng = np.random.default_rng(seed)
        meds = np.median(ok[rng.integers(0, ok.size, size=(n_boot, ok.size))], axis=1)
        a = (1 - level) / 2
        res["lo"], res["hi"] = float(np.quantile(meds, a)), float(np.quantile(meds, 1 - a))
    return res


def heatmap(values: np.ndarray, tile: np.ndarray, ring: np.ndarray, tiles: Sequence[int], n_rings: int) -> np.ndarray:
    """``(n_rings, len(tiles))`` grid of per-plane values (NaN where no plane / invalid)."""
    col = {int(t): c for c, t in enumerate(tiles)}
    grid = np.full((n_rings, len(tiles)), np.nan)
    for v, t, k in zip(values, tile, ring):
        if int(t) in col:
            grid[int(k), col[int(t)]] = v
    return grid


def trend(x: Iterable[float], y: Iterable[float]) -> dict[str, Any]:
    """Least-squares slope of y on x over finite points (Fig. 3's 'error vs distance' trend)."""
    x = np.asarray(list(x), dtype=float)
    y = np.asarray(list(y), dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return {"slope": None, "slope_err": None, "n": int(ok.sum())}
    A = np.vstack([x[ok], np.ones(ok.sum())]).T
    coef, res, *_ = np.linalg.lstsq(A, y[ok], rcond=None)
    dof = max(int(ok.sum()) - 2, 1)
    resid = y[ok] - A @ coef
    cov = np.linalg.inv(A.T @ A) * (resid @ resid) / dof
    return {"slope": float(coef[0]), "slope_err": float(np.sqrt(cov[0, 0])), "n": int(ok.sum())}


def nan_to_none(obj: Any) -> Any:
    """Recursively turn NaN/inf floats and arrays into JSON-safe values with None."""
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return nan_to_none(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
