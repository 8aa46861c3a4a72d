"""The physical ceiling (oracle SNR, known-template AUC) against the matched filter on noised maps."""

import numpy as np
import pytest
from scipy.special import ndtr

from darkml import metrics
from darkml.astrometry import ceiling, maps


def test_oracle_auc_matches_the_matched_filter_on_noised_maps():
    rng = np.random.default_rng(3)
    nside, n_q, sigma_u = 8, 1e8, 1.0                          # 1.3e5 quasars per pixel: Poisson scatter negligible
    sp = maps.per_pixel_noise(n_q, sigma_u, nside)
    npix = 12 * nside**2
    # three templates of different strength (oracle SNR 0.8, 1.6, 2.4)
    base = rng.standard_normal((3, 2, npix))
    base /= np.sqrt((base**2).sum(axis=(1, 2)))[:, None, None]
    templates = base * (np.array([0.8, 1.6, 2.4]) * sp)[:, None, None]
    snr = ceiling.oracle_snr(templates, sp)
    np.testing.assert_allclose(snr, [0.8, 1.6, 2.4], rtol=1e-12)
    n = 1500
    scores, labels = [], []
    for k in range(3):
        for has_signal in (1, 0):
            mean = np.broadcast_to(templates[k] if has_signal else 0 * templates[k], (n, 2, npix))
            noisy, _ = maps.add_noise(mean, n_q=n_q, sigma_u=sigma_u, rng=rng)
            t = np.einsum("cp,ncp->n", templates[k], noisy) / sp**2 / snr[k]
            scores.append(t)
            labels.append(np.full(n, has_signal))
            if has_signal:
                assert t.mean() == pytest.approx(snr[k], abs=0.1) and t.std() == pytest.approx(1.0, abs=0.06)
    emp = metrics.auc(np.concatenate(labels), np.concatenate(scores))
    expected = ceiling.oracle_auc(snr, n_boot=0)["value"]
    assert expected == pytest.approx(ndtr(snr / np.sqrt(2)).mean())
    assert emp == pytest.approx(expected, abs=0.015)


def test_ceiling_report_and_limits():
    sig = np.zeros((4, 2, 48))
    sig[:, 0, 0] = [0.0, 1e-3, 1e-2, 1.0]
    rep = ceiling.ceiling_report(sig, n_q=1e8, sigma_u=1.0, nside=2, n_boot=200)
    sp = maps.per_pixel_noise(1e8, 1.0, 2)
    assert rep["sigma_pix"] == pytest.approx(sp)
    np.testing.assert_allclose(rep["snr"]["values"], np.round(sig[:, 0, 0] / sp, 4))
    # no signal -> 0.5, overwhelming signal -> 1
    assert ceiling.oracle_auc(np.zeros(10), n_boot=0)["value"] == 0.5
    assert ceiling.oracle_auc(np.full(10, 50.0), n_boot=0)["value"] == pytest.approx(1.0)
    lo, hi = rep["oracle_auc"]["lo"], rep["oracle_auc"]["hi"]
    assert lo <= rep["oracle_auc"]["value"] <= hi
    with pytest.raises(ValueError, match="sigma_pix"):
        ceiling.oracle_snr(sig, 0.0)
