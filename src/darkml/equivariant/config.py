"""Configuration of the equivariant-network benchmark, and the paper's Tables 1 and 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from darkml.config import Section, StudyConfig, TrainLogger, list_presets
from darkml.equivariant.models import MODELS
from darkml.lensing.dataset import PRESETS_DIR as SIM_PRESETS
from darkml.lensing.params import CLASS_NAMES  # noqa: F401 (re-exported)

PRESETS_DIR = Path(__file__).parent / "presets"
STUDY = "equivariant"


#: the paper's letters for our instrument-named datasets
PAPER_LABELS = {"euclid": "Model A (Euclid-like)", "hst": "Model B (HST-like)"}


#: Table 1 of the paper: (accuracy [%], macro AUC) per (dataset, model)
PAPER_TABLE1: dict[tuple[str, str], tuple[float, float]] = {
    ("euclid", "resnet50"): (96.86, 0.99740),
    ("euclid", "c8"): (99.02, 0.99967),
    ("euclid", "hnet"): (90.95, 0.98516),
    ("euclid", "etn"): (92.413, 0.99321),
    ("hst", "resnet50"): (98.67, 0.99926),
    ("hst", "c8"): (99.28, 0.99972),
    ("hst", "hnet"): (90.24, 0.98904),
    ("hst", "etn"): (97.42, 0.99770),
}


#: Table 2 of the paper: (RMSE, MSE, MAE) of the axion mass per (dataset, model); units not
#: stated in the paper (our target is log10(m_a / eV)), so compare rankings, not values
PAPER_TABLE2: dict[tuple[str, str], tuple[float, float, float]] = {
    ("euclid", "resnet50"): (0.01309, 1.31e-02, 0.01030),
    ("euclid", "c8"): (0.02504, 6.30e-04, 0.02096),
    ("euclid", "etn"): (0.00691, 4.78e-05, 0.00690),
    ("euclid", "hnet"): (0.02181, 7.88e-04, 0.02181),
    ("hst", "resnet50"): (0.01685, 2.87e-04, 0.01306),
    ("hst", "c8"): (0.00453, 2.07e-05, 0.00357),
    ("hst", "etn"): (0.00410, 1.69e-05, 0.00407),
    ("hst", "hnet"): (0.01068, 1.16e-04, 0.00818),
}


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
def _known_model(name: str, field: str) -> str:
    if name not in MODELS:
        raise ValueError(f"{name!r} is not a model (choose from {', '.join(sorted(MODELS))})")
    return name


class DataCfg(Section):
    """Which datasets, how large, where they live."""

    datasets: dict[str, str] = Field(default_factory=lambda: {"euclid": "euclid", "hst": "hst"},
                                     description="table name -> simulator preset (src/darkml/lensing/presets)")
    n_per_class_train: int = Field(30_000, ge=2, description="simulated training images per class (incl. validation)")
    n_per_class_test: int = Field(5_000, ge=2, description="test images per class (separate draw)")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of the training images held out for validation")
    sim_overrides: list[str] = Field(default_factory=list, description="extra key=value overrides for the simulator presets")
    dataset_dir: str | None = Field(None, description="directory for (reusable) datasets; default <run>/datasets")
    workers: int = Field(1, ge=1, description="simulation worker processes")
    device: str = Field("auto", description="simulation device: auto, cpu, cuda")

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: dict[str, str]):
        if not v:
            raise ValueError("data.datasets: at least one dataset is needed")
        known = list_presets(SIM_PRESETS)
        for name, preset in v.items():
            if preset not in known:
                sims = ", ".join(known)
                raise ValueError(f"data.datasets.{name} = {preset!r}: unknown simulator preset (available: {sims})")
        return v


class TrainCfg(Section):
    """Optimisation (paper: Adam, lr 1e-4, batch 64, 10 epochs, cross-entropy / MSE)."""
    logger: TrainLogger = Field("csv", description="csv, or tensorboard (CSV plus TensorBoard event files)")

    lr: float = Field(1e-4, gt=0, le=1)
    batch_size: int = Field(64, ge=1, le=8192)
    epochs: int = Field(10, ge=1, le=10_000)
    regress_epochs: int | None = Field(None, ge=1, le=10_000,
                                       description="epochs when task = regress (None: epochs); the axion class alone is a third of the images")
    patience: int | None = Field(None, ge=1, description="early stopping on val_loss (None: train all epochs)")
    optimizer: Literal["adam", "adamw", "sgd", "lamb"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    plateau_patience: int = Field(5, ge=1)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    schedule: Literal["plateau", "cosine"] = Field(
        "plateau", description="learning rate: plateau (×plateau_factor after plateau_patience epochs without a lower val_loss) "
                               "or cosine (linear warm-up, then cosine decay to 0 over the run)")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="cosine: share of the optimizer steps spent warming up")
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int | Literal["auto"] = "auto"
    precision: str | None = Field(None, description="None: 16-mixed on GPU, 32-true on CPU; or bf16-mixed, 32-true …")
    channels_last: bool = Field(False, description="channels-last memory format (helps convs under AMP on GPU)")
    num_workers: int = Field(0, ge=0, le=64)
    eval_batch_size: int = Field(256, ge=1)


class EvalCfg(Section):
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples of the test set")
    level: float = Field(0.68, gt=0, lt=1, description="confidence level of the intervals")
    tta_models: list[str] = Field(default_factory=lambda: ["resnet50"],
                                  description="models also evaluated with test-time D4 averaging")
    tta: Literal["c4", "d4"] = Field("d4", description="c4: 4 rotations by 90°; d4: rotations and reflections")
    mass_oracle: bool = Field(True, description="regression: the Bayes-optimal log10 m_a of every axion test image "
                                                "(the physical ceiling, lensing.mass_oracle; simulated datasets only)")
    oracle_grid: int = Field(101, ge=3, le=2001, description="mass-oracle grid points over the axion.log10_mass prior")

    @field_validator("tta_models")
    @classmethod
    def _models(cls, v):
        return [_known_model(m, "eval.tta_models") for m in v]


class DataEfficiencyCfg(Section):
    enabled: bool = True
    fractions: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0])
    models: list[str] = Field(default_factory=lambda: ["resnet50", "c8"])
    datasets: list[str] = Field(default_factory=lambda: ["euclid"])
    equal_steps: bool = Field(True, description="scale epochs by 1/fraction so every run takes ~the same optimizer steps")
    max_epochs: int = Field(100, ge=1, description="cap on the scaled epochs")
    patience: int | None = Field(10, ge=1, description="early stopping for the scaled runs")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v):
        for f in v:
            if not 0 < f <= 1:
                raise ValueError(f"data_efficiency.fractions: {f}: must be in (0, 1]")
        return sorted(set(v))

    @field_validator("models")
    @classmethod
    def _models(cls, v):
        return [_known_model(m, "data_efficiency.models") for m in v]


class BenchmarkConfig(StudyConfig):
    """``darkml equivariant`` configuration (presets ``quick``, ``paper``)."""

    study: str = STUDY
    task: Literal["classify", "regress"] = "classify"
    models: list[str] = Field(default_factory=lambda: ["resnet50", "c8", "hnet", "etn"])
    model_options: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                     description="per-model constructor keywords, e.g. {c8: {width: 0.25}}")
    data: DataCfg = DataCfg()
    train: TrainCfg = TrainCfg()
    eval: EvalCfg = EvalCfg()
    data_efficiency: DataEfficiencyCfg = DataEfficiencyCfg()

    @field_validator("models", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):  # --set models=resnet50,c8
            v = [m.strip() for m in v.split(",") if m.strip()]
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v):
        if not v:
            raise ValueError("models: at least one model is needed")
        return [_known_model(m, "models") for m in v]

    @field_validator("model_options")
    @classmethod
    def _options(cls, v):
        for m in v:
            _known_model(m, "model_options")
        return v

    @model_validator(mode="after")
    def _cross(self):
        for d in self.data_efficiency.datasets:
            if d not in self.data.datasets:
                raise ValueError(f"data_efficiency.datasets: {d!r} is not in data.datasets ({', '.join(self.data.datasets)})")
        n_val = int(round(self.data.val_fraction * self.data.n_per_class_train))
        if n_val < 1 or self.data.n_per_class_train - n_val < 1:
            raise ValueError(f"data.n_per_class_train = {self.data.n_per_class_train} with val_fraction = "
                             f"{self.data.val_fraction}: need >= 1 training and >= 1 validation image per class")
        return self

    @property
    def num_outputs(self) -> int:
        return 3 if self.task == "classify" else 1
