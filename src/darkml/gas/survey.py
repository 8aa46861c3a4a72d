"""The gas study's dataset: the synthetic sky simulated tile by tile, or a MOPRA release cut into tiles."""

from __future__ import annotations

import numpy as np

from darkml.config import config_to_dict
from darkml.gas.config import ConversionCfg, GasConfig, SkyCfg
from darkml.gas.synthetic import TileSpec, simulate_tile
from darkml.runs import Run
from darkml.storage import ArraySpec, DatasetError, SampleStore

from .release import load_survey, tile_summary


# ---------------------------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------------------------
def _array_specs(n_rings: int, n: int, synthetic: bool) -> dict[str, ArraySpec]:
    plane = (n_rings, n, n)
    arrays = {
        "co12": ArraySpec(plane, "float32"),
        "co13": ArraySpec(plane, "float32"),
        "noise12": ArraySpec(plane, "float32"),
        "noise13": ArraySpec(plane, "float32"),
        "coverage": ArraySpec((n, n), "float32"),
        "glon": ArraySpec((n,), "float32"),
        "glat": ArraySpec((n,), "float32"),
        "l_lo": ArraySpec((), "float64"),
        "tile": ArraySpec((), "int32"),
        "realization": ArraySpec((), "int32"),
    }
    if synthetic:
        arrays.update({"truth13": ArraySpec(plane, "float32"), "sigma_v": ArraySpec(plane, "float32"),
                       "ratio": ArraySpec(plane, "float32"), "tex": ArraySpec((n, n), "float32")})
    return arrays


UNITS = {
    "co12": "N(H2) from 12CO [cm^-2] = X_CO W(12CO) / eta_mb",
    "co13": "N(H2) from 13CO [cm^-2] = 7.5e5 N_LTE(13CO)",
    "noise12": "1-sigma noise of co12 [cm^-2]", "noise13": "1-sigma noise of co13 [cm^-2] (linearised)",
    "truth13": "co13 of the noise-free, stripe-free sky [cm^-2]", "sigma_v": "line dispersion [km/s]",
    "ratio": "12C/13C isotope ratio", "tex": "excitation temperature [K]", "coverage": "fraction of valid channels",
    "glon": "pixel-centre Galactic longitude [deg]", "glat": "pixel-centre Galactic latitude [deg]",
    "l_lo": "tile low-longitude edge [deg]",
}


def _simulate_chunk(sky: dict, conversion: dict, seed: int, path: str, layout: list, i: int) -> None:
    store = SampleStore.open(path, require_complete=False, mode="r+")
    spec = TileSpec(*layout[i])
    d = simulate_tile(SkyCfg(**sky), ConversionCfg(**conversion), seed, spec)
    m = d.pop("meta")
    n = d["co12"].shape[-1]
    arrays = {k: v[None] for k, v in d.items()}
    arrays["coverage"] = np.ones((1, n, n), np.float32)
    arrays["l_lo"] = np.array([m["l_lo_deg"]])
    arrays["tile"] = np.array([spec.tile], np.int32)
    arrays["realization"] = np.array([spec.realization], np.int32)
    table = {k: np.array([v]) for k, v in m.items()}
    store.write_chunk(i, arrays, tables={"tiles": table})


def _load_mopra(cfg: GasConfig, run: Run) -> SampleStore:
    xco = cfg.conversion.xco_per_ring(cfg.sky.n_rings)
    tiles, inventory = load_survey(cfg.data.mopra_dir, xco, cfg.conversion.eta_mb, cfg.conversion.lte_tex_k,
                                   cfg.sky.ring_edges_kpc, cfg.data.mopra_min_footprint, cfg.conversion.efficiency_order)
    if not tiles:
        raise DatasetError(f"no tiles could be cut from the cubes in {cfg.data.mopra_dir}")
    n = tiles[0]["co12"].shape[-1]
    attrs = {"source": "mopra", "mopra_dir": str(cfg.data.mopra_dir), "conversion": config_to_dict(cfg.conversion),
             "units": UNITS, "files": [t["source"] for t in tiles]}
    store = SampleStore.create(run.dataset_path, len(tiles), 1, _array_specs(cfg.sky.n_rings, n, False), attrs=attrs,
                               tables=[])
    for i in store.missing_chunks():
        t = tiles[i]
        arrays = {k: t[k][None] for k in ("co12", "co13", "noise12", "noise13", "coverage", "glon", "glat")}
        arrays["l_lo"] = np.array([t["l_lo_deg"]])
        arrays["tile"] = np.array([i], np.int32)
        arrays["realization"] = np.array([0], np.int32)
        store.write_chunk(i, arrays)
    run.update_metrics({"dataset": {"n_samples": len(tiles), "source": "mopra", "pixels_per_tile": n,
                                    "l_lo_deg": [t["l_lo_deg"] for t in tiles], "tiles": tile_summary(tiles),
                                    "inventory": inventory.as_dict()}})
    return SampleStore.open(run.dataset_path)
