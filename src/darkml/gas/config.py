"""Configuration of the gas-skymap study (validated before any work starts).

Every field carries its allowed range and its source; ``docs/gas.md`` lists them all. The
``quick`` preset is sized for a 2-core CPU (32x32-pixel tiles of 1.875'), the ``paper``
preset follows the paper and the MOPRA DR3 grid (120x120 pixels of 30" per 1 deg tile).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional, Tuple, Union

from pydantic import Field, field_validator, model_validator

from ..config import Section, StudyConfig, TrainLogger, load_config
from .rings import RING_EDGES_KPC

__all__ = [
    "SkyCfg", "ConversionCfg", "DataCfg", "PrepCfg", "GPCfg", "CNNCfg", "HPSearchCfg", "EvalCfg", "GasConfig",
    "PRESETS_DIR", "load_gas_config",
]

PRESETS_DIR = Path(__file__).parent / "presets"


class SkyCfg(Section):
    """The MOPRA-like synthetic survey (see synthetic.py for the physics and sources)."""

    n_tiles: int = Field(50, ge=1, le=360, description="1 deg x 1 deg tiles along l (MOPRA: 50, l = 300-350 deg)")
    l_start_deg: float = Field(300.0, ge=0.0, lt=360.0, description="longitude of the first tile's low edge [deg]")
    pixels_per_tile: int = Field(120, ge=12, le=512, description="pixels per tile side (MOPRA DR3: 120 px of 30\")")
    channel_kms: float = Field(1.0, gt=0.0, le=5.0, description="velocity channel of the simulated cube [km/s]")
    ring_edges_kpc: List[float] = Field(list(RING_EDGES_KPC), description="Galactocentric ring edges [kpc] (Karwin)")
    r_gas_max_kpc: float = Field(20.0, gt=8.5, le=50.0, description="outer edge of the molecular disc [kpc]")
    beta_min: float = Field(2.5, ge=1.0, le=4.0, description="power-spectrum slope range P(k) ~ k^-beta (CO maps: 2.5-2.8)")
    beta_max: float = Field(2.8, ge=1.0, le=4.0)
    lognormal_sigma: float = Field(0.8, gt=0.0, le=3.0, description="width of the ln(column) PDF inside clouds")
    cloud_fill: float = Field(0.3, gt=0.0, le=1.0, description="fraction of a ring plane covered by clouds")
    cloud_beta: float = Field(3.5, ge=1.0, le=5.0, description="power-spectrum slope of the cloud-mask field")
    cloud_edge: float = Field(0.15, gt=0.0, le=2.0, description="softness of cloud edges (in units of the mask field's std)")
    tau13_peak: float = Field(0.3, gt=0.0, le=10.0, description="mean peak 13CO optical depth in clouds at the molecular-ring maximum")
    sigma_v_kms: float = Field(2.0, gt=0.1, le=20.0, description="mean line dispersion [km/s]")
    sigma_v_scatter: float = Field(0.1, ge=0.0, le=1.0, description="std of ln(sigma_v) across a plane (smooth field)")
    virial_index: float = Field(0.5, ge=0.0, le=1.0, description="sigma_v ~ (column/mean)^index (virial: 0.5, Heyer+2009)")
    sigma_v_min_kms: float = Field(0.5, gt=0.0, le=20.0, description="floor of the line dispersion [km/s]")
    sigma_v_max_kms: float = Field(8.0, gt=0.0, le=50.0, description="cap of the line dispersion [km/s]")
    tex_k: float = Field(10.0, gt=3.0, le=100.0, description="excitation temperature [K] (LTE conversion assumes 10 K)")
    tex_scatter_k: float = Field(0.0, ge=0.0, le=20.0, description="std of Tex across a plane [K] (smooth field)")
    beam_fwhm_arcmin: float = Field(0.6, ge=0.0, le=10.0, description="MOPRA beam FWHM [arcmin]")
    rms_12co_k: float = Field(1.5, ge=0.0, description="12CO noise per 0.1 km/s channel [K] (MOPRA pilot)")
    rms_13co_k: float = Field(0.7, ge=0.0, description="13CO noise per 0.1 km/s channel [K] (MOPRA pilot)")
    rms_tile_scatter: float = Field(0.2, ge=0.0, le=2.0, description="std of ln(rms) between tiles (weather, Tsys)")
    stripes_per_tile: float = Field(0.5, ge=0.0, le=20.0, description="mean number of zero-valued scan stripes per tile and isotopologue")
    floor_realizations: int = Field(2, ge=0, le=20, description="extra independent skies of the test tiles for the noise floor")

    @model_validator(mode="after")
    def _check(self):
        if self.beta_min > self.beta_max:
            raise ValueError(f"sky.beta_min = {self.beta_min} must be <= sky.beta_max = {self.beta_max}")
        if self.sigma_v_min_kms > self.sigma_v_max_kms:
            raise ValueError(f"sky.sigma_v_min_kms = {self.sigma_v_min_kms} must be <= "
                             f"sky.sigma_v_max_kms = {self.sigma_v_max_kms}")
        e = self.ring_edges_kpc
        if len(e) < 2 or any(b <= a for a, b in zip(e[:-1], e[1:])) or e[0] < 0:
            raise ValueError(f"sky.ring_edges_kpc = {e}: must be >= 2 increasing radii >= 0")
        return self

    @property
    def n_rings(self) -> int:
        return len(self.ring_edges_kpc) - 1


class ConversionCfg(Section):
    """Brightness -> column density (radiative.py): the survey's conversion factors."""

    xco: Union[float, List[float]] = Field(2.0e20, description="X_CO [cm^-2/(K km/s)], one value or one per ring (Bolatto+2013)")
    eta_mb: float = Field(0.55, gt=0.0, le=1.0, description="main-beam efficiency, T_mb = T_A*/eta (MOPRA extended beam)")
    lte_tex_k: float = Field(10.0, gt=3.0, le=100.0, description="Tex assumed by the 13CO LTE column (facts: 10 K)")
    efficiency_order: Literal["before_lte", "after_lte"] = Field(
        "before_lte", description="13CO: divide T_A* by eta_mb before the non-linear LTE formula (physical: it is "
                                  "written for T_mb) or divide the column after it (the companion data-preparation code)")

    @model_validator(mode="after")
    def _check(self):
        xs = self.xco if isinstance(self.xco, list) else [self.xco]
        if any(x <= 0 for x in xs):
            raise ValueError(f"conversion.xco = {self.xco}: must be > 0")
        return self

    def xco_per_ring(self, n_rings: int) -> list[float]:
        if isinstance(self.xco, list):
            if len(self.xco) != n_rings:
                raise ValueError(f"conversion.xco has {len(self.xco)} values: must be one number or one per ring ({n_rings})")
            return [float(x) for x in self.xco]
        return [float(self.xco)] * n_rings


