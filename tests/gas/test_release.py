"""Survey releases: exact tile cut by pixel index, recursive discovery and classification of FITS
files, BUNIT spellings, the main-beam efficiency order, and a mock MOPRA release end to end."""

import logging
import math

import numpy as np
import pytest
from astropy.io import fits

from darkml.gas.mopra import (
    MopraError,
    cube_planes,
    cut_tiles,
    parse_bunit,
    pixel_range,
    read_cube,
)
from darkml.gas.release import field_key, load_survey, scan_release
from darkml.gas.synthetic import integrate_planes

XCO = [2e20] * 17


def _planes(glon, glat, seed=0):
    rng = np.random.default_rng(seed)
    shape = (17, glat.size, glon.size)
    out = {k: rng.random(shape, dtype=np.float32) for k in ("co12", "co13", "noise12", "noise13")}
    out["coverage"] = np.ones(shape[1:], np.float32)
    out["glon"], out["glat"] = glon, glat
    return out


def _lattice(naxis, crpix, crval, pix):
    """Pixel centres of a FITS axis (0-based index i has world crval + (i + 1 - crpix) pix)."""
    return crval + (np.arange(naxis) + 1 - crpix) * pix


@pytest.mark.parametrize("naxis, crpix", [(121, 61.0), (120, 60.5), (120, 61.0), (121, 60.5), (241, 121.0), (240, 120.5)])
def test_tile_cut_is_exact_for_every_parity_and_phase(naxis, crpix):
    n = 120                                                  # MOPRA DR3: 30" pixels, 120 per degree
    pix = 1.0 / n
    glon = _lattice(naxis, crpix, 340.5 if naxis < 200 else 341.0, pix)
    glat = _lattice(naxis if naxis < 200 else 121, crpix if naxis < 200 else 61.0, 0.0, pix)
    pl = _planes(glon, glat)
    tiles = cut_tiles(pl, n)
    seen = np.zeros((glat.size, glon.size), int)
    rows_in = (glat >= -0.5 - 1e-9) & (glat < 0.5 - 1e-9)
    for t in tiles:
        r0, r1, c0, c1 = t["slices"]
        seen[r0:r1, c0:c1] += 1
        # bit for bit: the tile's filled slots are the source pixels, in place
        filled = np.nonzero(t["inside"].any(axis=0))[0]
        frows = np.nonzero(t["inside"].any(axis=1))[0]
        for k in ("co12", "co13", "noise12", "noise13"):
            np.testing.assert_array_equal(t[k][:, frows[0]:frows[-1] + 1, filled[0]:filled[-1] + 1], pl[k][:, r0:r1, c0:c1])
        # slot centres are the source pixel centres, and lie inside the tile
        np.testing.assert_allclose(t["glon"][filled], glon[c0:c1], atol=1e-4 * pix)
        assert np.all((t["glon"] >= t["l_lo_deg"] - 1e-6) & (t["glon"] < t["l_lo_deg"] + 1))
    # every pixel with a centre inside |b| < 0.5 is in exactly one tile; none outside
    assert np.all(seen[rows_in] == 1) and np.all(seen[~rows_in] == 0)
    # the field of the issue: 121 px with integer CRPIX 61 -> tile [340, 341) keeps 100 % of its pixels
    if (naxis, crpix) == (121, 61.0):
        t340 = next(t for t in tiles if t["l_lo_deg"] == 340.0)
        assert t340["footprint"] == 1.0 and t340["valid_fraction"] == 1.0
        sliver = next(t for t in tiles if t["l_lo_deg"] == 341.0)
        assert sliver["footprint"] == pytest.approx(1 / 120)
        assert [t["l_lo_deg"] for t in cut_tiles(pl, n, min_footprint=0.5)] == [340.0]


def test_pixel_range_partitions_an_axis():
    rng = np.random.default_rng(1)
    for _ in range(50):
        pix = 1.0 / rng.choice([8, 32, 120])
        start = rng.uniform(300, 301)
        axis = start + np.arange(500) * pix
        edges = np.arange(math.floor(axis[0]), math.ceil(axis[-1]) + 1, 1.0)
        counts = np.zeros(axis.size, int)
        for lo, hi in zip(edges[:-1], edges[1:]):
            a, b = pixel_range(axis, lo, hi)
            counts[max(a, 0):min(b, axis.size)] += 1
            inside = (axis >= lo - 1e-9 * pix) & (axis < hi - 1e-9 * pix)
            assert np.array_equal(np.arange(axis.size)[inside], np.arange(max(a, 0), min(b, axis.size)))
        assert np.all(counts == 1)


def test_pixel_that_does_not_divide_a_degree_is_refused():
    glon = 300.0 + (np.arange(50) + 0.5) * 0.021
    with pytest.raises(MopraError, match="does not divide"):
        cut_tiles(_planes(glon, np.linspace(-0.4, 0.4, 20)))


