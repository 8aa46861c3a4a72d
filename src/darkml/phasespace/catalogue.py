"""Loading and validating a user's stellar catalogue for the phase-space pipeline.

Accepted files: CSV, FITS, Parquet, HDF5 (one 1-D dataset per column, at the root or in a
group named by ``key``). Two column conventions:

* Galactocentric Cartesian: ``x, y, z`` [kpc] and ``vx, vy, vz`` [km/s], in the frame of the
  paper (observer at ≈ (8.122, 0, 0.0208) kpc on the +x axis);
* Gaia-style astrometry: ``ra, dec`` [deg], ``parallax`` [mas], ``pmra, pmdec`` [mas/yr],
  ``radial_velocity`` [km/s], converted with astropy's Galactocentric frame (R0 = 8.122 kpc,
  z_sun = 20.8 pc) and rotated by 180° about z so that the Sun sits on the +x axis.

Validation fails before any work with one line naming the problem: missing columns, NaN or
infinite values, implausible units (positions in pc, velocities in m/s, ...), too few stars,
non-positive parallaxes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .mocks import OBSERVER_KPC, SUPPORT_RADIUS_KPC

log = logging.getLogger(__name__)

__all__ = ["CatalogueError", "Catalogue", "read_table", "load_catalogue", "from_columns", "from_gaia", "validate_phase_space",
           "CARTESIAN", "GAIA"]

CARTESIAN = ("x", "y", "z", "vx", "vy", "vz")
GAIA = ("ra", "dec", "parallax", "pmra", "pmdec", "radial_velocity")

_ALIASES = {
    "x": ("x", "x_kpc", "xgc", "x_gc"), "y": ("y", "y_kpc", "ygc", "y_gc"), "z": ("z", "z_kpc", "zgc", "z_gc"),
    "vx": ("vx", "v_x", "vx_kms"), "vy": ("vy", "v_y", "vy_kms"), "vz": ("vz", "v_z", "vz_kms"),
    "ra": ("ra",), "dec": ("dec",), "parallax": ("parallax", "plx"), "pmra": ("pmra",), "pmdec": ("pmdec",),
    "radial_velocity": ("radial_velocity", "rv", "dr2_radial_velocity", "vrad"),
}


class CatalogueError(ValueError):
    """The catalogue cannot be used as given; the message names the column and the problem."""


@dataclass
class Catalogue:
    """Stars in the Galactocentric frame of the pipeline: x [kpc], v [km/s] (both (N, 3))."""

    x: np.ndarray
    v: np.ndarray
    observer: tuple[float, float, float] = OBSERVER_KPC
    radius: float = SUPPORT_RADIUS_KPC
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


def read_table(path: Path | str, key: str | None = None) -> dict[str, np.ndarray]:
    """Columns of a CSV / FITS / Parquet / HDF5 file as a dict of 1-D arrays (names lower-cased)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"catalogue {path} does not exist")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    try:
        if suffix in (".csv", ".csv.gz", ".txt"):
            import pandas as pd

            df = pd.read_csv(path, comment="#")
            cols = {str(c): df[c].to_numpy() for c in df.columns}
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            t = pq.read_table(path)
            cols = {name: t.column(name).to_numpy(zero_copy_only=False) for name in t.column_names}
        elif suffix in (".fits", ".fit", ".fits.gz", ".ecsv"):
            from astropy.table import Table

            t = Table.read(path)
            cols = {}
            for name in t.colnames:
                c = t[name]
                arr = np.ma.filled(np.ma.asarray(c).astype(float), np.nan) if np.ma.isMaskedArray(c) or hasattr(c, "mask") else np.asarray(c)
                cols[name] = np.asarray(arr)
        elif suffix in (".h5", ".hdf5", ".hdf"):
            import h5py

            with h5py.File(path, "r") as fh:
                grp = fh[key] if key else fh
                cols = {}
                for name, obj in grp.items():
                    if isinstance(obj, h5py.Dataset):
                        if obj.dtype.names:  # compound table
                            data = obj[()]
                            cols.update({n: np.asarray(data[n]) for n in obj.dtype.names})
                        elif obj.ndim == 1:
                            cols[name] = obj[()]
        else:
            raise CatalogueError(f"catalogue {path}: unknown format {suffix!r} (use .csv, .fits, .parquet or .h5)")
    except CatalogueError:
        raise
    except Exception as exc:  # unreadable file
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise CatalogueError(f"catalogue {path}: cannot read ({type(exc).__name__}: {first})") from None
    return {k.lower(): np.asarray(v) for k, v in cols.items()}


