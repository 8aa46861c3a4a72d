"""TODO."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darkml.learn import ArrayDataset, make_loader
from darkml.lensing.dataset import load_images, load_sim_config, simulate_dataset
from darkml.runs import Run

from .config import Pair, SSLConfig


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
@dataclass
class Split:
    """Images ``(N, 1, H, W)`` float32, labels int64 (0 none, 1 cdm, 2 axion) and
    log10(m_a / eV) float32 (NaN for non-axion images)."""

    images: np.ndarray
    labels: np.ndarray
    log10_m: np.ndarray

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or len(self.labels) != n or len(self.log10_m) != n:
            raise ValueError(f"inconsistent split: images {self.images.shape}, labels {self.labels.shape}, "
                             f"log10_m {self.log10_m.shape}")

    def __len__(self) -> int:
        return len(self.images)


def toy_images(n_per_class: int, seed: int = 0, size: int = 64, noise_sigma: float = 0.02,
               log10_m_range: Pair = (-24.0, -22.0)) -> Split:
    """Structured toy "lensing" images for tests and smoke runs (not physics).

    Every image is a noisy, elliptical, azimuthally modulated Einstein-ring-like arc (radius
    15–25% of the side). Class 1 adds 3–9 small positive/negative blobs on the ring (a stand-in
    for subhalo perturbations); class 2 adds a bright line segment through the centre whose
    half-length grows as the log axion mass falls (4 px at 1e-22 eV to 28 px at 1e-24 eV for
    64-px images). Labels interleave (image k has label k % 3). Peak-normalised, float32.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class = {n_per_class}: must be >= 1")
    rng = np.random.default_rng([seed, 0x70E])
    n = 3 * n_per_class
    labels = (np.arange(n) % 3).astype(np.int64)
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - c
    R = rng.uniform(0.15, 0.25, n)[:, None, None] * size
    w = rng.uniform(0.025, 0.045, n)[:, None, None] * size
    q = rng.uniform(0.75, 1.0, n)[:, None, None]
    pa = rng.uniform(0, np.pi, n)[:, None, None]
    phi0 = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    xr = xx * np.cos(pa) + yy * np.sin(pa)
    yr = -xx * np.sin(pa) + yy * np.cos(pa)
    r = np.sqrt(xr**2 * q + yr**2 / q)
    phi = np.arctan2(yy, xx)
    img = np.exp(-0.5 * ((r - R) / w) ** 2) * (0.35 + 0.65 * 0.5 * (1 + np.cos(phi - phi0)))
    log10_m = np.full(n, np.nan, np.float32)
    scale = size / 64
    for k in np.nonzero(labels == 1)[0]:
        for _ in range(rng.integers(3, 10)):
            ang = rng.uniform(0, 2 * np.pi)
            rad = R[k, 0, 0] + rng.normal(0, w[k, 0, 0])
            bx, by = rad * np.cos(ang), rad * np.sin(ang)
            s = rng.uniform(1.0, 2.0) * scale
            img[k] *= 1 + rng.choice([-1, 1]) * rng.uniform(0.4, 0.8) * np.exp(-0.5 * ((xx - bx) ** 2 + (yy - by) ** 2) / s**2)
    for k in np.nonzero(labels == 2)[0]:
        lm = rng.uniform(*log10_m_range)
        log10_m[k] = lm
        half = (4 + 12 * (-22.0 - lm)) * scale
        psi = rng.uniform(0, np.pi)
        t = xx * np.cos(psi) + yy * np.sin(psi)
        d = -xx * np.sin(psi) + yy * np.cos(psi)
        img[k] += 0.4 * np.exp(-0.5 * d**2 / (0.8 * scale) ** 2) / (1 + np.exp((np.abs(t) - half) / 0.7))
    img /= img.reshape(n, -1).max(axis=1)[:, None, None]
    img += noise_sigma * rng.standard_normal(img.shape)
    return Split(img[:, None].astype(np.float32), labels, log10_m)


def simulate_data(cfg: SSLConfig, run: Run) -> dict[str, int]:
    """Simulate (or resume) each instrument's train and test stores with the lensing simulator
    (nothing to write for the toy source); returns the images per instrument."""
    out = {}
    for instrument in cfg.data.instruments:
        if cfg.data.source == "simulate":
            sim_cfg = load_sim_config(
                instrument,
                overrides=[f"seed={cfg.seed}", f"dataset.n_per_class_train={cfg.data.n_per_class_train}",
                           f"dataset.n_per_class_test={cfg.data.n_per_class_test}", *cfg.data.sim_set],
            )
            simulate_dataset(sim_cfg, run.dataset_path / instrument, workers=cfg.data.workers)
        out[instrument] = 3 * (cfg.data.n_per_class_train + cfg.data.n_per_class_test)
    return out


def load_data(cfg: SSLConfig, run: Run | None, instrument: str) -> tuple[Split, Split]:
    """Train and test :class:`Split` of one dataset (``hst``/``euclid``), simulated or toy."""
    if cfg.data.source == "toy":
        salt = sum(ord(ch) for ch in instrument)
        noise = 0.02 if instrument == "hst" else 0.04
        tr = toy_images(cfg.data.n_per_class_train, seed=cfg.seed * 1000 + salt, size=cfg.data.image_size, noise_sigma=noise)
        te = toy_images(cfg.data.n_per_class_test, seed=cfg.seed * 1000 + salt + 1, size=cfg.data.image_size, noise_sigma=noise)
        return tr, te
    if run is None:
        raise ValueError("simulated data need a run directory")
    path = run.dataset_path / instrument  # written by the simulate stage
    return tuple(Split(*load_images(path, split=s)) for s in ("train", "test"))  # type: ignore[return-value]


def label_subset(labels: np.ndarray, idx: np.ndarray, fraction: float, min_per_class: int, seed: int) -> np.ndarray:
    """A class-stratified subset of ``idx``: ``max(min_per_class, round(fraction * n_c))`` per class."""
    if fraction >= 1:
        return np.sort(idx)
    rng = np.random.default_rng([seed, int(round(fraction * 1e6))])
    out = []
    for c in np.unique(labels[idx]):
        members = idx[labels[idx] == c]
        k = min(len(members), max(min_per_class, int(round(fraction * len(members)))))
        out.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(out))


def _train_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-stratified train/validation split of the training images."""
    rng = np.random.default_rng([seed, 0x5A1])
    tr, va = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.nonzero(labels == c)[0])
        k = max(1, int(round(val_fraction * len(members))))
        va.append(members[:k])
        tr.append(members[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


def _loader(x, y=None, *, batch_size: int, shuffle: bool, seed: int, transform=None, drop_last: bool | None = None,
            num_workers: int = 0):
    ds = ArrayDataset(x, y, transform=transform, seed=seed)
    bs = max(1, min(batch_size, len(ds)))
    if drop_last is None:
        drop_last = shuffle and len(ds) > bs  # no 1-image tail batch (BatchNorm)
    return make_loader(ds, bs, shuffle=shuffle, seed=seed, drop_last=drop_last, num_workers=num_workers)


def _subset(s: Split, idx: np.ndarray) -> Split:
    return Split(s.images[idx], s.labels[idx], s.log10_m[idx])


def _axion(s: Split) -> Split:
    keep = (s.labels == 2) & np.isfinite(s.log10_m)
    return _subset(s, np.nonzero(keep)[0])
