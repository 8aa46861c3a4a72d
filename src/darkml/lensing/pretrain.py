"""Self-supervised pre-training → fine-tuning pipeline (``darkml lensing ssl``).

For each dataset (instrument: ``hst`` = this paper's Model A, ``euclid`` = its Model B), each
encoder and each method:

1. **pre-train** the encoder on the training images without labels (:mod:`.ssl`);
2. **linear probe**: logistic regression (3 classes) and ridge regression (log10 m_a on the
   axion images) on the frozen encoder's features;
3. **fine-tune** encoder + fully connected head with labels — 3-way classification with 1%,
   10% and 100% of the training labels (label-efficiency curve), and 1-output regression of
   log10(m_a / eV) on the axion images;
4. the **supervised baseline**: the same architecture from random initialisation, the same
   augmentations and schedule;
5. test-set macro AUC (one-vs-rest) and RMSE/MAE with bootstrap intervals → ``metrics.json``
   and ``report.html`` (the paper's Tables 1 and 2 beside its numbers, Fig. 2 predicted vs
   simulated axion mass, label efficiency, linear probes, pre-training diagnostics).

Everything is resumable: each training writes ``done.json`` (``darkml.learn.fit``) and each
evaluated model a ``result.json``; a re-run skips finished pieces.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from darkml import metrics
from darkml.config import ConfigError, Section, StudyConfig, load_config
from darkml.learn import ArrayDataset, ClassifierModule, RegressorModule, fit, load_best, make_loader, predict
from darkml.runs import Run, atomic_write_json, atomic_write_bytes

from .ssl import (ENCODERS, METHOD_LABELS, METHODS, FineTuneModel, ViewAugment, build_encoder, build_method,
                  default_views, embedding_std, extract_features)

log = logging.getLogger(__name__)

__all__ = [
    "PRESETS_DIR",
    "STUDY",
    "PAPER_TABLES",
    "SSLDataCfg",
    "AugmentCfg",
    "PretrainCfg",
    "FinetuneCfg",
    "EvalCfg",
    "SSLConfig",
    "load",
    "Split",
    "toy_images",
    "load_data",
    "label_subset",
    "pretrain_encoder",
    "finetune",
    "linear_probe",
    "run_ssl",
    "write_report",
]

PRESETS_DIR = Path(__file__).parent / "presets"
STUDY = "lensing-ssl"
CLASS_NAMES = ("no_substructure", "cdm", "axion")
#: the self-supervised paper's model letters
MODEL_LETTER = {"hst": "A", "euclid": "B"}
INSTRUMENT_LABEL = {"hst": "HST-like", "euclid": "Euclid-like"}


def _ds_label(inst: str) -> str:
    return f"Model {MODEL_LETTER.get(inst, '?')} ({INSTRUMENT_LABEL.get(inst, inst)})"

#: Deshmukh et al. (2023), Tables 1 (Model A, HST-like) and 2 (Model B, Euclid-like):
#: (method, encoder) -> (supervised macro AUC, self-supervised + fine-tuning macro AUC)
PAPER_TABLES: dict[str, dict[tuple[str, str], tuple[float, float]]] = {
    "hst": {
        ("simclr-rotation", "resnet50"): (0.960, 0.993),
        ("simclr-rotation", "vit"): (0.977, 0.990),
        ("simclr-noise", "resnet50"): (0.960, 0.993),
        ("simclr-noise", "vit"): (0.977, 0.993),
        ("byol", "resnet50"): (0.990, 0.993),
        ("simsiam", "resnet50"): (0.983, 0.995),
        ("dino", "resnet50"): (0.996, 0.997),
    },
    "euclid": {
        ("simclr-rotation", "resnet50"): (0.967, 0.997),
        ("simclr-rotation", "vit"): (0.983, 0.987),
        ("simclr-noise", "resnet50"): (0.967, 0.997),
        ("simclr-noise", "vit"): (0.983, 0.990),
        ("byol", "resnet50"): (0.963, 0.960),
        ("simsiam", "resnet50"): (0.984, 0.996),
        ("dino", "resnet50"): (0.998, 0.998),
    },
}


def paper_encoder(name: str) -> str:
    """The paper's encoder a (possibly smaller, quick-run) encoder stands in for."""
    return "vit" if name.startswith("vit") else "resnet50"


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
Pair = tuple[float, float]


class SSLDataCfg(Section):
    source: Literal["simulate", "toy"] = Field("simulate", description="simulate with the lensing simulator, or toy images")
    instruments: list[str] = Field(["hst", "euclid"], description="simulator presets; hst = Model A, euclid = Model B")
    n_per_class_train: int = Field(30_000, ge=4, description="training images per class (pre-training pool + labels)")
    n_per_class_test: int = Field(5_000, ge=2, description="test images per class")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of the training images held out for validation")
    sim_set: list[str] = Field([], description="extra key=value overrides for the simulator config")
    workers: int = Field(1, ge=1, description="simulation worker processes")
    loader_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes for fine-tuning "
                                "(its augmentation runs per image on the CPU; pre-training augments on the device)")
    image_size: int = Field(64, ge=16, le=256, description="toy source only: image side in pixels")

    @field_validator("instruments")
    @classmethod
    def _inst(cls, v):
        if not v:
            raise ValueError("need at least one dataset (hst, euclid)")
        if len(set(v)) != len(v):
            raise ValueError("duplicate datasets")
        return v