def _pick(cols: Mapping[str, np.ndarray], want: Sequence[str], mapping: Mapping[str, str] | None) -> dict[str, np.ndarray] | None:
    out = {}
    for name in want:
        if mapping and name in mapping:
            src = mapping[name].lower()
            if src not in cols:
                raise CatalogueError(f"column {mapping[name]!r} (given for {name}) not in the catalogue (has {sorted(cols)[:12]})")
            out[name] = cols[src]
            continue
        for alias in _ALIASES[name]:
            if alias in cols:
                out[name] = cols[alias]
                break
        else:
            return None
    return out


def _check_finite(cols: Mapping[str, np.ndarray]) -> None:
    """Every column numeric and finite; all bad columns named in one message."""
    problems = []
    for name, arr in cols.items():
        try:
            a = np.asarray(arr, dtype=float)
        except (TypeError, ValueError):
            problems.append(f"column {name!r}: not numeric")
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            problems.append(f"column {name!r}: {int(bad.sum())} NaN/inf values of {len(a)}")
    if problems:
        raise CatalogueError("; ".join(problems) + " (remove or fill those stars first)")


def validate_phase_space(x: np.ndarray, v: np.ndarray, observer: Sequence[float] = OBSERVER_KPC,
                         radius: float = SUPPORT_RADIUS_KPC, min_stars: int = 1000, source: str = "catalogue") -> np.ndarray:
    """Check units and size of Galactocentric (x [kpc], v [km/s]); return the mask of stars inside
    the ball (observer, radius). Raises :class:`CatalogueError` with the reason."""
    x = np.asarray(x, dtype=float)
    v = np.asarray(v, dtype=float)
    if x.ndim != 2 or x.shape[1] != 3 or v.shape != x.shape:
        raise CatalogueError(f"{source}: positions {x.shape} and velocities {v.shape} must both be (N, 3)")
    _check_finite({"x": x[:, 0], "y": x[:, 1], "z": x[:, 2], "vx": v[:, 0], "vy": v[:, 1], "vz": v[:, 2]})
    if len(x) == 0:
        raise CatalogueError(f"{source}: no stars")
    rgc = np.median(np.linalg.norm(x, axis=1))
    if rgc > 200:
        raise CatalogueError(f"{source}: median Galactocentric distance {rgc:.4g} — positions look like pc, expected kpc")
    if rgc < 0.05:
        raise CatalogueError(f"{source}: median Galactocentric distance {rgc:.4g} — positions look like Mpc or are not "
                             "Galactocentric, expected kpc")
    speed = np.median(np.linalg.norm(v, axis=1))
    if speed > 3000:
        raise CatalogueError(f"{source}: median speed {speed:.4g} — velocities look like m/s, expected km/s")
    if speed < 1:
        raise CatalogueError(f"{source}: median speed {speed:.4g} — velocities look like kpc/Myr or are heliocentric "
                             "and tiny, expected Galactocentric km/s")
    inside = np.linalg.norm(x - np.asarray(observer), axis=1) <= radius
    n_in = int(inside.sum())
    if n_in < min_stars:
        raise CatalogueError(f"{source}: {n_in} stars within {radius} kpc of the observer {tuple(observer)}: "
                             f"need at least {min_stars} for the requested flows")
    if n_in < len(x):
        log.info("%s: keeping %d of %d stars within %.3g kpc of the observer", source, n_in, len(x), radius)
    return inside


