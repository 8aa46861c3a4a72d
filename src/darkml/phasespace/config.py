"""TODO."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from darkml.config import Section, StudyConfig, TrainLogger
from darkml.phasespace import flows, gauss, mocks
from darkml.physics import constants as const

STUDY = "phasespace"


PRESETS_DIR = Path(__file__).parent / "presets"


ACC_UNIT = const.KPC_PER_GYR2_PER_KMS2_PER_KPC  # (km/s)^2/kpc -> kpc/Gyr^2


RHO_UNIT = 1e7  # densities reported in 1e7 Msun/kpc^3


# =============================================================================================
# Configuration
# =============================================================================================
class DiscComponentCfg(Section):
    fraction: float = Field(1.0, gt=0, le=1, description="share of the stars in the observed ball")
    sigma_kms: float = Field(30.0, ge=5, le=120, description="velocity dispersion (v_R, v_z) [km/s]")
    scale_length_kpc: float = Field(2.5, ge=0.5, le=20, description="radial scale of the guiding-centre weight [kpc]")


#: named mock galaxies: MWPotential2014 parameters and the tracer populations that go with them.
#: "mw2014": galpy's MWPotential2014 with a thin (σ 25 km/s) + thick (45 km/s) tracer disc — the
#: hard case, a sharp mid-plane (disc b = 0.28 kpc; smoothed ρ at the Sun 7.6e7 Msun/kpc^3).
#: "h277-like": the paper's galaxy as far as it is described — smoothed ρ at the Sun 3.09e7 (h277:
#: 3.06e7), a thicker disc (b = 0.9 kpc, above the simulation's 0.173 kpc resolution) holding 35 %
#: of the radial force at R0 instead of 60 % (halo 60 %), and hotter tracers (35 / 60 km/s).
GALAXIES = {
    "mw2014": {"potential": {},                       # PotentialCfg's defaults: MWPotential2014 itself
               "components": [{"fraction": 0.8, "sigma_kms": 25.0, "scale_length_kpc": 2.5},
                              {"fraction": 0.2, "sigma_kms": 45.0, "scale_length_kpc": 2.5}]},
    "h277-like": {"potential": {"fractions": [0.05, 0.35, 0.6], "disc_a_kpc": 3.0, "disc_b_kpc": 0.9},
                  "components": [{"fraction": 0.7, "sigma_kms": 35.0, "scale_length_kpc": 2.5},
                                 {"fraction": 0.3, "sigma_kms": 60.0, "scale_length_kpc": 3.0}]},
}


class PotentialCfg(Section):
    """MWPotential2014's structure (mocks.MilkyWay2014): force shares at R0 and the disc's shape."""

    fractions: list[float] = Field(default_factory=lambda: [0.05, 0.6, 0.35],
                                   description="bulge, disc, halo shares of the radial force at R0 = 8 kpc (sum 1)")
    disc_a_kpc: float = Field(3.0, gt=0.1, le=20.0, description="Miyamoto-Nagai radial scale [kpc]")
    disc_b_kpc: float = Field(0.28, gt=0.01, le=5.0, description="Miyamoto-Nagai vertical scale [kpc]")

    @field_validator("fractions")
    @classmethod
    def _fr(cls, v):
        if len(v) != 3 or any(f < 0 for f in v) or abs(sum(v) - 1) > 1e-6:
            raise ValueError(f"needs three shares >= 0 (bulge, disc, halo) summing to 1, got {v}")
        return v


class MockCfg(Section):
    model: Literal["milkyway", "plummer"] = "milkyway"
    galaxy: Literal["mw2014", "h277-like"] = Field("mw2014", description="named mock galaxy (GALAXIES): sets potential "
                                                   "and components unless they are given explicitly")
    potential: PotentialCfg = PotentialCfg()
    n_stars: int = Field(20000, ge=200, le=50_000_000, description="expected stars in the observed ball")
    observer_kpc: list[float] = Field(default_factory=lambda: list(mocks.OBSERVER_KPC))
    radius_kpc: float = Field(mocks.SUPPORT_RADIUS_KPC, gt=0.2, le=30)
    components: list[DiscComponentCfg] = Field(
        default_factory=lambda: [DiscComponentCfg(**c) for c in GALAXIES["mw2014"]["components"]])
    plummer_mass_msun: float = Field(1.0e11, gt=0)
    plummer_scale_kpc: float = Field(8.0, gt=0)
    chunk_size: int = Field(50_000, ge=500, le=5_000_000)

    @field_validator("observer_kpc")
    @classmethod
    def _three(cls, v):
        if len(v) != 3:
            raise ValueError(f"needs 3 values (x, y, z) in kpc, got {len(v)}")
        if math.hypot(v[0], v[1]) <= 0:
            raise ValueError("observer must be off the z axis (cylindrical radius > 0)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _galaxy_defaults(cls, data):
        if isinstance(data, dict) and data.get("galaxy", "mw2014") in GALAXIES:
            g = GALAXIES[data.get("galaxy", "mw2014")]
            data = dict(data)
            data.setdefault("potential", g["potential"])
            data.setdefault("components", g["components"])
        return data

    @model_validator(mode="after")
    def _fractions(self):
        if self.model == "milkyway":
            tot = sum(c.fraction for c in self.components)
            if not self.components or abs(tot - 1) > 1e-6:
                raise ValueError(f"mock.components fractions sum to {tot:.4g}: must sum to 1")
            if math.hypot(*self.observer_kpc[:2]) - self.radius_kpc < 0.5:
                raise ValueError("mock.radius_kpc too large: the observed ball must stay > 0.5 kpc from the z axis")
        return self


class SmearingCfg(Section):
    enabled: bool = True
    parallax_mas: float = Field(0.02, ge=0, le=0.06)
    pm_masyr: float = Field(0.02, ge=0, le=1.0)
    rv_kms: float = Field(2.0, ge=0, le=50)
    reperturb: bool = True
    v_observer_kms: Optional[list[float]] = Field(None, description="observer velocity; default: circular + solar peculiar")


class CatalogueCfg(Section):
    path: Optional[str] = Field(None, description="a user catalogue instead of the mock (no truth then)")
    frame: Literal["auto", "galactocentric", "gaia"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    key: Optional[str] = None


class FlowCfg(Section):
    model: Literal["maf", "nsf"] = "maf"
    transforms: int = Field(5, ge=1, le=20)
    hidden: list[int] = Field(default_factory=lambda: [64, 64])
    activation: Literal["gelu", "silu", "elu", "tanh"] = "gelu"
    residual: bool = False
    z_stretch_kpc: Optional[float] = Field(None, gt=0.0, le=5.0, description="ν(x) sees z through s·asinh(z/s): a built-in "
                                           "mid-plane curvature −1/s² of ln ν (flows.BallPreprocess); None = off")
    nu_tilt_terms: int = Field(0, ge=0, le=16, description="> 0: after training, tilt each member's ν by a maximum-likelihood "
                               "exp(Σ c_k (z/w)^k e^{−z²/2w²}), k < terms, fitted on its training stars (tilt.py: restores the "
                               "mid-plane the flows smooth); 0 = off (the paper)")
    nu_tilt_width_kpc: float = Field(0.5, gt=0.01, le=5.0, description="w of the tilt's basis (kpc)")
    nu_tilt_samples: int = Field(400_000, ge=10_000, le=100_000_000, description="flow samples for the tilt's expectations")

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v):
        if not v or any(h < 4 or h > 4096 for h in v):
            raise ValueError("hidden layer widths must be in [4, 4096] (at least one layer)")
        return v


class TrainCfg(Section):
    ensemble: int = Field(3, ge=1, le=100, description="members for the original dataset")
    logger: TrainLogger = Field("csv", description="csv, or tensorboard (CSV plus TensorBoard event files)")
    ensemble_smeared: int = Field(2, ge=1, le=100, description="members for smeared / re-perturbed datasets")
    bootstrap: bool = True
    val_fraction: float = Field(0.2, ge=0.05, le=0.5)
    batch_size: int = Field(2048, ge=16, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=0.1)
    max_epochs: int = Field(100, ge=1, le=100_000)
    patience: int = Field(15, ge=1, le=10_000)
    plateau_patience: int = Field(6, ge=1, le=10_000)
    schedule: Literal["plateau", "cosine"] = Field("plateau", description="plateau: cut the rate when val_loss stalls, "
                                                   "stop early after `patience`; cosine: warm-up + half-cosine over all "
                                                   "max_epochs, no early stopping (keeps more of the thin disc's mid-plane: docs/phasespace.md)")
    warmup_fraction: float = Field(0.02, ge=0.0, lt=0.5, description="cosine: share of the steps with a linear warm-up")
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(1, ge=1, le=64)
    cpu_threads: Optional[int] = Field(1, ge=1, le=256)
    min_stars_per_parameter: float = Field(0.1, ge=0, le=100, description="refuse fewer training stars than this × flow parameters")


class MeasureCfg(Section):
    n_velocities: int = Field(1000, ge=16, le=1_000_000, description="velocities per acceleration point (paper: 10,000)")
    weighting: Literal["f", "log"] = "f"
    profile_points: int = Field(9, ge=2, le=400)
    x_half_range_kpc: float = Field(2.5, gt=0, le=30)
    z_half_range_kpc: float = Field(2.5, gt=0, le=30)
    bandwidth_kpc: list[float] = Field(default_factory=lambda: list(gauss.PAPER_BANDWIDTH_KPC))
    truncation: float = Field(2.0, ge=0.5, le=6)
    density_profile_points: int = Field(7, ge=0, le=400, description="fast-estimator densities per profile (0: Sun only)")
    density_profiles_all_datasets: bool = False
    fast_nodes: list[int] = Field(default_factory=lambda: [3, 6, 8], description="(n_r, n_theta, n_phi) of the cubature")
    fast_velocities: int = Field(500, ge=16, le=1_000_000)
    paper_estimator: bool = False
    paper_kernel_points: int = Field(3200, ge=16, le=1_000_000)
    paper_velocities: int = Field(10_000, ge=16, le=1_000_000)
    divergence: bool = True
    moments_velocities: int = Field(0, ge=0, le=1_000_000, description="> 0: also the smoothed density at the Sun "
                                    "with accelerations from the flows' velocity moments (moments.py), this many "
                                    "velocities per position; 0 = off")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: Optional[int] = Field(1, ge=1, le=256)
    batch_points: int = Field(50_000, ge=1000, le=100_000_000, description="(positions × velocities) per batch: ~5e4 on CPU, larger on GPU")

    @field_validator("bandwidth_kpc")
    @classmethod
    def _bw(cls, v):
        if len(v) != 3 or min(v) <= 0:
            raise ValueError("needs three bandwidths > 0 (kpc)")
        return v

    @field_validator("moments_velocities")
    @classmethod
    def _mom(cls, v):
        if 0 < v < 16:
            raise ValueError(f"must be 0 (off) or >= 16, got {v}")
        return v

    @field_validator("fast_nodes")
    @classmethod
    def _nodes(cls, v):
        if len(v) != 3 or v[0] < 1 or v[1] < 1 or v[2] < 2 or v[2] % 2:
            raise ValueError("needs (n_r >= 1, n_theta >= 1, n_phi even >= 2)")
        return v


class JeansCfg(Section):
    enabled: bool = True
    bin_R: float = Field(0.25, gt=0.01, le=5)
    bin_z: float = Field(0.1, gt=0.01, le=5)
    window_R: float = Field(1.0, gt=0.05, le=10)
    window_z: float = Field(0.5, gt=0.05, le=10)
    degree: int = Field(2, ge=1, le=4)
    min_count: int = Field(20, ge=1)
    n_boot: int = Field(20, ge=0, le=10_000)


class PhaseSpaceConfig(StudyConfig):
    mock: MockCfg = MockCfg()
    smearing: SmearingCfg = SmearingCfg()
    catalogue: CatalogueCfg = CatalogueCfg()
    flow: FlowCfg = FlowCfg()
    train: TrainCfg = TrainCfg()
    measure: MeasureCfg = MeasureCfg()
    jeans: JeansCfg = JeansCfg()

    @model_validator(mode="after")
    def _cross(self):
        R = self.mock.radius_kpc
        if self.measure.x_half_range_kpc >= R or self.measure.z_half_range_kpc >= R:
            raise ValueError(f"measure.x/z_half_range_kpc must be < mock.radius_kpc = {R} (the data's support)")
        reach = self.measure.truncation * max(self.measure.bandwidth_kpc)
        if reach >= R:
            raise ValueError(f"density kernel reach truncation × max(bandwidth) = {reach:.3g} kpc must be < mock.radius_kpc = {R}")
        if self.smearing.enabled and self.smearing.parallax_mas * 4 >= 1.0 / R:
            raise ValueError(f"smearing.parallax_mas = {self.smearing.parallax_mas}: must be < {1.0 / R / 4:.4f} mas for a "
                             f"{R} kpc ball (distances from parallaxes must stay defined)")
        if self.catalogue.path is None:
            need = self.required_stars()
            n_train = self.mock.n_stars * (1 - self.train.val_fraction)
            if n_train < need:
                raise ValueError(f"mock.n_stars = {self.mock.n_stars}: too few stars for the requested flows "
                                 f"({n_train:.0f} training stars < {need} = train.min_stars_per_parameter × "
                                 "flow parameters); add stars or shrink flow.hidden/transforms")
        return self

    def required_stars(self) -> int:
        return int(math.ceil(self.train.min_stars_per_parameter * n_flow_parameters(self.flow)))


@functools.lru_cache(maxsize=32)
def _n_params(model: str, transforms: int, hidden: tuple[int, ...], activation: str, residual: bool) -> int:
    spec = {"model": model, "transforms": transforms, "hidden": list(hidden), "activation": activation, "residual": residual,
            "observer": [8.0, 0, 0], "radius": 1.0, "x_mean": [0, 0, 0], "x_std": [1, 1, 1], "v_mean": [0, 0, 0],
            "v_std": [1, 1, 1]}
    return flows.count_parameters(flows.PhaseSpaceFlow(spec))


def n_flow_parameters(fc: FlowCfg) -> int:
    """Trainable parameters of one flow pair (position + velocity flows)."""
    return _n_params(fc.model, fc.transforms, tuple(fc.hidden), fc.activation, fc.residual)
