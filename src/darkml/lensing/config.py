"""Configuration of the strong-lensing simulator: instrument, image, cosmology, main lens, source,
subhalo and vortex populations, dataset sizes (every range checked before any work)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from darkml.config import Section, StudyConfig

# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
#: hard limit on point masses (CDM subhalos + vortex points) per image. Both backends cost
#: time linear in this number (lenstronomy ~0.2 ms per point mass per 64x64 image at
#: supersampling 2); the torch backend's memory is independent of it (point masses are
#: summed in blocks), so the limit is about run time and catalogue size, not memory.
MAX_POINT_MASSES = 10_000

Range = tuple[float, float]


def _ordered(name: str, v: Range) -> Range:
    lo, hi = float(v[0]), float(v[1])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} = {list(v)}: bounds must be finite")
    if lo > hi:
        raise ValueError(f"{name} = {list(v)}: inverted range (need low <= high)")
    return lo, hi


class InstrumentCfg(Section):
    """Instrument and observation (lenstronomy's ObservationConfig numbers)."""

    name: str = "euclid"
    pixel_scale: float = Field(0.101, gt=0, le=10, description="arcsec per pixel")
    psf_fwhm: float = Field(0.16, gt=0, le=10, description="Gaussian PSF FWHM [arcsec]")
    psf_truncation: float = Field(5.0, ge=1, le=20, description="PSF kernel radius in units of sigma")
    exposure_time: float = Field(566.0, gt=0, description="seconds per exposure")
    num_exposures: int = Field(4, ge=1)
    read_noise: float = Field(4.2, ge=0, description="e- rms per exposure")
    ccd_gain: float = Field(3.1, gt=0, description="e-/ADU (recorded; data are in e-/s)")
    sky_brightness: float = Field(22.3, description="mag/arcsec^2")
    zero_point: float = Field(25.72, description="magnitude of a 1 e-/s source")


class ImageCfg(Section):
    num_pix: int = Field(64, gt=0, le=1024, description="image side in pixels")
    supersampling: int = Field(2, ge=1, le=8, description="rays per pixel side")
    noise: bool = True


class CosmologyCfg(Section):
    H0: float = Field(70.0, gt=0)
    Om0: float = Field(0.3, gt=0, lt=1)
    Ob0: float = Field(0.05, ge=0, lt=1)
    z_lens: float = Field(0.5, gt=0)
    z_source: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _z_order(self):
        if self.z_source <= self.z_lens:
            raise ValueError(f"cosmology.z_source = {self.z_source} must be > z_lens = {self.z_lens}")
        if self.Ob0 > self.Om0:
            raise ValueError(f"cosmology.Ob0 = {self.Ob0} must be <= Om0 = {self.Om0}")
        return self


def _check_mode(v, fixed_field: str):
    if v not in ("random", "fixed"):
        raise ValueError(f"choose random (drawn from the ranges) or fixed ({fixed_field})")
    return v


def _check_no_range_when_fixed(cfg, section: str, range_fields: tuple[str, ...]):
    """A ``mode = fixed`` section given one of its ranges is refused. A saved config lists every
    field, so only a range other than the default counts as given."""
    given = [f for f in range_fields
             if f in cfg.model_fields_set and getattr(cfg, f) != type(cfg).model_fields[f].default]
    if cfg.mode == "fixed" and given:
        raise ValueError(f"{section}.{given[0]} is a range but {section}.mode = fixed (the fixed {section} is "
                         f"{section}.fixed); remove {section}.{given[0]} or set {section}.mode = random")
    return cfg


class FixedLensCfg(Section):
    """The main lens as the public DeepLense scripts hold it (``lens.mode = fixed``)."""

    halo_mass: float = Field(1e12, gt=0, description="Msun; theta_E from the point-mass formula")
    e1: float = Field(0.1, gt=-0.9, lt=0.9, description="lenstronomy ellipticity component e1")
    e2: float = Field(0.0, gt=-0.9, lt=0.9, description="lenstronomy ellipticity component e2")
    gamma1: float = Field(0.05, gt=-0.5, lt=0.5, description="external shear component")
    gamma2: float = Field(0.0, gt=-0.5, lt=0.5, description="external shear component")

    @model_validator(mode="after")
    def _moduli(self):
        if math.hypot(self.e1, self.e2) >= 0.9:
            raise ValueError(f"lens.fixed.e1, e2 = {self.e1}, {self.e2}: |e| must be < 0.9")
        if math.hypot(self.gamma1, self.gamma2) >= 0.5:
            raise ValueError(f"lens.fixed.gamma1, gamma2 = {self.gamma1}, {self.gamma2}: |gamma| must be < 0.5")
        return self


#: the range fields a fixed main lens replaces (a fixed lens given one of them is an error)
LENS_RANGE_FIELDS = ("halo_mass", "ellipticity", "shear")


class MainLensCfg(Section):
    """The SIE + shear main lens: ``mode = random`` draws it per image from the ranges;
    ``mode = fixed`` holds it at ``lens.fixed`` (the public scripts' lens); the centre is
    drawn in both modes (0 by default)."""

    mode: Literal["random", "fixed"] = Field("random", description="random: drawn from the ranges; fixed: lens.fixed")
    halo_mass: Range = Field((8e11, 1.2e12), description="Msun, uniform; theta_E from the point-mass formula")
    ellipticity: Range = Field((0.0, 0.2), description="|e| uniform (lenstronomy e=(1-q)/(1+q)); angle uniform")
    shear: Range = Field((0.0, 0.1), description="|gamma_ext| uniform; angle uniform")
    fixed: FixedLensCfg = FixedLensCfg()
    center: float = Field(0.0, ge=0, le=1, description="lens centre uniform in [-c, c] arcsec per axis")

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v):
        return _check_mode(v, "lens.fixed")

    @field_validator("halo_mass", "ellipticity", "shear")
    @classmethod
    def _rng(cls, v, info):
        lo, hi = _ordered(f"lens.{info.field_name}", v)
        if info.field_name == "halo_mass" and lo <= 0:
            raise ValueError(f"lens.halo_mass = {list(v)}: masses must be > 0")
        if info.field_name == "ellipticity" and not (0 <= lo and hi < 0.9):
            raise ValueError(f"lens.ellipticity = {list(v)}: must lie in [0, 0.9)")
        if info.field_name == "shear" and not (0 <= lo and hi < 0.5):
            raise ValueError(f"lens.shear = {list(v)}: must lie in [0, 0.5)")
        return lo, hi

    @model_validator(mode="after")
    def _consistent(self):
        return _check_no_range_when_fixed(self, "lens", LENS_RANGE_FIELDS)