class AugmentCfg(Section):
    """Knobs of the pre-training views (which operations a method uses: ssl.default_views)."""

    max_shift_px: int = Field(2, ge=0, le=16, description="integer shift range per axis [pixels]")
    noise_sigma: Pair = Field((0.001, 0.01), description="Gaussian noise std range, peak-normalised units "
                              "(the simulated sky noise is ~0.001 of the peak)")
    psf_sigma_px: Pair = Field((0.0, 0.5), description="extra Gaussian PSF std range [pixels] (HST-like PSF: "
                               "sigma 0.42 px; Euclid-like: 0.67 px)")

    @field_validator("noise_sigma", "psf_sigma_px")
    @classmethod
    def _pair(cls, v, info):
        lo, hi = float(v[0]), float(v[1])
        if not (0 <= lo <= hi <= 10):
            raise ValueError("need 0 <= low <= high <= 10")
        return lo, hi


class PretrainCfg(Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=2, le=8192)
    lr: float = Field(1e-3, gt=0, le=1, description="AdamW peak learning rate (warm-up, then cosine decay)")
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: int = Field(10, ge=0)
    max_images: int | None = Field(None, ge=8, description="cap on the pre-training pool (None: all training images)")
    proj_hidden: int = Field(2048, ge=8, description="projector/predictor hidden width")
    proj_dim: int = Field(256, ge=4, description="projection dimension (SimCLR, BYOL, SimSiam)")
    temperature: float = Field(0.5, gt=0, le=10, description="NT-Xent temperature")
    byol_momentum: float = Field(0.99, ge=0, lt=1, description="BYOL target EMA momentum at the start (→ 1, cosine)")
    dino_momentum: float = Field(0.996, ge=0, lt=1, description="DINO teacher EMA momentum at the start (→ 1, cosine)")
    dino_out_dim: int = Field(4096, ge=8, description="DINO prototype count")
    dino_bottleneck_dim: int = Field(256, ge=4)
    dino_local_crops: int = Field(4, ge=0, le=16)
    dino_local_size: int = Field(32, ge=8, description="local crop side [pixels], native pixel scale")
    teacher_temp: float = Field(0.04, gt=0)


class FinetuneCfg(Section):
    epochs: int = Field(30, ge=1, description="epochs with 100% of the labels")
    batch_size: int = Field(128, ge=2, le=8192)
    lr: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd", "lamb"] = "adam"
    patience: int = Field(5, ge=1, description="early stopping on the validation loss")
    plateau_patience: int = Field(3, ge=1)
    head_hidden: int = Field(256, ge=0, description="hidden width of the fully connected head (0: linear head)")
    label_fractions: list[float] = Field([0.01, 0.1, 1.0], description="label-efficiency curve: shares of training labels")
    min_per_class: int = Field(2, ge=1, description="at least this many labelled images per class in a label subset")
    max_epoch_scale: float = Field(10.0, ge=1, description="a fraction f trains min(1/f, this) times more epochs")
    rotate: Literal["none", "d4", "continuous"] = "continuous"
    flip: bool = True
    shift_px: int = Field(2, ge=0, le=16)
    regression: bool = True
    regression_epochs: int = Field(30, ge=1)
    linear_probe: bool = True
    keep_weights: bool = Field(False, description="keep the fine-tuned weights (model.pt); pre-trained encoders are always kept")

    @field_validator("label_fractions")
    @classmethod
    def _fr(cls, v):
        if not v:
            raise ValueError("need at least one fraction")
        for f in v:
            if not 0 < f <= 1:
                raise ValueError("each fraction must lie in (0, 1]")
        if 1.0 not in [float(f) for f in v]:
            raise ValueError("must include 1.0 (Tables 1 and 2 use all labels)")
        return sorted(float(f) for f in v)


class EvalCfg(Section):
    n_boot: int = Field(1000, ge=10)
    level: float = Field(0.68, gt=0, lt=1)


class SSLConfig(StudyConfig):
    """``darkml lensing ssl`` configuration (presets ``ssl-quick``, ``ssl-paper``)."""

    study: str = STUDY
    methods: list[str] = Field(list(METHODS), description="pre-training methods")
    encoders: list[str] = Field(["resnet50", "vit"], description="encoders")
    patch_size: int = Field(8, ge=1, le=64, description="ViT patch size (8 → 64 tokens on 64×64 images)")
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    precision: str | None = Field(None, description="Lightning precision (None: 16-mixed on GPU, 32-true on CPU)")
    data: SSLDataCfg = SSLDataCfg()
    augment: AugmentCfg = AugmentCfg()
    pretrain: PretrainCfg = PretrainCfg()
    finetune: FinetuneCfg = FinetuneCfg()
    eval: EvalCfg = EvalCfg()

    @field_validator("methods")
    @classmethod
    def _methods(cls, v):
        bad = [m for m in v if m not in METHODS]
        if bad or not v:
            raise ValueError(f"unknown {bad or 'empty list'} (choose from {', '.join(METHODS)})")
        return list(dict.fromkeys(v))

    @field_validator("encoders")
    @classmethod
    def _encoders(cls, v):
        bad = [e for e in v if e not in ENCODERS]
        if bad or not v:
            raise ValueError(f"unknown {bad or 'empty list'} (choose from {', '.join(ENCODERS)})")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _check(self):
        size = self.data.image_size if self.data.source == "toy" else 64
        if any(e.startswith("vit") for e in self.encoders) and size % self.patch_size:
            raise ValueError(f"patch_size = {self.patch_size}: must divide the image size {size}")
        if "dino" in self.methods and self.pretrain.dino_local_size > size:
            raise ValueError(f"pretrain.dino_local_size = {self.pretrain.dino_local_size}: must be <= image size {size}")
        if ("dino" in self.methods and any(e.startswith("vit") for e in self.encoders)
                and self.pretrain.dino_local_size % self.patch_size):
            raise ValueError(f"pretrain.dino_local_size = {self.pretrain.dino_local_size}: must be a multiple of "
                             f"patch_size = {self.patch_size} for the ViT")
        return self


