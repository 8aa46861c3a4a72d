"""Find, classify and load the FITS files of a MOPRA-like CO survey release.

A release (Braiding et al. 2018, DR3) holds, per square degree and isotopologue, a cube
(``G323.5-12CO_Vcrop.fits``) beside 2-D images: Tsys, coverage and RMS noise, often one
sub-folder per cube. :func:`scan_release` walks the folder recursively and classifies every FITS
file **by its header** (headers only, nothing else is read):

* ``cube``: three non-degenerate axes with a velocity axis; checked up front (Galactic sky axes,
  a velocity CTYPE3 and CUNIT3, a temperature BUNIT). A cube whose third axis is a frequency or
  not spectral at all is an error naming the file and the keyword;
* a 2-D image (two non-degenerate axes): ``noise`` (RMS / sigma / noise), ``tsys`` or
  ``coverage`` by the tokens of its name and its BUNIT; only noise images are used;
* the isotopologue from ``RESTFRQ``/``RESTFREQ`` when present (12CO 115.271, 13CO 110.201,
  C18O 109.782, C17O 112.359 GHz), else from the name tag; a header that contradicts the name
  is an error.

Cubes are paired by *field*: the file name without isotopologue tag, ``Vcrop`` and image-kind
tokens (``G323.5-12CO_Vcrop.fits`` and ``G323.5-13CO_Vcrop_rms.fits`` share field ``g323.5``),
so the layout of sub-folders does not matter. Each 12CO/13CO pair takes its noise images
(the 3-sigma floor of the preprocessing); without one, the channel noise is estimated from the
cube. :class:`Inventory` lists every file found with what was done with it and why, and is
printed before any work (``darkml gas simulate --mopra DIR`` and ``--dry-run``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .mopra import (
    MopraError,
    check_cube_header,
    cube_planes,
    cut_tiles,
    parse_bunit,
    read_cube,
    read_header,
    read_rms,
)
from .rings import RING_EDGES_KPC

log = logging.getLogger(__name__)

__all__ = ["FitsFile", "Inventory", "scan_release", "check_release", "load_survey", "REST_GHZ", "FITS_SUFFIXES"]

#: rest frequencies [GHz] (CDMS) of the CO isotopologues a MOPRA release holds
REST_GHZ = {"12CO": 115.2712018, "13CO": 110.2013543, "C18O": 109.7821734, "C17O": 112.3592837}
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")
_ISO_RE = re.compile(r"(12CO|13CO|C18O|C17O)", re.IGNORECASE)
_KIND_TOKENS = {
    "noise": ("rms", "noise", "sigma", "err", "error"),
    "tsys": ("tsys",),
    "coverage": ("cov", "coverage", "weight", "weights", "wt", "nhits", "hits", "exposure"),
}


@dataclass
class FitsFile:
    """One FITS file of a release and what the study does with it."""

    path: str
    kind: str                       # cube, noise, tsys, coverage, image (unknown 2-D), other
    isotope: str | None
    key: str                        # the field (pointing) the file belongs to: field_key(path)
    shape: tuple[int, ...]
    bunit: str | None
    used: bool = False
    note: str = ""
    #: the sky-grid keywords (NAXISi, CRVALi, CDELTi, CRPIXi for i = 1, 2), kept from the one header read
    grid: dict[str, float] = field(default_factory=dict, repr=False)


@dataclass
class Inventory:
    folder: str
    files: list[FitsFile] = field(default_factory=list)
    #: (12CO cube, 13CO cube, 12CO noise or None, 13CO noise or None)
    pairs: list[tuple[FitsFile, FitsFile, FitsFile | None, FitsFile | None]] = field(default_factory=list)

    def table(self) -> str:
        rows = [f"release {self.folder}: {len(self.files)} FITS files, {len(self.pairs)} 12CO/13CO cube pairs"]
        w = max((len(_rel(f.path, self.folder)) for f in self.files), default=4)
        for f in self.files:
            tag = "used   " if f.used else "skipped"
            rows.append(f"  {tag} {_rel(f.path, self.folder):{w}s}  {f.kind:8s} {f.isotope or '-':5s} "
                        f"{'x'.join(map(str, f.shape)):14s} {f.note}")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "n_files": len(self.files), "n_pairs": len(self.pairs),
                "files": [{**{k: v for k, v in asdict(f).items() if k != "grid"}, "path": _rel(f.path, self.folder)}
                          for f in self.files]}


def _rel(path: str, folder: str) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return path


def _stem(path: Path) -> str:
    name = path.name
    for suf in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


def _tokens(stem: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", stem.lower()) if t]


def field_key(path: Path) -> str:
    """The pairing key: the name without isotopologue tag, ``Vcrop`` and image-kind tokens."""
    stem = _ISO_RE.sub(" ", _stem(path))
    kinds = {t for v in _KIND_TOKENS.values() for t in v}
    parts = [t for t in re.split(r"[_\-\s]+", stem.lower()) if t and t not in kinds and t != "vcrop"]
    return "-".join(parts)


def _isotope(header, path: Path) -> str | None:
    by_name = _ISO_RE.search(path.name)
    name_iso = by_name.group(1).upper() if by_name else None
    rest = header.get("RESTFRQ", header.get("RESTFREQ"))
    head_iso = None
    if rest is not None:
        try:
            ghz = float(rest) / 1e9
        except (TypeError, ValueError):
            raise MopraError(f"{path}: RESTFRQ = {rest!r} is not a number (Hz)") from None
        head_iso = next((k for k, f in REST_GHZ.items() if abs(ghz - f) < 5e-4 * f), None)
        if head_iso is None and name_iso is None:
            raise MopraError(f"{path}: RESTFRQ = {ghz:.6g} GHz is none of the CO lines {REST_GHZ} and the name has no tag")
    if head_iso and name_iso and head_iso != name_iso:
        raise MopraError(f"{path}: RESTFRQ says {head_iso} but the file name says {name_iso}")
    return head_iso or name_iso


def _image_kind(path: Path, bunit: str | None) -> str:
    toks = set(_tokens(_stem(path)))
    for kind, words in _KIND_TOKENS.items():
        if toks & set(words):
            return kind
    b = (bunit or "").lower().replace(" ", "")
    if "kms" in b or "km/s" in b:
        return "moment"
    return "image"


def _grid(header) -> dict[str, float]:
    out = {}
    for i in (1, 2):
        out[f"NAXIS{i}"] = int(header.get(f"NAXIS{i}", 0))
        for k, default in (("CRVAL", 0.0), ("CDELT", 1.0), ("CRPIX", 1.0)):
            out[f"{k}{i}"] = float(header.get(f"{k}{i}", default))
    return out


def _classify(path: Path) -> FitsFile:
    header, lengths = read_header(path)
    bunit = header.get("BUNIT")
    key = field_key(path)
    shape = tuple(lengths)
    if len(lengths) >= 3:
        if len(lengths) > 3:
            raise MopraError(f"{path}: NAXIS4 = {lengths[3]}: only a degenerate (length-1) 4th axis is allowed")
        check_cube_header(header, path)
        iso = _isotope(header, path)
        f = FitsFile(str(path), "cube", iso, key, shape, bunit and str(bunit), grid=_grid(header))
        if iso not in ("12CO", "13CO"):
            f.note = f"{iso or 'unknown isotopologue'} cube: this study maps 13CO from 12CO"
        return f
    kind = _image_kind(path, bunit)
    iso = _isotope(header, path)
    f = FitsFile(str(path), kind, iso, key, shape, bunit and str(bunit))
    if kind == "noise" and bunit:
        parse_bunit(bunit, str(path))            # an RMS image must be a temperature too
    f.note = {"tsys": "Tsys image: not needed (the RMS image or the cube gives the noise)",
              "coverage": "coverage image: not needed (coverage is taken from the cube's blanks)",
              "moment": "2-D integrated-intensity (moment) map: the study integrates the cubes itself",
              "image": "2-D image of unknown kind (no rms/noise/tsys/coverage in its name)",
              "noise": ""}[kind]
    return f


def _check_pair_grids(a: FitsFile, b: FitsFile) -> None:
    """12CO and 13CO cubes of a field must share the sky grid; checked from the headers, before any work."""
    ha, hb = a.grid, b.grid
    for i in (1, 2):
        if ha[f"NAXIS{i}"] != hb[f"NAXIS{i}"]:
            raise MopraError(f"{a.path} and {b.path}: NAXIS{i} = {ha[f'NAXIS{i}']} vs {hb[f'NAXIS{i}']}: the 12CO and "
                             "13CO sky grids differ; regrid one onto the other")
        pix = abs(ha[f"CDELT{i}"])
        wa = ha[f"CRVAL{i}"] + (1 - ha[f"CRPIX{i}"]) * ha[f"CDELT{i}"]
        wb = hb[f"CRVAL{i}"] + (1 - hb[f"CRPIX{i}"]) * hb[f"CDELT{i}"]
        if abs(ha[f"CDELT{i}"] - hb[f"CDELT{i}"]) > 1e-3 * pix or abs(wa - wb) > 0.01 * pix:
            raise MopraError(f"{a.path} and {b.path}: CRVAL{i}/CDELT{i}/CRPIX{i} put the first pixel at {wa:.6g} vs "
                             f"{wb:.6g} deg (pixel {pix:.3g} deg): the 12CO and 13CO sky grids differ; regrid one onto "
                             "the other")


def scan_release(folder: str | Path) -> Inventory:
    """Classify every FITS file under ``folder`` (recursively) and pair the cubes (module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MOPRA folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES))
    inv = Inventory(str(folder))
    if not paths:
        raise MopraError(f"{folder}: no FITS files (looked for {', '.join(FITS_SUFFIXES)} in every sub-folder)")
    inv.files = [_classify(p) for p in paths]
    cubes: dict[tuple[str, str], FitsFile] = {}
    noises: dict[tuple[str, str], FitsFile] = {}
    for f in inv.files:
        if f.kind == "cube" and f.isotope in ("12CO", "13CO"):
            other = cubes.get((f.key, f.isotope))
            if other is not None:
                raise MopraError(f"{f.path} and {other.path}: two {f.isotope} cubes of field {f.key!r}; "
                                 "keep one (e.g. the Vcrop cube) in the release folder")
            cubes[(f.key, f.isotope)] = f
        elif f.kind == "noise":
            if f.isotope is None:
                f.note = "noise image without isotopologue (no RESTFRQ, no 12CO/13CO in the name)"
            elif (f.key, f.isotope) in noises:
                f.note = f"second {f.isotope} noise image of field {f.key!r}: {noises[(f.key, f.isotope)].path} used"
            else:
                noises[(f.key, f.isotope)] = f
    for (key, iso), cube in sorted(cubes.items()):
        if iso != "12CO":
            continue
        partner = cubes.get((key, "13CO"))
        if partner is None:
            cube.note = "no 13CO cube of the same field"
            continue
        _check_pair_grids(cube, partner)
        n12, n13 = noises.get((key, "12CO")), noises.get((key, "13CO"))
        for c, n in ((cube, n12), (partner, n13)):
            c.used = True
            if n is not None:
                if n.shape[:2] != c.shape[:2]:
                    raise MopraError(f"{n.path}: noise image shape {n.shape} differs from the sky grid {c.shape[:2]} "
                                     f"of its cube {c.path}")
                n.used = True
                n.note = f"noise of {Path(c.path).name}: the 3-sigma floor"
                c.note = "paired; noise from its RMS image"
            else:
                c.note = "paired; noise estimated from the cube (no RMS image)"
        inv.pairs.append((cube, partner, n12, n13))
    for (key, iso), cube in cubes.items():
        if iso == "13CO" and not cube.used:
            cube.note = "no 12CO cube of the same field"
    for f in inv.files:
        if f.kind == "noise" and not f.used and not f.note:
            f.note = "no cube of the same field and isotopologue"
    if not inv.pairs:
        raise MopraError(f"{folder}: no 12CO/13CO cube pair among {len(paths)} FITS files "
                         f"({sum(f.kind == 'cube' for f in inv.files)} cubes); see the inventory:\n{inv.table()}")
    return inv


