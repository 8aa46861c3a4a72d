"""The phase-space study: mock (or user) stars -> flows -> accelerations and densities -> report.

Stages (each callable from Python and from ``darkml phasespace <stage>``; they talk only
through the run directory):

* :func:`simulate` — sample the mock galaxy (exact truth) as a zarr dataset: true, smeared
  and re-smeared phase-space coordinates of a parent sample drawn in a ball large enough that
  stars scattered into the observed ball by parallax errors are included; or load a user's
  catalogue into the same layout.
* :func:`train` — an ensemble of flow pairs per dataset (original / smeared / re-perturbed),
  each member on a fresh validation split and a bootstrap resample; resumable.
* :func:`evaluate` — accelerations along x and z through the observer and at the observer,
  kernel-smoothed densities (fast cubature estimator; optionally the paper's Monte Carlo),
  point densities by autograd, the Jeans baseline, and the exact truth; statistical error =
  ensemble spread, systematic error = |re-perturbed − smeared| (Monte-Carlo error propagation).
* :func:`report` — ``report.html`` with profile figures and the paper's tables.

The study defines no physics and no layers: those are in ``mocks``, ``flows``, ``boltzmann``,
``gauss`` and ``jeans``.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from ..config import ConfigError, Section, StudyConfig, config_to_dict, load_config
from ..parallel import chunk_rng, run_chunks
from ..physics import constants as const
from ..runs import Run, atomic_write_bytes
from ..storage import ArraySpec, DatasetError, SampleStore
from . import boltzmann, flows, gauss, jeans, mocks
from .catalogue import CatalogueError, load_catalogue

log = logging.getLogger(__name__)

STUDY = "phasespace"
PRESETS_DIR = Path(__file__).parent / "presets"
ACC_UNIT = const.KPC_PER_GYR2_PER_KMS2_PER_KPC  # (km/s)^2/kpc -> kpc/Gyr^2
RHO_UNIT = 1e7  # densities reported in 1e7 Msun/kpc^3
_COLORS = {"original": "C0", "smeared": "C1", "reperturbed": "C2"}  # per dataset, in every figure

__all__ = [
    "PhaseSpaceConfig", "load", "simulate", "train", "evaluate", "report", "run_all", "dataset_names", "load_stars",
    "truth_model", "profile_points", "accelerations_at", "STUDY", "PRESETS_DIR",
]


# =============================================================================================
# Configuration
# =============================================================================================
class DiscComponentCfg(Section):
    fraction: float = Field(1.0, gt=0, le=1, description="share of the stars in the observed ball")
    sigma_kms: float = Field(30.0, ge=5, le=120, description="velocity dispersion (v_R, v_z) [km/s]")
    scale_length_kpc: float = Field(2.5, ge=0.5, le=20, description="radial scale of the guiding-centre weight [kpc]")


class MockCfg(Section):
    model: Literal["milkyway", "plummer"] = "milkyway"
    n_stars: int = Field(20000, ge=200, le=50_000_000, description="expected stars in the observed ball")
    observer_kpc: list[float] = Field(default_factory=lambda: list(mocks.OBSERVER_KPC))
    radius_kpc: float = Field(mocks.SUPPORT_RADIUS_KPC, gt=0.2, le=30)
    components: list[DiscComponentCfg] = Field(default_factory=lambda: [
        DiscComponentCfg(fraction=0.8, sigma_kms=25.0, scale_length_kpc=2.5),
        DiscComponentCfg(fraction=0.2, sigma_kms=45.0, scale_length_kpc=2.5)])
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

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v):
        if not v or any(h < 4 or h > 4096 for h in v):
            raise ValueError("hidden layer widths must be in [4, 4096] (at least one layer)")
        return v


class TrainCfg(Section):
    ensemble: int = Field(3, ge=1, le=100, description="members for the original dataset")
    ensemble_smeared: int = Field(2, ge=1, le=100, description="members for smeared / re-perturbed datasets")
    bootstrap: bool = True
    val_fraction: float = Field(0.2, ge=0.05, le=0.5)
    batch_size: int = Field(2048, ge=16, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=0.1)
    max_epochs: int = Field(100, ge=1, le=100_000)
    patience: int = Field(15, ge=1, le=10_000)
    plateau_patience: int = Field(6, ge=1, le=10_000)
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
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: Optional[int] = Field(1, ge=1, le=256)
    batch_points: int = Field(50_000, ge=1000, le=100_000_000, description="(positions × velocities) per batch: ~5e4 on CPU, larger on GPU")

    @field_validator("bandwidth_kpc")
    @classmethod
    def _bw(cls, v):
        if len(v) != 3 or min(v) <= 0:
            raise ValueError("needs three bandwidths > 0 (kpc)")
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


def load(preset: str = "quick", overrides: list[str] | tuple[str, ...] = ()) -> PhaseSpaceConfig:
    """Load a preset (``src/darkml/phasespace/presets/<preset>.yaml``) with ``a.b=value`` overrides."""
    return load_config(PhaseSpaceConfig, PRESETS_DIR, preset, list(overrides), study=STUDY)


# =============================================================================================
# Models and data
# =============================================================================================
@functools.lru_cache(maxsize=8)
def _truth_cached(key: str):
    import json

    mc = MockCfg.model_validate(json.loads(key))
    if mc.model == "plummer":
        pl = mocks.Plummer(mc.plummer_mass_msun, mc.plummer_scale_kpc)
        return pl, pl
    pot = mocks.MilkyWay2014()
    comps = [mocks.DiscComponent(c.fraction, c.sigma_kms, c.scale_length_kpc) for c in mc.components]
    return pot, mocks.DiscDF(pot, comps, tuple(mc.observer_kpc), mc.radius_kpc)


def truth_model(cfg: PhaseSpaceConfig):
    """(potential with ``acceleration``/``density``, distribution function) of the configured mock."""
    import json

    return _truth_cached(json.dumps(config_to_dict(cfg.mock), sort_keys=True))


def _v_observer(cfg: PhaseSpaceConfig) -> np.ndarray:
    if cfg.smearing.v_observer_kms is not None:
        return np.asarray(cfg.smearing.v_observer_kms, float)
    if cfg.catalogue.path is not None:  # astropy's default solar motion, turned by 180° about z like the positions
        return np.array([-12.9, -245.6, 7.78])
    if cfg.mock.model == "plummer":
        return np.zeros(3)
    pot, _ = truth_model(cfg)
    R = math.hypot(*cfg.mock.observer_kpc[:2])
    vc = pot.circular_velocity(torch.tensor([R], dtype=torch.float64)).item()
    pec = np.asarray(mocks.SUN_PECULIAR_KMS)
    return np.array([pec[0], vc + pec[1], pec[2]])  # observer on the +x axis: rotation along +y


def _parent_radius(cfg: PhaseSpaceConfig) -> float:
    R = cfg.mock.radius_kpc
    if not cfg.smearing.enabled or cfg.smearing.parallax_mas == 0:
        return R
    return 1.0 / (1.0 / R - 4 * cfg.smearing.parallax_mas)


def _n_parent(cfg: PhaseSpaceConfig) -> int:
    rp = _parent_radius(cfg)
    if rp == cfg.mock.radius_kpc:
        return cfg.mock.n_stars
    pot, df = truth_model(cfg)
    if cfg.mock.model == "plummer":
        dens = lambda p: pot.density(torch.from_numpy(p)).numpy()  # noqa: E731
        frac = mocks.ball_integral(dens, cfg.mock.observer_kpc, cfg.mock.radius_kpc) / mocks.ball_integral(dens, cfg.mock.observer_kpc, rp)
    else:
        frac = df.ball_fraction(rp)
    return int(round(cfg.mock.n_stars / frac))


def _simulate_chunk(cfg_dict: dict, path: str, i: int) -> None:
    """Sample, smear and re-smear dataset chunk ``i`` (a pure function of (config, seed, i))."""
    cfg = PhaseSpaceConfig.model_validate(cfg_dict)
    store = SampleStore.open(path, require_complete=False, mode="r+")
    sl = store.chunk_slice(i)
    n = sl.stop - sl.start
    rng = chunk_rng(cfg.seed, i)
    rp = _parent_radius(cfg)
    obs = cfg.mock.observer_kpc
    _, df = truth_model(cfg)
    if cfg.mock.model == "plummer":
        x, v = df.sample(n, rng, within=(obs, rp))
        comp = np.zeros(n, np.int8)
    else:
        x, v, comp = df.sample(n, rng, radius=rp)
    arrays = {"x": x, "v": v, "component": comp}
    if cfg.smearing.enabled:
        s = cfg.smearing
        vo = _v_observer(cfg)
        xs, vs, oks = mocks.smear(x, v, obs, vo, s.parallax_mas, s.pm_masyr, s.rv_kms, chunk_rng(cfg.seed, i, 1))
        xr, vr, okr = mocks.smear(np.where(oks[:, None], xs, x), vs, obs, vo, s.parallax_mas, s.pm_masyr, s.rv_kms,
                                  chunk_rng(cfg.seed, i, 2))
        arrays.update(x_smeared=np.where(oks[:, None], xs, np.nan), v_smeared=vs, valid_smeared=oks,
                      x_reperturbed=np.where((oks & okr)[:, None], xr, np.nan), v_reperturbed=vr, valid_reperturbed=oks & okr)
    store.write_chunk(i, arrays)


def _store_specs(cfg: PhaseSpaceConfig, user: bool) -> dict[str, ArraySpec]:
    specs = {"x": ArraySpec((3,), "float64"), "v": ArraySpec((3,), "float64")}
    if not user:
        specs["component"] = ArraySpec((), "int8")
    if cfg.smearing.enabled:
        if not user:
            specs.update(x_smeared=ArraySpec((3,), "float64", np.nan), v_smeared=ArraySpec((3,), "float64"),
                         valid_smeared=ArraySpec((), "bool", False))
        if cfg.smearing.reperturb:
            specs.update(x_reperturbed=ArraySpec((3,), "float64", np.nan), v_reperturbed=ArraySpec((3,), "float64"),
                         valid_reperturbed=ArraySpec((), "bool", False))
    return specs


def _units_attrs() -> dict[str, str]:
    return {"x": "kpc, Galactocentric Cartesian, observer on +x", "v": "km/s", "component": "disc component index",
            "x_smeared": "kpc (parallax/proper-motion/RV errors applied)", "v_smeared": "km/s",
            "x_reperturbed": "kpc (errors applied twice)", "v_reperturbed": "km/s"}


def simulate(cfg: PhaseSpaceConfig, run: Run, workers: int = 1, scheduler: str | None = None) -> SampleStore:
    """Write the stars of the run (mock sample or user catalogue) to ``run.dataset_path``."""
    path = run.dataset_path
    if cfg.catalogue.path is not None:
        c = cfg.catalogue
        cat = load_catalogue(c.path, c.frame, c.columns or None, cfg.mock.observer_kpc, cfg.mock.radius_kpc,
                             cfg.required_stars(), c.key)
        n = len(cat)
        store = SampleStore.create(path, n, n, _store_specs(cfg, True),
                                   attrs={"config": config_to_dict(cfg), "seed": cfg.seed, "units": _units_attrs(),
                                          "source": str(c.path), "kind": "catalogue"})
        if store.missing_chunks():
            arrays = {"x": cat.x, "v": cat.v}
            if cfg.smearing.enabled and cfg.smearing.reperturb:
                s = cfg.smearing
                xr, vr, ok = mocks.smear(cat.x, cat.v, cfg.mock.observer_kpc, _v_observer(cfg), s.parallax_mas, s.pm_masyr,
                                         s.rv_kms, chunk_rng(cfg.seed, 0, 2))
                arrays.update(x_reperturbed=np.where(ok[:, None], xr, np.nan), v_reperturbed=vr, valid_reperturbed=ok)
            store.write_chunk(0, arrays)
        log.info("catalogue %s: %d stars in the observed ball", c.path, n)
        return SampleStore.open(path)
    n_parent = _n_parent(cfg)
    store = SampleStore.create(path, n_parent, min(cfg.mock.chunk_size, n_parent), _store_specs(cfg, False),
                               attrs={"config": config_to_dict(cfg), "seed": cfg.seed, "units": _units_attrs(),
                                      "kind": "mock", "parent_radius_kpc": _parent_radius(cfg)})
    fn = functools.partial(_simulate_chunk, config_to_dict(cfg), str(path))
    t0 = time.perf_counter()
    todo = store.missing_chunks()
    run_chunks(fn, todo, workers=workers, scheduler=scheduler, desc="simulate")
    dt = time.perf_counter() - t0
    store = SampleStore.open(path)
    counts = {k: len(load_stars(run, cfg, k)[0]) for k in dataset_names(cfg)}
    run.update_metrics({"data": {"n_parent": n_parent, "parent_radius_kpc": _parent_radius(cfg), "n_stars": counts,
                                 "stars_per_s": (sum(store.chunk_slice(i).stop - store.chunk_slice(i).start for i in todo) / dt) if todo and dt > 0 else None}})
    return store


def dataset_names(cfg: PhaseSpaceConfig) -> list[str]:
    """Datasets trained on: original [, smeared] [, reperturbed]."""
    names = ["original"]
    if cfg.smearing.enabled:
        if cfg.catalogue.path is None:
            names.append("smeared")
        if cfg.smearing.reperturb:
            names.append("reperturbed")
    return names


def load_stars(run: Run, cfg: PhaseSpaceConfig, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(x [kpc], v [km/s]) of dataset ``name`` restricted to the observed ball."""
    store = SampleStore.open(run.dataset_path)
    if name == "original":
        x, v = store.read("x"), store.read("v")
        ok = np.ones(len(x), bool)
    elif name in ("smeared", "reperturbed"):
        if f"x_{name}" not in store.arrays:
            raise DatasetError(f"dataset {run.dataset_path} has no {name} stars (smearing disabled when it was made)")
        x, v, ok = store.read(f"x_{name}"), store.read(f"v_{name}"), store.read(f"valid_{name}")
    else:
        raise ValueError(f"dataset = {name!r}: must be original, smeared or reperturbed")
    inside = ok & (np.linalg.norm(np.nan_to_num(x, nan=1e9) - np.asarray(cfg.mock.observer_kpc), axis=1) <= cfg.mock.radius_kpc)
    return x[inside], v[inside]