def load(preset: str = "ssl-quick", overrides: Sequence[str] = ()) -> SSLConfig:
    """Load an SSL preset (``quick``/``paper`` are accepted for ``ssl-quick``/``ssl-paper``)."""
    if preset in ("quick", "paper"):
        preset = f"ssl-{preset}"
    return load_config(SSLConfig, PRESETS_DIR, preset, overrides=list(overrides), study=STUDY)


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


def _simulated(cfg: SSLConfig, run: Run, instrument: str) -> tuple[Split, Split]:
    """Simulate (or reuse) one instrument's train and test sets with the lensing simulator."""
    from . import study as sim_study  # the simulator's dataset API

    sim_cfg = sim_study.load_sim_config(
        instrument,
        overrides=[f"seed={cfg.seed}", f"dataset.n_per_class_train={cfg.data.n_per_class_train}",
                   f"dataset.n_per_class_test={cfg.data.n_per_class_test}", *cfg.data.sim_set],
    )
    path = run.dataset_path / instrument
    sim_study.simulate_dataset(sim_cfg, path, workers=cfg.data.workers)
    return tuple(Split(*sim_study.load_images(path, split=s)) for s in ("train", "test"))  # type: ignore[return-value]


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
    return _simulated(cfg, run, instrument)


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


# ---------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------
def _fit_kw(cfg: SSLConfig, devices) -> dict[str, Any]:
    return {"devices": devices, "accelerator": cfg.accelerator, "precision": cfg.precision}


def _loader(x, y=None, *, batch_size: int, shuffle: bool, seed: int, transform=None, drop_last: bool | None = None,
            num_workers: int = 0):
    ds = ArrayDataset(x, y, transform=transform, seed=seed)
    bs = max(1, min(batch_size, len(ds)))
    if drop_last is None:
        drop_last = shuffle and len(ds) > bs  # no 1-image tail batch (BatchNorm)
    return make_loader(ds, bs, shuffle=shuffle, seed=seed, drop_last=drop_last, num_workers=num_workers)


def _method_options(cfg: SSLConfig) -> dict[str, Any]:
    p = cfg.pretrain
    return {
        "lr": p.lr, "weight_decay": p.weight_decay, "warmup_epochs": p.warmup_epochs, "optimizer": "adamw",
        "seed": cfg.seed, "proj_hidden": p.proj_hidden, "proj_dim": p.proj_dim, "temperature": p.temperature,
        "out_dim": p.dino_out_dim, "bottleneck_dim": p.dino_bottleneck_dim, "n_local": p.dino_local_crops,
        "local_size": p.dino_local_size, "teacher_temp": p.teacher_temp, "warmup_teacher_temp": p.teacher_temp,
    }


def _views(cfg: SSLConfig, method: str) -> ViewAugment:
    a = cfg.augment
    return default_views(method, a.max_shift_px, a.noise_sigma, a.psf_sigma_px)


