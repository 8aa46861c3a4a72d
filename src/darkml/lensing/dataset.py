"""Strong-lensing datasets: config loading, simulation into zarr stores, reading them back.

A dataset is a directory holding two :class:`~darkml.storage.SampleStore` zarr stores,
``train.zarr`` and ``test.zarr`` (separate draws: train chunk i uses
``default_rng([seed, i])``, test chunk i ``default_rng([seed, i, 1])``). Per sample:

==================  ==================  ==================================================
array               shape, dtype        meaning
==================  ==================  ==================================================
``images``          (1, n, n) float32   observed image / its peak (peak-normalised, max 1)
``flux_scale``      () float64          the peak [e-/s per pixel]: images*flux_scale = e-/s
``label``           () int64            0 no substructure, 1 CDM subhalos, 2 axion vortex
``log10_m_axion``   () float32          log10(m_a / eV) for label 2, NaN otherwise
``params``          (25,) float64       the parameter record, columns ``attrs.param_names``
``noise_seed``      () int64            seed of the record's noise fields
==================  ==================  ==================================================

plus the ragged table ``subhalos`` (``sample, x, y, mass, theta_E``; arcsec, Msun). Sample
k has label k % 3, so every prefix is class-balanced. See ``docs/lensing-data.md``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from darkml.config import ConfigError, config_to_dict, load_config
from darkml.parallel import run_chunks
from darkml.runs import atomic_write_json
from darkml.storage import ArraySpec, DatasetError, SampleStore

from .params import CLASS_NAMES, SCALAR_FIELDS, LensingSimConfig, Records
from .simulate import BACKENDS, records_from_store, simulate

log = logging.getLogger(__name__)

__all__ = [
    "PRESETS_DIR",
    "SPLITS",
    "load_sim_config",
    "simulate_dataset",
    "open_split",
    "load_images",
    "load_records",
]

PRESETS_DIR = Path(__file__).parent / "presets"
SPLITS = ("train", "test")
FORMAT = "darkml-lensing-images"


def load_sim_config(
    preset: str = "euclid",
    overrides: Iterable[str] = (),
    n_per_class: int | None = None,
    backend: str | None = None,
) -> LensingSimConfig:
    """Load a preset (``euclid``, ``hst``, ``*-quick``, …) with ``--set`` overrides.

    ``n_per_class`` sets the training images per class; the test set keeps the preset's
    test/train ratio (5,000/30,000 in the paper presets), at least 1 per class.
    """
    extra = list(overrides or [])
    if backend is not None:
        if backend not in BACKENDS:
            raise ConfigError(f"backend = {backend!r}: unknown backend (choose one of {', '.join(BACKENDS)})")
        extra.append(f"dataset.backend={backend}")
    cfg = load_config(LensingSimConfig, PRESETS_DIR, preset, overrides=extra, study="lensing")
    if n_per_class is not None:
        if n_per_class < 1:
            raise ConfigError(f"n_per_class = {n_per_class}: must be >= 1")
        extra += n_per_class_overrides(n_per_class, cfg.dataset.n_per_class_train, cfg.dataset.n_per_class_test)
        cfg = load_config(LensingSimConfig, PRESETS_DIR, preset, overrides=extra, study="lensing")
    return cfg


def n_per_class_overrides(n_train: int, preset_train: int, preset_test: int) -> list[str]:
    """``n_train`` training images per class; the test set keeps the preset's test/train ratio
    (at least 1 per class)."""
    n_test = max(1, int(round(n_train * preset_test / preset_train)))
    return [f"dataset.n_per_class_train={n_train}", f"dataset.n_per_class_test={n_test}"]


def _split_size(cfg: LensingSimConfig, split: str) -> int:
    per_class = cfg.dataset.n_per_class_train if split == "train" else cfg.dataset.n_per_class_test
    return 3 * per_class


def _create_store(cfg: LensingSimConfig, path: Path, split: str) -> SampleStore:
    n = cfg.image.num_pix
    arrays = {
        "images": ArraySpec((1, n, n), "float32"),
        "flux_scale": ArraySpec((), "float64"),
        "label": ArraySpec((), "int64"),
        "log10_m_axion": ArraySpec((), "float32"),
        "params": ArraySpec((len(SCALAR_FIELDS),), "float64"),
        "noise_seed": ArraySpec((), "int64"),
    }
    attrs = {
        "format": FORMAT,
        "split": split,
        "config": config_to_dict(cfg),
        "seed": cfg.seed,
        "rng": f"numpy default_rng([seed, chunk{'' if split == 'train' else ', 1'}])",
        "class_names": list(CLASS_NAMES),
        "param_names": list(SCALAR_FIELDS),
        "normalisation": "images = observed e-/s per pixel divided by flux_scale (the image maximum)",
        "units": {
            "images": "peak-normalised (x flux_scale -> e-/s per pixel)",
            "flux_scale": "e-/s per pixel",
            "angles": "arcsec",
            "masses": "Msun",
            "log10_m_axion": "log10(eV)",
        },
    }
    chunk = min(cfg.dataset.chunk_size, _split_size(cfg, split))
    chunk = max(3, chunk - chunk % 3)
    return SampleStore.create(path, _split_size(cfg, split), chunk, arrays=arrays, attrs=attrs, tables=["subhalos"])


def _write_chunk(cfg_dict: dict, store_path: str, split: str, device: str | None, threads: int | None, chunk_id: int) -> int:
    """Worker entry point: simulate and write one dataset chunk (picklable via partial)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    cfg = LensingSimConfig.model_validate(cfg_dict)
    store = SampleStore.open(store_path, require_complete=False, mode="r+")
    sl = store.chunk_slice(chunk_id)
    arrays, tables = simulate(
        cfg, cfg.seed, chunk_id, sl.start, sl.stop - sl.start, split,
        device=device, batch_size=cfg.dataset.batch_size, compile=cfg.dataset.compile,
    )
    store.write_chunk(chunk_id, arrays, tables)
    return chunk_id


