"""Strong-lensing images of three dark-matter classes; lenstronomy reference backend.

Class 0: no substructure; 1: CDM point-mass subhalos; 2: an ultra-light-axion vortex (a line
of equal point masses through the lens centre). Parameter records come from
:func:`darkml.lensing.params.draw_records`; this module renders them with lenstronomy's own
lens, light and image models (``backend="lenstronomy"``) or dispatches to the batched torch
backend in :mod:`darkml.lensing.fast` (``backend="torch"``), adds noise from each record's
noise seed, and normalises.

:func:`simulate` is the pure function of ``(config, seed, chunk)`` that a dataset writer maps
over chunks: it does no I/O and uses only ``np.random.default_rng([seed, chunk(, split)])``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from darkml.parallel import chunk_rng

from .params import (
    SCALAR_FIELDS,
    LensingSimConfig,
    RecordError,
    Records,
    check_records,
    class_labels,
    draw_records,
    noise_fields,
    point_masses,
    psf_kernel,
)
from .profiles import LENS_PROFILES, SOURCE_PROFILE, PointMass

log = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "SimulationError",
    "render_lenstronomy",
    "noise_lenstronomy",
    "render",
    "observe",
    "normalise",
    "simulate_records",
    "simulate",
    "split_stream",
    "records_from_store",
]

BACKENDS = ("torch", "lenstronomy")
#: split name -> extra rng stream (train chunk i: default_rng([seed, i]); test: [seed, i, 1])
SPLITS = {"train": (), "test": (1,)}


class SimulationError(RuntimeError):
    """An image came out non-finite or empty: never written to a dataset."""


def split_stream(split: str) -> tuple[int, ...]:
    if split not in SPLITS:
        raise ValueError(f"split = {split!r}: must be one of {sorted(SPLITS)}")
    return SPLITS[split]


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend = {backend!r}: unknown backend (choose one of {', '.join(BACKENDS)})")


# ---------------------------------------------------------------------------------------
# lenstronomy reference
# ---------------------------------------------------------------------------------------
def _lenstronomy_parts(cfg: LensingSimConfig):
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.LightModel.light_model import LightModel

    n, d = cfg.image.num_pix, cfg.instrument.pixel_scale
    x0 = -(n - 1) / 2.0 * d
    data = ImageData(
        image_data=np.zeros((n, n)), ra_at_xy_0=x0, dec_at_xy_0=x0, transform_pix2angle=np.diag([d, d])
    )
    psf = PSF(psf_type="PIXEL", kernel_point_source=psf_kernel(cfg.instrument))
    numerics = {"supersampling_factor": cfg.image.supersampling, "supersampling_convolution": False}
    return data, psf, LightModel([SOURCE_PROFILE.lenstronomy]), numerics


def render_lenstronomy(rec: Records, cfg: LensingSimConfig) -> np.ndarray:
    """Noise-free images [e-/s per pixel] (B, 1, n, n) float64 rendered by lenstronomy.

    Lens model: ``SIE`` + ``SHEAR`` (about the origin) + one ``POINT_MASS`` per subhalo or
    vortex point; source ``SERSIC_ELLIPSE``; PSF ``PIXEL`` with :func:`psf_kernel`;
    supersampled rays averaged to pixels before the convolution.
    """
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel

    data, psf, light, numerics = _lenstronomy_parts(cfg)
    pm = point_masses(rec, cfg.cosmology)
    starts = np.concatenate([[0], np.cumsum(np.bincount(pm["index"], minlength=len(rec)))])
    sc = rec.scalars
    models: dict[int, Any] = {}
    out = np.empty((len(rec), 1, cfg.image.num_pix, cfg.image.num_pix))
    for i in range(len(rec)):
        a, b = int(starts[i]), int(starts[i + 1])
        k = b - a
        if k not in models:  # one ImageModel per point-mass count (the profile list)
            lm = LensModel([prof.lenstronomy for prof in LENS_PROFILES] + [PointMass.lenstronomy] * k)
            models[k] = ImageModel(data, psf, lens_model_class=lm, source_model_class=light, kwargs_numerics=numerics)
        kw_lens = [prof.lenstronomy_kwargs(sc, i) for prof in LENS_PROFILES]
        kw_lens += [PointMass.lenstronomy_kwargs(pm, j) for j in range(a, b)]
        kw_src = [SOURCE_PROFILE.lenstronomy_kwargs(sc, i)]
        out[i, 0] = models[k].image(kwargs_lens=kw_lens, kwargs_source=kw_src)
    return out


def _band(cfg: LensingSimConfig):
    from lenstronomy.SimulationAPI.observation_api import SingleBand

    I = cfg.instrument
    return SingleBand(
        pixel_scale=I.pixel_scale, exposure_time=I.exposure_time, magnitude_zero_point=I.zero_point,
        read_noise=I.read_noise, ccd_gain=I.ccd_gain, sky_brightness=I.sky_brightness, seeing=I.psf_fwhm,
        num_exposures=I.num_exposures, psf_type="GAUSSIAN", data_count_unit="e-",
    )


def noise_lenstronomy(clean: np.ndarray, rec: Records, cfg: LensingSimConfig) -> np.ndarray:
    """Noise realisation (B, 1, n, n) [e-/s]: the record's standard-normal field times
    lenstronomy's per-pixel noise sigma (``SingleBand.estimate_noise``: background and the
    Gaussian limit of the Poisson term)."""
    band = _band(cfg)
    z = noise_fields(rec.scalars["noise_seed"], cfg.image.num_pix)
    out = np.empty_like(clean)
    for i in range(len(clean)):
        out[i, 0] = z[i, 0] * band.estimate_noise(clean[i, 0].copy())
    return out


# ---------------------------------------------------------------------------------------
# backend-independent front end
# ---------------------------------------------------------------------------------------
def render(rec: Records, cfg: LensingSimConfig, backend: str = "torch", **torch_kw) -> np.ndarray:
    """Noise-free images [e-/s per pixel] (B, 1, n, n) with the chosen backend (float64 for lenstronomy, the torch dtype — float32 by default — for torch)."""
    _check_backend(backend)
    if backend == "lenstronomy":
        return render_lenstronomy(rec, cfg)
    from .fast import render_torch

    return render_torch(rec, cfg, **torch_kw)


def observe(rec: Records, cfg: LensingSimConfig, backend: str = "torch", noise: bool | None = None, **torch_kw) -> np.ndarray:
    """Observed images [e-/s per pixel]: render + noise (if ``cfg.image.noise``), float64 (lenstronomy) or the torch dtype."""
    _check_backend(backend)
    check_records(rec)
    noise = cfg.image.noise if noise is None else noise
    if backend == "lenstronomy":
        img = render_lenstronomy(rec, cfg)
        if noise:
            img = img + noise_lenstronomy(img, rec, cfg)
    else:
        from .fast import simulate_torch

        img = simulate_torch(rec, cfg, noise=noise, **torch_kw)
    _check_images(img)
    return img


def _check_images(img: np.ndarray) -> None:
    flat = img.reshape(len(img), -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise SimulationError(f"image {int(np.argmax(bad))} of the batch has non-finite pixels (degenerate record)")
    empty = flat.max(axis=1) <= 0
    if empty.any():
        raise SimulationError(f"image {int(np.argmax(empty))} of the batch has no positive pixel (source outside the field?)")


def normalise(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak normalisation: (img / peak as float32, peak [e-/s]) with peak = max over each image."""
    peak = img.reshape(len(img), -1).max(axis=1)
    return (img / peak[:, None, None, None]).astype(np.float32), peak


