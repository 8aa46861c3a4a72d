"""Beyond the paper: which survey sees Milky Way subhalos, and how the CNN's AUC grows with data.

**Sensitivity frontier** (``darkml astrometry frontier``, preset ``frontier``): the same signal
maps observed by a grid of surveys (N_q, σ_u) spanning Table I's A-E, each with a CNN of fixed
budget, the χ² baseline and the oracle ceiling. It checks the paper's two claims:

1. *AUC depends on the survey only through the per-pixel noise σ_u / sqrt(N_q / N_pix)*: for
   every pair of grid points with equal per-pixel noise (within 1 %) but different N_q and σ_u,
   the AUC difference with a **paired** bootstrap interval (both surveys see the same test
   signal maps: resampling the test pairs jointly). By construction the oracle's AUC is
   identical; the CNN's and χ²'s may differ only through Poisson quasar counts (negligible)
   and training noise.
2. *σ_u = 0.5 µas/yr with N_q = 1e8 ("SKA, 20 years") gives AUC ≳ 0.8*: its per-pixel noise
   (5.5e-3 µas/yr at nside 32) is above scenario C's (3.5e-3), where the paper finds 0.723, so
   under claim 1 its AUC is below C's. We report its AUC with interval beside C's and the
   ceiling.

**Learning curve** (preset ``learning-curve``): test AUC against training maps per class at
``train.train_sizes``, same network and epoch budget, and an extrapolation to the paper's
25,000 maps per class. Model: the detection index d' = sqrt(2) Φ⁻¹(AUC) (the separation of two
unit Gaussians with that AUC) grows as a power law of the training-set size, d' = d'_0 (n /
n_0)^β, capped by the oracle's d' (no learnt detector can exceed the known-template test). Fit
by weighted least squares on ln d' of the sizes whose AUC interval lies above 0.5; the
uncertainty of the extrapolated AUC comes from refitting to AUCs drawn from each size's
bootstrap interval (normal approximation). With fewer than two sizes above chance there is no
extrapolation and the result says so.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.special import ndtr, ndtri

from .. import metrics
from .maps import per_pixel_noise

__all__ = ["FRONTIER_GRID", "equal_noise_pairs", "paired_auc_difference", "frontier_claims", "extrapolate_learning_curve",
           "dprime", "auc_from_dprime"]

#: (N_q, σ_u [µas/yr]) of the default frontier grid: Table I's A-E, the paper's SKA-20 case, and
#: partners with the same per-pixel noise but other N_q and σ_u (claim 1)
FRONTIER_GRID: dict[str, tuple[float, float]] = {
    "A": (1e8, 1.0), "A'": (4e8, 2.0),
    "SKA20": (1e8, 0.5), "SKA20'": (4e8, 1.0),
    "C": (1e9, 1.0), "C'": (1e8, 0.31623),
    "E": (3e9, 1.0), "E'": (1e9, 0.57735),
    "B": (1e8, 0.1), "B'": (1e9, 0.31623),
    "D": (1e9, 0.1), "D'": (3e9, 0.17321),
    "F": (3e9, 0.1),
}


def dprime(auc: float | np.ndarray) -> np.ndarray:
    """Detection index of an AUC: sqrt(2) Φ⁻¹(AUC)."""
    a = np.clip(np.asarray(auc, dtype=float), 1e-9, 1 - 1e-9)
    return np.sqrt(2.0) * ndtri(a)


def auc_from_dprime(d: float | np.ndarray) -> np.ndarray:
    return ndtr(np.asarray(d, dtype=float) / np.sqrt(2.0))


def equal_noise_pairs(surveys: Mapping[str, Any], nside: int, rtol: float = 0.01) -> list[tuple[str, str]]:
    """Pairs of surveys with equal per-pixel noise (within ``rtol``) but different N_q."""
    names = list(surveys)
    noise = {n: per_pixel_noise(surveys[n].n_q, surveys[n].sigma_u, nside) for n in names}
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if abs(noise[a] / noise[b] - 1) < rtol and surveys[a].n_q != surveys[b].n_q:
                out.append((a, b))
    return out


def paired_auc_difference(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, pair: np.ndarray, n_boot: int = 1000,
                          level: float = 0.68, seed: int = 0) -> dict[str, float]:
    """AUC(s1) − AUC(s2) on test sets that share their signal maps, with a paired bootstrap over
    test pairs (``pair``: the index of the signal/no-signal pair each test map belongs to)."""
    y, s1, s2, pair = (np.asarray(a) for a in (y, s1, s2, pair))
    d0 = metrics.auc(y, s1) - metrics.auc(y, s2)
    ids = np.unique(pair)
    members = {p: np.nonzero(pair == p)[0] for p in ids}
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        take = np.concatenate([members[p] for p in rng.choice(ids, size=ids.size)])
        diffs.append(metrics.auc(y[take], s1[take]) - metrics.auc(y[take], s2[take]))
    a = (1 - level) / 2
    return {"value": float(d0), "lo": float(np.quantile(diffs, a)), "hi": float(np.quantile(diffs, 1 - a)),
            "sd": float(np.std(diffs))}


def frontier_claims(ev: Mapping[str, Any], scores: Mapping[str, Mapping[str, np.ndarray]], surveys: Mapping[str, Any],
                    nside: int, model: str, n_boot: int = 1000, level: float = 0.68, seed: int = 0) -> dict[str, Any]:
    """The two claims of the paper tested on a frontier run (module docstring)."""
    pairs = equal_noise_pairs(surveys, nside)
    rows = []
    for a, b in pairs:
        sa, sb = scores[a], scores[b]
        if not np.array_equal(sa["signal_index"], sb["signal_index"]):
            raise ValueError(f"frontier points {a} and {b} do not share their test maps")
        pair = sa["pair"]
        row = {"a": a, "b": b, "per_pixel_noise": per_pixel_noise(surveys[a].n_q, surveys[a].sigma_u, nside)}
        for what in ("cnn", "chi2"):
            d = paired_auc_difference(sa["label"], sa[what], sb[what], pair, n_boot, level, seed)
            row[what] = d
            row[f"{what}_consistent"] = bool(abs(d["value"]) <= 2 * d["sd"] + 1e-12)
        rows.append(row)
    claim1 = {"pairs": rows, "holds": all(r["cnn_consistent"] and r["chi2_consistent"] for r in rows) if rows else None,
              "test": "AUC(a) - AUC(b) within 2 paired-bootstrap standard deviations of 0 for CNN and chi2"}
    ska = next((n for n, s in surveys.items() if s.n_q == 1e8 and abs(s.sigma_u - 0.5) < 1e-9), None)
    claim2: dict[str, Any] = {"point": ska, "holds": None}
    if ska is not None and ska in ev.get("auc", {}):
        auc = ev["auc"][ska][model]
        claim2.update({"cnn_auc": auc, "chi2_auc": ev["baseline"][ska]["auc"], "oracle_auc": ev["ceiling"][ska]["oracle_auc"],
                       "per_pixel_noise": per_pixel_noise(1e8, 0.5, nside),
                       "holds": bool(auc["hi"] is not None and auc["hi"] >= 0.8),
                       "test": "CNN AUC interval reaches 0.8"})
        c = next((n for n, s in surveys.items() if s.n_q == 1e9 and s.sigma_u == 1.0), None)
        if c is not None and c in ev["auc"]:
            claim2["scenario_C_cnn_auc"] = ev["auc"][c][model]
    return {"claim1_per_pixel_noise_only": claim1, "claim2_ska20_auc_0p8": claim2}


def extrapolate_learning_curve(sizes: Sequence[int], aucs: Sequence[Mapping[str, float]], target: int = 25_000,
                               oracle_auc: float | None = None, n_draws: int = 2000, level: float = 0.68,
                               seed: int = 0) -> dict[str, Any]:
    """Power-law fit of d'(n) and the AUC it predicts at ``target`` maps per class (module docstring)."""
    n = np.asarray(sizes, dtype=float)
    v = np.array([a["value"] for a in aucs], dtype=float)
    lo = np.array([a["lo"] if a.get("lo") is not None else a["value"] for a in aucs], dtype=float)
    hi = np.array([a["hi"] if a.get("hi") is not None else a["value"] for a in aucs], dtype=float)
    sd = np.maximum((hi - lo) / 2.0, 1e-4)                       # 68 % interval half-width ≈ one sd
    use = lo > 0.5
    out: dict[str, Any] = {"model": "d' = sqrt(2) Phi^-1(AUC) = d'_0 (n / n_0)^beta, capped at the oracle's d'",
                           "target_n_per_class": target, "sizes_used": n[use].astype(int).tolist()}
    if use.sum() < 2:
        out.update({"auc": None, "reason": f"only {int(use.sum())} training size(s) with an AUC interval above 0.5: "
                                           "no trend to extrapolate (the CNN is at chance at these sizes)"})
        return out
    cap = float(dprime(oracle_auc)) if oracle_auc is not None else math.inf

    def fit(auc_vals: np.ndarray) -> tuple[float, float]:
        d = dprime(auc_vals[use])
        ok = d > 0
        if ok.sum() < 2:
            return math.nan, math.nan
        x = np.log(n[use][ok])
        # ln d' uncertainty: sd(AUC) / (dAUC/dd' · d'), dAUC/dd' = φ(d'/√2)/√2
        dens = np.exp(-0.25 * d[ok] ** 2) / (2.0 * math.sqrt(math.pi))
        w = (dens * d[ok] / sd[use][ok]) ** 2
        A = np.vstack([np.ones_like(x), x]).T
        coef = np.linalg.lstsq(A * np.sqrt(w)[:, None], np.log(d[ok]) * np.sqrt(w), rcond=None)[0]
        return float(coef[0]), float(coef[1])

    a0, beta = fit(v)
    pred = float(auc_from_dprime(min(math.exp(a0 + beta * math.log(target)), cap)))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        a, b = fit(np.clip(v + sd * rng.standard_normal(v.size), 1e-6, 1 - 1e-6))
        if math.isfinite(a) and math.isfinite(b):
            draws.append(float(auc_from_dprime(min(math.exp(a + b * math.log(target)), cap))))
    q = (1 - level) / 2
    out.update({"beta": beta, "dprime_at_1000": float(math.exp(a0 + beta * math.log(1000.0))), "auc": pred,
                "lo": float(np.quantile(draws, q)) if draws else None, "hi": float(np.quantile(draws, 1 - q)) if draws else None,
                "oracle_auc": oracle_auc, "capped": bool(math.exp(a0 + beta * math.log(target)) > cap)})
    return out