def simulate_dataset(
    config: LensingSimConfig,
    path: Path | str,
    workers: int = 1,
    scheduler: str | None = None,
    device: str | None = "auto",
    splits: Iterable[str] = SPLITS,
) -> dict[str, Path]:
    """Write ``<path>/train.zarr`` and ``<path>/test.zarr``; resumes incomplete chunks.

    ``workers`` local processes (or a Dask ``scheduler`` address, ``"local"`` for a
    LocalCluster) each write whole chunks; the content depends only on the config (seed,
    sizes, backend, batch size, compile flag), not on workers or scheduling. ``device``
    (torch backend only: ``auto``, ``cpu``, ``cuda``) is an execution choice; CPU and CUDA
    agree to float32 round-off, not bit for bit. Returns ``{split: store path}``.
    """
    if not isinstance(config, LensingSimConfig):
        raise TypeError("config must be a LensingSimConfig (see load_sim_config)")
    if workers < 1:
        raise ConfigError(f"workers = {workers}: must be >= 1")
    path = Path(path)
    cfg_dict = config_to_dict(config)
    threads = None
    if workers > 1 or scheduler:
        threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    out: dict[str, Path] = {}
    t0 = time.perf_counter()
    timings = {}
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(f"split = {split!r}: must be one of {SPLITS}")
        store_path = path / f"{split}.zarr"
        store = _create_store(config, store_path, split)
        todo = store.missing_chunks()
        log.info("%s: %d samples in %d chunks (%d to do), backend %s", store_path, store.n_samples, store.n_chunks,
                 len(todo), config.dataset.backend)
        ts = time.perf_counter()
        fn = functools.partial(_write_chunk, cfg_dict, str(store_path), split, device, threads)
        run_chunks(fn, todo, workers=workers, scheduler=scheduler, desc=f"simulate {split}")
        timings[split] = {"seconds": time.perf_counter() - ts, "chunks_written": len(todo), "n_samples": store.n_samples}
        SampleStore.open(store_path)  # refuses an incomplete store
        out[split] = store_path
    info_path = path / "simulate.json"
    info = {"backend": config.dataset.backend, "device": str(device), "workers": workers, "scheduler": scheduler,
            "timings": timings, "total_seconds": time.perf_counter() - t0}
    atomic_write_json(info_path, info)
    return out


def _resolve_store(path: Path | str, split: str | None) -> Path:
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise DatasetError(f"split = {split!r}: must be one of {SPLITS} or None")
    if (path / "zarr.json").is_file() and split is None:
        return path
    if split is None:
        split = "train"
        log.info("no split given for dataset directory %s: reading the train split", path)
    store = path / f"{split}.zarr"
    if not store.exists():
        raise DatasetError(f"dataset {path} has no {split}.zarr; run `darkml lensing simulate` first")
    return store


def open_split(path: Path | str, split: str | None = None) -> SampleStore:
    """The :class:`SampleStore` of one split (``path`` may also be a store itself)."""
    store = SampleStore.open(_resolve_store(path, split))
    if store.attrs.get("format") != FORMAT:
        raise DatasetError(f"{store.path} is not a lensing image dataset (format {store.attrs.get('format')!r})")
    return store


def load_images(path: Path | str, split: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images (N,1,n,n) float32 peak-normalised, labels (N,) int64, log10_m (N,) float32 NaN
    for non-axion)`` of a split. ``path``: a dataset directory (``split`` None -> train) or a
    store."""
    store = open_split(path, split)
    return store.read("images"), store.read("label"), store.read("log10_m_axion")


def load_records(path: Path | str, split: str | None = None, samples=None) -> tuple[Records, LensingSimConfig]:
    """Parameter records of ``samples`` (default all) and the config they were drawn with —
    enough to re-render the images with either backend."""
    store = open_split(path, split)
    samples = np.arange(store.n_samples) if samples is None else np.asarray(samples, dtype=np.int64)
    cfg = LensingSimConfig.model_validate(store.attrs["config"])
    rec = records_from_store(store.read("params", samples), store.read("noise_seed", samples),
                             store.table("subhalos", samples), samples)
    return rec, cfg
