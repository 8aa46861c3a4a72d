"""MOPRA FITS reader on tiny cubes written by the tests: units, axes, blanks, grids, tiling."""

import math

import numpy as np
import pytest
from astropy.io import fits

from darkml.gas.mopra import MopraError, cube_planes, cut_tiles, estimate_rms, read_cube
from darkml.gas.release import check_release, load_survey
from darkml.gas.rings import ring_windows

N = 10            # pixels per degree
XCO = [2e20] * 17


def _header(lc=330.5, n=N, nv=200, v0=-150000.0, dv=1000.0, cunit="m/s", bunit="K (T_A*)", ctype3="VELO-LSR",
            ctype1="GLON-CAR", ctype2="GLAT-CAR", cdelt1=None):
    pix = 1.0 / n
    h = fits.Header()
    h["NAXIS"] = 3
    h["CTYPE1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = ctype1, lc, -pix if cdelt1 is None else cdelt1, (n + 1) / 2
    h["CTYPE2"], h["CRVAL2"], h["CDELT2"], h["CRPIX2"] = ctype2, 0.0, pix, (n + 1) / 2
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = ctype3, v0, dv, 1.0
    if cunit is not None:
        h["CUNIT3"] = cunit
    if bunit is not None:
        h["BUNIT"] = bunit
    return h


def _line_window(lc=330.5):
    """A velocity interval inside one ring's window over the whole tile: (ring, v_lo, v_hi)."""
    w = ring_windows(np.array([lc - 0.5, lc + 0.5]))
    for k in range(17):
        lo = max(w["v_lo"][k])
        hi = min(w["v_hi"][k])
        if not w["empty"][k].any() and hi - lo > 12:
            return k, math.ceil(lo) + 1, math.ceil(lo) + 11
    raise AssertionError("no wide ring")


def _cube(t_line, header, v_lo, v_hi, n=N):
    v = (header["CRVAL3"] + np.arange(200) * header["CDELT3"]) * (1e-3 if header.get("CUNIT3", "m/s") == "m/s" else 1)
    data = np.zeros((200, n, n), np.float32)
    sel = (v >= v_lo) & (v < v_hi)
    data[sel] = t_line
    return data


def _write(path, data, header):
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
    return path


def test_integration_and_lte_column(tmp_path):
    k, v_lo, v_hi = _line_window()
    h = _header()
    p12 = _write(tmp_path / "G330.5-12CO_Vcrop.fits", _cube(2.0, h, v_lo, v_hi), h)
    p13 = _write(tmp_path / "G330.5-13CO_Vcrop.fits", _cube(0.5, h, v_lo, v_hi), h)
    c12, c13 = read_cube(p12), read_cube(p13)
    assert c12.data.shape == (200, N, N) and c12.dv_kms == pytest.approx(1.0)
    pl = cube_planes(c12, c13, np.full((N, N), 0.1), np.full((N, N), 0.1), XCO, eta_mb=0.5)
    w = 2.0 * (v_hi - v_lo)                                    # K km/s on the antenna scale
    np.testing.assert_allclose(pl["co12"][k], 2e20 * w / 0.5, rtol=1e-5)
    others = np.delete(pl["co12"], k, axis=0)
    assert np.all(others == 0)
    j = 1 / math.expm1(5.3 / 10)
    tau = -math.log(1 - (0.5 / 0.5) / (5.3 * (j - 0.16)))    # T_mb = T_A*/eta
    n13 = 3.0e14 * 10 * tau * (v_hi - v_lo) / (1 - math.exp(-5.3 / 10))
    np.testing.assert_allclose(pl["co13"][k], 7.5e5 * n13, rtol=1e-4)
    assert np.all(pl["coverage"] == 1)


def test_velocity_units_and_orientation_do_not_change_planes(tmp_path):
    k, v_lo, v_hi = _line_window()
    h = _header()
    ref = read_cube(_write(tmp_path / "a.fits", _cube(1.0, h, v_lo, v_hi), h))
    hk = _header(v0=-150.0, dv=1.0, cunit="km/s")
    kms = read_cube(_write(tmp_path / "b.fits", _cube(1.0, hk, v_lo, v_hi), hk))
    hn = _header(cunit=None)                                   # no CUNIT3: 1000-unit channels are m/s
    nou = read_cube(_write(tmp_path / "c.fits", _cube(1.0, hn, v_lo, v_hi), hn))
    np.testing.assert_allclose(kms.velocity_kms, ref.velocity_kms)
    np.testing.assert_allclose(nou.velocity_kms, ref.velocity_kms)
    # l increasing with pixel index is flipped to the same orientation
    data = _cube(1.0, h, v_lo, v_hi)
    data[:, 2, 3] = 7.0
    hf = _header(lc=330.5, cdelt1=+0.1)
    a = read_cube(_write(tmp_path / "d.fits", data, h))
    b = read_cube(_write(tmp_path / "e.fits", data[:, :, ::-1], hf))
    np.testing.assert_allclose(a.glon, b.glon, atol=1e-9)
    np.testing.assert_array_equal(a.data, b.data)
    assert np.all(np.diff(a.glon) > 0)


def test_nan_blanks(tmp_path):
    k, v_lo, v_hi = _line_window()
    h = _header()
    d12 = _cube(2.0, h, v_lo, v_hi)
    d12[:, 4, 4] = np.nan                                     # a blank pixel
    v = -150 + np.arange(200)
    far = (v < v_lo - 5) | (v >= v_hi + 5)
    half = np.nonzero(far)[0][:100]
    d12[half, 6, 6] = np.nan                                  # half the channels blank, away from the line
    c12 = read_cube(_write(tmp_path / "a.fits", d12, h))
    c13 = read_cube(_write(tmp_path / "b.fits", _cube(0.5, h, v_lo, v_hi), h))
    pl = cube_planes(c12, c13, None, None, XCO)
    assert np.all(np.isfinite(pl["co12"])) and np.all(np.isfinite(pl["noise12"]))
    # CDELT1 < 0 in the file: column j is column N-1-j once l increases along the last axis
    assert pl["co12"][k, 4, N - 1 - 4] == 0 and pl["coverage"][4, N - 1 - 4] == 0
    assert pl["coverage"][6, N - 1 - 6] == pytest.approx(0.5)
    assert pl["co12"][k, 6, N - 1 - 6] == pytest.approx(pl["co12"][k, 0, 0], rel=1e-5)


@pytest.mark.parametrize("kw, match", [
    (dict(ctype1="RA---SIN", ctype2="DEC--SIN"), "Galactic"),
    (dict(ctype3="FREQ"), "velocity"),
    (dict(bunit="Jy/beam"), "flux"),
    (dict(bunit="K km/s"), "integrated"),
    (dict(bunit=None), "BUNIT missing"),
    (dict(cunit="Hz"), "CUNIT3"),
])
def test_bad_headers_raise_clear_errors(tmp_path, kw, match):
    h = _header(**kw)
    p = _write(tmp_path / "bad.fits", np.zeros((200, N, N), np.float32), h)
    with pytest.raises(MopraError, match=match):
        read_cube(p)


def test_two_dimensional_image_refused(tmp_path):
    p = tmp_path / "mom0.fits"
    fits.PrimaryHDU(np.zeros((N, N), np.float32)).writeto(p)
    with pytest.raises(MopraError, match="3-D"):
        read_cube(p)


def test_mismatched_grids_refused(tmp_path):
    h = _header()
    c12 = read_cube(_write(tmp_path / "a.fits", np.zeros((200, N, N), np.float32), h))
    h2 = _header(lc=330.55)
    c13 = read_cube(_write(tmp_path / "b.fits", np.zeros((200, N, N), np.float32), h2))
    with pytest.raises(MopraError, match="grids differ"):
        cube_planes(c12, c13, None, None, XCO)
    h3 = _header(n=8)
    c13b = read_cube(_write(tmp_path / "c.fits", np.zeros((200, 8, 8), np.float32), h3))
    with pytest.raises(MopraError, match="grids differ"):
        cube_planes(c12, c13b, None, None, XCO)


def test_all_zero_tile_gives_zero_planes(tmp_path):
    h = _header()
    c = read_cube(_write(tmp_path / "z.fits", np.zeros((200, N, N), np.float32), h))
    pl = cube_planes(c, c, None, None, XCO)
    assert all(np.all(pl[k] == 0) for k in ("co12", "co13", "noise12", "noise13"))


def test_estimate_rms_of_pure_noise():
    cube = np.random.default_rng(0).normal(0, 0.7, size=(400, 8, 8)).astype(np.float32)
    cube[100:110] += 5.0                                       # a bright line barely moves the estimate
    est = estimate_rms(cube)
    assert est.mean() == pytest.approx(0.7, rel=0.03)
    np.testing.assert_allclose(est, 0.7, rtol=0.25)


def test_survey_folder_pairs_rms_and_tiles(tmp_path):
    k, v_lo, v_hi = _line_window(330.5)
    for lc in (330.5, 331.5):
        h = _header(lc=lc)
        _write(tmp_path / f"G{lc}-12CO_Vcrop.fits", _cube(2.0, h, v_lo, v_hi), h)
        _write(tmp_path / f"G{lc}-13CO_Vcrop.fits", _cube(0.5, h, v_lo, v_hi), h)
    rms = fits.Header()
    rms["CDELT1"], rms["CDELT2"], rms["BUNIT"] = -0.1, 0.1, "K"
    fits.PrimaryHDU(np.full((N, N), 0.3, np.float32), rms).writeto(tmp_path / "G330.5-13CO_Vcrop_rms.fits")
    tiles, inv = load_survey(tmp_path, XCO)
    assert [t["l_lo_deg"] for t in tiles] == [330.0, 331.0]
    assert tiles[0]["co12"].shape == (17, N, N)
    # noise from the shipped RMS image (0.3 K) vs estimated from a noise-free cube (0 K)
    assert tiles[0]["noise13"][k].min() > 0 and np.all(tiles[1]["noise13"] == 0)
    assert len(inv.pairs) == 2 and inv.pairs[0][3] is not None and inv.pairs[1][3] is None
    (tmp_path / "G331.5-13CO_Vcrop.fits").unlink()
    inv = check_release(tmp_path)
    lone = next(f for f in inv.files if f.path.endswith("G331.5-12CO_Vcrop.fits"))
    assert not lone.used and "no 13CO cube" in lone.note and len(inv.pairs) == 1


def test_cut_tiles_of_a_mosaic(tmp_path):
    h = _header(lc=331.0, n=N)
    h["NAXIS1"] = 2 * N
    h["CRPIX1"] = (2 * N + 1) / 2
    data = np.ones((200, N, 2 * N), np.float32)
    c = read_cube(_write(tmp_path / "m.fits", data, h))
    assert c.glon.size == 2 * N
    pl = cube_planes(c, c, None, None, XCO)
    tiles = cut_tiles(pl, N)
    assert [t["l_lo_deg"] for t in tiles] == [330.0, 331.0]
    assert all(t["coverage"].min() == 1 for t in tiles)


def test_check_release_reads_headers_and_accepts_an_intact_release(tmp_path):
    for iso in ("12CO", "13CO"):
        hdu = fits.PrimaryHDU(np.zeros((20, 8, 8), np.float32))
        hdu.header.update({"BUNIT": "K", "CTYPE1": "GLON-CAR", "CTYPE2": "GLAT-CAR", "CTYPE3": "VELO-LSR",
                           "CDELT3": 1000.0, "CRVAL3": 0.0, "CRPIX3": 1.0, "CUNIT3": "m/s"})
        hdu.writeto(tmp_path / f"G300-{iso}.fits")
    assert [p.path for p in check_release(tmp_path).pairs[0][:2]] == [str(tmp_path / "G300-12CO.fits"),
                                                                       str(tmp_path / "G300-13CO.fits")]
    path = tmp_path / "G300-13CO.fits"
    with fits.open(path, mode="update") as h:
        h[0].header["BUNIT"] = "Jy/beam"
    with pytest.raises(MopraError, match="G300-13CO.fits.*BUNIT = 'Jy/beam'"):
        check_release(tmp_path)
