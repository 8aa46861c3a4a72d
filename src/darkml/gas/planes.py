"""TODO."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darkml.gas.config import GasConfig
from darkml.gas.patches import (
    PatchPlanes,
    preprocess,
    split_tiles,
    tiles_in_region,
    wmae_weights,
)
from darkml.gas.rings import ring_centres
from darkml.storage import DatasetError, SampleStore


# ---------------------------------------------------------------------------------------------
# preprocessing and splits
# ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """Everything the learners and metrics need, in scaled units (``x / src_scale``, ``y / tgt_scale``)."""

    train: PatchPlanes
    val: PatchPlanes
    test: PatchPlanes
    src_scale: float
    tgt_scale: float
    train_tiles: np.ndarray
    val_tiles: np.ndarray
    test_tiles: np.ndarray
    l_lo: dict
    synthetic: bool
    floor: PatchPlanes | None
    store: SampleStore
    n_rings: int


def prepare(cfg: GasConfig, store: SampleStore) -> Prepared:
    """Preprocess every survey tile (filter, 3-sigma cut), split by longitude, scale to O(1)."""
    real = store.read("realization")
    tile = store.read("tile")
    l_lo_all = store.read("l_lo")
    survey = np.nonzero(real == 0)[0]
    n_rings, n_px = store.arrays["co12"]["shape"][0], store.arrays["co12"]["shape"][-1]
    rc = ring_centres(cfg.sky.ring_edges_kpc, cfg.sky.r_gas_max_kpc)
    l_lo = {int(tile[s]): float(l_lo_all[s]) for s in survey}

    def planes_of(samples: np.ndarray) -> PatchPlanes:
        if samples.size == 0:
            z = np.zeros((0, n_px, n_px), np.float32)
            return PatchPlanes(z, z, z, np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32), z)
        co12 = store.read("co12", idx=samples).reshape(-1, n_px, n_px)
        co13 = store.read("co13", idx=samples).reshape(co12.shape)
        n13 = store.read("noise13", idx=samples).reshape(co12.shape)
        src, tgt, thr = preprocess(co12, co13, n13, cfg.prep.smooth_sigma_px, cfg.prep.mask_nsigma)
        tiles = np.repeat(tile[samples], n_rings)
        rings = np.tile(np.arange(n_rings), samples.size)
        return PatchPlanes(src, tgt, wmae_weights(tgt, cfg.prep.weight_smooth_px), tiles, rings,
                           rc[rings].astype(np.float32), thr, {"sample": np.repeat(samples, n_rings)})

    tile_ids = np.array(sorted(l_lo))
    lows = np.array([l_lo[t] for t in tile_ids])
    train_tiles = tile_ids[tiles_in_region(lows, cfg.data.train_l_deg)]
    test_tiles = tile_ids[tiles_in_region(lows, cfg.data.test_l_deg)]
    if train_tiles.size == 0:
        raise DatasetError(f"no tile lies inside the training region {cfg.data.train_l_deg} deg")
    if test_tiles.size == 0:
        raise DatasetError(f"no tile lies inside the test region {cfg.data.test_l_deg} deg")
    tr_tiles, val_tiles = split_tiles(train_tiles, cfg.data.val_fraction, cfg.seed)
    by_tile = {int(tile[s]): s for s in survey}
    train = planes_of(np.array([by_tile[t] for t in tr_tiles]))
    val = planes_of(np.array([by_tile[t] for t in val_tiles], dtype=int))
    test = planes_of(np.array([by_tile[t] for t in test_tiles]))
    both_src = np.concatenate([train.src.ravel(), val.src.ravel()])
    both_tgt = np.concatenate([train.tgt.ravel(), val.tgt.ravel()])
    src_scale = float(np.percentile(both_src[both_src > 0], 99)) if np.any(both_src > 0) else 1.0
    tgt_scale = float(np.percentile(both_tgt[both_tgt > 0], 99)) if np.any(both_tgt > 0) else 1.0
    floor = None
    synthetic = store.attrs.get("source") == "synthetic"
    if synthetic and np.any(real > 0):
        floor = planes_of(np.nonzero(real > 0)[0])
    for p in (train, val, test) + ((floor,) if floor is not None else ()):
        p.src /= src_scale
        p.tgt /= tgt_scale
        if p.thr is not None:
            p.thr /= tgt_scale
    return Prepared(train, val, test, src_scale, tgt_scale, tr_tiles, val_tiles, test_tiles, l_lo, synthetic, floor,
                    store, n_rings)


def _nonempty(p: PatchPlanes) -> PatchPlanes:
    flat = np.abs(p.src).reshape(len(p.src), -1).max(axis=1) + np.abs(p.tgt).reshape(len(p.tgt), -1).max(axis=1)
    return p.select(flat > 0)


def _concat(a: PatchPlanes, b: PatchPlanes) -> PatchPlanes:
    return PatchPlanes(np.concatenate([a.src, b.src]), np.concatenate([a.tgt, b.tgt]),
                       np.concatenate([a.weight, b.weight]), np.concatenate([a.tile, b.tile]),
                       np.concatenate([a.ring, b.ring]), np.concatenate([a.ring_r, b.ring_r]),
                       None if a.thr is None or b.thr is None else np.concatenate([a.thr, b.thr]))
