"""Strong-lensing study stages: simulate a dataset, load it, report on it.

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
import json
import logging
import math
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
    "flux_check",
    "report_dataset",
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
        ratio = cfg.dataset.n_per_class_test / cfg.dataset.n_per_class_train
        n_test = max(1, int(round(n_per_class * ratio)))
        extra += [f"dataset.n_per_class_train={n_per_class}", f"dataset.n_per_class_test={n_test}"]
        cfg = load_config(LensingSimConfig, PRESETS_DIR, preset, overrides=extra, study="lensing")
    return cfg


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


# ---------------------------------------------------------------------------------------
# quality checks and report
# ---------------------------------------------------------------------------------------
def flux_check(image_sums: np.ndarray, flux_scale: np.ndarray, labels: np.ndarray, n_boot: int = 200) -> dict:
    """AUC of total flux alone for each pair of classes (and one-vs-rest), for the physical
    total flux (sum of e-/s) and for the stored peak-normalised images (``image_sums`` = the
    per-image sum of ``images``). 0.5 = no information."""
    from darkml.metrics import auc, bootstrap_ci

    tot_norm = np.asarray(image_sums, dtype=np.float64)
    tot_phys = tot_norm * flux_scale
    out: dict = {}
    for name, score in (("physical_flux", tot_phys), ("normalised_flux", tot_norm)):
        res = {}
        for a, b in ((0, 1), (0, 2), (1, 2)):
            keep = (labels == a) | (labels == b)
            res[f"{CLASS_NAMES[a]}_vs_{CLASS_NAMES[b]}"] = bootstrap_ci(
                auc, (labels[keep] == b).astype(int), score[keep], n_boot=n_boot)
        for c in range(3):
            res[f"{CLASS_NAMES[c]}_vs_rest"] = bootstrap_ci(auc, (labels == c).astype(int), score, n_boot=n_boot)
        res["max_abs_deviation"] = float(max(abs(v["value"] - 0.5) for v in res.values() if isinstance(v, dict)))
        out[name] = res
    return out


def _example_figure(images: dict, labels, params, n_examples):
    import matplotlib.pyplot as plt

    names = list(SCALAR_FIELDS)
    fig, axes = plt.subplots(3, n_examples, figsize=(1.6 * n_examples, 5.2))
    axes = np.atleast_2d(axes)
    for c in range(3):
        idx = np.nonzero(labels == c)[0][:n_examples]
        for j in range(n_examples):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(idx):
                ax.axis("off")
                continue
            i = idx[j]
            ax.imshow(images[int(i)][0], origin="lower", cmap="magma")
            if c == 1:
                ax.set_title(f"n_sub={int(params[i, names.index('n_sub')])}", fontsize=7)
            elif c == 2:
                ax.set_title(f"log m={params[i, names.index('log10_m_axion')]:.2f}", fontsize=7)
            if j == 0:
                ax.set_ylabel(CLASS_NAMES[c], fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.25, left=0.04, right=0.99, top=0.95, bottom=0.02)
    return fig


def _param_figure(labels, params):
    import matplotlib.pyplot as plt

    names = [n for n in SCALAR_FIELDS if n not in ("label", "noise_seed")]
    ncol = 4
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(12, 2.2 * nrow))
    for ax, name in zip(axes.flat, names):
        col = params[:, SCALAR_FIELDS.index(name)]
        for c in range(3):
            v = col[labels == c]
            v = v[np.isfinite(v)]
            if v.size and (name not in ("n_sub", "sub_mass_total") or c == 1) and (
                    not name.startswith(("vortex", "log10")) or c == 2):
                ax.hist(v, bins=30, histtype="step", color=f"C{c}", label=CLASS_NAMES[c])
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.subplots_adjust(wspace=0.3, hspace=0.6, left=0.05, right=0.98, top=0.96, bottom=0.04)
    return fig


def _subhalo_figure(table, cfg: LensingSimConfig, n_cdm: int, counts):
    import matplotlib.pyplot as plt
    from scipy import stats

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    C = cfg.cdm
    m = np.asarray(table.get("mass", np.zeros(0)))
    edges = np.logspace(math.log10(C.mass_min), math.log10(C.mass_max), 25)
    if m.size:
        h, _ = np.histogram(m, edges)
        centers = np.sqrt(edges[1:] * edges[:-1])
        axes[0].loglog(centers, h / np.diff(np.log10(edges)) / max(n_cdm, 1), "o", ms=3, label="drawn")
        beta = C.slope + 1
        lo, hi = C.mass_min, C.mass_max
        # expected dN/dlog10 M per image = mean * M p(M) ln10 with p ∝ M^slope normalised on [lo, hi]
        norm = (hi**beta - lo**beta) / beta if abs(beta) > 1e-12 else math.log(hi / lo)
        axes[0].loglog(centers, C.mean_number * centers ** (C.slope + 1) / norm * math.log(10), "-", label=f"dN/dM ∝ M^{C.slope}")
        axes[0].legend(fontsize=7)
    axes[0].set_xlabel("subhalo mass [Msun]")
    axes[0].set_ylabel("dN/dlog10 M per CDM image")
    if m.size:
        r = np.hypot(table["x"], table["y"])
        axes[1].hist(r, bins=30, range=(0, C.r_max * 1.05), histtype="step")
    axes[1].set_xlabel("subhalo radius [arcsec] (lens at centre)")
    k = np.arange(0, int(max(counts.max(initial=0), C.mean_number * 2)) + 1)
    axes[2].hist(counts, bins=np.arange(k[-1] + 2) - 0.5, density=True, histtype="step", label="drawn")
    axes[2].plot(k, stats.poisson.pmf(k, C.mean_number), ".-", ms=3, label=f"Poisson({C.mean_number:g})")
    axes[2].set_xlabel("subhalos per CDM image")
    axes[2].legend(fontsize=7)
    fig.subplots_adjust(wspace=0.3, left=0.07, right=0.98, bottom=0.18)
    return fig


def report_dataset(path: Path | str, out: Path | str | None = None, split: str = "train", n_examples: int = 8,
                   max_samples: int = 30_000) -> Path:
    """Write ``<path>/report.html`` (+ ``<path>/report/metrics.json`` and figures): example
    images per class, every sampled parameter's distribution, the subhalo mass function and
    the flux-only AUC check. Reads at most ``max_samples`` (a balanced prefix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from darkml.report import Report, fmt_ci

    path = Path(path)
    store = open_split(path, split)
    n = min(store.n_samples, max_samples - max_samples % 3)
    sl = slice(0, n)
    labels = store.read("label", sl)
    flux_scale = store.read("flux_scale", sl)
    params = store.read("params", sl)
    sums = np.empty(n)
    for i in range(store.n_chunks):  # chunk by chunk: never all images in memory
        c = store.chunk_slice(i)
        if c.start >= n:
            break
        c = slice(c.start, min(c.stop, n))
        sums[c] = store.read("images", c).reshape(c.stop - c.start, -1).sum(axis=1, dtype=np.float64)
    first = np.concatenate([np.nonzero(labels == k)[0][:n_examples] for k in range(3)])
    examples = dict(zip(first.tolist(), store.read("images", first)))
    cfg = LensingSimConfig.model_validate(store.attrs["config"])
    table = store.table("subhalos", np.arange(n))
    out_html = Path(out) if out else path / "report.html"
    fig_dir = out_html.parent / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)

    flux = flux_check(sums, flux_scale, labels)
    n_cdm = int((labels == 1).sum())
    counts = params[labels == 1, SCALAR_FIELDS.index("n_sub")]
    sizes = {}
    if store.path != path:  # a dataset directory: list its splits
        for sp in SPLITS:
            try:
                sizes[sp] = open_split(path, sp).n_samples
            except DatasetError:
                sizes[sp] = None
    metrics = {"split": split, "n_samples_read": n, "splits": sizes, "flux_only_auc": flux,
               "subhalos_per_cdm_image": {"mean": float(counts.mean()) if counts.size else None,
                                          "var": float(counts.var()) if counts.size else None},
               "images_per_class": {CLASS_NAMES[c]: int((labels == c).sum()) for c in range(3)}}
    atomic_write_json(fig_dir / "metrics.json", metrics)

    rep = Report(f"Strong-lensing dataset — {cfg.preset}", subtitle=str(path))
    rep.add_text(
        f"<p>{n} images of the <b>{split}</b> split read (classes interleave). Instrument "
        f"<b>{cfg.instrument.name}</b>: {cfg.image.num_pix}×{cfg.image.num_pix} pixels of {cfg.instrument.pixel_scale}″, "
        f"PSF FWHM {cfg.instrument.psf_fwhm}″, backend <b>{cfg.dataset.backend}</b>. Images are peak-normalised "
        "(multiply by <code>flux_scale</code> for e-/s per pixel).</p>")
    rep.add_heading("Example images")
    fig = _example_figure(examples, labels, params, n_examples)
    rep.add_figure(fig, "Rows: no substructure, CDM subhalos, axion vortex (peak-normalised, origin lower left).",
                   name="examples", figures_dir=fig_dir)
    plt.close(fig)
    rep.add_heading("Flux-only check")
    rows = []
    for key, res in flux.items():
        for pair, v in res.items():
            if isinstance(v, dict):
                rows.append({"flux": key, "classes": pair, "AUC [68% CI]": fmt_ci(v)})
    rep.add_table(rows, "AUC of the total image flux alone (0.5 = the classes are not separable by flux)")
    rep.add_note(f"max |AUC - 0.5|: physical flux {flux['physical_flux']['max_abs_deviation']:.3f}, "
                 f"normalised flux {flux['normalised_flux']['max_abs_deviation']:.3f}")
    rep.add_heading("Sampled parameters")
    fig = _param_figure(labels, params)
    rep.add_figure(fig, "Distribution of every sampled parameter, per class (units: arcsec, Msun, mag, eV).",
                   name="parameters", figures_dir=fig_dir)
    plt.close(fig)
    fig = _subhalo_figure(table, cfg, n_cdm, counts)
    rep.add_figure(fig, "CDM subhalos: mass function against the input power law, radii, counts against Poisson.",
                   name="subhalos", figures_dir=fig_dir)
    plt.close(fig)
    info = path / "simulate.json"
    if info.is_file():
        sim = json.loads(info.read_text())
        rep.add_timings({f"simulate {k}": v["seconds"] for k, v in sim.get("timings", {}).items()})
    rep.add_json(metrics, "metrics.json")
    rep.add_config(cfg)
    rep.write(out_html)
    return out_html
