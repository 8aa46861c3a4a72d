"""TODO."""

from __future__ import annotations

import functools
import logging
import math
import time

import numpy as np
import torch

from darkml.config import config_to_dict
from darkml.parallel import chunk_rng, run_chunks
from darkml.phasespace import disc, mocks
from darkml.phasespace.catalogue import load_catalogue
from darkml.runs import Run
from darkml.storage import ArraySpec, DatasetError, SampleStore

from .config import MockCfg, PhaseSpaceConfig


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
    pc = mc.potential
    pot = mocks.MilkyWay2014(fractions=tuple(pc.fractions), disc_a_kpc=pc.disc_a_kpc, disc_b_kpc=pc.disc_b_kpc)
    comps = [disc.DiscComponent(c.fraction, c.sigma_kms, c.scale_length_kpc) for c in mc.components]
    return pot, disc.DiscDF(pot, comps, tuple(mc.observer_kpc), mc.radius_kpc)


log = logging.getLogger(__name__)

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


def write_dataset(cfg: PhaseSpaceConfig, run: Run, workers: int = 1, scheduler: str | None = None) -> SampleStore:
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