# =============================================================================================
# Training
# =============================================================================================
def _settings(cfg: PhaseSpaceConfig) -> flows.TrainSettings:
    t = cfg.train
    return flows.TrainSettings(batch_size=t.batch_size, lr=t.lr, max_epochs=t.max_epochs, patience=t.patience,
                               plateau_patience=t.plateau_patience, val_fraction=t.val_fraction, bootstrap=t.bootstrap,
                               accelerator=t.accelerator, devices=t.devices, cpu_threads=t.cpu_threads)


def _members(cfg: PhaseSpaceConfig, name: str) -> int:
    return cfg.train.ensemble if name == "original" else cfg.train.ensemble_smeared


def _spec_kwargs(cfg: PhaseSpaceConfig) -> dict[str, Any]:
    f = cfg.flow
    return dict(observer=cfg.mock.observer_kpc, radius=cfg.mock.radius_kpc, model=f.model, transforms=f.transforms,
                hidden=f.hidden, activation=f.activation, residual=f.residual)


def train(cfg: PhaseSpaceConfig, run: Run, datasets: list[str] | None = None) -> dict[str, list]:
    """Train (or resume) the flow ensembles; checkpoints in ``run.checkpoints/<dataset>/m<k>``."""
    out: dict[str, list] = {}
    summary: dict[str, Any] = {}
    for name in datasets or dataset_names(cfg):
        x, v = load_stars(run, cfg, name)
        if name == "original":
            x_orig, v_orig = x, v
        need = cfg.required_stars()
        if len(x) * (1 - cfg.train.val_fraction) < need:
            raise ConfigError(f"{name}: {len(x)} stars is too few for the requested flows (need {need} training stars)")
        t0 = time.perf_counter()
        res = flows.train_ensemble(x, v, _spec_kwargs(cfg), _settings(cfg), run.checkpoints / name, _members(cfg, name),
                                   cfg.seed + {"original": 0, "smeared": 1000, "reperturbed": 2000}[name], run.logs, name)
        out[name] = res
        summary[name] = {"n_stars": len(x), "members": [{"best_val_loss": r.best_score, "epochs": r.epochs,
                                                         "best_path": str(r.best_path)} for r in res],
                         "wall_s": time.perf_counter() - t0}
    if cfg.catalogue.path is None and "original" in out:
        summary["original"]["kl_to_truth"] = _kl_to_truth(cfg, x_orig, v_orig, out["original"])
    run.update_metrics({"train": summary, "flow_parameters": n_flow_parameters(cfg.flow)})
    return out


