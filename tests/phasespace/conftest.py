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
