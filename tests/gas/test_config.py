"""Presets load; bad values fail before any work with one line naming field, value and range."""

import pytest

from darkml.config import ConfigError
from darkml.gas.config import load_gas_config


def test_presets_load():
    q = load_gas_config("quick")
    p = load_gas_config("paper")
    assert q.sky.pixels_per_tile == 32 and p.sky.pixels_per_tile == 120
    assert p.cnn.batch_size == 8192 and p.cnn.window == 7 and p.cnn.filters == 128 and p.gp.max_train_points == 7840
    assert p.data.train_l_deg == (300.0, 340.0) and p.data.test_l_deg == (340.0, 350.0)


@pytest.mark.parametrize("override, message", [
    ("cnn.window=4", "gas.cnn.window = 4: must be odd"),
    ("gp.patch=8", "gas.gp.patch = 8: must be odd"),
    ("cnn.lr=-1", "gas.cnn.lr = -1: must be > 0"),
    ("sky.pixels_per_tile=4", "gas.sky.pixels_per_tile = 4: must be >= 12"),
    ("sky.beta_min=3.0", "beta_min = 3.0 must be <= sky.beta_max"),
    ("sky.sigma_v_min_kms=9", "sigma_v_min_kms = 9.0 must be <= sky.sigma_v_max_kms = 8.0"),
    ("data.test_l_deg=[330,345]", "overlap"),
    ("sky.n_tiles=20", "outside the simulated sky"),
    ("data.source=mopra", "mopra_dir"),
    ("conversion.xco=[1e20,2e20]", "one per ring"),
    ("hpsearch.windows=[2]", "odd"),
    ("cnn.unknown=1", "unknown field"),
])
def test_bad_values(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as exc:
        load_gas_config("quick", [override])
    assert "\n" not in str(exc.value)
