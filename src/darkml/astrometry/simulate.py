"""Datasets of the astrometric-lensing study: noiseless signal maps, then noisy maps per scenario.

Two kinds of zarr stores (``docs/data-format.md``):

``signal.zarr``
    ``signal`` (n_signal, 2, npix) float32 — noiseless lensing proper motion (µ_l, µ_b)
    [µas/yr] on a RING-ordered HEALPix grid, one map per subhalo population; table
    ``subhalos`` with the full catalogue of every map, enough to recompute it.
``<scenario>.zarr``
    ``maps`` (n, 2, H, W) float32 — the noisy maps projected to the Cartesian (b, l) grid the
    CNNs see [µas/yr]; ``label`` (1 signal, 0 noise only); ``signal_index`` (row of
    ``signal.zarr`` or -1); ``split`` (0 train, 1 validation, 2 test).

Scenarios differ only in noise, so every scenario reuses the same signal realisations (with
independent noise). Sample j of a scenario store is a signal map for even j and noise only
for odd j, so every chunk and every split is balanced. Chunk i of ``signal.zarr`` holds the
signal maps used by chunk i of every scenario store.

Random streams: chunk i draws its populations from ``chunk_rng(seed, i, 0)`` and the noise of
scenario s from ``chunk_rng(seed, i, 1, crc32(s))`` — independent of the number of workers
and of which other scenarios are simulated.
"""

from __future__ import annotations

import functools
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..parallel import chunk_rng, run_chunks
from ..storage import ArraySpec, DatasetError, SampleStore
from . import maps, population, sky
from .config import AstrometryConfig

log = logging.getLogger(__name__)

UNITS = {
    "signal": "µas/yr (µ_l, µ_b), RING-ordered HEALPix",
    "maps": "µas/yr (µ_l, µ_b), Cartesian (b, l) grid, row 0 = b > 0 (north), column 0 = l = +180° side",
    "subhalos.m200": "Msun",
    "subhalos.c200": "1",
    "subhalos.r_s": "kpc",
    "subhalos.rho_s": "Msun/kpc^3",
    "subhalos.l": "deg",
    "subhalos.b": "deg",
    "subhalos.distance": "kpc (heliocentric)",
    "subhalos.v_l, v_b, v_r": "km/s (heliocentric velocity along e_l, e_b, radial)",
}

SPLITS = {"train": 0, "val": 1, "test": 2}


def n_signal_maps(cfg: AstrometryConfig) -> int:
    d = cfg.data
    return d.n_train + d.n_val + d.n_test


def scenario_stream(name: str) -> int:
    """Stable sub-stream id of a scenario's noise (independent of the scenario list)."""
    return zlib.crc32(name.encode())


def _signal_attrs(cfg: AstrometryConfig) -> dict[str, Any]:
    return {
        "kind": "astrometry-signal",
        "seed": cfg.seed,
        "population": cfg.population.model_dump(mode="json"),
        "sky": {"nside": cfg.sky.nside, "max_angle_deg": cfg.sky.max_angle_deg, "ordering": "RING"},
        "units": UNITS,
        "darkml_version": __version__,
    }


def _scenario_attrs(cfg: AstrometryConfig, name: str) -> dict[str, Any]:
    s = cfg.data.survey(name)
    return {
        "kind": "astrometry-scenario",
        "scenario": name,
        "n_q": s.n_q,
        "sigma_u": s.sigma_u,
        "seed": cfg.seed,
        "signal_store": "signal.zarr",
        "signal_fingerprint": _signal_attrs(cfg),
        "sizes": {"n_train": cfg.data.n_train, "n_val": cfg.data.n_val, "n_test": cfg.data.n_test},
        "image": {"height": cfg.sky.image_height, "width": cfg.sky.image_width, "projection": "plate carrée (b, l)"},
        "units": UNITS,
        "darkml_version": __version__,
    }


def create_signal_store(cfg: AstrometryConfig, path: Path) -> SampleStore:
    npix = 12 * cfg.sky.nside**2
    return SampleStore.create(
        path,
        n_samples=n_signal_maps(cfg),
        chunk_size=cfg.data.chunk_size // 2,
        arrays={"signal": ArraySpec((2, npix), "float32"), "n_subhalos": ArraySpec((), "int64")},
        attrs=_signal_attrs(cfg),
        tables=["subhalos"],
    )


def create_scenario_store(cfg: AstrometryConfig, path: Path, name: str) -> SampleStore:
    h, w = cfg.sky.image_height, cfg.sky.image_width
    return SampleStore.create(
        path,
        n_samples=2 * n_signal_maps(cfg),
        chunk_size=cfg.data.chunk_size,
        arrays={
            "maps": ArraySpec((2, h, w), "float32"),
            "label": ArraySpec((), "int64"),
            "signal_index": ArraySpec((), "int64"),
            "split": ArraySpec((), "int8"),
        },
        attrs=_scenario_attrs(cfg, name),
    )