def _kl_to_truth(cfg: PhaseSpaceConfig, x: np.ndarray, v: np.ndarray, results) -> list[float]:
    """KL(f_true ‖ f_flow) per member on its validation stars (x, v: the original dataset):
    ⟨log f_true − log f_flow⟩ [nats]."""
    if cfg.mock.model != "milkyway":
        return []
    _, df = truth_model(cfg)
    out = []
    for k, r in enumerate(results):
        _, va = flows.member_split(len(x), k, cfg.seed, cfg.train.val_fraction, cfg.train.bootstrap)
        xv, vv = torch.tensor(x[va]), torch.tensor(v[va])
        model = flows.load_member(r.best_path)
        with torch.no_grad():
            lt = df.log_df(xv, vv)
            lf = model.log_prob(xv.float(), vv.float()).double()
        out.append(float((lt - lf).mean()))
    return out


def _load_ensemble(run: Run, cfg: PhaseSpaceConfig, name: str, device) -> list:
    import json

    models = []
    for k in range(_members(cfg, name)):
        done = run.checkpoints / name / f"m{k}" / "done.json"
        if not done.is_file():
            raise DatasetError(f"no trained flow {name}/m{k} in {run.path}; run the train stage first")
        models.append(flows.load_member(json.loads(done.read_text())["best_path"], device))
    return models