@pytest.mark.parametrize("bunit, factor, scale", [
    ("K", 1.0, "ta*"), ("K (T_A*)", 1.0, "ta*"), ("K/Ta*", 1.0, "ta*"), ("k/ta*", 1.0, "ta*"), ("K (Tmb)", 1.0, "tmb"),
    ("k (tmb)", 1.0, "tmb"), ("K/Tmb", 1.0, "tmb"), ("KELVIN", 1.0, "ta*"), ("mK", 1e-3, "ta*"), ("K_TA*", 1.0, "ta*"),
])
def test_temperature_spellings(bunit, factor, scale):
    assert parse_bunit(bunit, "x.fits") == (factor, scale)


@pytest.mark.parametrize("bunit", ["Jy/beam", "K km/s", "W/m2", "counts", "Ta*"])
def test_other_units_are_refused_naming_file_and_value(bunit):
    with pytest.raises(MopraError, match=r"x\.fits: BUNIT = " + repr(bunit).replace("*", r"\*").replace("/", "/")):
        parse_bunit(bunit, "x.fits")


def test_efficiency_order_by_hand():
    """13CO column at two brightness temperatures, computed by hand, for both orders."""
    eta, tex, dv = 0.55, 10.0, 1.0
    j = 1.0 / math.expm1(5.3 / tex)
    sat = 5.3 * (j - 0.16)                                   # 6.735 K: T_mb at which tau diverges
    coeff = 7.5e5 * 3.0e14 * tex / (1 - math.exp(-5.3 / tex))
    for ta in (0.5, 1.5):                                    # antenna temperatures [K]
        t13 = np.full((1, 1, 1), ta, np.float32)
        ov = np.ones((1, 1, 1))
        before = integrate_planes(None, t13, ov, dv, np.array([2e20]), eta, tex, efficiency_order="before_lte")["co13"]
        after = integrate_planes(None, t13, ov, dv, np.array([2e20]), eta, tex, efficiency_order="after_lte")["co13"]
        n_before = coeff * -math.log(1 - (ta / eta) / sat) * dv
        n_after = coeff * -math.log(1 - ta / sat) * dv / eta
        assert before.item() == pytest.approx(n_before, rel=1e-5)
        assert after.item() == pytest.approx(n_after, rel=1e-5)
    # the physical order gives the larger column, by more for brighter lines: +3.4 % at T_A* = 0.5 K,
    # +7.7 % at 1.0 K, +21 % at 2.0 K (docs/gas.md, "Conversions"; values worked out by hand)
    ratio = []
    for ta in (0.5, 1.0, 2.0):
        t13, ov = np.full((1, 1, 1), ta, np.float32), np.ones((1, 1, 1))
        cols = [integrate_planes(None, t13, ov, dv, np.array([2e20]), eta, tex, efficiency_order=o)["co13"].item()
                for o in ("before_lte", "after_lte")]
        ratio.append(cols[0] / cols[1])
    assert ratio == pytest.approx([1.034, 1.077, 1.21], abs=0.005)