def check_release(folder: str | Path) -> Inventory:
    """Before any work: classify and check every header of the release and print the inventory."""
    inv = scan_release(folder)
    log.info("%s", inv.table())
    return inv


def load_survey(folder: str | Path, xco: Sequence[float], eta_mb: float = 0.55, lte_tex_k: float = 10.0,
                edges_kpc: Sequence[float] = RING_EDGES_KPC, min_footprint: float = 0.5,
                efficiency_order: str = "before_lte") -> tuple[list[dict[str, Any]], Inventory]:
    """All 1-deg tiles of a release, sorted by longitude, and the inventory.

    Tiles covered by several cubes (a mosaic) are merged pixel by pixel, each pixel from the cube
    that covers it best, when the cubes share a pixel lattice; cubes on lattices offset by a
    fraction of a pixel are never mixed (the one covering more of the tile is kept). A tile whose
    valid-pixel fraction is below its footprint (blanks inside the cube's extent) is reported; a
    tile covering less than ``min_footprint`` of its area is dropped.
    """
    inv = scan_release(folder)
    log.debug("%s", inv.table())                 # printed before any work by check_release (the preflight)
    merged: dict[float, dict[str, Any]] = {}
    n_pix = None
    for f12, f13, n12, n13 in inv.pairs:
        c12, c13 = read_cube(f12.path), read_cube(f13.path)
        planes = cube_planes(c12, c13, read_rms(n12.path, c12) if n12 else None, read_rms(n13.path, c13) if n13 else None,
                             xco, eta_mb, lte_tex_k, edges_kpc, efficiency_order)
        pix = float(np.median(np.diff(c12.glon))) if c12.glon.size > 1 else 1.0
        n = int(round(1.0 / pix))
        if n_pix is None:
            n_pix = n
        elif n != n_pix:
            raise MopraError(f"{f12.path}: pixel size {pix * 3600:.1f}\" gives {n} px per degree, other cubes have {n_pix}")
        for tile in cut_tiles(planes, n_pix, path=f12.path):
            tile["source"] = [f"{Path(f12.path).name} + {Path(f13.path).name}"]
            old = merged.get(tile["l_lo_deg"])
            if old is None:
                merged[tile["l_lo_deg"]] = tile
                continue
            off = max(np.max(np.abs(old["glon"] - tile["glon"])), np.max(np.abs(old["glat"] - tile["glat"]))) / pix
            if off > 0.01:
                keep = max((old, tile), key=lambda t: (t["footprint"], float(t["coverage"].sum())))
                log.info("tile [%g, %g): %s and %s lie on pixel lattices %.2f px apart; keeping %s (covers %.1f %%)",
                         tile["l_lo_deg"], tile["l_lo_deg"] + 1, old["source"][0], tile["source"][0], off,
                         keep["source"][0], 100 * keep["footprint"])
                merged[tile["l_lo_deg"]] = keep
                continue
            take = tile["coverage"] > old["coverage"]
            for k in ("co12", "co13", "noise12", "noise13"):
                old[k] = np.where(take[None], tile[k], old[k])
            old["coverage"] = np.where(take, tile["coverage"], old["coverage"])
            old["inside"] = old["inside"] | tile["inside"]
            old["footprint"] = float(old["inside"].mean())
            old["source"] = old["source"] + tile["source"]
        log.info("read %s and %s", Path(f12.path).name, Path(f13.path).name)
    tiles = []
    for l0 in sorted(merged):
        t = merged[l0]
        t["valid_fraction"] = float((t["coverage"] > 0).mean())
        t["source"] = "; ".join(t["source"])
        if t["footprint"] < min_footprint:
            log.info("tile [%g, %g) skipped: the cubes cover %.1f %% of it (< data.mopra_min_footprint = %g)",
                     l0, l0 + 1, 100 * t["footprint"], min_footprint)
            continue
        if t["valid_fraction"] < t["footprint"] - 1.0 / n_pix:
            log.warning("tile [%g, %g): %.1f %% of its pixels hold data but the cubes cover %.1f %% of it: "
                        "%.1f %% blank inside the cubes (NaN or no valid channel)", l0, l0 + 1, 100 * t["valid_fraction"],
                        100 * t["footprint"], 100 * (t["footprint"] - t["valid_fraction"]))
        tiles.append(t)
    return tiles, inv


def tile_summary(tiles: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-tile footprint and valid fraction (for metrics.json and the report)."""
    return [{"l_lo_deg": t["l_lo_deg"], "footprint": round(float(t["footprint"]), 4),
             "valid_fraction": round(float(t["valid_fraction"]), 4), "source": t["source"]} for t in tiles]
