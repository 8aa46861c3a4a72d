"""Radiative transfer limits and the LTE column, against independent computations."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from darkml.gas import radiative as rt


def _planck_rj(t, nu_ghz):
    """Rayleigh-Jeans-equivalent temperature (h nu/k)/(exp(h nu/kT)-1) [K] from SI constants."""
    h, k = 6.62607015e-34, 1.380649e-23
    t0 = h * nu_ghz * 1e9 / k
    return t0 / math.expm1(t0 / t)


def test_line_t0_from_si_constants():
    assert rt.T0_12CO_K == pytest.approx(6.62607015e-34 * 115.2712018e9 / 1.380649e-23, rel=1e-9)
    assert rt.T0_13CO_K == pytest.approx(5.289, abs=0.005)


def test_optically_thick_limit_is_saturation_temperature():
    expect = _planck_rj(10.0, rt.NU_12CO_GHZ) - _planck_rj(rt.T_CMB_K, rt.NU_12CO_GHZ)
    t = rt.brightness_temperature(np.array([50.0, 500.0]), 10.0, rt.T0_12CO_K)
    np.testing.assert_allclose(t, expect, rtol=1e-6)
    assert expect == pytest.approx(6.65, abs=0.02)        # "12CO saturates near 6.6 K at Tex = 10 K"


@pytest.mark.parametrize("ratio", [45.0, 66.0, 80.0])
def test_optically_thin_ratio_tends_to_isotope_ratio(ratio):
    tau13 = 1e-6
    # same T0 for both lines: T12/T13 -> R exactly
    t12 = rt.brightness_temperature(ratio * tau13, 10.0, 5.3)
    t13 = rt.brightness_temperature(tau13, 10.0, 5.3)
    assert t12 / t13 == pytest.approx(ratio, rel=1e-4)
    # true line frequencies: R times the ratio of the saturation temperatures
    t12 = rt.brightness_temperature(ratio * tau13, 10.0, rt.T0_12CO_K)
    t13 = rt.brightness_temperature(tau13, 10.0, rt.T0_13CO_K)
    sat = (_planck_rj(10, rt.NU_12CO_GHZ) - _planck_rj(rt.T_CMB_K, rt.NU_12CO_GHZ)) / (
        _planck_rj(10, rt.NU_13CO_GHZ) - _planck_rj(rt.T_CMB_K, rt.NU_13CO_GHZ))
    assert t12 / t13 == pytest.approx(ratio * sat, rel=1e-4)


def test_torch_and_numpy_agree():
    tau = np.linspace(0, 5, 11)
    a = rt.brightness_temperature(tau, 10.0, rt.T0_13CO_K)
    b = rt.brightness_temperature(torch.tensor(tau), 10.0, rt.T0_13CO_K).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_lte_depth_inverts_the_textbook_slab():
    tau = np.array([0.01, 0.3, 1.0, 2.5])
    j10 = 1 / math.expm1(5.3 / 10.0)
    tb = 5.3 * (j10 - 0.16) * (1 - np.exp(-tau))         # Wilson et al. slab with T0 = 5.3 K, J(Tbg) = 0.16
    np.testing.assert_allclose(rt.tau_from_brightness(tb, 10.0), tau, rtol=1e-10)


def test_lte_coefficient_against_first_principles():
    # N = 8 pi nu^3 / (3 c^3 A10) * Q(T) / (1 - exp(-h nu / k T)) * int tau dv for a linear rotor's J=1-0 line,
    # Q ~ kT/(hB) + 1/3, A10(13CO) = 6.294e-8 s^-1 (LAMDA). The textbook 3.0e14 Tex form must agree to ~20%.
    nu, c, a10 = rt.NU_13CO_GHZ * 1e9, 2.99792458e10, 6.294e-8
    t0 = rt.T0_13CO_K
    for tex in (8.0, 10.0, 20.0):
        q = 2 * tex / t0 + 1 / 3
        n_first = 8 * math.pi * nu**3 / (3 * c**3 * a10) * q / (-math.expm1(-t0 / tex)) * 1e5   # per km/s of tau
        n_book = rt.lte_column_13co(1.0, tex)
        assert n_book == pytest.approx(n_first, rel=0.2)


def test_curve_of_growth_limits_and_quadrature():
    f = lambda x: quad(lambda u: -math.expm1(-x * math.exp(-u * u / 2)), -40, 40, limit=200)[0] / math.sqrt(2 * math.pi)
    xs = np.array([1e-3, 0.5, 3.0, 60.0, 2000.0])
    np.testing.assert_allclose(rt.gaussian_line_integral(xs), [f(x) for x in xs], rtol=2e-4)
    assert rt.gaussian_line_integral(np.array([1e-5]))[0] == pytest.approx(1e-5, rel=1e-3)   # thin: F -> x
    big = 1e6                                                                                   # thick: 2 sqrt(2 ln x)/sqrt(2 pi)
    assert rt.gaussian_line_integral(np.array([big]))[0] == pytest.approx(
        2 * math.sqrt(2 * math.log(big)) / math.sqrt(2 * math.pi), rel=0.05)


def test_isotope_ratio_range_of_the_facts():
    assert rt.isotope_ratio(3.0) == pytest.approx(45.1, abs=0.2)
    assert rt.isotope_ratio(8.5) == pytest.approx(80.3, abs=0.2)


def test_h2_from_12co():
    assert rt.h2_from_12co(10.0, 2e20, 0.5) == pytest.approx(4e21)