class FixedSourceCfg(Section):
    """The Sérsic source as the public scripts hold it (``source.mode = fixed``; centre still drawn)."""

    magnitude: float = Field(20.0, description="total magnitude")
    r_sersic: float = Field(0.25, gt=0, description="arcsec")
    n_sersic: float = Field(1.0, ge=0.3, le=8, description="Sersic index")
    e1: float = Field(-0.1, gt=-0.9, lt=0.9)
    e2: float = Field(0.1, gt=-0.9, lt=0.9)

    @model_validator(mode="after")
    def _modulus(self):
        if math.hypot(self.e1, self.e2) >= 0.9:
            raise ValueError(f"source.fixed.e1, e2 = {self.e1}, {self.e2}: |e| must be < 0.9")
        return self


#: the range fields a fixed source replaces
SOURCE_RANGE_FIELDS = ("magnitude", "r_sersic", "n_sersic", "ellipticity")


class SourceCfg(Section):
    """The Sérsic source: ``mode = random`` draws it per image from the ranges; ``mode = fixed``
    holds it at ``source.fixed`` (the public scripts' source). The centre is drawn in both."""

    mode: Literal["random", "fixed"] = Field("random", description="random: drawn from the ranges; fixed: source.fixed")
    magnitude: Range = Field((19.5, 20.5), description="total magnitude, uniform")
    r_sersic: Range = Field((0.15, 0.35), description="arcsec, uniform")
    n_sersic: Range = Field((0.7, 1.5), description="Sersic index, uniform")
    ellipticity: Range = Field((0.0, 0.3), description="|e| uniform; angle uniform")
    fixed: FixedSourceCfg = FixedSourceCfg()
    center: float = Field(0.35, ge=0, le=5, description="source centre uniform in [-c, c] arcsec per axis")

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v):
        return _check_mode(v, "source.fixed")

    @field_validator("magnitude", "r_sersic", "n_sersic", "ellipticity")
    @classmethod
    def _rng(cls, v, info):
        lo, hi = _ordered(f"source.{info.field_name}", v)
        if info.field_name == "r_sersic" and lo <= 0:
            raise ValueError(f"source.r_sersic = {list(v)}: must be > 0")
        if info.field_name == "n_sersic" and not (0.3 <= lo and hi <= 8):
            raise ValueError(f"source.n_sersic = {list(v)}: must lie in [0.3, 8]")
        if info.field_name == "ellipticity" and not (0 <= lo and hi < 0.9):
            raise ValueError(f"source.ellipticity = {list(v)}: must lie in [0, 0.9)")
        return lo, hi

    @model_validator(mode="after")
    def _consistent(self):
        return _check_no_range_when_fixed(self, "source", SOURCE_RANGE_FIELDS)


