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
* takes the per-pixel channel noise from an RMS image next to the cube when present
  (``<stem><rms_suffix>.fits``), else estimates it robustly from the cube (``1.4826 median
  |T[i+1] - T[i]| / sqrt 2``, insensitive to line emission);
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
    "cut_tiles",
    "find_pairs",
    "check_release",
    "load_survey",
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
    core = re.sub(r"[_\-.,;:]?(t_?a\^?\*?|t_?mb|tant|antenna)$", "", core)    # drop "_Tmb", "-TA*" ...
    if core in ("k", "kelvin", "degk", "deg.k", "") :
        if core == "" and not re.search(r"t_?a|t_?mb", s):
            raise MopraError(f"{where}BUNIT = {raw!r}: not a temperature unit (expected K)")
        return 1.0, scale
    if core in ("mk", "millikelvin"):
        return 1e-3, scale
    raise MopraError(f"{where}BUNIT = {raw!r}: not a temperature unit (expected K, Kelvin, K (T_A*), mK ...)")


def _axis_types(header) -> list[str]:
    n = int(header.get("NAXIS", 0))
    return [str(header.get(f"CTYPE{i}", "")).strip().upper() for i in range(1, n + 1)]


def velocity_axis_kms(header, axis: int = 3, path: str = "") -> np.ndarray:
    """Channel velocities [km/s] of FITS axis ``axis``, linear from the header (see module docstring)."""
    where = f"{path}: " if path else ""
    ctype = str(header.get(f"CTYPE{axis}", "")).strip().upper()
    if not ctype.startswith(("VELO", "VRAD", "VLSR", "VELOCITY", "VOPT")):
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

    types = _axis_types(header)
    if len(types) < 2 or not types[0].startswith("GLON") or not types[1].startswith("GLAT"):
        raise MopraError(
            f"{path}: axes 1 and 2 are {types[:2]}: expected Galactic longitude and latitude (GLON-*, GLAT-*); "
            "regrid the cube to Galactic coordinates with l on axis 1 and b on axis 2"
        )
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


def check_release(folder: str | Path, glob12: str = "*12CO*.fits", glob13: str = "*13CO*.fits") -> list[tuple[Path, Path]]:
    """Before any work: find the cube pairs and read every cube's header (readable FITS, data
    not truncated, a temperature BUNIT, a velocity axis); a problem is one line naming the file
    and the keyword. Only headers are read."""
    from astropy.io import fits

    pairs = find_pairs(folder, glob12, glob13)
    for pair in pairs:
        for path in pair:
            try:
                with fits.open(str(path), memmap=True, lazy_load_hdus=False) as hdul:
                    k = next((i for i, h in enumerate(hdul) if int(h.header.get("NAXIS", 0)) >= 2), None)
                    if k is None:
                        raise MopraError(f"{path}: no image data in any HDU")
                    header, where = hdul[k].header, hdul.fileinfo(k)
            except MopraError:
                raise
            except Exception as exc:
                raise _unreadable(path, exc) from None
            need = where["datLoc"] + where["datSpan"]
            if path.stat().st_size < need:
                raise MopraError(f"{path}: truncated FITS file ({path.stat().st_size} of the {need} bytes that its "
                                 "NAXISn and BITPIX ask for)")
            parse_bunit(header.get("BUNIT"), str(path))
            velocity_axis_kms(header, 3, str(path))
    return pairs


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
    types = _axis_types(header)
    if len(types) >= 3 and not types[2].startswith(("VELO", "VRAD", "VLSR", "VELOCITY", "VOPT")):
        raise MopraError(f"{path}: axes are {types[:3]}: expected (GLON, GLAT, velocity) in FITS order, i.e. (v, b, l) in the array")
    factor, scale = parse_bunit(header.get("BUNIT"), path)
    v = velocity_axis_kms(header, 3, path)
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
                edges_kpc: Sequence[float] = RING_EDGES_KPC) -> dict[str, np.ndarray]:
    """Ring planes ``(n_rings, n_b, n_l)`` [cm^-2] + noise planes + coverage ``(n_b, n_l)`` of a cube pair."""
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
                                  r if key == "12" else None, r if key == "13" else None)
        out.update(planes)
    coverage = np.minimum(cover[0], cover[1]).astype(np.float32)
    blank = coverage == 0
    for k in ("co12", "co13", "noise12", "noise13"):
        out[k] = np.where(blank[None], 0.0, out[k]).astype(np.float32)
    out["coverage"] = coverage
    out["glon"] = c12.glon.astype(np.float64)
    out["glat"] = c12.glat.astype(np.float64)
    return out