# =============================================================================================
# Measurement
# =============================================================================================
def profile_points(cfg: PhaseSpaceConfig) -> dict[str, np.ndarray]:
    """Evaluation positions [kpc]: the observer, and lines along x and z through it."""
    obs = np.asarray(cfg.mock.observer_kpc, float)
    m = cfg.measure
    tx = np.linspace(-m.x_half_range_kpc, m.x_half_range_kpc, m.profile_points)
    tz = np.linspace(-m.z_half_range_kpc, m.z_half_range_kpc, m.profile_points)
    px = obs + tx[:, None] * np.array([1.0, 0, 0])
    pz = obs + tz[:, None] * np.array([0, 0, 1.0])
    return {"sun": obs[None], "x": px, "z": pz, "tx": tx, "tz": tz}


def density_points(cfg: PhaseSpaceConfig, kernel: gauss.Kernel) -> dict[str, np.ndarray]:
    """Density positions where the whole kernel lies inside the support."""
    obs = np.asarray(cfg.mock.observer_kpc, float)
    R = cfg.mock.radius_kpc
    ext = kernel.extent()
    n = cfg.measure.density_profile_points
    out = {"sun": obs[None]}
    for axis, k in (("x", 0), ("z", 2)):
        # farthest offset t along the axis with every kernel node inside: |t e_k + c h ŝ| ≤ R
        lim = _max_offset(ext, k, R)
        t = np.linspace(-lim, lim, n) if n > 1 else np.zeros(max(n, 0))
        e = np.zeros(3)
        e[k] = 1
        out[axis] = obs + t[:, None] * e
        out["t" + axis] = t
    return out


