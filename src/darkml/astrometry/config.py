"""Configuration of the astrometric-lensing study (Vattis, Toomey & Koushiappas).

Every number carries its unit in the field name or description and an allowed range;
``--set`` overrides are validated before any work starts.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ..config import Section, StudyConfig, TrainLogger

#: Table I of the paper: quasar count N_q and per-quasar velocity error sigma_u [µas/yr].
SCENARIOS: dict[str, tuple[float, float]] = {
    "A": (1e8, 1.0),
    "B": (1e8, 0.1),
    "C": (1e9, 1.0),
    "D": (1e9, 0.1),
    "E": (3e9, 1.0),
}


class Scenario(Section):
    """An astrometric survey: number of quasars and per-quasar proper-motion error."""

    n_q: float = Field(gt=0, description="number of quasars on the sky")
    sigma_u: float = Field(gt=0, description="per-quasar proper-motion uncertainty [µas/yr]")


class PopulationCfg(Section):
    """Subhalo population (Sec. II B)."""

    m_min: float = Field(1e7, gt=0, description="lowest subhalo mass drawn [Msun]")
    m_max: float = Field(1e10, gt=0, description="highest subhalo mass drawn [Msun]")
    slope: float = Field(-1.9, lt=-1, description="dN/dM ∝ M^slope")
    n_norm: float = Field(150.0, gt=0, description="expected number of subhalos in [m_norm_min, m_norm_max]")
    m_norm_min: float = Field(1e8, gt=0, description="[Msun]")
    m_norm_max: float = Field(1e10, gt=0, description="[Msun]")
    r_einasto_kpc: float = Field(199.0, gt=0)
    gamma_einasto: float = Field(0.678, gt=0)
    r_min_kpc: float = Field(0.0, ge=0, description="inner edge of the galactocentric radial range [kpc]")
    r_max_kpc: float = Field(300.0, gt=0, description="outer edge of the galactocentric radial range [kpc]")
    v0_kms: float = Field(220.0, gt=0, description="SHM velocity dispersion parameter v0 [km/s]")
    vesc_kms: float = Field(550.0, gt=0, description="escape speed truncating the SHM [km/s]")
    v_sun_kms: tuple[float, float, float] = Field((11.0, 232.0, 7.0), description="Sun's (U, V, W) velocity [km/s]")
    h: float = Field(0.7, gt=0, le=1.5, description="H0 / (100 km/s/Mpc) for rho_crit and the c(M) relation")

    @model_validator(mode="after")
    def _ranges(self) -> "PopulationCfg":
        if not self.m_min < self.m_max:
            raise ValueError(f"population.m_min = {self.m_min:g} must be < population.m_max = {self.m_max:g} (mass range inverted)")
        if not self.m_norm_min < self.m_norm_max:
            raise ValueError(f"population.m_norm_min = {self.m_norm_min:g} must be < population.m_norm_max = {self.m_norm_max:g}")
        if not self.r_min_kpc < self.r_max_kpc:
            raise ValueError(f"population.r_min_kpc = {self.r_min_kpc} must be < population.r_max_kpc = {self.r_max_kpc}")
        if not self.v0_kms < self.vesc_kms:
            raise ValueError(f"population.v0_kms = {self.v0_kms} must be < population.vesc_kms = {self.vesc_kms}")
        return self


class SkyCfg(Section):
    """HEALPix maps and their Cartesian projection."""

    nside: int = Field(32, ge=1, le=1024, description="HEALPix nside (power of two)")
    max_angle_deg: float = Field(20.0, gt=0, le=90, description="effect truncated this far from each subhalo [deg]")
    image_height: int = Field(64, ge=8, le=1024, description="projected image rows (Galactic latitude)")
    image_width: int = Field(128, ge=8, le=2048, description="projected image columns (Galactic longitude)")
    device: str = Field("auto", description="torch device for the signal maps: auto, cpu or cuda")
    compile: bool = Field(False, description="torch.compile the signal-map kernels (about 2x faster per map; "
                                             "20-90 s compilation per worker process, so worth it for large datasets)")
    precision: Literal["double", "mixed"] = Field(
        "double", description="signal-map arithmetic: double, or mixed (float32 far-field kernel, ~1e-7 of the map "
                              "maximum, about 2x faster on CPU)")

    @field_validator("nside")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"nside must be a power of two (1, 2, 4, …, 1024), got {v}")
        return v


class DataCfg(Section):
    """Sizes of the simulated datasets (per class and per scenario)."""

    scenarios: list[str] = Field(default_factory=lambda: ["A", "C", "D"], min_length=1)
    custom_scenarios: dict[str, Scenario] = Field(default_factory=dict, description="extra (N_q, sigma_u) surveys by name")
    n_train: int = Field(1000, ge=1, description="training maps per class and scenario")
    n_val: int = Field(200, ge=1, description="validation maps per class and scenario")
    n_test: int = Field(500, ge=2, description="held-out test maps per class and scenario")
    chunk_size: int = Field(64, ge=2, description="maps per dataset chunk (also the unit of parallel work)")

    @field_validator("chunk_size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"chunk_size must be even (signal/no-signal maps alternate), got {v}")
        return v

    @model_validator(mode="after")
    def _known(self) -> "DataCfg":
        known = set(SCENARIOS) | set(self.custom_scenarios)
        bad = [s for s in self.scenarios if s not in known]
        if bad:
            raise ValueError(f"data.scenarios: unknown scenario {bad[0]!r} (allowed: {', '.join(sorted(known))})")
        return self

    def survey(self, name: str) -> Scenario:
        if name in self.custom_scenarios:
            return self.custom_scenarios[name]
        n_q, sigma_u = SCENARIOS[name]
        return Scenario(n_q=n_q, sigma_u=sigma_u)


class TrainCfg(Section):
    """Classifier training (Sec. III B)."""

    logger: TrainLogger = Field("csv", description="csv, or tensorboard (CSV plus TensorBoard event files)")
    model: Literal["resnet18", "vgg11", "alexnet"] = "resnet18"
    compare_models: list[Literal["resnet18", "vgg11", "alexnet"]] = Field(
        default_factory=list, description="architectures also trained on compare_scenario (Fig. 5)"
    )
    compare_scenario: str = "C"
    width: int = Field(64, ge=4, le=64, description="ResNet-18 stage widths (w, 2w, 4w, 8w); 64 is the paper's network, "
                                                   "smaller widths keep the family for CPU-sized runs")
    lr: float = Field(1e-3, gt=0, le=1.0, description="initial Adam learning rate (paper: 1e-1; see docs)")
    model_lr: dict[Literal["resnet18", "vgg11", "alexnet"], Annotated[float, Field(gt=0, le=1.0)]] = Field(
        default_factory=dict, description="per-architecture initial rate overriding lr (e.g. {vgg11: 1e-3})"
    )
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    max_epochs: int = Field(50, ge=1)
    patience: int = Field(10, ge=1, description="early stopping: epochs without val-loss improvement")
    plateau_patience: int = Field(5, ge=0)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    precision: str | None = Field(None, description="None: 16-mixed on GPU, 32-true on CPU")
    devices: int | Literal["auto"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    num_workers: int = Field(0, ge=0)
    augment_flips: bool = Field(True, description="random l -> -l / b -> -b mirror flips (with the vector sign flip)")
    input_smoothing_px: float = Field(0.0, ge=0.0, le=20.0, description="Gaussian low-pass of the CNN's input [image px] "
                                      "(the χ² baseline uses 3); 0 = the paper's raw maps")
    train_sizes: list[int] = Field(default_factory=list, description="learning curve: also train on the first n training "
                                   "maps per class for each n (same network and epoch budget); [] = off")
    curve_scenarios: list[str] = Field(default_factory=lambda: ["C", "E"], description="scenarios of the learning curve")

    @field_validator("train_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(n < 2 for n in v):
            raise ValueError(f"every size must be >= 2 maps per class, got {v}")
        return sorted(set(v))


class EvalCfg(Section):
    n_boot: int = Field(1000, ge=10)
    ci_level: float = Field(0.68, gt=0, lt=1)
    attribution_scenario: str = "D"
    attribution_maps: int = Field(4, ge=0, description="signal test maps explained with integrated gradients")
    ig_steps: int = Field(32, ge=4)
    smoothing_px: float = Field(3.0, ge=0, description="Gaussian sigma for the positive-attribution map [px]")
    n_lenses: int = Field(5, ge=1, description="strongest lenses used by the localisation score")
    frontier: bool = Field(False, description="test the paper's claims on the run's scenarios (darkml astrometry frontier)")
    extrapolate_to: int = Field(25_000, ge=1, description="learning curve extrapolated to this many training maps per class "
                                                          "(paper: 25,000)")


class AstrometryConfig(StudyConfig):
    study: str = "astrometry"
    population: PopulationCfg = PopulationCfg()
    sky: SkyCfg = SkyCfg()
    data: DataCfg = DataCfg()
    train: TrainCfg = TrainCfg()
    evaluate: EvalCfg = EvalCfg()

    @model_validator(mode="after")
    def _scenario_refs(self) -> "AstrometryConfig":
        known = set(SCENARIOS) | set(self.data.custom_scenarios)
        for field, value in (("train.compare_scenario", self.train.compare_scenario),
                             ("evaluate.attribution_scenario", self.evaluate.attribution_scenario)):
            if value not in known:
                raise ValueError(f"{field}: unknown scenario {value!r} (allowed: {', '.join(sorted(known))})")
        npix = 12 * self.sky.nside**2
        for name in self.data.scenarios:
            s = self.data.survey(name)
            if s.n_q < npix:
                where = f"data.custom_scenarios.{name}.n_q" if name in self.data.custom_scenarios else f"scenario {name}"
                raise ValueError(f"{where} = {s.n_q:g}: fewer quasars than the {npix} pixels of nside {self.sky.nside} "
                                 "(pixels without quasars); need n_q >= 12 nside^2")
        if self.train.train_sizes:
            big = [n for n in self.train.train_sizes if n > self.data.n_train]
            if big:
                raise ValueError(f"train.train_sizes = {self.train.train_sizes}: {big[0]} exceeds data.n_train = "
                                 f"{self.data.n_train} (sizes are subsets of the training maps)")
            bad = [s for s in self.train.curve_scenarios if s not in self.data.scenarios]
            if bad:
                raise ValueError(f"train.curve_scenarios: {bad[0]!r} is not among data.scenarios {self.data.scenarios}")
        return self