def pretrain_encoder(cfg: SSLConfig, method: str, encoder_name: str, images: np.ndarray, val_images: np.ndarray,
                     out_dir: Path, log_dir: Path | None = None, devices: int | str = "auto") -> tuple[torch.nn.Module, dict]:
    """Pre-train ``encoder_name`` with ``method`` on unlabelled ``images``; return the encoder
    used as the representation (DINO: the EMA teacher; others: the online encoder) and a
    summary (final losses, collapse indices, throughput, history). Resumable: the encoder is
    saved as ``out_dir/encoder.pt`` and reused when present."""
    out_dir = Path(out_dir)
    enc_path, info_path = out_dir / "encoder.pt", out_dir / "pretrain.json"
    encoder = build_encoder(encoder_name, image_size=images.shape[-1], patch_size=cfg.patch_size, seed=cfg.seed)
    if enc_path.is_file() and info_path.is_file():
        encoder.load_state_dict(torch.load(enc_path, map_location="cpu", weights_only=True))
        return encoder, json.loads(info_path.read_text())
    p = cfg.pretrain
    if p.max_images is not None and len(images) > p.max_images:
        keep = np.sort(np.random.default_rng([cfg.seed, 0xB0]).choice(len(images), p.max_images, replace=False))
        images = images[keep]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        module = build_method(method, encoder, views=_views(cfg, method),
                              momentum=p.dino_momentum if method == "dino" else p.byol_momentum, **_method_options(cfg))
    collapse_init = _collapse(module, val_images)
    train = _loader(images, batch_size=p.batch_size, shuffle=True, seed=cfg.seed)
    val = _loader(val_images, batch_size=p.batch_size, shuffle=False, seed=cfg.seed,
                  drop_last=len(val_images) > p.batch_size and len(val_images) % p.batch_size == 1)
    tag = "-".join(out_dir.parts[-3:])
    res = fit(module, train, val, out_dir / "ckpt", max_epochs=p.epochs, patience=None, log_dir=log_dir, tag=tag,
              seed=cfg.seed, **_fit_kw(cfg, devices))
    last = out_dir / "ckpt" / "last.ckpt"
    load_best(module, last if last.is_file() else res.best_path)
    collapse_final = _collapse(module, val_images)
    rep = module.representation_encoder().cpu()
    state = {k: v.detach().clone() for k, v in rep.state_dict().items()}
    encoder.load_state_dict(state)
    hist = res.history
    final = hist[-1] if hist else {}
    info = {
        "method": method, "encoder": encoder_name, "epochs": len(hist), "n_images": int(len(images)),
        "train_loss": final.get("train_loss"), "val_loss": final.get("val_loss"),
        "embed_std": final.get("embed_std"), "proj_std": final.get("proj_std"),
        "val_embed_std": final.get("val_embed_std"), "val_proj_std": final.get("val_proj_std"),
        "collapse_init": collapse_init[0], "collapse_final": collapse_final[0], "collapse_projector": collapse_final[1],
        "images_per_s": float(np.median([h["train_images_per_s"] for h in hist if "train_images_per_s" in h]))
        if any("train_images_per_s" in h for h in hist) else None,
        "history": [{k: h.get(k) for k in ("epoch", "train_loss", "val_loss", "embed_std", "val_embed_std")} for h in hist],
    }
    _save_torch(enc_path, state)
    atomic_write_json(info_path, info)
    _drop_checkpoints(out_dir / "ckpt")
    return encoder, info


def _collapse(module, images: np.ndarray, n: int = 512) -> tuple[float, float]:
    """Collapse indices (representation, projector output) on up to ``n`` clean images, eval mode."""
    dev = next(module.parameters()).device
    was = module.training
    module.eval()
    x = torch.as_tensor(images[:n]).to(dev, torch.float32)
    hs, zs = [], []
    for i in range(0, len(x), 128):
        h, z = module.embed(x[i : i + 128])
        hs.append(h.float().cpu())
        zs.append(z.float().cpu())
    module.train(was)
    return embedding_std(torch.cat(hs)), embedding_std(torch.cat(zs))