def _max_offset(ext: np.ndarray, k: int, R: float) -> float:
    # ellipsoid with semi-axes ext shifted by t along axis k: max distance = max over the surface
    u = np.random.default_rng(0).standard_normal((20000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pts = u * ext
    lo, hi = 0.0, R
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        p = pts.copy()
        p[:, k] += mid
        if np.linalg.norm(p, axis=1).max() <= R * 0.98:
            lo = mid
        else:
            hi = mid
    return lo


def _device(cfg: PhaseSpaceConfig) -> torch.device:
    d = cfg.measure.device
    if d == "auto":
        d = "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cuda" and not torch.cuda.is_available():
        raise ConfigError("measure.device = 'cuda': no CUDA device available")
    return torch.device(d)


def _agg(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and spread (std over members; NaN — not available — for one member)."""
    values = np.asarray(values, float)
    return values.mean(0), (values.std(0, ddof=1) if len(values) > 1 else np.full(values.shape[1:], np.nan))


def evaluate(cfg: PhaseSpaceConfig, run: Run) -> dict[str, Any]:
    """Accelerations, densities, Jeans baseline and truth; writes ``profiles.npz`` and metrics."""
    dev = _device(cfg)
    pts = profile_points(cfg)
    kernel = gauss.Kernel(tuple(cfg.measure.bandwidth_kpc), cfg.measure.truncation)
    dpts = density_points(cfg, kernel)
    obs, R = cfg.mock.observer_kpc, cfg.mock.radius_kpc
    all_acc = np.concatenate([pts["sun"], pts["x"], pts["z"]])
    flows.check_support(all_acc, obs, R, what="acceleration point")
    flows.check_support(np.concatenate([dpts["sun"], dpts["x"], dpts["z"]]), obs, R, reach=0.0, what="density point")
    m = cfg.measure
    arrays: dict[str, np.ndarray] = {"acc_points": all_acc, "tx": pts["tx"], "tz": pts["tz"],
                                     "rho_tx": dpts["tx"], "rho_tz": dpts["tz"]}
    cost: dict[str, Any] = {}
    results: dict[str, Any] = {}
    with flows.torch_threads(m.cpu_threads if dev.type == "cpu" else None):
        for name in dataset_names(cfg):
            models = _load_ensemble(run, cfg, name, dev)
            acc, rho_sun, rho_x, rho_z, rho_div, rho_paper = [], [], [], [], [], []
            with_profiles = name == "original" or m.density_profiles_all_datasets
            for k, model in enumerate(models):
                t0 = time.perf_counter()
                field = boltzmann.AccelerationField(model, m.n_velocities, m.weighting, common_random_numbers=False,
                                                    seed=cfg.seed * 7919 + k, batch_points=m.batch_points)
                acc.append(field(torch.tensor(all_acc)).double().cpu().numpy())
                t_acc = (time.perf_counter() - t0) / len(all_acc)
                fast = boltzmann.AccelerationField(model, m.fast_velocities, m.weighting, common_random_numbers=True,
                                                   seed=cfg.seed * 7919 + 100 + k, batch_points=m.batch_points)
                t0 = time.perf_counter()
                rho_sun.append(gauss.density_fast(fast, dpts["sun"][0], kernel, *m.fast_nodes).rho)
                t_rho = time.perf_counter() - t0
                if with_profiles:
                    rho_x.append([gauss.density_fast(fast, p, kernel, *m.fast_nodes).rho for p in dpts["x"]])
                    rho_z.append([gauss.density_fast(fast, p, kernel, *m.fast_nodes).rho for p in dpts["z"]])
                if m.divergence and name == "original":
                    rho_div.append(gauss.density_divergence(fast.differentiable, dpts["sun"][0]).rho)
                if m.paper_estimator and name == "original":
                    paper_field = boltzmann.AccelerationField(model, m.paper_velocities, m.weighting, common_random_numbers=False,
                                                              seed=cfg.seed * 7919 + 200 + k, batch_points=m.batch_points)
                    t0 = time.perf_counter()
                    n_surf = m.paper_kernel_points // 4
                    rp = gauss.density_paper(paper_field, dpts["sun"][0], kernel, m.paper_kernel_points - n_surf, n_surf, seed=k)
                    rho_paper.append(rp.rho)
                    cost.setdefault("paper_density_s_per_point", []).append(time.perf_counter() - t0)
                cost.setdefault("acceleration_s_per_point", []).append(t_acc)
                cost.setdefault("fast_density_s_per_point", []).append(t_rho)
                log.info("%s m%d: a_sun = %s (km/s)^2/kpc, rho_h(sun) = %.4g Msun/kpc^3", name, k,
                         np.array2string(acc[-1][0], precision=1), rho_sun[-1])
            a_mean, a_std = _agg(np.array(acc))
            arrays[f"{name}_acc"], arrays[f"{name}_acc_stat"] = a_mean, a_std
            arrays[f"{name}_acc_members"] = np.array(acc)
            r_mean, r_std = _agg(np.array(rho_sun)[:, None])
            arrays[f"{name}_rho_sun"], arrays[f"{name}_rho_sun_stat"] = r_mean, r_std
            if with_profiles and len(dpts["x"]):
                for ax, vals in (("x", rho_x), ("z", rho_z)):
                    mu, sd = _agg(np.array(vals))
                    arrays[f"{name}_rho_{ax}"], arrays[f"{name}_rho_{ax}_stat"] = mu, sd
            if rho_div:
                arrays[f"{name}_rho_div_sun"], arrays[f"{name}_rho_div_sun_stat"] = _agg(np.array(rho_div)[:, None])
            if rho_paper:
                arrays[f"{name}_rho_paper_sun"], arrays[f"{name}_rho_paper_sun_stat"] = _agg(np.array(rho_paper)[:, None])
            results[name] = len(models)
        # Jeans baseline on each dataset (stat: bootstrap)
        if cfg.jeans.enabled:
            js = jeans.JeansSettings(cfg.jeans.bin_R, cfg.jeans.bin_z, cfg.jeans.window_R, cfg.jeans.window_z, cfg.jeans.degree,
                                     cfg.jeans.min_count, cfg.jeans.n_boot)
            jp = np.concatenate([all_acc, dpts["x"], dpts["z"]])
            for name in dataset_names(cfg):
                x, v = load_stars(run, cfg, name)
                t0 = time.perf_counter()
                jr = jeans.jeans_estimate(x, v, jp, obs, R, js, seed=cfg.seed)
                cost["jeans_s"] = time.perf_counter() - t0
                na = len(all_acc)
                arrays[f"jeans_{name}_acc"], arrays[f"jeans_{name}_acc_stat"] = jr.a[:na], jr.a_err[:na]
                arrays[f"jeans_{name}_rho"], arrays[f"jeans_{name}_rho_stat"] = jr.rho, jr.rho_err
        # truth
        if cfg.catalogue.path is None:
            pot, df = truth_model(cfg)
            arrays["true_acc"] = pot.acceleration(torch.tensor(all_acc)).numpy()
            dp_all = np.concatenate([dpts["sun"], dpts["x"], dpts["z"]])
            arrays["true_rho_point"] = pot.density(torch.tensor(dp_all)).numpy()
            arrays["true_rho_smoothed"] = np.array([gauss.smoothed_density(pot.density, p, kernel) for p in dp_all])
            arrays["jeans_points_true_rho"] = pot.density(torch.tensor(jp)).numpy() if cfg.jeans.enabled else np.zeros(0)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(run.path / "profiles.npz", buf.getvalue())
    summary = _summarise(cfg, arrays)
    summary["cost"] = {
        "acceleration_s_per_point": float(np.mean(cost.get("acceleration_s_per_point", [np.nan]))),
        "acceleration_evaluations_per_point": m.n_velocities,
        "fast_density_s_per_point": float(np.mean(cost.get("fast_density_s_per_point", [np.nan]))),
        "fast_density_evaluations_per_point": int(np.prod(m.fast_nodes) + m.fast_nodes[1] * m.fast_nodes[2]) * m.fast_velocities,
        "paper_density_evaluations_per_point": m.paper_kernel_points * m.paper_velocities,
        "paper_density_s_per_point": float(np.mean(cost["paper_density_s_per_point"])) if "paper_density_s_per_point" in cost else None,
        "jeans_s": cost.get("jeans_s"), "device": str(dev), "members": results,
    }
    run.update_metrics({"measure": summary})
    return summary


def accelerations_at(cfg: PhaseSpaceConfig, run: Run, points, dataset: str = "original",
                     n_velocities: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble-mean accelerations and their spread [(km/s)^2/kpc] at ``points`` (P, 3) [kpc] from the
    trained flows of ``dataset``. Raises :class:`~darkml.phasespace.flows.SupportError` for points
    outside the observed ball."""
    pts = np.atleast_2d(np.asarray(points, dtype=float))
    flows.check_support(pts, cfg.mock.observer_kpc, cfg.mock.radius_kpc, what="acceleration point")
    dev = _device(cfg)
    m = cfg.measure
    out = []
    with flows.torch_threads(m.cpu_threads if dev.type == "cpu" else None):
        for k, model in enumerate(_load_ensemble(run, cfg, dataset, dev)):
            field = boltzmann.AccelerationField(model, n_velocities or m.n_velocities, m.weighting, False,
                                                seed=cfg.seed * 7919 + k, batch_points=m.batch_points)
            out.append(field(torch.tensor(pts)).double().cpu().numpy())
    return _agg(np.array(out))


def _summarise(cfg: PhaseSpaceConfig, A: dict[str, np.ndarray]) -> dict[str, Any]:
    """The Sun tables (paper units) and accuracy numbers."""
    names = dataset_names(cfg)
    out: dict[str, Any] = {"units": {"acceleration": "kpc/Gyr^2", "density": "1e7 Msun/kpc^3"}}
    rows_a = []
    has_truth = "true_acc" in A
    for comp, j in (("a_x", 0), ("a_y", 1), ("a_z", 2)):
        if has_truth:
            rows_a.append({"component": comp, "dataset": "truth", "value": A["true_acc"][0, j] * ACC_UNIT})
        for name in names:
            row = {"component": comp, "dataset": name, "value": A[f"{name}_acc"][0, j] * ACC_UNIT,
                   "stat": A[f"{name}_acc_stat"][0, j] * ACC_UNIT}
            if name == "smeared" and "reperturbed" in names:
                row["syst"] = abs(A["reperturbed_acc"][0, j] - A["smeared_acc"][0, j]) * ACC_UNIT
            rows_a.append(row)
        if "jeans_original_acc" in A:
            row = {"component": comp, "dataset": "jeans", "value": A["jeans_original_acc"][0, j] * ACC_UNIT,
                   "stat": A["jeans_original_acc_stat"][0, j] * ACC_UNIT}
            if "jeans_smeared_acc" in A and "jeans_reperturbed_acc" in A:
                row["syst"] = abs(A["jeans_reperturbed_acc"][0, j] - A["jeans_smeared_acc"][0, j]) * ACC_UNIT
            rows_a.append(row)
    out["sun_acceleration"] = rows_a
    rows_r = []
    if has_truth:
        rows_r.append({"dataset": "truth (smoothed)", "value": A["true_rho_smoothed"][0] / RHO_UNIT})
        rows_r.append({"dataset": "truth (point)", "value": A["true_rho_point"][0] / RHO_UNIT})
    for name in names:
        row = {"dataset": f"{name} (smoothed, fast)", "value": A[f"{name}_rho_sun"][0] / RHO_UNIT,
               "stat": A[f"{name}_rho_sun_stat"][0] / RHO_UNIT}
        if name == "smeared" and "reperturbed" in names:
            row["syst"] = abs(A["reperturbed_rho_sun"][0] - A["smeared_rho_sun"][0]) / RHO_UNIT
        rows_r.append(row)
    if "original_rho_paper_sun" in A:
        rows_r.append({"dataset": "original (smoothed, paper MC)", "value": A["original_rho_paper_sun"][0] / RHO_UNIT,
                       "stat": A["original_rho_paper_sun_stat"][0] / RHO_UNIT})
    if "original_rho_div_sun" in A:
        rows_r.append({"dataset": "original (point, autograd)", "value": A["original_rho_div_sun"][0] / RHO_UNIT,
                       "stat": A["original_rho_div_sun_stat"][0] / RHO_UNIT})
    if "jeans_original_rho" in A:
        row = {"dataset": "jeans (point)", "value": A["jeans_original_rho"][0] / RHO_UNIT, "stat": A["jeans_original_rho_stat"][0] / RHO_UNIT}
        if "jeans_smeared_rho" in A and "jeans_reperturbed_rho" in A:
            row["syst"] = abs(A["jeans_reperturbed_rho"][0] - A["jeans_smeared_rho"][0]) / RHO_UNIT
        rows_r.append(row)
    out["sun_density"] = rows_r
    if has_truth:
        ta = A["true_acc"][0]
        norm = float(np.linalg.norm(ta))
        acc = {}
        keys = [(n, f"{n}_acc") for n in names] + ([("jeans", "jeans_original_acc")] if "jeans_original_acc" in A else [])
        for label, key in keys:
            est, st = A[key][0], A[key + "_stat"][0]
            acc[label] = {"radial_rel_error": float((est[0] - ta[0]) / ta[0]),
                          "vertical_error_over_norm": float((est[2] - ta[2]) / norm),
                          "radial_rel_stat": float(st[0] / abs(ta[0])), "vertical_stat_over_norm": float(st[2] / norm)}
        dens = {}
        for name in names:
            dens[name] = float(A[f"{name}_rho_sun"][0] / A["true_rho_smoothed"][0] - 1)
        if "original_rho_div_sun" in A:
            dens["original_point_autograd"] = float(A["original_rho_div_sun"][0] / A["true_rho_point"][0] - 1)
        if "original_rho_paper_sun" in A:
            dens["original_paper_mc"] = float(A["original_rho_paper_sun"][0] / A["true_rho_smoothed"][0] - 1)
        if "jeans_original_rho" in A:
            dens["jeans_point"] = float(A["jeans_original_rho"][0] / A["true_rho_point"][0] - 1)
        # profile accuracy: median |Δa|/|a_true| along the x and z lines (original)
        t = A["true_acc"][1:]
        e = A["original_acc"][1:]
        prof = float(np.median(np.linalg.norm(e - t, axis=1) / np.linalg.norm(t, axis=1)))
        out["accuracy"] = {"acceleration_at_sun": acc, "density_at_sun_rel_error": dens,
                           "acceleration_profiles_median_rel_error": prof}
    return out


# =============================================================================================
# Report
# =============================================================================================
def _clip_to(ax, curves) -> None:
    """Fix the y-range to the truth and flow curves (±25%), so that a wild baseline point does not
    squash the figure (it stays in the tables)."""
    vals = np.concatenate([np.ravel(c) for c in curves]) if curves else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo, hi = vals.min(), vals.max()
        pad = 0.25 * max(hi - lo, 1e-9 + 0.05 * max(abs(lo), abs(hi)))
        ax.set_ylim(lo - pad, hi + pad)
        ax.autoscale(False)


def _figures(cfg: PhaseSpaceConfig, A: dict[str, np.ndarray]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    names = dataset_names(cfg)
    n = len(A["tx"])
    sl = {"x": slice(1, 1 + n), "z": slice(1 + n, 1 + 2 * n)}
    for axis in ("x", "z"):
        t = A["t" + axis]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, (comp, j) in zip(axes, (("a_x", 0), ("a_z", 2))):
            if "true_acc" in A:
                ax.plot(t, A["true_acc"][sl[axis], j] * ACC_UNIT, "k-", lw=2, label="truth")
            for name in names:
                mu = A[f"{name}_acc"][sl[axis], j] * ACC_UNIT
                sd = np.nan_to_num(A[f"{name}_acc_stat"][sl[axis], j]) * ACC_UNIT
                ax.errorbar(t, mu, sd, fmt="o", ms=3, color=_COLORS[name], label=f"flows: {name}", capsize=2)
            _clip_to(ax, ([A["true_acc"][sl[axis], j] * ACC_UNIT] if "true_acc" in A else [])
                     + [A[f"{name}_acc"][sl[axis], j] * ACC_UNIT for name in names])
            if "jeans_original_acc" in A:
                ax.errorbar(t, A["jeans_original_acc"][sl[axis], j] * ACC_UNIT, np.nan_to_num(A["jeans_original_acc_stat"][sl[axis], j]) * ACC_UNIT,
                            fmt="s", ms=3, mfc="none", color="C3", label="Jeans", capsize=2)
            ax.set_xlabel(f"{axis} − {axis}$_\\odot$ [kpc]")
            ax.set_ylabel(f"{comp} [kpc/Gyr$^2$]")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Accelerations along {axis} through the observer")
        fig.tight_layout()
        figs.append((fig, f"Accelerations along {axis} through the observer: flows (ensemble mean ± spread), Jeans, exact truth.",
                     f"acceleration_{axis}"))
    if "original_rho_x" in A and len(A["rho_tx"]):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        nd = len(A["rho_tx"])
        dsl = {"x": slice(1, 1 + nd), "z": slice(1 + nd, 1 + 2 * nd)}
        nj = len(A["acc_points"])
        jsl = {"x": slice(nj, nj + nd), "z": slice(nj + nd, nj + 2 * nd)}
        for ax, axis in zip(axes, ("x", "z")):
            t = A["rho_t" + axis]
            if "true_rho_smoothed" in A:
                ax.plot(t, A["true_rho_smoothed"][dsl[axis]] / RHO_UNIT, "k-", lw=2, label="truth (smoothed)")
                ax.plot(t, A["true_rho_point"][dsl[axis]] / RHO_UNIT, "k:", label="truth (point)")
            for name in names:
                if f"{name}_rho_{axis}" in A:
                    ax.errorbar(t, A[f"{name}_rho_{axis}"] / RHO_UNIT, np.nan_to_num(A[f"{name}_rho_{axis}_stat"]) / RHO_UNIT, fmt="o", ms=3,
                                color=_COLORS[name], label=f"flows: {name} (smoothed)", capsize=2)
            _clip_to(ax, ([A["true_rho_smoothed"][dsl[axis]] / RHO_UNIT, A["true_rho_point"][dsl[axis]] / RHO_UNIT]
                          if "true_rho_smoothed" in A else []) + [A[f"{n}_rho_{axis}"] / RHO_UNIT for n in names if f"{n}_rho_{axis}" in A])
            if "jeans_original_rho" in A:
                ax.errorbar(t, A["jeans_original_rho"][jsl[axis]] / RHO_UNIT, np.nan_to_num(A["jeans_original_rho_stat"][jsl[axis]]) / RHO_UNIT,
                            fmt="s", ms=3, mfc="none", color="C3", label="Jeans (point)", capsize=2)
            ax.set_xlabel(f"{axis} − {axis}$_\\odot$ [kpc]")
            ax.set_ylabel("ρ [10$^7$ M$_\\odot$/kpc$^3$]")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        figs.append((fig, "Mass density along x and z: kernel-smoothed Gauss's law (fast estimator) vs the smoothed truth; "
                          "Jeans and the point truth for reference.", "density_profiles"))
    return figs


def _training_figure(run: Run, cfg: PhaseSpaceConfig):
    import matplotlib.pyplot as plt

    from ..learn.train import read_history

    fig, ax = plt.subplots(figsize=(6, 4))
    any_curve = False
    for name in dataset_names(cfg):
        for k in range(_members(cfg, name)):
            h = read_history(run.logs / f"{name}-m{k}" / "metrics.csv")
            ep = [r["epoch"] for r in h if "val_loss" in r]
            vl = [r["val_loss"] for r in h if "val_loss" in r]
            if ep:
                any_curve = True
                ax.plot(ep, vl, color=_COLORS[name], alpha=0.7,
                        label=name if k == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation −⟨log f⟩")
    ax.grid(alpha=0.3)
    if any_curve:
        ax.legend()
    fig.tight_layout()
    return fig


def report(cfg: PhaseSpaceConfig, run: Run) -> Path:
    """Write ``report.html`` from ``profiles.npz`` and ``metrics.json``."""
    from ..report import Report

    path = run.path / "profiles.npz"
    if not path.is_file():
        raise DatasetError(f"{path} missing; run the evaluate stage first")
    A = dict(np.load(path))
    met = run.metrics()
    meas = met.get("measure") or _summarise(cfg, A)
    rep = Report(f"Phase-space flows: accelerations and dark-matter density — {cfg.preset}",
                 subtitle="Buckley, Lim, Putney & Shih (arXiv:2205.01129), regenerated on a mock galaxy with exact truth")
    src = f"user catalogue {cfg.catalogue.path}" if cfg.catalogue.path else (
        "Milky-Way-like mock: MWPotential2014 (bulge + Miyamoto–Nagai disc + NFW halo) traced by an exact-equilibrium "
        "f(E, Lz) thin + thick disc" if cfg.mock.model == "milkyway" else "Plummer sphere with its isotropic DF")
    data = met.get("data", {})
    rep.add_text(f"<p>Data: {src}; observer at {tuple(cfg.mock.observer_kpc)} kpc, stars within {cfg.mock.radius_kpc} kpc "
                 f"(stars per dataset: {data.get('n_stars', '?')}). Flows: {cfg.flow.model.upper()} × {cfg.flow.transforms}, "
                 f"hidden {cfg.flow.hidden}, {cfg.flow.activation}; ensembles of {cfg.train.ensemble} (original) and "
                 f"{cfg.train.ensemble_smeared} (smeared, re-perturbed) bootstrap members. Accelerations from "
                 f"{cfg.measure.n_velocities} velocities per point ({cfg.measure.weighting}-weighted least squares); densities by the "
                 f"kernel-smoothed Gauss's law with bandwidths {tuple(cfg.measure.bandwidth_kpc)} kpc (truncated at "
                 f"{cfg.measure.truncation}σ), fast symmetric cubature ({cfg.measure.fast_nodes}, {cfg.measure.fast_velocities} "
                 "velocities per node, common random numbers).</p>"
                 "<p>stat. = spread of the ensemble (bootstrap) members; syst. = |re-perturbed − smeared| (leading-order "
                 "bias from measurement errors, the paper's Monte-Carlo error propagation).</p>")
    if "accuracy" in meas:
        acc = meas["accuracy"]
        a0 = acc["acceleration_at_sun"].get("original", {})
        def pct(v, fmt_=".2f", sign=True):
            return "–" if v is None or not math.isfinite(v) else f"{100 * v:{'+' if sign else ''}{fmt_}}%"

        rep.add_note(f"Accuracy at the Sun (original data): radial acceleration {pct(a0.get('radial_rel_error'))} "
                     f"(stat. {pct(a0.get('radial_rel_stat'), sign=False)}), vertical error "
                     f"{pct(a0.get('vertical_error_over_norm'))} of |a|, smoothed density "
                     f"{pct(acc['density_at_sun_rel_error'].get('original'), '.1f')}; median acceleration error along the "
                     f"profiles {pct(acc['acceleration_profiles_median_rel_error'], '.1f', False)}.")

    def fmt(r, digits):
        return {**r, **{k: (f"{r[k]:.{digits}f}" if isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) else "–")
                        for k in ("value", "stat", "syst")}}

    rep.add_heading("Acceleration at the Sun")
    rep.add_table([fmt(r, 0) for r in meas["sun_acceleration"]],
                  "Acceleration at the Sun [kpc/Gyr²]", columns=["component", "dataset", "value", "stat", "syst"])
    rep.add_heading("Mass density at the Sun")
    rep.add_table([fmt(r, 3) for r in meas["sun_density"]],
                  "Mass density at the Sun [10⁷ Msun/kpc³]; smoothed estimates compare with the smoothed truth, point "
                  "estimates with the point truth", columns=["dataset", "value", "stat", "syst"])
    for fig, cap, name in _figures(cfg, A):
        rep.add_figure(fig, cap, name=name, figures_dir=run.figures)
    rep.add_figure(_training_figure(run, cfg), "Validation loss per epoch for every ensemble member.", name="training",
                   figures_dir=run.figures)
    if "cost" in meas:
        c = meas["cost"]
        rows = [{"quantity": "acceleration: network evaluations per point", "value": str(c["acceleration_evaluations_per_point"])},
                {"quantity": "acceleration: seconds per point", "value": f"{c['acceleration_s_per_point']:.3g}"},
                {"quantity": "density (fast): evaluations per point", "value": str(c["fast_density_evaluations_per_point"])},
                {"quantity": "density (fast): seconds per point", "value": f"{c['fast_density_s_per_point']:.3g}"},
                {"quantity": "density (paper MC): evaluations per point", "value": str(c["paper_density_evaluations_per_point"])},
                {"quantity": "speed-up in evaluations (paper / fast)",
                 "value": f"{c['paper_density_evaluations_per_point'] / c['fast_density_evaluations_per_point']:.0f}×"},
                {"quantity": "device", "value": c["device"]}]
        if c.get("paper_density_s_per_point"):
            rows.append({"quantity": "density (paper MC): seconds per point", "value": f"{c['paper_density_s_per_point']:.3g}"})
        rep.add_heading("Cost")
        rep.add_table(rows)
    if "train" in met:
        rows = []
        for name, t in met["train"].items():
            kl = t.get("kl_to_truth") or []
            for k, mm in enumerate(t["members"]):
                rows.append({"dataset": name, "member": k, "stars": t["n_stars"], "epochs": mm["epochs"],
                             "best val −⟨log f⟩": f"{mm['best_val_loss']:.4f}" if mm["best_val_loss"] is not None else "–",
                             "KL(true‖flow) [nats]": f"{kl[k]:.4f}" if k < len(kl) else "–"})
        rep.add_heading("Training")
        rep.add_table(rows)
    rep.add_timings(met.get("timings_s", {}))
    rep.add_config(config_to_dict(cfg))
    return rep.write(run.report_path)


# =============================================================================================
# Everything
# =============================================================================================
def open_run(cfg: PhaseSpaceConfig, run_dir: Path | str | None) -> Run:
    return Run.create(STUDY, cfg, path=run_dir)


def run_all(cfg: PhaseSpaceConfig, run_dir: Path | str | None = None, workers: int = 1, scheduler: str | None = None) -> Run:
    """simulate -> train -> evaluate -> report in one run directory (each stage resumes)."""
    run = open_run(cfg, run_dir)
    with run.stage("simulate"):
        simulate(cfg, run, workers, scheduler)
    with run.stage("train"):
        train(cfg, run)
    with run.stage("evaluate"):
        evaluate(cfg, run)
    with run.stage("report"):
        report(cfg, run)
    return run


for _exc in (CatalogueError, flows.SupportError):
    try:
        from ..options import register_user_error

        register_user_error(_exc)
    except Exception:  # pragma: no cover - options module unavailable
        pass