class CDMCfg(Section):
    """CDM point-mass subhalos. Defaults: the population the public DeepLense scripts drew (the
    papers' data): exactly 25 per image, dN/dM ∝ M^-0.9 on [1e6, 1e10] Msun (~3.8e10 Msun per
    image). The ``*-physical`` presets draw the scripts' docstring: Poisson(25), M^-1.9."""

    count: Literal["fixed", "poisson"] = Field("fixed", description="fixed: mean_number per image; poisson: Poisson(mean_number)")
    mean_number: float = Field(25.0, ge=0, description="subhalos per image (count fixed, an integer) or the Poisson mean")
    mass_min: float = Field(1e6, ge=0, description="Msun (0 allowed only for slope > -1)")
    mass_max: float = Field(1e10, gt=0, description="Msun")
    slope: float = Field(-0.9, ge=-5, le=1, description="dN/dM proportional to M**slope")
    r_min: float = Field(0.25, ge=0, description="arcsec; radius uniform in [r_min, r_max]")
    r_max: float = Field(2.0, gt=0, description="arcsec")
    max_number: int = Field(1000, ge=1, le=MAX_POINT_MASSES, description="hard cap on subhalos per image")

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, v):
        if v not in ("fixed", "poisson"):
            raise ValueError("choose fixed (mean_number per image) or poisson")
        return v

    @model_validator(mode="after")
    def _check(self):
        if not (math.isfinite(self.mass_min) and math.isfinite(self.mass_max)):
            raise ValueError(f"cdm.mass_min, mass_max = {self.mass_min:g}, {self.mass_max:g}: must be finite")
        if self.mass_min >= self.mass_max:
            raise ValueError(f"cdm.mass_min = {self.mass_min:g} must be < cdm.mass_max = {self.mass_max:g}")
        if self.mass_min == 0 and self.slope <= -1:
            raise ValueError(f"cdm.slope = {self.slope:g} with cdm.mass_min = 0: the subhalo number integral of "
                             f"M^{self.slope:g} diverges at M -> 0; need cdm.mass_min > 0 or cdm.slope > -1")
        if self.r_min >= self.r_max:
            raise ValueError(f"cdm.r_min = {self.r_min} must be < cdm.r_max = {self.r_max}")
        if self.count == "fixed":
            if self.mean_number != int(self.mean_number):
                raise ValueError(f"cdm.mean_number = {self.mean_number:g}: cdm.count = fixed needs a whole number "
                                 "of subhalos per image (or set cdm.count = poisson)")
            need = self.mean_number
        else:
            need = self.mean_number + 10 * math.sqrt(self.mean_number)
        if need > self.max_number:
            raise ValueError(
                f"cdm.mean_number = {self.mean_number:g}: too many subhalos per image ({need:.0f} "
                f"> cdm.max_number = {self.max_number}; the hard limit is {MAX_POINT_MASSES} point masses per image)"
            )
        return self

    def mean_total_mass(self) -> float:
        """Expected total subhalo mass per CDM image [Msun]: N <M> with <M> of the power law."""
        return self.mean_number * mean_subhalo_mass(self.mass_min, self.mass_max, self.slope)


def mean_subhalo_mass(mass_min: float, mass_max: float, slope: float) -> float:
    """<M> of dN/dM ∝ M**slope on [mass_min, mass_max] (closed form, log cases included)."""
    def prim(p: float) -> float:  # ∫ M^p dM on the range
        if abs(p + 1) < 1e-12:
            return math.log(mass_max / mass_min)
        return (mass_max ** (p + 1) - mass_min ** (p + 1)) / (p + 1)

    return prim(slope + 1) / prim(slope)


