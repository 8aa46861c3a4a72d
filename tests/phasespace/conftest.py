"""Shared, cached fixtures for the phase-space tests (building a disc DF takes ~1 s)."""

import numpy as np
import pytest

from darkml.phasespace.disc import DiscComponent, DiscDF
from darkml.phasespace.mocks import MilkyWay2014, Plummer


@pytest.fixture(scope="session")
def mw():
    return MilkyWay2014()


@pytest.fixture(scope="session")
def disc_df(mw):
    return DiscDF(mw, [DiscComponent(0.8, 25.0, 2.5), DiscComponent(0.2, 45.0, 2.5)])


@pytest.fixture(scope="session")
def plummer():
    return Plummer(1.0e11, 3.0)


@pytest.fixture(scope="session")
def disc_sample(disc_df):
    x, v, c = disc_df.sample(20000, np.random.default_rng([0, 0]))
    return x, v, c


@pytest.fixture(scope="session")
def disc_like_velocities():
    """``make(rng, sigma)`` -> a ``sample_v(x, n, generator=None, base=None)`` drawing Gaussian
    velocities of dispersion ``sigma`` around 200 km/s of rotation (any velocities serve an exact f)."""
    import torch

    def make(rng, sigma):
        def sample_v(xb, n, generator=None, base=None):
            R = torch.sqrt(xb[:, 0] ** 2 + xb[:, 1] ** 2)
            v = torch.tensor(rng.normal(size=(xb.shape[0], n, 3)) * sigma)
            v[..., 0] += (-200 * xb[:, 1] / R)[:, None]
            v[..., 1] += (200 * xb[:, 0] / R)[:, None]
            return v
        return sample_v

    return make
