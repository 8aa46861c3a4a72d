"""Baselines: the physics inverse against the forward model, per-ring regression, conditional median."""

import numpy as np
import pytest

from darkml.gas.baselines import (
    ConditionalMedian,
    RingLinear,
    curve_of_growth_inverse,
    physics_inverse,
)
from darkml.gas.radiative import (
    T0_12CO_K,
    T0_13CO_K,
    brightness_temperature,
    gaussian_line_integral,
)
from darkml.gas.synthetic import channel_overlap, integrate_planes


def test_curve_of_growth_inverse_round_trip():
    x = np.array([1e-3, 0.2, 4.0, 150.0, 3e4])
    np.testing.assert_allclose(curve_of_growth_inverse(gaussian_line_integral(x)), x, rtol=2e-3)
    assert curve_of_growth_inverse(np.array([0.0, -1.0])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("tau_p, sigma_v, ratio", [(0.05, 1.5, 50.0), (0.4, 2.0, 70.0), (1.5, 3.0, 60.0)])
def test_physics_inverse_recovers_the_forward_model(tau_p, sigma_v, ratio):
    # one Gaussian line, well inside a ring window, through the survey's own integration
    dv, eta, tex = 0.25, 0.55, 10.0
    v = -150 + (np.arange(800) + 0.5) * dv
    prof = np.exp(-0.5 * ((v + 60.0) / sigma_v) ** 2)[:, None, None] * np.ones((1, 2, 2))
    t12 = eta * brightness_temperature(ratio * tau_p * prof, tex, T0_12CO_K)
    t13 = eta * brightness_temperature(tau_p * prof, tex, T0_13CO_K)
    ov = channel_overlap(np.full((1, 2), -90.0), np.full((1, 2), -30.0), v, dv)
    pl = integrate_planes(t12, t13, ov, dv, np.array([2e20]), eta, tex)
    pred = physics_inverse(pl["co12"][0], ratio, sigma_v, tex, 2e20, tex)
    # the LTE inversion uses the textbook T0 = 5.3 K, J(Tbg) = 0.16: agreement to a few per cent
    np.testing.assert_allclose(pred, pl["co13"][0], rtol=0.06)


def test_ring_linear_recovers_slopes_and_pools():
    rng = np.random.default_rng(0)
    src = rng.random((4, 10, 10))
    ring = np.array([0, 0, 1, 2])
    tgt = np.where(ring[:, None, None] == 0, 2 * src + 0.1, 0.5 * src)
    tgt[3] = 0                                                  # ring 2 has no signal -> pooled fit
    lin = RingLinear(n_rings=3, min_active=5).fit(src, tgt, ring)
    assert lin.coef[0] == pytest.approx((2.0, 0.1), abs=1e-9)
    assert lin.coef[1] == pytest.approx((0.5, 0.0), abs=1e-9)
    assert 2 not in lin.coef
    pred = lin.predict(src, ring)
    np.testing.assert_allclose(pred[:3], tgt[:3], atol=1e-9)
    assert np.all(pred >= 0)


def test_conditional_median_of_a_noisy_relation():
    rng = np.random.default_rng(1)
    x = rng.random((20, 16, 16))
    y = x**2 + rng.laplace(0, 0.02, size=x.shape)
    keys = np.zeros((20, 2), int)
    cm = ConditionalMedian(n_bins=40).fit(x, y, keys)
    xt = rng.random((2, 16, 16))
    pred = cm.predict(xt, np.zeros((2, 2), int))
    assert np.abs(pred - xt**2)[(xt > 0.05) & (xt < 0.95)].max() < 0.03
    assert np.all(cm.predict(xt, np.ones((2, 2), int)) == 0)    # unknown key -> no prediction (zeros)