def _cube_file(path, data, naxis3=True, **kw):
    h = fits.Header()
    h["CTYPE1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = "GLON-CAR", 300.5, -0.125, 4.5
    h["CTYPE2"], h["CRVAL2"], h["CDELT2"], h["CRPIX2"] = "GLAT-CAR", 0.0, 0.125, 4.5
    if naxis3:
        h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = "VELO-LSR", -150000.0, 2500.0, 1.0, "m/s"
    h["BUNIT"] = "K"
    for k, v in kw.items():
        h[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data, h).writeto(path)
    return path


def test_field_keys_pair_cubes_and_their_images():
    from pathlib import Path
    keys = {field_key(Path(p)) for p in ("a/G323.5-12CO_Vcrop.fits", "b/G323.5-13CO_Vcrop_rms.fits",
                                        "G323.5-13CO_Tsys.fits", "G323.5_12co_cov.fits.gz")}
    assert keys == {"g323.5"}


@pytest.mark.parametrize("kw, match", [
    (dict(CTYPE3="FREQ"), "CTYPE3 = 'FREQ'"),
    (dict(CTYPE3="STOKES"), "no spectral axis"),
    (dict(CUNIT3="Hz"), "CUNIT3"),
    (dict(RESTFRQ=110.2013543e9), "RESTFRQ says 13CO but the file name says 12CO"),
    (dict(CRVAL1=300.55), "CRVAL1/CDELT1/CRPIX1 put the first pixel at .*grids differ"),
    (dict(CDELT2=0.1), "grids differ"),
])
def test_bad_cube_headers_stop_the_scan(tmp_path, kw, match):
    z = np.zeros((10, 8, 8), np.float32)
    _cube_file(tmp_path / "x" / "G300.5-12CO.fits", z, **kw)
    _cube_file(tmp_path / "y" / "G300.5-13CO.fits", z)
    with pytest.raises(MopraError, match=match):
        scan_release(tmp_path)


def test_scan_classifies_by_header_and_recurses(tmp_path):
    z = np.zeros((10, 8, 8), np.float32)
    _cube_file(tmp_path / "G300.5" / "G300.5-12CO_Vcrop.fits", z)
    _cube_file(tmp_path / "G300.5" / "deeper" / "G300.5-13CO_Vcrop.fits", z)
    # a 2-D RMS image that matches *12CO*.fits, a Tsys image, an unknown image, a one-plane 3-D image
    _cube_file(tmp_path / "G300.5" / "G300.5-12CO_Vcrop_rms.fits", np.ones((8, 8), np.float32), naxis3=False)
    _cube_file(tmp_path / "G300.5" / "G300.5-12CO_Tsys.fits", np.ones((8, 8), np.float32), naxis3=False)
    _cube_file(tmp_path / "G300.5" / "G300.5-12CO_peak.fits", np.ones((8, 8), np.float32), naxis3=False)
    _cube_file(tmp_path / "G300.5" / "G300.5-13CO_noise.fits", np.ones((1, 8, 8), np.float32), naxis3=False)
    (tmp_path / "notes.txt").write_text("not a FITS file")
    inv = scan_release(tmp_path)
    kinds = {f.path.split("/")[-1]: (f.kind, f.used) for f in inv.files}
    assert kinds == {"G300.5-12CO_Vcrop.fits": ("cube", True), "G300.5-13CO_Vcrop.fits": ("cube", True),
                     "G300.5-12CO_Vcrop_rms.fits": ("noise", True), "G300.5-12CO_Tsys.fits": ("tsys", False),
                     "G300.5-12CO_peak.fits": ("image", False), "G300.5-13CO_noise.fits": ("noise", True)}
    assert "skipped" in inv.table() and "Tsys image" in inv.table()


def test_truncated_and_non_fits_files_are_named(tmp_path):
    z = np.zeros((10, 8, 8), np.float32)
    _cube_file(tmp_path / "G300.5-12CO.fits", z)
    p = _cube_file(tmp_path / "G300.5-13CO.fits", z)
    p.write_bytes(p.read_bytes()[:4000])
    with pytest.raises(MopraError, match="G300.5-13CO.fits: truncated FITS file"):
        scan_release(tmp_path)
    p.write_bytes(b"hello, not FITS" * 10)
    with pytest.raises(MopraError, match="G300.5-13CO.fits: not a readable FITS file"):
        scan_release(tmp_path)


def test_blank_tile_interior_is_reported(tmp_path, caplog):
    data = np.ones((10, 8, 8), np.float32)
    data[:, 2:6, 2:6] = np.nan                              # a quarter of the tile blank inside the cube
    _cube_file(tmp_path / "G300.5-12CO.fits", data)
    _cube_file(tmp_path / "G300.5-13CO.fits", data)
    with caplog.at_level(logging.WARNING):
        tiles, _ = load_survey(tmp_path, XCO)
    assert tiles[0]["footprint"] == 1.0 and tiles[0]["valid_fraction"] == pytest.approx(0.75)
    assert "25.0 % blank inside the cubes" in caplog.text


def test_mock_release_is_cut_exactly(tmp_path):
    from darkml.gas import study
    from darkml.gas.mockrelease import write_mock_release
    from darkml.gas.synthetic import TileSpec, simulate_tile

    cfg = study.load("quick", ["sky.pixels_per_tile=12", "sky.channel_kms=4"])
    write_mock_release(tmp_path, cfg.sky, cfg.conversion, tiles=(0, 1, 2, 3))
    tiles, inv = load_survey(tmp_path, XCO)
    assert [t["l_lo_deg"] for t in tiles] == [300.0, 301.0, 302.0, 303.0]
    assert all(t["footprint"] == 1.0 and t["co13"].shape == (17, 12, 12) for t in tiles)
    assert len(inv.pairs) == 4 and all(p[2] is not None and p[3] is not None for p in inv.pairs)
    assert sum(f.kind == "cube" and not f.used for f in inv.files) == 4          # the C18O cubes
    # the half-phase field (G301.5) reproduces the simulator's own planes (same lattice), blanks aside
    sim = simulate_tile(cfg.sky, cfg.conversion, 0, TileSpec(1, 1, 0))
    ok = tiles[1]["coverage"] == 1
    np.testing.assert_allclose(tiles[1]["co12"][:, ok], sim["co12"][:, ok], rtol=2e-5, atol=1e10)
    np.testing.assert_allclose(tiles[1]["noise13"][:, ok], sim["noise13"][:, ok], rtol=2e-5)
    # the integer-phase field keeps every pixel of its cube whose centre is in the tile
    c12 = read_cube(next(p for p in tmp_path.rglob("G300.5-12CO_Vcrop.fits")))
    c13 = read_cube(next(p for p in tmp_path.rglob("G300.5-13CO_Vcrop.fits")))
    pl = cube_planes(c12, c13, None, None, XCO)
    np.testing.assert_array_equal(tiles[0]["co12"], pl["co12"][:, :12, :12])
