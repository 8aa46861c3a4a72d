"""Read local MOPRA CO survey cubes (12CO, 13CO) into ring column-density planes per 1-deg tile.

The Mopra Southern Galactic Plane CO Survey (Burton et al. 2013; DR3 Braiding et al. 2018,
DR4 Cubuk et al. 2023) ships one FITS cube per square degree and isotopologue (names like
``G323.5-12CO_Vcrop.fits``), brightness temperature on the antenna scale, array order
``(v, b, l)``, velocity axis in m/s, blanks as NaN, plus RMS-noise images. This module:

* reads a cube with astropy and checks it: two Galactic sky axes (``GLON-*``, ``GLAT-*``) and a
  velocity axis (``VELO*``, ``VRAD*``, ``VLSR*``); anything else (``RA---``, ``FREQ``, a 2-D
  moment map, a 4-D cube with a non-degenerate 4th axis) is a :class:`MopraError` naming the
  file and the axis. The velocity axis is computed *linearly from the header*
  (``CRVAL3 + (i + 1 - CRPIX3) CDELT3``), not through ``astropy.wcs``, which reads the AIPS
  type ``VELO-LSR`` as an optical velocity (a pitfall noted in the facts file). The unit is
  taken from ``CUNIT3`` (m/s or km/s); without it, a channel wider than 5 (units) means m/s;
* normalises odd ``BUNIT`` strings (``K``, ``Kelvin``, ``K (T_A*)``, ``K_Tmb``, ``mK`` ...);
  flux units (Jy/beam) and integrated maps (K km/s) are refused. A ``T_mb`` scale is not
  divided by the beam efficiency again;
* integrates each ring's velocity window (rings.py) per longitude column and converts to
  N(H2) exactly like the synthetic survey (synthetic.integrate_planes): 12CO ``X_CO W /
  eta_mb``, 13CO LTE (Tex = 10 K) x 7.5e5;
* takes the per-pixel channel noise from the cube's RMS image when the release has one (paired
  by release.py), else estimates it robustly from the cube (``1.4826 median |T[i+1] - T[i]| /
  sqrt 2``, insensitive to line emission);
* cuts the planes into 1-deg tiles ``[l0, l0 + 1) x [-0.5, 0.5)`` with integer ``l0``, longitude
  increasing along the last axis.

Blanks: NaN voxels contribute nothing to the integrals; a pixel with no valid channel has
coverage 0 and plane value 0 (like the survey's zero-valued stripes). An all-zero tile or an
empty ring window gives all-zero planes, whose metrics are undefined and reported as None.
12CO and 13CO cubes of one field must share the sky grid (shape, l and b within 1% of a
pixel) or a MopraError names both files; their velocity axes may differ.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .rings import RING_EDGES_KPC, ring_windows
from .synthetic import channel_overlap, integrate_planes

log = logging.getLogger(__name__)

__all__ = [
    "MopraError",
    "Cube",
    "parse_bunit",
    "velocity_axis_kms",
    "read_cube",
    "read_rms",
    "estimate_rms",
    "cube_planes",
    "pixel_range",
    "cut_tiles",
    "read_header",
    "check_cube_header",
]


class MopraError(ValueError):
    """A FITS file is not a usable MOPRA CO cube (axes, units, grids); the message names file and problem."""


@dataclass
class Cube:
    """A position-position-velocity cube, ``data`` ``(n_v, n_b, n_l)`` in K, l and b and v increasing."""

    data: np.ndarray
    velocity_kms: np.ndarray
    glon: np.ndarray
    glat: np.ndarray
    path: str = ""
    bunit: str = "K"
    scale: str = "ta*"            # "ta*" (antenna scale, divide by eta_mb) or "tmb"
    header: Any = field(default=None, repr=False)

    @property
    def dv_kms(self) -> float:
        return float(abs(self.velocity_kms[1] - self.velocity_kms[0])) if self.velocity_kms.size > 1 else 1.0


def parse_bunit(bunit: str | None, path: str = "") -> tuple[float, str]:
    """(factor to K, brightness scale) from a FITS ``BUNIT`` string; MopraError if not a temperature."""
    where = f"{path}: " if path else ""
    if bunit is None or not str(bunit).strip():
        raise MopraError(f"{where}BUNIT missing: expected a brightness temperature unit such as 'K' (set BUNIT = 'K')")
    raw = str(bunit).strip()
    s = raw.lower().replace(" ", "")
    if "jy" in s:
        raise MopraError(f"{where}BUNIT = {raw!r}: flux-density units are not supported; convert the cube to K")
    if "/s" in s or "kms" in s or "s-1" in s or "s^-1" in s:
        raise MopraError(f"{where}BUNIT = {raw!r}: looks like an integrated-intensity map; a (v, b, l) cube in K is needed")
    scale = "tmb" if re.search(r"t_?mb|mainbeam", s) else "ta*"
    core = re.sub(r"[\(\[].*?[\)\]]", "", s)                               # drop "(T_A*)", "[Tmb]" ...
    core = re.sub(r"[_\-.,;:/]?(t_?a\^?\*?|t_?mb|tant|antenna)$", "", core)    # drop "_Tmb", "-TA*" ...
    if core in ("k", "kelvin", "degk", "deg.k"):
        return 1.0, scale
    if core in ("mk", "millikelvin"):
        return 1e-3, scale
    raise MopraError(f"{where}BUNIT = {raw!r}: not a temperature unit (expected K, Kelvin, mK, with an optional "
                     "scale: K (T_A*), K/Ta*, K (Tmb))")


def _axis_types(header) -> list[str]:
    n = int(header.get("NAXIS", 0))
    return [str(header.get(f"CTYPE{i}", "")).strip().upper() for i in range(1, n + 1)]


def velocity_axis_kms(header, axis: int = 3, path: str = "") -> np.ndarray:
    """Channel velocities [km/s] of FITS axis ``axis``, linear from the header (see module docstring)."""
    where = f"{path}: " if path else ""
    ctype = str(header.get(f"CTYPE{axis}", "")).strip().upper()
    if not ctype.startswith(VELOCITY_TYPES):
        raise MopraError(f"{where}axis {axis} has CTYPE{axis} = {ctype!r}: expected a velocity axis (VELO-LSR, VRAD ...)")
    n = int(header[f"NAXIS{axis}"])
    try:
        crval = float(header[f"CRVAL{axis}"])
        cdelt = float(header.get(f"CDELT{axis}", header.get(f"CD{axis}_{axis}", 0.0)))
        crpix = float(header.get(f"CRPIX{axis}", 1.0))
    except KeyError as exc:
        raise MopraError(f"{where}velocity axis lacks {exc.args[0]}") from None
    if cdelt == 0 or not math.isfinite(cdelt):
        raise MopraError(f"{where}CDELT{axis} = {cdelt}: the velocity axis needs a non-zero channel width")
    cunit = str(header.get(f"CUNIT{axis}", "")).strip().lower().replace(" ", "")
    if cunit in ("m/s", "ms-1", "m.s-1", "m/sec", "ms^-1"):
        factor = 1e-3
    elif cunit in ("km/s", "kms-1", "km.s-1", "km/sec", "kms^-1"):
        factor = 1.0
    elif cunit == "":
        factor = 1e-3 if abs(cdelt) > 5.0 else 1.0
        log.warning("%sCUNIT%d missing: channel %.4g taken as %s", where, axis, cdelt, "m/s" if factor == 1e-3 else "km/s")
    else:
        raise MopraError(f"{where}CUNIT{axis} = {cunit!r}: velocity unit must be m/s or km/s")
    return (crval + (np.arange(n) + 1 - crpix) * cdelt) * factor


def _sky_axes(header, path: str) -> tuple[np.ndarray, np.ndarray]:
    from astropy.wcs import WCS

    w = WCS(header, naxis=2)
    nl, nb = int(header["NAXIS1"]), int(header["NAXIS2"])
    il = np.arange(nl)
    ib = np.arange(nb)
    lon, _ = w.all_pix2world(il, np.full(nl, (nb - 1) / 2), 0)
    _, lat = w.all_pix2world(np.full(nb, (nl - 1) / 2), ib, 0)
    lon = np.mod(np.asarray(lon, dtype=float), 360.0)
    if np.ptp(lon) > 180:                                 # a tile straddling l = 0
        lon = np.where(lon > 180, lon - 360.0, lon)
    return lon, np.asarray(lat, dtype=float)


def _open_fits(path: str):
    """``fits.open`` whose failure (not FITS, truncated) is a one-line :class:`MopraError` naming the file."""
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
        hdul.verify("silentfix")
        for h in hdul:
            _ = h.data  # truncated data raise here, not later
    except Exception as exc:
        raise _unreadable(path, exc) from None
    return hdul


def _unreadable(path: str | Path, exc: Exception) -> MopraError:
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return MopraError(f"{path}: not a readable FITS file ({type(exc).__name__}: {first})")


VELOCITY_TYPES = ("VELO", "VRAD", "VLSR", "VELOCITY", "VOPT")
SPECTRAL_TYPES = ("FREQ", "WAVE", "AWAV", "ENER", "WAVN", "ZOPT", "BETA", "FELO")


def read_header(path: str | Path):
    """(header, effective axis lengths) of the first HDU holding an image, reading headers only.

    Degenerate axes beyond the second (NAXISn = 1, e.g. a Stokes axis or a one-plane image) are
    dropped from the lengths. An unreadable or truncated file is a one-line MopraError.
    """
    from astropy.io import fits

    path = Path(path)
    try:
        with fits.open(str(path), memmap=True, lazy_load_hdus=False) as hdul:
            k = next((i for i, h in enumerate(hdul) if int(h.header.get("NAXIS", 0)) >= 2), None)
            if k is None:
                raise MopraError(f"{path}: no image data in any HDU (every NAXIS < 2)")
            header, where = hdul[k].header.copy(), hdul.fileinfo(k)
    except MopraError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None
    need = where["datLoc"] + where["datSpan"]
    if path.stat().st_size < need:
        raise MopraError(f"{path}: truncated FITS file ({path.stat().st_size} of the {need} bytes that its NAXISn "
                         "and BITPIX ask for)")
    lengths = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, int(header["NAXIS"]) + 1)]
    while len(lengths) > 2 and lengths[-1] == 1:
        lengths.pop()
    return header, lengths


def check_cube_header(header, path: str | Path) -> tuple[float, str, np.ndarray]:
    """Header checks of a (l, b, v) cube, each a MopraError naming the file and keyword; returns
    the BUNIT factor to K, the brightness scale and the channel velocities [km/s]."""
    types = _axis_types(header)
    if len(types) < 3:
        raise MopraError(f"{path}: NAXIS = {len(types)}: a cube needs three axes (GLON, GLAT, velocity)")
    if not types[0].startswith("GLON") or not types[1].startswith("GLAT"):
        raise MopraError(f"{path}: CTYPE1, CTYPE2 = {types[:2]}: expected Galactic longitude and latitude (GLON-*, GLAT-*); "
                         "regrid the cube to Galactic coordinates with l on axis 1 and b on axis 2")
    if types[2].startswith(SPECTRAL_TYPES):
        raise MopraError(f"{path}: CTYPE3 = {types[2]!r}: the spectral axis must be a velocity (VELO-LSR, VRAD); "
                         "convert the frequency axis to radio velocity first")
    if not types[2].startswith(VELOCITY_TYPES):
        raise MopraError(f"{path}: CTYPE3 = {types[2]!r}: no spectral axis; expected a velocity axis (VELO-LSR, VRAD)")
    factor, scale = parse_bunit(header.get("BUNIT"), str(path))
    return factor, scale, velocity_axis_kms(header, 3, str(path))


def read_cube(path: str | Path) -> Cube:
    """Read and check one CO cube (see module docstring); returns a :class:`Cube` in K."""

    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such FITS file")
    with _open_fits(path) as hdul:
        hdu = next((h for h in hdul if getattr(h, "data", None) is not None and np.ndim(h.data) >= 2), None)
        if hdu is None:
            raise MopraError(f"{path}: no image data in any HDU")
        header = hdu.header.copy()
        data = np.asarray(hdu.data, dtype=np.float32)
    if data.ndim == 4:
        if data.shape[0] != 1:
            raise MopraError(f"{path}: 4-D cube with NAXIS4 = {data.shape[0]}: only a degenerate (length-1) 4th axis is allowed")
        data = data[0]
    if data.ndim != 3:
        raise MopraError(f"{path}: data has {data.ndim} axes {data.shape}: expected a 3-D (v, b, l) cube")
    factor, scale, v = check_cube_header(header, path)
    glon, glat = _sky_axes(header, path)
    if data.shape != (v.size, glat.size, glon.size):
        raise MopraError(f"{path}: data shape {data.shape} disagrees with the header axes ({v.size}, {glat.size}, {glon.size})")
    data = data * np.float32(factor)
    if glon.size > 1 and glon[1] < glon[0]:
        data, glon = data[:, :, ::-1], glon[::-1]
    if glat.size > 1 and glat[1] < glat[0]:
        data, glat = data[:, ::-1, :], glat[::-1]
    if v.size > 1 and v[1] < v[0]:
        data, v = data[::-1], v[::-1]
    return Cube(np.ascontiguousarray(data), v, glon, glat, path, str(header.get("BUNIT")), scale, header)


def read_rms(path: str | Path, like: Cube) -> np.ndarray:
    """Per-pixel channel RMS image [K] on the grid of cube ``like`` (2-D, or 3-D with one plane)."""

    with _open_fits(str(path)) as hdul:
        hdu = next((h for h in hdul if getattr(h, "data", None) is not None), None)
        if hdu is None:
            raise MopraError(f"{path}: no image data")
        data = np.squeeze(np.asarray(hdu.data, dtype=np.float32))
        header = hdu.header
    if data.ndim != 2:
        raise MopraError(f"{path}: RMS image has shape {data.shape}: expected 2-D (b, l)")
    bunit = header.get("BUNIT")
    factor = parse_bunit(bunit, str(path))[0] if bunit else 1.0
    if data.shape != (like.glat.size, like.glon.size):
        raise MopraError(f"{path}: RMS image shape {data.shape} differs from the cube's sky grid {(like.glat.size, like.glon.size)}")
    cd1 = float(header.get("CDELT1", -1.0))
    cd2 = float(header.get("CDELT2", 1.0))
    if cd1 < 0:
        data = data[:, ::-1]
    if cd2 < 0:
        data = data[::-1]
    return data * np.float32(factor)


def estimate_rms(data: np.ndarray) -> np.ndarray:
    """Robust per-pixel channel noise [K] of a cube ``(v, b, l)``: 1.4826 median|diff_v| / sqrt 2."""
    d = np.diff(np.asarray(data, dtype=np.float32), axis=0)
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        rms = 1.4826 * np.nanmedian(np.abs(d), axis=0) / math.sqrt(2.0)
    return np.nan_to_num(rms, nan=0.0).astype(np.float32)


def _check_same_grid(c12: Cube, c13: Cube) -> None:
    if c12.data.shape[1:] != c13.data.shape[1:]:
        raise MopraError(f"12CO {c12.path} and 13CO {c13.path} grids differ: (b, l) shapes {c12.data.shape[1:]} vs {c13.data.shape[1:]}")
    pix = abs(c12.glon[1] - c12.glon[0]) if c12.glon.size > 1 else 1.0
    dl = float(np.max(np.abs(c12.glon - c13.glon)))
    db = float(np.max(np.abs(c12.glat - c13.glat)))
    if dl > 0.01 * pix or db > 0.01 * pix:
        raise MopraError(f"12CO {c12.path} and 13CO {c13.path} grids differ: l offset {dl:.3g} deg, b offset {db:.3g} deg "
                         f"(pixel {pix:.3g} deg); regrid one onto the other")


def cube_planes(c12: Cube, c13: Cube, rms12: np.ndarray | None, rms13: np.ndarray | None, xco: Sequence[float],
                eta_mb: float = 0.55, lte_tex_k: float = 10.0,
                edges_kpc: Sequence[float] = RING_EDGES_KPC, efficiency_order: str = "before_lte") -> dict[str, np.ndarray]:
    """Ring planes ``(n_rings, n_b, n_l)`` [cm^-2] + noise planes + coverage ``(n_b, n_l)`` of a cube pair.

    ``efficiency_order``: where the 13CO main-beam efficiency is divided out (synthetic.integrate_planes)."""
    _check_same_grid(c12, c13)
    win = ring_windows(np.mod(c12.glon, 360.0), edges_kpc)
    out: dict[str, np.ndarray] = {}
    cover = []
    for cube, rms, key in ((c12, rms12, "12"), (c13, rms13, "13")):
        finite = np.isfinite(cube.data)
        cover.append(finite.mean(axis=0))
        r = estimate_rms(cube.data) if rms is None else np.nan_to_num(np.asarray(rms, dtype=np.float32), nan=0.0)
        eta = 1.0 if cube.scale == "tmb" else eta_mb
        ov = channel_overlap(win["v_lo"], win["v_hi"], cube.velocity_kms, cube.dv_kms)
        planes = integrate_planes(cube.data if key == "12" else None, cube.data if key == "13" else None, ov, cube.dv_kms,
                                  np.asarray(xco, dtype=float), eta, lte_tex_k,
                                  r if key == "12" else None, r if key == "13" else None, efficiency_order)
        out.update(planes)
    coverage = np.minimum(cover[0], cover[1]).astype(np.float32)
    blank = coverage == 0
    for k in ("co12", "co13", "noise12", "noise13"):
        out[k] = np.where(blank[None], 0.0, out[k]).astype(np.float32)
    out["coverage"] = coverage
    out["glon"] = c12.glon.astype(np.float64)
    out["glat"] = c12.glat.astype(np.float64)
    return out


def pixel_range(coord: np.ndarray, lo: float, hi: float, tol: float = 1e-6) -> tuple[int, int]:
    """Pixel indices ``[start, stop)`` whose centres lie in ``[lo, hi)`` on an increasing linear axis.

    The pixel coordinate of a world value ``w`` is ``x = (w - coord[0]) / pix``; pixel ``p`` has
    its centre in ``[lo, hi)`` exactly when ``x(lo) <= p < x(hi)``, so ``start = ceil(x(lo))`` and
    ``stop = ceil(x(hi))`` (a centre on the boundary belongs to the upper tile; ``tol`` pixels of
    float slack). Adjacent intervals therefore share no pixel and drop none, whatever the
    parity of NAXIS and whether CRPIX is integer or half-integer. ``start`` may be negative and
    ``stop`` beyond the axis: the caller clips (the part of the interval the cube does not cover).
    """
    pix = float(coord[1] - coord[0]) if coord.size > 1 else 1.0
    x_lo = (lo - float(coord[0])) / pix
    x_hi = (hi - float(coord[0])) / pix
    return int(math.ceil(x_lo - tol)), int(math.ceil(x_hi - tol))


def cut_tiles(planes: dict[str, np.ndarray], pixels_per_tile: int | None = None, tile_deg: float = 1.0,
              min_footprint: float = 0.0, path: str = "") -> list[dict[str, Any]]:
    """Cut planes into tiles ``[l0, l0 + 1) x [-0.5, 0.5)`` with integer ``l0`` by pixel index.

    A pixel belongs to the tile that contains its centre (:func:`pixel_range`), and sits in the
    tile's slot ``p - start``: cutting is pure slicing, so tiles reassembled give the source
    planes bit for bit, with no pixel dropped or duplicated at a boundary. Slots the cube does
    not reach are zero with coverage 0. Each tile records ``footprint`` (fraction of its area
    inside the cube's extent, from the world coordinates) and ``valid_fraction`` (slots with
    data); the slot counts are checked against the cube's extent in world coordinates (a mismatch
    is a MopraError), and
    tiles with ``footprint < min_footprint`` (slivers at a cube's edge) are dropped.
    """
    glon = np.asarray(planes["glon"], dtype=np.float64)
    glat = np.asarray(planes["glat"], dtype=np.float64)
    pix = float(np.median(np.diff(glon))) if glon.size > 1 else tile_deg
    n = int(round(tile_deg / pix)) if pixels_per_tile is None else int(pixels_per_tile)
    if abs(n * pix - tile_deg) > 1e-4 * pix:
        raise MopraError(f"{path or 'cube'}: pixel size {pix * 3600:.4g}\" does not divide the {tile_deg} deg tile "
                         f"({tile_deg / pix:.4f} px); regrid the cube to a pixel that does (MOPRA: 30\")")
    lo_b, hi_b = -tile_deg / 2, tile_deg / 2
    rb0, rb1 = pixel_range(glat, lo_b, hi_b)
    rows = np.arange(max(rb0, 0), min(rb1, glat.size))
    ext_l = (glon[0] - pix / 2, glon[-1] + pix / 2)
    ext_b = (glat[0] - pix / 2, glat[-1] + pix / 2)
    fb = max(0.0, min(ext_b[1], hi_b) - max(ext_b[0], lo_b)) / tile_deg
    tiles = []
    for l0 in range(int(math.floor(glon[0] + 1e-9)), int(math.floor(glon[-1] + 1e-9)) + 1):
        c0, c1 = pixel_range(glon, float(l0), float(l0 + tile_deg))
        cols = np.arange(max(c0, 0), min(c1, glon.size))
        if cols.size == 0 or rows.size == 0:
            continue
        if c1 - c0 != n or rb1 - rb0 != n:
            raise MopraError(f"{path or 'cube'}: tile l0 = {l0} spans {c1 - c0} x {rb1 - rb0} px, expected {n} x {n}")
        fl = max(0.0, min(ext_l[1], l0 + tile_deg) - max(ext_l[0], float(l0))) / tile_deg
        for what, kept, frac in (("columns", cols.size, fl), ("rows", rows.size, fb)):
            if abs(kept - frac * n) > 1.0 + 1e-6:
                raise MopraError(f"{path or 'cube'}: tile l0 = {l0} keeps {kept} {what} but the cube covers "
                                 f"{frac * n:.2f} of {n} (pixel lattice inconsistent with the WCS)")
        footprint = cols.size * rows.size / n**2
        if footprint < min_footprint:
            log.info("%s: tile [%d, %d) skipped: the cube covers %.1f %% of it", path or "cube", l0, l0 + 1,
                     100 * footprint)
            continue
        sc, sr = cols - c0, rows - rb0
        tile: dict[str, Any] = {
            "l_lo_deg": float(l0),
            "glon": (glon[0] + (np.arange(n) + c0) * pix).astype(np.float32),
            "glat": (glat[0] + (np.arange(n) + rb0) * pix).astype(np.float32),
        }
        for k in ("co12", "co13", "noise12", "noise13"):
            a = np.zeros((planes[k].shape[0], n, n), dtype=np.float32)
            a[:, sr[0]:sr[-1] + 1, sc[0]:sc[-1] + 1] = planes[k][:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            tile[k] = a
        cov = np.zeros((n, n), dtype=np.float32)
        cov[sr[0]:sr[-1] + 1, sc[0]:sc[-1] + 1] = planes["coverage"][rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        tile["coverage"] = cov
        inside = np.zeros((n, n), dtype=bool)
        inside[sr[0]:sr[-1] + 1, sc[0]:sc[-1] + 1] = True
        tile["inside"] = inside
        tile["footprint"] = float(inside.mean())
        tile["valid_fraction"] = float((cov > 0).mean())
        tile["slices"] = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        tiles.append(tile)
    return tiles
