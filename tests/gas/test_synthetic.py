"""The synthetic survey: spectra, determinism, empty rings, noise propagation."""

import numpy as np
import pytest

from darkml.gas.config import ConversionCfg, SkyCfg
from darkml.gas.synthetic import (
    TileSpec,
    channel_overlap,
    gaussian_random_field,
    radial_power_spectrum,
    simulate_tile,
    survey_layout,
)

SMALL = dict(pixels_per_tile=16, channel_kms=5.0)


@pytest.mark.parametrize("beta", [2.5, 2.8])
def test_power_spectrum_slope_recovered(beta):
    slopes = []
    for s in range(4):
        f = gaussian_random_field(128, beta, np.random.default_rng(s), periodic=True)
        k, p = radial_power_spectrum(f)
        sel = (k >= 3) & (k <= 40)
        slopes.append(np.polyfit(np.log(k[sel]), np.log(p[sel]), 1)[0])
    assert np.mean(slopes) == pytest.approx(-beta, abs=0.08)


def test_field_is_standardised():
    f = gaussian_random_field(64, 2.7, np.random.default_rng(1))
    assert abs(f.mean()) < 1e-6 and f.std() == pytest.approx(1.0, rel=1e-6)


def test_channel_overlap_integrates_window_width():
    v = -150 + (np.arange(40) + 0.5) * 5.0
    lo = np.array([[-100.0, -2.0, 0.0]])
    hi = np.array([[-63.0, 1.0, 0.0]])
    f = channel_overlap(lo, hi, v, 5.0)
    np.testing.assert_allclose(f.sum(axis=1) * 5.0, hi - lo)


def test_tile_is_deterministic_and_chunk_independent():
    sky, conv = SkyCfg(**SMALL), ConversionCfg()
    a = simulate_tile(sky, conv, 3, TileSpec(7, 7, 0))
    b = simulate_tile(sky, conv, 3, TileSpec(7, 7, 0))
    c = simulate_tile(sky, conv, 3, TileSpec(8, 7, 0))        # same position, another chunk: another sky
    for k in ("co12", "co13", "noise13", "truth13"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["co13"], c["co13"])
    assert a["co12"].shape == (17, 16, 16) and a["co12"].dtype == np.float32


def test_empty_rings_are_zero_planes():
    sky, conv = SkyCfg(**SMALL), ConversionCfg()
    d = simulate_tile(sky, conv, 0, TileSpec(0, 0, 0))      # l = 300-301: tangent radius 7.3 kpc
    for k in range(10):                                       # rings with outer edge <= 6.5 kpc
        assert np.all(d["co12"][k] == 0) and np.all(d["co13"][k] == 0) and np.all(d["noise13"][k] == 0)
    assert np.all(np.isfinite(d["co13"]))


def test_noise_planes_match_empirical_scatter():
    # no gas: the planes are pure noise, whose std must match the propagated noise planes
    sky = SkyCfg(pixels_per_tile=24, channel_kms=2.0, tau13_peak=1e-9, stripes_per_tile=0.0, rms_tile_scatter=0.0)
    conv = ConversionCfg()
    d = simulate_tile(sky, conv, 0, TileSpec(40, 40, 0))
    for plane, noise in (("co12", "noise12"), ("co13", "noise13")):
        for k in (8, 10, 12):
            x, s = d[plane][k].astype(np.float64), d[noise][k].astype(np.float64)
            ratio = x.std() / np.sqrt(np.mean(s**2))
            assert ratio == pytest.approx(1.0, abs=0.12), (plane, k)


def test_stripes_are_zero_lines():
    sky = SkyCfg(pixels_per_tile=16, channel_kms=5.0, stripes_per_tile=6.0)
    d = simulate_tile(sky, ConversionCfg(), 0, TileSpec(45, 45, 0))
    live = d["co12"][5:16]
    zero_rows = np.all(live == 0, axis=(0, 2)).sum()
    zero_cols = np.all(live == 0, axis=(0, 1)).sum()
    assert zero_rows + zero_cols >= 1


def test_layout_adds_floor_realizations_of_test_tiles():
    specs = survey_layout(50, 300.0, (340.0, 350.0), 2)
    assert len(specs) == 70
    assert {s.tile for s in specs[50:]} == set(range(40, 50))
    assert [s.sample for s in specs] == list(range(70))
