"""Write a synthetic survey release in the MOPRA CO layout, for tests and for trying the real-data path.

:func:`write_mock_release` simulates tiles of the synthetic sky (synthetic.py) and writes, per
field, what a MOPRA DR3 release ships (Braiding et al. 2018): one sub-folder per field holding
the 12CO and 13CO cubes ``G<l>-<iso>_Vcrop.fits`` (array order (v, b, l), velocity in m/s,
``VELO-LSR``, l decreasing along axis 1 as on the sky, NaN blanks at a field's edge, a
per-field choice of ``BUNIT`` spelling), their 2-D RMS-noise, Tsys and coverage images, a C18O
cube (which the study skips) and a README. Two pixel-lattice phases are written:

* ``phase="half"``: NAXIS even, CRPIX half-integer -- pixel centres at ``l0 + (j + 1/2)/n``;
* ``phase="integer"``: NAXIS odd (n + 1), CRPIX integer -- pixel centres on the lattice
  through the field centre ``l0 + j/n``, the case that lost 9 columns and 9 rows per tile
  to the old nearest-centre cut. The extra column repeats the next field's first column, so
  overlapping cubes agree.

The cubes hold the simulated sky's pixel values on the written lattice (for the integer phase
the sky is shifted by half a pixel: a mock need not sit at the simulated positions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .synthetic import TileSpec, simulate_tile

__all__ = ["write_mock_release", "BUNIT_SPELLINGS"]

#: antenna / main-beam temperature spellings seen in survey headers (one per field, cycled)
BUNIT_SPELLINGS = ("K", "K (T_A*)", "K/Ta*", "k (ta*)", "Kelvin")


def _header(kind: str, l_c: float, n_l: int, n_b: int, crpix_l: float, crpix_b: float, pix: float, bunit: str | None,
            v_kms: np.ndarray | None = None, rest_hz: float | None = None):
    from astropy.io import fits

    h = fits.Header()
    h["CTYPE1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"], h["CUNIT1"] = "GLON-CAR", l_c, -pix, crpix_l, "deg"
    h["CTYPE2"], h["CRVAL2"], h["CDELT2"], h["CRPIX2"], h["CUNIT2"] = "GLAT-CAR", 0.0, pix, crpix_b, "deg"
    if v_kms is not None:
        dv = float(v_kms[1] - v_kms[0])
        h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = "VELO-LSR", v_kms[0] * 1e3, dv * 1e3, 1.0, "m/s"
        h["SPECSYS"] = "LSRK"
    if rest_hz is not None:
        h["RESTFRQ"] = rest_hz
    if bunit is not None:
        h["BUNIT"] = bunit
    h["TELESCOP"] = "MOCK-MOPRA"
    h["COMMENT"] = f"darkml mock release ({kind}); synthetic sky, not survey data"
    return h


def write_mock_release(folder: str | Path, sky, conversion, seed: int = 0, tiles: Sequence[int] = (0, 1, 2),
                       phases: Sequence[str] = ("integer", "half"), blank_edge: bool = True) -> list[Path]:
    """Write a mock release of the given tiles of the synthetic sky (config sections ``sky``,
    ``conversion``); field ``i`` uses lattice phase ``phases[i % len(phases)]``. Returns the cube paths."""
    from astropy.io import fits

    from .release import REST_GHZ

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.txt").write_text("Mock MOPRA-layout release written by darkml.gas.mockrelease (synthetic sky).\n")
    n = int(sky.pixels_per_tile)
    pix = 1.0 / n
    sims = {t: simulate_tile(sky, conversion, seed, TileSpec(t, t, 0), return_cubes=True) for t in tiles}
    written = []
    for i, t in enumerate(tiles):
        d = sims[t]
        cubes = d["cubes"]
        l_lo = float(d["meta"]["l_lo_deg"])
        l_c = l_lo + 0.5
        phase = phases[i % len(phases)]
        name = f"G{l_c:.1f}"
        sub = folder / name
        sub.mkdir(exist_ok=True)
        bunit = BUNIT_SPELLINGS[i % len(BUNIT_SPELLINGS)]
        for iso in ("12CO", "13CO", "C18O"):
            key = "t12" if iso == "12CO" else "t13"
            data = cubes[key] if iso != "C18O" else cubes["t13"] * np.float32(0.15)
            rms = cubes["rms12" if iso == "12CO" else "rms13"]
            if phase == "integer":
                nxt = sims.get(t + 1)
                extra_col = nxt["cubes"][key][:, :, :1] if (nxt is not None and iso != "C18O") else data[:, :, -1:]
                data = np.concatenate([data, extra_col], axis=2)
                data = np.concatenate([data, data[:, -1:, :]], axis=1)
                rms = np.pad(rms, ((0, 1), (0, 1)), mode="edge")
                n_l = n_b = n + 1
                crpix_l, crpix_b = (n_l + 1) / 2, (n_b + 1) / 2      # integer: the centre pixel sits on l_c
            elif phase == "half":
                n_l = n_b = n
                crpix_l, crpix_b = (n + 1) / 2, (n + 1) / 2          # half-integer for even n
            else:
                raise ValueError(f"phase = {phase!r}: must be 'integer' or 'half'")
            data = np.array(data, dtype=np.float32)
            if blank_edge:
                data[:, -1, : n_l // 4] = np.nan                     # a blanked corner, as at survey edges
            cube = data[:, :, ::-1]                                  # l decreasing along FITS axis 1 (CDELT1 < 0)
            stem = f"{name}-{iso}_Vcrop"
            h = _header("cube", l_c, n_l, n_b, crpix_l, crpix_b, pix, bunit, cubes["v_kms"], REST_GHZ[iso] * 1e9)
            fits.PrimaryHDU(cube, h).writeto(sub / f"{stem}.fits", overwrite=True)
            written.append(sub / f"{stem}.fits")
            h2 = _header("rms", l_c, n_l, n_b, crpix_l, crpix_b, pix, "K", None, REST_GHZ[iso] * 1e9)
            fits.PrimaryHDU(np.ascontiguousarray(rms[:, ::-1]), h2).writeto(sub / f"{stem}_rms.fits", overwrite=True)
            h3 = _header("tsys", l_c, n_l, n_b, crpix_l, crpix_b, pix, "K", None)
            fits.PrimaryHDU(np.full((n_b, n_l), 350.0, np.float32), h3).writeto(sub / f"{name}-{iso}_Tsys.fits",
                                                                               overwrite=True)
            h4 = _header("coverage", l_c, n_l, n_b, crpix_l, crpix_b, pix, None, None)
            fits.PrimaryHDU(np.isfinite(cube).mean(axis=0).astype(np.float32), h4).writeto(
                sub / f"{name}-{iso}_cov.fits", overwrite=True)
    return written