def _save_torch(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _drop_checkpoints(ckpt_dir: Path) -> None:
    for f in Path(ckpt_dir).glob("*.ckpt"):
        f.unlink(missing_ok=True)


def finetune(cfg: SSLConfig, encoder: torch.nn.Module, task: Literal["classify", "regress"], train: Split, val: Split,
             test: Split, out_dir: Path, epochs: int, log_dir: Path | None = None, devices: int | str = "auto") -> dict:
    """Fine-tune a copy of ``encoder`` + head on ``train`` (early stopping on ``val``) and
    evaluate on ``test``: macro AUC and accuracy (classify, 3 outputs) or RMSE/MAE of
    log10 m_a (regress, 1 output), with bootstrap intervals. Resumable via ``result.json``."""
    out_dir = Path(out_dir)
    res_path = out_dir / "result.json"
    if res_path.is_file():
        return json.loads(res_path.read_text())
    f = cfg.finetune
    enc = copy.deepcopy(encoder)
    for prm in enc.parameters():
        prm.requires_grad_(True)
    n_out = 3 if task == "classify" else 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        model = FineTuneModel(enc, n_out, hidden=f.head_hidden)
    if task == "classify":
        module = ClassifierModule(model, num_classes=3, lr=f.lr, weight_decay=f.weight_decay, optimizer=f.optimizer,
                                  plateau_patience=f.plateau_patience)
        y_tr, y_va = train.labels, val.labels
    else:
        y_tr, y_va = train.log10_m, val.log10_m
        module = RegressorModule(model, lr=f.lr, weight_decay=f.weight_decay, optimizer=f.optimizer,
                                 plateau_patience=f.plateau_patience, target_mean=float(np.mean(y_tr)),
                                 target_std=float(max(np.std(y_tr), 1e-3)))
    aug = ViewAugment(f.rotate, f.flip, f.shift_px)
    tr_loader = _loader(train.images, y_tr, batch_size=f.batch_size, shuffle=True, seed=cfg.seed, transform=aug,
                        num_workers=cfg.data.loader_workers)
    va_loader = _loader(val.images, y_va, batch_size=max(256, f.batch_size), shuffle=False, seed=cfg.seed)
    tag = "-".join(out_dir.parts[-4:])
    res = fit(module, tr_loader, va_loader, out_dir / "ckpt", max_epochs=epochs, patience=f.patience, log_dir=log_dir,
              tag=tag, seed=cfg.seed, **_fit_kw(cfg, devices))
    load_best(module, res.best_path)
    te_loader = _loader(test.images, None, batch_size=max(256, f.batch_size), shuffle=False, seed=cfg.seed)
    out = predict(module, te_loader)
    e = cfg.eval
    result: dict[str, Any] = {"task": task, "n_train": int(len(train)), "n_val": int(len(val)), "epochs": int(res.epochs) + 1}
    if task == "classify":
        mc = metrics.multiclass_report(test.labels, out, n_boot=e.n_boot, level=e.level, seed=cfg.seed)
        result["macro_auc"], result["accuracy"] = mc["macro_auc"], mc["accuracy"]
        np.savez_compressed(out_dir / "predictions.npz", probs=out.astype(np.float32), labels=test.labels)
    else:
        result.update(metrics.regression_metrics(test.log10_m, out, n_boot=e.n_boot, level=e.level, seed=cfg.seed))
        np.savez_compressed(out_dir / "predictions.npz", pred=out.astype(np.float32), true=test.log10_m)
    if f.keep_weights:
        _save_torch(out_dir / "model.pt", model.state_dict())
    atomic_write_json(res_path, result)
    _drop_checkpoints(out_dir / "ckpt")
    return result


def linear_probe(cfg: SSLConfig, encoder: torch.nn.Module, train: Split, test: Split) -> dict:
    """Frozen-encoder evaluation: multinomial logistic regression on standardised features
    (macro AUC) and ridge regression of log10 m_a on the axion images (RMSE, MAE)."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f_tr = extract_features(encoder, train.images)
    f_te = extract_features(encoder, test.images)
    e = cfg.eval
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(f_tr, train.labels)
    probs = clf.predict_proba(f_te)
    out: dict[str, Any] = {
        "macro_auc": metrics.bootstrap_ci(metrics.macro_auc_ovr, test.labels, probs, n_boot=e.n_boot, level=e.level, seed=cfg.seed),
    }
    ax_tr, ax_te = train.labels == 2, test.labels == 2
    if ax_tr.sum() >= 3 and ax_te.sum() >= 2:
        reg = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        reg.fit(f_tr[ax_tr], train.log10_m[ax_tr])
        pred = reg.predict(f_te[ax_te])
        r = metrics.regression_metrics(test.log10_m[ax_te], pred, n_boot=e.n_boot, level=e.level, seed=cfg.seed)
        out["rmse"], out["mae"] = r["rmse"], r["mae"]
    return out


def _subset(s: Split, idx: np.ndarray) -> Split:
    return Split(s.images[idx], s.labels[idx], s.log10_m[idx])


def _axion(s: Split) -> Split:
    keep = (s.labels == 2) & np.isfinite(s.log10_m)
    return _subset(s, np.nonzero(keep)[0])


def _pct(f: float) -> str:
    return f"{100 * f:g}"


def _evaluate_init(cfg: SSLConfig, run: Run, inst: str, enc_name: str, init: str, encoder: torch.nn.Module,
                   train: Split, val: Split, test: Split, devices) -> dict:
    """All fine-tunes (label fractions, regression) and the linear probe of one initialisation."""
    f = cfg.finetune
    base = run.checkpoints / inst / enc_name / init
    out: dict[str, Any] = {"classify": {}}
    for frac in f.label_fractions:
        tr_idx = label_subset(train.labels, np.arange(len(train)), frac, f.min_per_class, cfg.seed)
        va_idx = label_subset(val.labels, np.arange(len(val)), frac, f.min_per_class, cfg.seed + 1)
        epochs = int(math.ceil(f.epochs * min(1.0 / frac, f.max_epoch_scale)))
        with run.stage(f"finetune/{inst}/{enc_name}/{init}/{_pct(frac)}%"):
            out["classify"][_pct(frac)] = finetune(cfg, encoder, "classify", _subset(train, tr_idx), _subset(val, va_idx),
                                                   test, base / f"classify-{_pct(frac)}", epochs, run.logs, devices)
    if f.regression:
        tr_ax, va_ax, te_ax = _axion(train), _axion(val), _axion(test)
        if len(tr_ax) >= 4 and len(va_ax) >= 2 and len(te_ax) >= 2:
            with run.stage(f"regress/{inst}/{enc_name}/{init}"):
                out["regress"] = finetune(cfg, encoder, "regress", tr_ax, va_ax, te_ax, base / "regress",
                                          f.regression_epochs, run.logs, devices)
    if f.linear_probe:
        with run.stage(f"probe/{inst}/{enc_name}/{init}"):
            out["probe"] = linear_probe(cfg, encoder, train, test)
    return out


def run_ssl(cfg: SSLConfig, run_dir: Path | str | None = None, devices: int | str = "auto") -> Run:
    """The whole study: data → pre-training → fine-tuning/probes/baselines → metrics → report."""
    if cfg.data.source == "simulate":  # fail before any work: every dataset must be a simulator preset
        missing = [i for i in cfg.data.instruments if not (PRESETS_DIR / f"{i}.yaml").is_file()]
        if missing:
            raise ConfigError(f"{STUDY}.data.instruments = {cfg.data.instruments}: no simulator preset for {missing} "
                              "(use hst, euclid, or a preset in darkml/lensing/presets)")
    run = Run.create(STUDY, cfg, path=run_dir)
    log.info("SSL study in %s: methods %s, encoders %s, datasets %s", run.path, cfg.methods, cfg.encoders,
             cfg.data.instruments)
    for inst in cfg.data.instruments:
        with run.stage(f"data/{inst}"):
            train_all, test = load_data(cfg, run, inst)
        tr_idx, va_idx = _train_val(train_all.labels, cfg.data.val_fraction, cfg.seed)
        train, val = _subset(train_all, tr_idx), _subset(train_all, va_idx)
        run.update_metrics({"data": {inst: {"n_train": len(train), "n_val": len(val), "n_test": len(test),
                                            "image_shape": list(train.images.shape[1:])}}})
        for enc_name in cfg.encoders:
            encoder0 = build_encoder(enc_name, image_size=train.images.shape[-1], patch_size=cfg.patch_size, seed=cfg.seed)
            res = _evaluate_init(cfg, run, inst, enc_name, "supervised", encoder0, train, val, test, devices)
            run.update_metrics({"results": {inst: {enc_name: {"supervised": res}}}})
            for method in cfg.methods:
                with run.stage(f"pretrain/{inst}/{enc_name}/{method}"):
                    encoder, info = pretrain_encoder(cfg, method, enc_name, train.images, val.images,
                                                     run.checkpoints / inst / enc_name / method, run.logs, devices)
                res = _evaluate_init(cfg, run, inst, enc_name, method, encoder, train, val, test, devices)
                res["pretrain"] = info
                run.update_metrics({"results": {inst: {enc_name: {method: res}}}})
    run.update_metrics({"summary": summarise(cfg, run.metrics())})
    write_report(run, cfg)
    return run


# ---------------------------------------------------------------------------------------
# summary and report
# ---------------------------------------------------------------------------------------
def summarise(cfg: SSLConfig, m: dict) -> dict:
    """Count the (dataset, encoder, method) triples where SSL + fine-tuning ≥ supervised in
    macro AUC with all labels (the paper's claim), and the same at every label fraction."""
    res = m.get("results", {})
    out: dict[str, Any] = {"ssl_ge_supervised": {}, "pairs": []}
    for frac in cfg.finetune.label_fractions:
        key = _pct(frac)
        n = k = 0
        for inst, encs in res.items():
            for enc, inits in encs.items():
                sup = inits.get("supervised", {}).get("classify", {}).get(key, {}).get("macro_auc", {}).get("value")
                for meth in cfg.methods:
                    v = inits.get(meth, {}).get("classify", {}).get(key, {}).get("macro_auc", {}).get("value")
                    if sup is None or v is None:
                        continue
                    n += 1
                    k += v >= sup
                    if frac == 1.0:
                        out["pairs"].append({"dataset": inst, "encoder": enc, "method": meth, "supervised": sup, "ssl": v,
                                             "ssl_ge_supervised": bool(v >= sup)})
        out["ssl_ge_supervised"][key] = {"count": int(k), "of": int(n)}
    return out


def _get(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _paper_cell(inst: str, method: str, enc: str) -> tuple[str, str]:
    v = PAPER_TABLES.get(inst, {}).get((method, paper_encoder(enc)))
    return (f"{v[0]:.3f}", f"{v[1]:.3f}") if v else ("–", "–")


def _ordered_instruments(cfg: SSLConfig) -> list[str]:
    """The datasets with Model A (hst) and Model B (euclid) first, as in the paper."""
    return ([i for i in ("hst", "euclid") if i in cfg.data.instruments]
            + [i for i in cfg.data.instruments if i not in ("hst", "euclid")])


def _fig_mass(cfg: SSLConfig, run: Run):
    import matplotlib.pyplot as plt

    insts = _ordered_instruments(cfg)
    nr, nc = len(cfg.encoders), len(insts)
    fig, axes = plt.subplots(nr, nc, figsize=(4.6 * nc, 4.2 * nr), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    any_data = False
    for i, enc in enumerate(cfg.encoders):
        for j, inst in enumerate(insts):
            ax = axes[i][j]
            lo, hi = -24.0, -22.0
            for k, init in enumerate(["supervised", *cfg.methods]):
                p = run.checkpoints / inst / enc / init / "regress" / "predictions.npz"
                if not p.is_file():
                    continue
                d = np.load(p)
                t, y = d["true"], d["pred"]
                if len(t) < 2:
                    continue
                any_data = True
                lo, hi = min(lo, float(t.min())), max(hi, float(t.max()))
                edges = np.linspace(t.min(), t.max() + 1e-9, 9)
                mid, med, q16, q84 = [], [], [], []
                for a, b in zip(edges[:-1], edges[1:]):
                    s = (t >= a) & (t < b)
                    if s.sum() >= 2:
                        mid.append(0.5 * (a + b))
                        med.append(np.median(y[s]))
                        q16.append(np.quantile(y[s], 0.16))
                        q84.append(np.quantile(y[s], 0.84))
                if not mid:
                    continue
                col = "k" if init == "supervised" else colors[(k - 1) % len(colors)]
                lab = "supervised (random init)" if init == "supervised" else METHOD_LABELS[init]
                med_a = np.array(med)
                ax.errorbar(np.array(mid) + 0.01 * (k - 3), med_a, yerr=[med_a - np.array(q16), np.array(q84) - med_a],
                            marker="o", ms=3, capsize=2, lw=1.2 if init != "supervised" else 2.0, color=col, label=lab)
            ax.plot([lo, hi], [lo, hi], ls="--", color="0.5", lw=1)
            ax.set_title(f"{_ds_label(inst)}, {enc}")
            ax.set_xlabel(r"simulated $\log_{10}(m_a/\mathrm{eV})$")
            ax.set_ylabel(r"predicted $\log_{10}(m_a/\mathrm{eV})$")
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig, any_data


def _fig_label_efficiency(cfg: SSLConfig, res: dict):
    import matplotlib.pyplot as plt

    insts, encs = cfg.data.instruments, cfg.encoders
    fig, axes = plt.subplots(len(insts), len(encs), figsize=(4.6 * len(encs), 3.8 * len(insts)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fr = cfg.finetune.label_fractions
    for i, inst in enumerate(insts):
        for j, enc in enumerate(encs):
            ax = axes[i][j]
            for k, init in enumerate(["supervised", *cfg.methods]):
                vals = [_get(res, inst, enc, init, "classify", _pct(f), "macro_auc") for f in fr]
                pts = [(f, v) for f, v in zip(fr, vals) if v]
                if not pts:
                    continue
                x = np.array([p[0] for p in pts]) * (1 + 0.03 * (k - 3))
                v = np.array([p[1]["value"] for p in pts])
                lo = np.array([p[1]["lo"] for p in pts])
                hi = np.array([p[1]["hi"] for p in pts])
                col = "k" if init == "supervised" else colors[(k - 1) % len(colors)]
                ax.errorbar(x, v, yerr=[np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)], marker="o", ms=3, capsize=2,
                            color=col, lw=2.0 if init == "supervised" else 1.2,
                            label="supervised (random init)" if init == "supervised" else METHOD_LABELS[init])
            ax.set_xscale("log")
            ax.set_xlabel("fraction of training labels")
            ax.set_ylabel("test macro AUC")
            ax.set_title(f"{_ds_label(inst)}, {enc}")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fig_pretrain(cfg: SSLConfig, res: dict):
    import matplotlib.pyplot as plt

    insts, encs = cfg.data.instruments, cfg.encoders
    fig, axes = plt.subplots(2, len(insts) * len(encs), figsize=(3.8 * len(insts) * len(encs), 6.0), squeeze=False)
    col = 0
    for inst in insts:
        for enc in encs:
            for meth in cfg.methods:
                hist = _get(res, inst, enc, meth, "pretrain", "history", default=[]) or []
                ep = [h["epoch"] for h in hist if h.get("train_loss") is not None]
                if not ep:
                    continue
                axes[0][col].plot(ep, [h["train_loss"] for h in hist if h.get("train_loss") is not None], marker=".", label=meth)
                es = [(h["epoch"], h["val_embed_std"]) for h in hist if h.get("val_embed_std") is not None]
                if es:
                    axes[1][col].plot(*zip(*es), marker=".", label=meth)
            axes[0][col].set_title(f"{inst}, {enc}")
            axes[0][col].set_ylabel("pre-training loss")
            axes[1][col].set_ylabel("collapse index (val views)")
            axes[1][col].set_xlabel("epoch")
            col += 1
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _init_rows(cfg: SSLConfig, res: dict, key: str, init_col: str, random_label: str, cells) -> list[dict]:
    """One table row per (dataset, encoder, initialisation) holding a ``key`` result:
    dataset, encoder, the initialisation under ``init_col``, then ``cells(result)``."""
    rows = []
    for inst in cfg.data.instruments:
        for enc in cfg.encoders:
            for init in ["supervised", *cfg.methods]:
                r = _get(res, inst, enc, init, key)
                if r:
                    rows.append({"dataset": _ds_label(inst), "encoder": enc,
                                 init_col: random_label if init == "supervised" else METHOD_LABELS[init], **cells(r)})
    return rows


def write_report(run: Run, cfg: SSLConfig | None = None) -> Path:
    """Tables 1 and 2, Fig. 2, label efficiency, linear probes, pre-training diagnostics."""
    from darkml.report import Report, fmt_ci

    cfg = cfg or run.load_config(SSLConfig)
    m = run.metrics()
    res = m.get("results", {})
    rep = Report(f"Self-supervised learning on strong-lensing images — {cfg.preset}",
                 subtitle="Deshmukh, Sachdev, Gleyzer & Toomey (2023): contrastive, BYOL, SimSiam and DINO pre-training, "
                          "fine-tuned against supervised baselines")
    quick_encs = [e for e in cfg.encoders if e not in ("resnet50", "vit")]
    rep.add_text(
        "<p>Each encoder is pre-trained without labels on the training images, then fine-tuned with a fully connected "
        "head (3-way classification: no substructure / CDM subhalos / axion vortex; 1-output regression of "
        "log<sub>10</sub>(m<sub>a</sub>/eV) on the axion images). The <em>supervised</em> column is the same "
        "architecture trained from random initialisation with the same augmentations and schedule. Intervals are "
        f"{int(100 * cfg.eval.level)}% bootstrap intervals over the test set ({cfg.eval.n_boot} resamples). "
        "This paper's Model A is HST-like and Model B Euclid-like (the equivariant-network paper labels them the "
        f"other way round). Data source: <b>{cfg.data.source}</b>.</p>")
    if cfg.data.source == "toy":
        rep.add_note("Toy images (rings with blobs / line segments), not the lensing simulator: the numbers test the "
                     "pipeline, not the physics.")
    if quick_encs:
        rep.add_note(f"Small encoders {', '.join(quick_encs)} stand in for the paper's ResNet50 / ViT in this preset; "
                     "the paper columns refer to ResNet50 / ViT.")
    summ = m.get("summary", {}).get("ssl_ge_supervised", {})
    if summ:
        parts = [f"{k}% labels: {v['count']} of {v['of']}" for k, v in summ.items()]
        rep.add_text("<p><b>SSL + fine-tuning ≥ supervised (macro AUC)</b> in " + "; ".join(parts)
                     + " (dataset, encoder, method) combinations. The paper: 13 of 14 (one tie).</p>")
    for t, inst in enumerate(_ordered_instruments(cfg), start=1):
        rows = []
        for meth in cfg.methods:
            for enc in cfg.encoders:
                sup = _get(res, inst, enc, "supervised", "classify", "100", "macro_auc")
                ssl = _get(res, inst, enc, meth, "classify", "100", "macro_auc")
                ps, pf = _paper_cell(inst, meth, enc)
                rows.append({
                    "Method": METHOD_LABELS[meth], "Encoder": enc, "Supervised": sup or "–",
                    "Self-supervised + fine-tuning": ssl or "–",
                    "Δ (SSL − sup.)": f"{ssl['value'] - sup['value']:+.3f}" if sup and ssl else "–",
                    "paper: supervised": ps, "paper: SSL + fine-tuning": pf,
                })
        rep.add_heading(f"Table {t}: {_ds_label(inst)} test-set classification, macro AUC")
        rep.add_table(rows, f"{_ds_label(inst)}, 100% of the training labels; test set of "
                            f"{_get(m, 'data', inst, 'n_test', default='?')} images")
    rep.add_heading("Figure 2: predicted versus simulated axion mass")
    fig, ok = _fig_mass(cfg, run)
    rep.add_figure(fig, "Median prediction of log10(m_a/eV) in bins of the simulated value with 16–84% bands "
                        "(test axion images); left Model A (HST-like), right Model B (Euclid-like); black: supervised "
                        "baseline.", name="fig2-mass", figures_dir=run.figures)
    if not ok:
        rep.add_note("No regression predictions yet.")
    rows = _init_rows(cfg, res, "regress", "initialisation", "random (supervised)",
                      lambda r: {"RMSE [dex]": r["rmse"], "MAE [dex]": r["mae"], "n_train": r["n_train"]})
    rep.add_table(rows, "Axion-mass regression on the test axion images (log10 m_a; the prior spans 2 dex, "
                        "so predicting its mean gives RMSE ≈ 0.58 dex)")
    rep.add_heading("Label efficiency (beyond the paper)")
    rep.add_figure(_fig_label_efficiency(cfg, res), "Test macro AUC against the fraction of training labels used "
                   "for fine-tuning (the validation set is subsampled alike).", name="label-efficiency", figures_dir=run.figures)
    rows = []
    for inst in cfg.data.instruments:
        for enc in cfg.encoders:
            for init in ["supervised", *cfg.methods]:
                row: dict[str, Any] = {"dataset": _ds_label(inst), "encoder": enc,
                                       "initialisation": "random (supervised)" if init == "supervised" else METHOD_LABELS[init]}
                for f in cfg.finetune.label_fractions:
                    row[f"{_pct(f)}% labels"] = _get(res, inst, enc, init, "classify", _pct(f), "macro_auc") or "–"
                rows.append(row)
    rep.add_table(rows, "Macro AUC by fraction of training labels")
    if cfg.finetune.linear_probe:
        rep.add_heading("Linear probes of the frozen encoders (beyond the paper)")
        rows = _init_rows(cfg, res, "probe", "encoder weights", "random init",
                          lambda p: {"macro AUC": p["macro_auc"], "RMSE log10 m_a [dex]": p.get("rmse", "–")})
        rep.add_table(rows, "Logistic regression (classes) and ridge regression (axion mass) on frozen features; "
                            "'random init' probes the untrained encoder")
    rep.add_heading("Pre-training diagnostics")
    rows = []
    for inst in cfg.data.instruments:
        for enc in cfg.encoders:
            for meth in cfg.methods:
                p = _get(res, inst, enc, meth, "pretrain")
                if p:
                    rows.append({"dataset": _ds_label(inst), "encoder": enc, "method": meth, "epochs": p.get("epochs"),
                                 "train loss": fmt_ci(p.get("train_loss")), "val loss": fmt_ci(p.get("val_loss")),
                                 "collapse index, random init": fmt_ci(p.get("collapse_init")),
                                 "collapse index, pre-trained": fmt_ci(p.get("collapse_final")),
                                 "projector collapse index": fmt_ci(p.get("collapse_projector")),
                                 "images/s": fmt_ci(p.get("images_per_s"), 1)})
    rep.add_table(rows, "Final-epoch pre-training losses and collapse indices of the representation on the clean "
                        "validation images (eval mode; per-dimension std of the L2-normalised features × sqrt(dim): "
                        "≈1 spread isotropically, 0 collapsed; DINO's projector index is that of the teacher's "
                        "centred, sharpened distribution)")
    rep.add_figure(_fig_pretrain(cfg, res), "Pre-training loss and validation collapse index per epoch.",
                   name="pretrain-curves", figures_dir=run.figures)
    rep.add_config(cfg)
    rep.add_timings(m.get("timings_s", {}))
    return rep.write(run.report_path)