def from_gaia(cols: Mapping[str, np.ndarray], galcen_distance_kpc: float = OBSERVER_KPC[0],
              z_sun_kpc: float = OBSERVER_KPC[2], v_sun_kms: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaia-style astrometry -> (x [kpc], v [km/s]) in the pipeline's frame (Sun on the +x axis)."""
    import astropy.coordinates as coord
    import astropy.units as u

    plx = np.asarray(cols["parallax"], float)
    if np.any(plx <= 0):
        raise CatalogueError(f"column 'parallax': {int((plx <= 0).sum())} non-positive values (distances undefined); "
                             "cut them or use distances")
    if np.median(plx) > 1000:
        raise CatalogueError(f"column 'parallax': median {np.median(plx):.4g} — looks like µas, expected mas")
    rv = np.asarray(cols["radial_velocity"], float)
    if np.median(np.abs(rv)) > 3000:
        raise CatalogueError(f"column 'radial_velocity': median |v| {np.median(np.abs(rv)):.4g} — looks like m/s, expected km/s")
    kw = {}
    if v_sun_kms is not None:
        kw["galcen_v_sun"] = coord.CartesianDifferential(list(v_sun_kms) * u.km / u.s)
    c = coord.SkyCoord(ra=np.asarray(cols["ra"], float) * u.deg, dec=np.asarray(cols["dec"], float) * u.deg,
                       distance=(1.0 / plx) * u.kpc, pm_ra_cosdec=np.asarray(cols["pmra"], float) * u.mas / u.yr,
                       pm_dec=np.asarray(cols["pmdec"], float) * u.mas / u.yr, radial_velocity=rv * u.km / u.s, frame="icrs")
    g = c.transform_to(coord.Galactocentric(galcen_distance=galcen_distance_kpc * u.kpc, z_sun=z_sun_kpc * u.kpc, **kw))
    x = np.stack([g.x.to_value(u.kpc), g.y.to_value(u.kpc), g.z.to_value(u.kpc)], 1)
    v = np.stack([g.v_x.to_value(u.km / u.s), g.v_y.to_value(u.km / u.s), g.v_z.to_value(u.km / u.s)], 1)
    # astropy puts the Sun at x < 0; rotate by 180 degrees about z (a proper rotation) to the paper's +x
    x[:, :2] *= -1
    v[:, :2] *= -1
    return x, v


def from_columns(cols: Mapping[str, np.ndarray], frame: str = "auto", columns: Mapping[str, str] | None = None,
                 observer: Sequence[float] = OBSERVER_KPC, radius: float = SUPPORT_RADIUS_KPC, min_stars: int = 1000,
                 source: str = "catalogue") -> Catalogue:
    """Build a validated :class:`Catalogue` from columns (``frame`` = auto | galactocentric | gaia)."""
    cols = {k.lower(): v for k, v in cols.items()}
    if frame not in ("auto", "galactocentric", "gaia"):
        raise CatalogueError(f"frame = {frame!r}: must be auto, galactocentric or gaia")
    cart = _pick(cols, CARTESIAN, columns) if frame in ("auto", "galactocentric") else None
    gaia = _pick(cols, GAIA, columns) if (frame == "gaia" or (frame == "auto" and cart is None)) else None
    if cart is None and gaia is None:
        need = CARTESIAN if frame == "galactocentric" else (GAIA if frame == "gaia" else CARTESIAN)
        missing = [n for n in need if not any(a in cols for a in _ALIASES[n])]
        hint = "" if frame != "auto" else f" (or Gaia-style {', '.join(GAIA)})"
        raise CatalogueError(f"{source}: missing column(s) {', '.join(missing)}{hint}; has {', '.join(sorted(cols)[:12])}")
    if cart is not None:
        _check_finite(cart)
        x = np.stack([cart["x"], cart["y"], cart["z"]], 1).astype(float)
        v = np.stack([cart["vx"], cart["vy"], cart["vz"]], 1).astype(float)
        kind = "galactocentric"
    else:
        _check_finite(gaia)
        x, v = from_gaia(gaia, galcen_distance_kpc=math.hypot(observer[0], observer[1]), z_sun_kpc=observer[2])
        kind = "gaia"
    inside = validate_phase_space(x, v, observer, radius, min_stars, source)
    return Catalogue(x[inside], v[inside], tuple(observer), float(radius), source, {"frame": kind, "n_read": int(len(x))})


def load_catalogue(path: Path | str, frame: str = "auto", columns: Mapping[str, str] | None = None,
                   observer: Sequence[float] = OBSERVER_KPC, radius: float = SUPPORT_RADIUS_KPC, min_stars: int = 1000,
                   key: str | None = None) -> Catalogue:
    """Read, convert and validate a catalogue file (see the module docstring)."""
    cols = read_table(path, key)
    return from_columns(cols, frame, columns, observer, radius, min_stars, source=str(path))
