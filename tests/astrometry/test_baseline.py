"""The excess-power baseline: exact null mean, and higher scores with lensing."""

import math

import numpy as np
import pytest

from darkml.astrometry import baseline, maps, population, sky

NSIDE, H, W = 16, 32, 64


def _noise_images(n, rng, n_q=5e6, sigma_u=1.0):
    npix = 12 * NSIDE**2
    noisy, _ = maps.add_noise(np.zeros((n, 2, npix)), n_q=n_q, sigma_u=sigma_u, rng=rng)
    return maps.project(noisy, maps.projection_index(NSIDE, H, W)) / maps.per_pixel_noise(n_q, sigma_u, NSIDE)


@pytest.mark.parametrize("smoothing", [0.0, 1.5, 3.0])
def test_null_mean_is_zero_on_pure_noise(smoothing):
    """Noise maps made by add_noise + project: the score's sample mean is 0 within its standard error."""
    scores = baseline.chi2_excess(_noise_images(400, np.random.default_rng(1)), NSIDE, smoothing_px=smoothing)
    assert abs(scores.mean()) < 4 * scores.std(ddof=1) / math.sqrt(len(scores))


def test_unsmoothed_null_expectation_is_sum_of_weights():
    _, lat = maps.image_lonlat(H, W)
    assert baseline.null_expectation(NSIDE, H, W, 0.0) == pytest.approx(W * np.cos(np.radians(lat)).sum(), rel=1e-12)


def test_lensing_raises_the_score():
    rng = np.random.default_rng(2)
    sig = sky.signal_map(population.draw_population(None, rng), nside=NSIDE)
    n_q, sigma_u = 1e9, 0.02  # a survey where the signal is strong
    proj = maps.projection_index(NSIDE, H, W)
    scale = maps.per_pixel_noise(n_q, sigma_u, NSIDE)
    with_sig = np.stack([maps.project(maps.add_noise(sig, n_q, sigma_u, rng)[0], proj) for _ in range(20)]) / scale
    noise = _noise_images(200, rng, n_q, sigma_u)
    s_sig = baseline.chi2_excess(with_sig, NSIDE)
    s_noise = baseline.chi2_excess(noise, NSIDE)
    assert s_sig.min() > s_noise.max()


def test_smoothing_is_periodic_in_longitude_and_bad_shape():
    img = np.zeros((1, H, W))
    img[0, 10, 0] = 1.0
    sm = baseline.smooth_images(img, 2.0)
    assert sm[0, 10, -1] == pytest.approx(sm[0, 10, 1])
    with pytest.raises(ValueError, match="N, 2, H, W"):
        baseline.chi2_excess(np.zeros((2, H, W)), NSIDE)