class AxionCfg(Section):
    log10_mass: Range = Field((-24.0, -22.0), description="log10(m_a / eV), uniform")
    n_points: int = Field(100, ge=1, le=MAX_POINT_MASSES, description="equal point masses along the vortex")
    vortex_mass: float = Field(3e10, gt=0, description="total vortex mass [Msun]")
    length_scale: float = Field(0.06, gt=0, description="L_half[arcsec] = length_scale * 1e-22 eV / (2 m_a)")

    @field_validator("log10_mass")
    @classmethod
    def _rng(cls, v):
        lo, hi = _ordered("axion.log10_mass", v)
        if not (-30 <= lo and hi <= -15):
            raise ValueError(f"axion.log10_mass = {list(v)}: must lie in [-30, -15]")
        return lo, hi


class DatasetCfg(Section):
    n_per_class_train: int = Field(30_000, ge=1, description="training images per class")
    n_per_class_test: int = Field(5_000, ge=1, description="test images per class (separate store)")
    chunk_size: int = Field(300, ge=3, le=30_000, description="samples per dataset chunk; multiple of 3")
    batch_size: int = Field(16, ge=1, le=4096, description="images rendered together by the torch backend (CPU eager 16, compiled 64, GPU 256+)")
    backend: Literal["torch", "lenstronomy"] = "torch"
    compile: bool = Field(False, description="torch.compile the torch backend's kernels (faster on CPU after a one-off compile)")

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, v):
        if v not in ("torch", "lenstronomy"):
            raise ValueError(f"dataset.backend = {v!r}: unknown backend (choose torch or lenstronomy)")
        return v

    @field_validator("chunk_size")
    @classmethod
    def _chunk(cls, v):
        if v % 3:
            raise ValueError(f"dataset.chunk_size = {v}: must be a multiple of 3 (classes interleave)")
        return v


class DetectabilityCfg(Section):
    """The ``detectability`` stage: ideal significance of the substructure, raw and after a
    substructure-free refit (docs/lensing-data.md, "Detectability")."""

    n_per_class: int = Field(64, ge=0, le=100_000, description="CDM and axion images measured per class (0: skip the stage)")
    split: Literal["train", "test"] = "test"
    max_iter: int = Field(40, ge=1, le=1000, description="Levenberg-Marquardt iterations at most")
    batch_size: int = Field(16, ge=1, le=4096, description="images refitted together")


class SensitivityCfg(Section):
    """The ``sensitivity`` stage: no-substructure vs CDM classifier AUC against the total subhalo
    mass per image (one dataset per CDM slope), beside the detectability oracle (off when
    ``slopes`` is empty; preset ``sensitivity``)."""

    slopes: list[float] = Field(default_factory=list, description="CDM mass-function slopes, one point each (empty: skip)")
    n_per_class_train: int = Field(1500, ge=10, description="training images per class and point (incl. validation)")
    n_per_class_test: int = Field(500, ge=10, description="test images per class and point")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    model: str = Field("resnet50", description="registered model name (darkml.learn.registry)")
    model_options: dict[str, Any] = Field(default_factory=lambda: {"width": 16})
    epochs: int = Field(8, ge=1, le=1000)
    lr: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=4096)
    n_detectability: int = Field(64, ge=2, description="CDM test images per point for the oracle")
    device: Literal["cpu", "auto"] = "cpu"

    @field_validator("slopes")
    @classmethod
    def _slopes(cls, v):
        for x in v:
            if not -5 <= x <= 1:
                raise ValueError(f"slope {x}: must lie in [-5, 1]")
        if len(set(v)) != len(v):
            raise ValueError(f"{v}: slopes must be distinct")
        return sorted(v)


class LensingSimConfig(StudyConfig):
    """The strong-lensing simulation study config (presets: ``euclid``, ``hst``, …)."""

    study: str = "lensing"
    instrument: InstrumentCfg = InstrumentCfg()
    image: ImageCfg = ImageCfg()
    cosmology: CosmologyCfg = CosmologyCfg()
    lens: MainLensCfg = MainLensCfg()
    source: SourceCfg = SourceCfg()
    cdm: CDMCfg = CDMCfg()
    axion: AxionCfg = AxionCfg()
    dataset: DatasetCfg = DatasetCfg()
    detectability: DetectabilityCfg = DetectabilityCfg()
    sensitivity: SensitivityCfg = SensitivityCfg()

    @model_validator(mode="after")
    def _sensitivity_points(self):
        for slope in self.sensitivity.slopes:  # every point must be a valid population (before any work)
            try:
                CDMCfg.model_validate({**self.cdm.model_dump(), "slope": slope})
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"sensitivity.slopes: {slope}: {msg}") from None
        return self


