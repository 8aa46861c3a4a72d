"""User catalogues: formats, Gaia-style conversion, and clear errors for bad input."""

import numpy as np
import pandas as pd
import pytest

from darkml.phasespace.catalogue import (
    CatalogueError,
    from_columns,
    load_catalogue,
    read_table,
)
from darkml.phasespace.mocks import OBSERVER_KPC, uniform_ball


def _cols(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = uniform_ball(n, OBSERVER_KPC, 3.0, rng)
    v = rng.normal([0, 220, 0], [35, 25, 20], size=(n, 3))
    return {"x": x[:, 0], "y": x[:, 1], "z": x[:, 2], "vx": v[:, 0], "vy": v[:, 1], "vz": v[:, 2]}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits", "h5"])
def test_formats_roundtrip(tmp_path, fmt):
    cols = _cols()
    path = tmp_path / f"stars.{fmt}"
    if fmt == "csv":
        pd.DataFrame(cols).to_csv(path, index=False)
    elif fmt == "parquet":
        pd.DataFrame(cols).to_parquet(path)
    elif fmt == "fits":
        from astropy.table import Table

        Table(cols).write(path)
    else:
        import h5py

        with h5py.File(path, "w") as fh:
            for k, v in cols.items():
                fh[k] = v
    cat = load_catalogue(path, min_stars=100)
    assert len(cat) == 3000
    np.testing.assert_allclose(cat.x[:, 2], cols["z"])
    np.testing.assert_allclose(cat.v[:, 1], cols["vy"])


def test_missing_column_named():
    cols = _cols()
    del cols["vz"]
    with pytest.raises(CatalogueError, match="missing column.*vz"):
        from_columns(cols, min_stars=10)


def test_nan_named():
    cols = _cols()
    cols["y"][5] = np.nan
    with pytest.raises(CatalogueError, match="column 'y': 1 NaN"):
        from_columns(cols, min_stars=10)


def test_units_detected():
    cols = _cols()
    pc = {k: (v * 1000 if k in "xyz" else v) for k, v in cols.items()}
    with pytest.raises(CatalogueError, match="look like pc"):
        from_columns(pc, min_stars=10)
    ms = {k: (v * 1000 if k.startswith("v") else v) for k, v in cols.items()}
    with pytest.raises(CatalogueError, match="look like m/s"):
        from_columns(ms, min_stars=10)


def test_too_few_stars():
    with pytest.raises(CatalogueError, match="need at least 5000"):
        from_columns(_cols(), min_stars=5000)


def test_stars_outside_ball_are_dropped():
    cols = _cols()
    cols["x"][:10] += 10.0
    cat = from_columns(cols, min_stars=10)
    assert len(cat) == 2990 and cat.meta["n_read"] == 3000


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path / "nope.csv")
    p = tmp_path / "stars.xlsx"
    p.write_text("x")
    with pytest.raises(CatalogueError, match="unknown format"):
        read_table(p)


def test_gaia_conversion_puts_the_sun_on_plus_x():
    """Independent check of the frame: the Galactic centre direction and the Sun's own motion."""
    import astropy.coordinates as coord
    import astropy.units as u

    gc = coord.SkyCoord(l=0 * u.deg, b=0 * u.deg, frame="galactic").icrs
    anti = coord.SkyCoord(l=180 * u.deg, b=0 * u.deg, frame="galactic").icrs
    n = 2
    cols = {"ra": np.array([gc.ra.deg, anti.ra.deg]), "dec": np.array([gc.dec.deg, anti.dec.deg]),
            "parallax": np.array([1.0, 1.0]), "pmra": np.zeros(n), "pmdec": np.zeros(n), "radial_velocity": np.zeros(n)}
    from darkml.phasespace.catalogue import from_gaia

    x, v = from_gaia(cols)
    # 1 kpc towards the centre lies at x ≈ 7.1 kpc, towards the anticentre at x ≈ 9.1 kpc
    assert x[0, 0] == pytest.approx(OBSERVER_KPC[0] - 1.0, abs=0.01)
    assert x[1, 0] == pytest.approx(OBSERVER_KPC[0] + 1.0, abs=0.01)
    # a star at rest relative to the Sun moves with the Sun: |v| = |v_sun| of astropy's frame
    vsun = coord.Galactocentric().galcen_v_sun.xyz.to_value(u.km / u.s)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), np.linalg.norm(vsun), rtol=1e-6)
    assert v[0, 1] < 0  # rotation sense flips with the 180° turn (astropy's v_y > 0 at x < 0)
    with pytest.raises(CatalogueError, match="non-positive"):
        from_gaia({**cols, "parallax": np.array([1.0, -0.1])})
