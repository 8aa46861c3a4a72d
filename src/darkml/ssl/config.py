"""Configuration of the self-supervised study, and the paper's Tables 1 and 2."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from darkml.config import Section, StudyConfig, TrainLogger
from darkml.learn.ssl import METHODS
from darkml.lensing.dataset import PRESETS_DIR as SIM_PRESETS
from darkml.lensing.params import CLASS_NAMES  # noqa: F401 (re-exported)
from darkml.ssl.encoders import ENCODERS

Pair = tuple[float, float]

PRESETS_DIR = Path(__file__).parent / "presets"


STUDY = "ssl"


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
    logger: TrainLogger = Field("csv", description="csv, or tensorboard (CSV plus TensorBoard event files)")
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
    logger: TrainLogger = Field("csv", description="csv, or tensorboard (CSV plus TensorBoard event files)")
    batch_size: int = Field(128, ge=2, le=8192)
    lr: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd", "lamb"] = "adam"
    patience: int = Field(5, ge=1, description="early stopping on the validation loss")
    plateau_patience: int = Field(3, ge=1)
    schedule: Literal["plateau", "cosine"] = Field(
        "plateau", description="learning rate: plateau (×0.1 after plateau_patience epochs without a lower val_loss) "
                               "or cosine (linear warm-up, then cosine decay to 0 over the run)")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="cosine: share of the optimizer steps spent warming up")
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
    mass_oracle: bool = Field(True, description="the Bayes-optimal log10 m_a of every axion test image beside the "
                                                "regression (the physical ceiling, lensing.mass_oracle; simulated data)")
    oracle_grid: int = Field(101, ge=3, le=2001, description="mass-oracle grid points over the axion.log10_mass prior")


class SSLConfig(StudyConfig):
    """``darkml ssl`` configuration (presets ``quick``, ``paper``)."""

    study: str = STUDY
    methods: list[str] = Field(list(METHODS), description="pre-training methods")
    encoders: list[str] = Field(["resnet50", "vit"], description="encoders")
    patch_size: int = Field(8, ge=1, le=64, description="ViT patch size (8 → 64 tokens on 64×64 images)")
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    precision: str | None = Field(None, description="Lightning precision (None: 16-mixed on GPU, 32-true on CPU; "
                                                    "bf16-mixed on CPUs with AVX512-BF16/AMX)")
    channels_last: bool = Field(False, description="channels-last memory format for the convolutions (faster on CPU "
                                                   "and under AMP on GPU)")
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
        if self.data.source == "simulate":  # every dataset must be a simulator preset
            missing = [i for i in self.data.instruments if not (SIM_PRESETS / f"{i}.yaml").is_file()]
            if missing:
                raise ValueError(f"data.instruments = {self.data.instruments}: no simulator preset for {missing} "
                                 "(use hst, euclid, or a preset in darkml/lensing/presets)")
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


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
Pair = tuple[float, float]