def pair_split(cfg: AstrometryConfig, pair: np.ndarray) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) of signal/no-signal pair ``pair``."""
    d = cfg.data
    return np.where(pair < d.n_train, 0, np.where(pair < d.n_train + d.n_val, 1, 2)).astype(np.int8)


# ---- chunk workers (top-level, picklable) -----------------------------------------------
def simulate_signal_chunk(cfg_json: dict[str, Any], path: str, i: int) -> None:
    """Draw the subhalo populations of signal chunk ``i`` and write their noiseless maps."""
    cfg = AstrometryConfig.model_validate(cfg_json)
    store = SampleStore.open(path, require_complete=False, mode="r+")
    sl = store.chunk_slice(i)
    rng = chunk_rng(cfg.seed, i, 0)
    device = sky.resolve_device(cfg.sky.device)
    maps, counts, cols = [], [], []
    for j in range(sl.start, sl.stop):
        cat = population.draw_population(cfg.population, rng)
        m = sky.signal_map(cat, nside=cfg.sky.nside, max_angle_deg=cfg.sky.max_angle_deg, device=device,
                           compile=cfg.sky.compile, precision=cfg.sky.precision)
        maps.append(np.asarray(m, dtype=np.float32))
        n = len(cat["m200"])
        counts.append(n)
        cols.append({"sample": np.full(n, j, dtype=np.int64), **{k: np.asarray(v) for k, v in cat.items()}})
    table = {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
    store.write_chunk(i, {"signal": np.stack(maps), "n_subhalos": np.asarray(counts)}, tables={"subhalos": table})


def simulate_scenario_chunk(cfg_json: dict[str, Any], signal_path: str, path: str, name: str, i: int) -> None:
    """Add scenario ``name``'s noise to signal chunk ``i`` (and make noise-only maps); project."""
    cfg = AstrometryConfig.model_validate(cfg_json)
    survey = cfg.data.survey(name)
    store = SampleStore.open(path, require_complete=False, mode="r+")
    sig_store = SampleStore.open(signal_path, require_complete=False)
    if not sig_store.is_complete(i):
        raise DatasetError(f"{signal_path}: signal chunk {i} incomplete; simulate the signal maps first")
    sl = store.chunk_slice(i)
    j = np.arange(sl.start, sl.stop)
    is_signal = j % 2 == 0
    pair = j // 2
    signal = sig_store.read("signal", sig_store.chunk_slice(i)).astype(np.float64)
    rng = chunk_rng(cfg.seed, i, 1, scenario_stream(name))
    proj = maps.projection_index(cfg.sky.nside, cfg.sky.image_height, cfg.sky.image_width)
    out = np.empty((len(j), 2, cfg.sky.image_height, cfg.sky.image_width), np.float32)
    for k, (sig, p) in enumerate(zip(is_signal, pair)):
        mean = signal[p - pair[0]] if sig else np.zeros_like(signal[0])
        noisy, _ = maps.add_noise(mean, n_q=survey.n_q, sigma_u=survey.sigma_u, rng=rng)
        out[k] = maps.project(noisy, proj)
    store.write_chunk(
        i,
        {
            "maps": out,
            "label": is_signal.astype(np.int64),
            "signal_index": np.where(is_signal, pair, -1).astype(np.int64),
            "split": pair_split(cfg, pair),
        },
    )


# ---- stage --------------------------------------------------------------------------------
def simulate(cfg: AstrometryConfig, dataset_dir: Path, workers: int = 1, scheduler: str | None = None) -> dict[str, Path]:
    """Write ``signal.zarr`` and one store per scenario into ``dataset_dir`` (resumable)."""
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    cfg_json = cfg.model_dump(mode="json")
    sig_path = dataset_dir / "signal.zarr"
    sig = create_signal_store(cfg, sig_path)
    log.info("signal maps: %d (nside %d), %d chunks to do", sig.n_samples, cfg.sky.nside, len(sig.missing_chunks()))
    run_chunks(functools.partial(simulate_signal_chunk, cfg_json, str(sig_path)), sig.missing_chunks(),
               workers=workers, scheduler=scheduler, desc="signal maps")
    SampleStore.open(sig_path)  # the scenario maps are made from these: verified once, before any is written
    paths = {"signal": sig_path}
    for name in cfg.data.scenarios:
        path = dataset_dir / f"{name}.zarr"
        store = create_scenario_store(cfg, path, name)
        run_chunks(functools.partial(simulate_scenario_chunk, cfg_json, str(sig_path), str(path), name),
                   store.missing_chunks(), workers=workers, scheduler=scheduler, desc=f"scenario {name}")
        paths[name] = path
    return paths


def open_scenario(dataset_dir: Path, name: str, verify: bool = True) -> SampleStore:
    """Open a complete scenario store (checksums verified once per process and file state)."""
    path = Path(dataset_dir) / f"{name}.zarr"
    store = SampleStore.open(path, verify=False)
    if store.attrs.get("kind") != "astrometry-scenario":
        raise DatasetError(f"{path} is not an astrometry scenario dataset (kind={store.attrs.get('kind')!r})")
    if verify:
        store.verify_cached()
    return store
