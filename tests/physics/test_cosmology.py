"""Critical density and the c200(M200) relation against independent computations."""

import math

import numpy as np
import pytest
import torch
from astropy import units as u
from astropy.cosmology import FlatLambdaCDM

from darkml.physics.cosmology import C200_COEFFS, concentration_c200, critical_density


@pytest.mark.parametrize("h", [0.6732, 0.7, 1.0])
def test_critical_density_matches_astropy(h):
    expected = FlatLambdaCDM(H0=100 * h, Om0=0.3).critical_density0.to(u.Msun / u.kpc**3).value
    assert critical_density(h) == pytest.approx(expected, rel=1e-10)


def test_critical_density_is_277_h2():
    # textbook value 2.775e11 h^2 Msun/Mpc^3
    assert critical_density(1.0) == pytest.approx(277.5, rel=1e-3)
    with pytest.raises(ValueError, match="h"):
        critical_density(0.0)


def test_c200_is_eq14_evaluated_at_ln_m_times_h():
    m = np.logspace(5, 15, 11)
    for h in (0.7, 0.6732):
        x = np.log(m * h)  # M in h^-1 Msun
        expected = sum(c * x**i for i, c in enumerate(C200_COEFFS))
        np.testing.assert_allclose(concentration_c200(m, h=h), expected, rtol=1e-13)
    # the coefficients are the paper's (Sánchez-Conde & Prada 2014)
    assert C200_COEFFS == (37.5153, -1.5093, 1.636e-2, 3.66e-4, -2.89237e-5, 5.32e-7)


def test_c200_physical_range_and_torch():
    m = np.logspace(6, 15, 200)
    c = concentration_c200(m)
    assert np.all(np.diff(c) < 0)  # concentration falls with mass
    sub = concentration_c200(np.array([1e7, 1e10]))
    assert 15 < sub[0] < 25 and 9 < sub[1] < 14  # field-halo values for subhalo masses
    ct = concentration_c200(torch.tensor(m))
    np.testing.assert_allclose(ct.numpy(), c, rtol=1e-14)
    assert math.isfinite(float(concentration_c200(1e12)))