class DataCfg(Section):
    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data):
        """Runs written before release discovery stored file globs; the release is now classified by header."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("mopra_12co_glob", "mopra_13co_glob", "mopra_rms_suffix")}
        return data

    source: Literal["synthetic", "mopra"] = Field("synthetic", description="synthetic sky or local MOPRA FITS cubes")
    mopra_dir: Optional[str] = Field(None, description="folder with MOPRA cubes (source = mopra)")
    mopra_min_footprint: float = Field(0.5, ge=0.0, le=1.0, description="tiles whose area the cubes cover less "
                                       "than this fraction of are skipped (slivers at a release's edge)")
    train_l_deg: Tuple[float, float] = Field((300.0, 340.0), description="training region [deg] (paper)")
    test_l_deg: Tuple[float, float] = Field((340.0, 350.0), description="test region [deg] (paper)")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of training tiles held out for validation")
    workers: int = Field(1, ge=1, le=256, description="processes for simulating tiles")

    @model_validator(mode="after")
    def _check(self):
        for name in ("train_l_deg", "test_l_deg"):
            a, b = getattr(self, name)
            if not a < b:
                raise ValueError(f"data.{name} = {(a, b)}: must be (lo, hi) with lo < hi")
        (a, b), (c, d) = self.train_l_deg, self.test_l_deg
        if a < d and c < b:
            raise ValueError(f"data.train_l_deg {self.train_l_deg} and data.test_l_deg {self.test_l_deg} overlap: regions must be disjoint")
        if self.source == "mopra" and not self.mopra_dir:
            raise ValueError("data.mopra_dir must name the folder of FITS cubes when data.source = mopra")
        return self


class PrepCfg(Section):
    smooth_sigma_px: float = Field(1.0, ge=0.0, le=10.0, description="Gaussian filter on source and target [px] (paper)")
    mask_nsigma: float = Field(3.0, ge=0.0, le=20.0, description="13CO pixels below this many noise sigmas set to 0 (paper)")
    weight_smooth_px: float = Field(2.0, ge=0.0, le=20.0, description="smoothing of the target for the WMAE weights [px]")


class GPCfg(Section):
    enabled: bool = True
    patch: int = Field(9, ge=3, le=31, description="pixels in a horizontal/vertical patch (paper: 9)")
    stride: int = Field(8, ge=1, le=64, description="stride between training patches (paper: 8)")
    max_train_points: int = Field(7840, ge=16, le=20000, description="training patches per GP (paper: 7840); subsampled above")
    iters: int = Field(100, ge=1, le=5000, description="Adam steps on the exact marginal likelihood")
    lr: float = Field(0.05, gt=0.0, le=1.0)
    min_active: int = Field(5, ge=1, description="bins with fewer non-zero training targets use the pooled GP")
    predict_chunk: int = Field(2048, ge=64, description="test points per prediction chunk")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the GPs are fitted and evaluated")

    @field_validator("patch")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd")
        return v


class CNNCfg(Section):
    enabled: bool = True
    logger: TrainLogger = Field("csv", description="csv, or tensorboard (CSV plus TensorBoard event files)")
    losses: List[Literal["wmae", "poisson"]] = Field(["wmae", "poisson"], description="one network per loss (paper: both)")
    window: int = Field(7, ge=1, le=31, description="patch side D1 = D2 (paper: 7)")
    filters: int = Field(128, ge=1, le=2048, description="convolution filters K (paper: 128)")
    hidden: List[int] = Field([64, 32], description="widths of the fully-connected hidden layers (paper: two)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    ring_feature: bool = Field(True, description="give the network the ring's radius (one network for all bins)")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="LAMB learning rate (paper: 1e-3)")
    optimizer: Literal["lamb", "adam", "adamw", "sgd"] = "lamb"
    batch_size: int = Field(8192, ge=1, le=1 << 20, description="patches per batch (paper: 8192)")
    epochs: int = Field(200, ge=1, le=10000, description="training epochs (paper: 200 iterations)")
    patches_per_epoch: Optional[int] = Field(None, ge=1, description="random patches per epoch (None: all)")
    patience: Optional[int] = Field(None, ge=1, description="early stopping on validation error (None: off)")
    max_weight: float = Field(30.0, ge=1.0, le=1000.0, description="WMAE sigma: bright/dim weight ratio at t=0 (paper: 30)")
    weighting: Literal["text", "literal"] = Field("text", description="gamma_t as the paper's text describes, or its formula verbatim")
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    num_workers: int = Field(0, ge=0, le=64)

    @field_validator("window")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd")
        return v

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("must list >= 1 positive layer widths")
        return v


class HPSearchCfg(Section):
    enabled: bool = True
    n_trials: int = Field(20, ge=1, le=10000)
    sampler: Literal["gp", "tpe"] = Field("tpe", description="Optuna GPSampler or TPE (replaces SHERPA)")
    loss: Literal["wmae", "poisson"] = "wmae"
    epochs: int = Field(5, ge=1, le=1000)
    patches_per_epoch: Optional[int] = Field(200_000, ge=1)
    lr_range: Tuple[float, float] = (1e-4, 1e-2)
    filters_range: Tuple[int, int] = (16, 256)
    windows: List[int] = Field([3, 5, 7, 9, 11], description="candidate window sizes (odd)")
    max_weight_range: Tuple[float, float] = (1.0, 50.0)

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if not v or any(w % 2 == 0 or w < 1 for w in v):
            raise ValueError("must be a non-empty list of odd positive integers")
        return v

    @model_validator(mode="after")
    def _check(self):
        for n in ("lr_range", "filters_range", "max_weight_range"):
            a, b = getattr(self, n)
            if not 0 < a <= b:
                raise ValueError(f"hpsearch.{n} = {(a, b)}: must be (lo, hi) with 0 < lo <= hi")
        return self


class EvalCfg(Section):
    noise_floor: bool = Field(True, description="measure the noise floor (synthetic sky only)")
    floor_bins: int = Field(24, ge=2, le=1000, description="source-value bins of the conditional-median predictor")
    maps_shown: int = Field(3, ge=0, le=20, description="test planes shown as predicted-vs-true maps")
    n_boot: int = Field(1000, ge=0, le=100000, description="bootstrap resamples of the planes for median CIs")
    hotspot: Literal["bin", "bin_normalised", "plane"] = Field(
        "bin", description="hot spots: >= 1 std above the mean of the velocity bin over the test region (paper's text), "
                           "of the bin after normalising each plane, or of the plane alone (metrics.py)")


class GasConfig(StudyConfig):
    study: str = "gas"
    threads: Optional[int] = Field(None, ge=1, le=256, description="torch CPU threads (None: torch's default)")
    sky: SkyCfg = SkyCfg()
    conversion: ConversionCfg = ConversionCfg()
    data: DataCfg = DataCfg()
    prep: PrepCfg = PrepCfg()
    gp: GPCfg = GPCfg()
    cnn: CNNCfg = CNNCfg()
    hpsearch: HPSearchCfg = HPSearchCfg()
    eval: EvalCfg = EvalCfg()

    @model_validator(mode="after")
    def _regions(self):
        self.conversion.xco_per_ring(self.sky.n_rings)
        if self.data.source == "synthetic":
            lo = self.sky.l_start_deg
            hi = lo + self.sky.n_tiles
            for name in ("train_l_deg", "test_l_deg"):
                a, b = getattr(self.data, name)
                if a < lo or b > hi:
                    raise ValueError(f"data.{name} = {(a, b)} lies outside the simulated sky [{lo}, {hi}] deg")
        return self


def load_gas_config(preset: str = "quick", overrides=()) -> GasConfig:
    """Load a preset from ``presets/`` with ``a.b=value`` overrides (raises ConfigError)."""
    return load_config(GasConfig, PRESETS_DIR, preset, overrides=list(overrides or ()), study="gas")