def cut_tiles(planes: dict[str, np.ndarray], pixels_per_tile: int | None = None, tile_deg: float = 1.0) -> list[dict[str, Any]]:
    """Cut planes into tiles ``[l0, l0 + 1) x [-0.5, 0.5)`` with integer ``l0`` (missing pixels are zero, coverage 0)."""
    glon, glat = planes["glon"], planes["glat"]
    pix = float(np.median(np.abs(np.diff(glon)))) if glon.size > 1 else tile_deg
    n = int(round(tile_deg / pix)) if pixels_per_tile is None else int(pixels_per_tile)
    tiles = []
    for l0 in range(int(math.floor(glon.min())), int(math.ceil(glon.max()))):
        cols_l = l0 + (np.arange(n) + 0.5) * tile_deg / n
        rows_b = -0.5 + (np.arange(n) + 0.5) * tile_deg / n
        ci = np.rint((cols_l - glon[0]) / pix).astype(int)
        ri = np.rint((rows_b - glat[0]) / pix).astype(int)
        okc = (ci >= 0) & (ci < glon.size) & (np.abs(glon[np.clip(ci, 0, glon.size - 1)] - cols_l) < 0.5 * pix)
        okr = (ri >= 0) & (ri < glat.size) & (np.abs(glat[np.clip(ri, 0, glat.size - 1)] - rows_b) < 0.5 * pix)
        if okc.sum() == 0 or okr.sum() == 0:
            continue
        tile: dict[str, Any] = {"l_lo_deg": float(l0), "glon": cols_l.astype(np.float32), "glat": rows_b.astype(np.float32)}
        for k in ("co12", "co13", "noise12", "noise13"):
            a = np.zeros((planes[k].shape[0], n, n), dtype=np.float32)
            a[np.ix_(np.arange(a.shape[0]), np.nonzero(okr)[0], np.nonzero(okc)[0])] = planes[k][:, ri[okr]][:, :, ci[okc]]
            tile[k] = a
        cov = np.zeros((n, n), dtype=np.float32)
        cov[np.ix_(np.nonzero(okr)[0], np.nonzero(okc)[0])] = planes["coverage"][ri[okr]][:, ci[okc]]
        tile["coverage"] = cov
        tiles.append(tile)
    return tiles


def find_pairs(folder: str | Path, glob12: str = "*12CO*.fits", glob13: str = "*13CO*.fits") -> list[tuple[Path, Path]]:
    """Pair every 12CO cube with the 13CO cube whose name differs only by the isotopologue tag."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MOPRA folder {folder} does not exist")
    files12 = sorted(p for p in folder.glob(glob12) if "13CO" not in p.name and "_rms" not in p.stem)
    files13 = {p.name: p for p in folder.glob(glob13) if "_rms" not in p.stem}
    if not files12:
        raise MopraError(f"{folder}: no 12CO cubes matching {glob12!r}")
    pairs, unmatched = [], []
    for p in files12:
        q = files13.get(p.name.replace("12CO", "13CO"))
        if q is None:
            unmatched.append(p.name)
        else:
            pairs.append((p, q))
    if unmatched:
        raise MopraError(f"{folder}: no 13CO cube for {', '.join(unmatched[:5])} (expected the same name with 13CO)")
    return pairs


def _rms_path(cube_path: Path, suffix: str) -> Path | None:
    stem = cube_path.stem
    for cand in (f"{stem}{suffix}.fits", f"{stem.replace('_Vcrop', '')}{suffix}.fits"):
        p = cube_path.with_name(cand)
        if p.is_file():
            return p
    return None


def load_survey(folder: str | Path, xco: Sequence[float], eta_mb: float = 0.55, lte_tex_k: float = 10.0,
                glob12: str = "*12CO*.fits", glob13: str = "*13CO*.fits", rms_suffix: str = "_rms",
                edges_kpc: Sequence[float] = RING_EDGES_KPC) -> list[dict[str, Any]]:
    """All tiles of a folder of MOPRA cubes, sorted by longitude (a tile made by two cubes keeps the better covered)."""
    best: dict[float, dict[str, Any]] = {}
    n_pix = None
    for p12, p13 in find_pairs(folder, glob12, glob13):
        c12, c13 = read_cube(p12), read_cube(p13)
        r12 = _rms_path(p12, rms_suffix)
        r13 = _rms_path(p13, rms_suffix)
        planes = cube_planes(c12, c13, read_rms(r12, c12) if r12 else None, read_rms(r13, c13) if r13 else None,
                             xco, eta_mb, lte_tex_k, edges_kpc)
        pix = float(np.median(np.abs(np.diff(c12.glon)))) if c12.glon.size > 1 else 1.0
        n = int(round(1.0 / pix))
        if n_pix is None:
            n_pix = n
        elif n != n_pix:
            raise MopraError(f"{p12}: pixel size {pix * 3600:.1f}\" gives {n} px per degree, other cubes have {n_pix}")
        for tile in cut_tiles(planes, n_pix):
            tile["source"] = f"{p12.name} + {p13.name}"
            old = best.get(tile["l_lo_deg"])
            if old is None or tile["coverage"].sum() > old["coverage"].sum():
                best[tile["l_lo_deg"]] = tile
        log.info("read %s and %s", p12.name, p13.name)
    return [best[k] for k in sorted(best)]