def simulate_records(rec: Records, cfg: LensingSimConfig, backend: str = "torch", **torch_kw) -> dict[str, np.ndarray]:
    """Arrays of a dataset chunk from records: ``images`` (peak-normalised float32),
    ``flux_scale`` (peak, e-/s), ``label``, ``log10_m_axion``, ``params``, ``noise_seed``."""
    img = observe(rec, cfg, backend, **torch_kw)
    images, peak = normalise(img)
    return {
        "images": images,
        "flux_scale": peak.astype(np.float64),
        "label": rec.labels,
        "log10_m_axion": rec.scalars["log10_m_axion"].astype(np.float32),
        "params": rec.params_array(),
        "noise_seed": rec.scalars["noise_seed"].astype(np.int64),
    }


def simulate(
    cfg: LensingSimConfig,
    seed: int,
    chunk_id: int,
    start: int,
    n: int,
    split: str = "train",
    backend: str | None = None,
    **torch_kw,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Samples ``start .. start+n-1`` of a split (dataset chunk ``chunk_id``): pure in (cfg, seed).

    Draws records from ``chunk_rng(seed, chunk_id, *split_stream(split))``; labels interleave
    (sample k has label k % 3). Returns ``(arrays, {"subhalos": catalogue})`` where the
    catalogue's ``sample`` column holds global sample indices.
    """
    backend = backend or cfg.dataset.backend
    _check_backend(backend)
    rng = chunk_rng(seed, chunk_id, *split_stream(split))
    rec = draw_records(cfg, rng, class_labels(start, n))
    arrays = simulate_records(rec, cfg, backend, **torch_kw)
    sub = rec.subhalos
    table = {
        "sample": (sub["index"] + start).astype(np.int64),
        "x": sub["x"], "y": sub["y"], "mass": sub["mass"], "theta_E": sub["theta_E"],
    }
    return arrays, {"subhalos": table}


def records_from_store(params: np.ndarray, noise_seed: np.ndarray, table: dict[str, np.ndarray], samples) -> Records:
    """Rebuild :class:`Records` for ``samples`` (global indices, in that order) from stored
    ``params`` / ``noise_seed`` rows and the ``subhalos`` table (global ``sample`` column)."""
    samples = np.asarray(samples, dtype=np.int64)
    if params.shape != (len(samples), len(SCALAR_FIELDS)):
        raise RecordError(f"params has shape {params.shape}, expected ({len(samples)}, {len(SCALAR_FIELDS)})")
    col = np.asarray(table.get("sample", np.zeros(0, np.int64)), dtype=np.int64)
    keep = np.isin(col, samples)
    pos = {int(s): j for j, s in enumerate(samples)}
    sub = {k: np.asarray(table.get(k, np.zeros(0)), dtype=np.float64)[keep] for k in ("x", "y", "mass", "theta_E")}
    sub["index"] = np.array([pos[int(s)] for s in col[keep]], dtype=np.int64)
    order = np.argsort(sub["index"], kind="stable")
    return Records.from_arrays(params, noise_seed, {k: v[order] for k, v in sub.items()})
