"""The gas-skymap study: simulate (or load MOPRA) -> train GP and CNNs -> evaluate -> report.

Every stage reads and writes only the run directory (darkml.runs.Run), so each can be re-run
or resumed on its own:

* ``simulate`` -- the synthetic survey (or the tiles of local MOPRA cubes) as a zarr
  SampleStore at ``<run>/dataset`` (one sample = one 1-deg tile; chunk i from rng([seed, i])).
* ``train`` -- per-ring linear baseline, the batched GP (``checkpoints/gp/gp.pt``), the
  Optuna search (``checkpoints/hpsearch/journal.log``) and one patch CNN per loss
  (``checkpoints/cnn_<loss>/``, Lightning, resumable).
* ``evaluate`` -- predictions on the test region (``predictions.npz``), Table 1 medians with
  bootstrap intervals over planes, Fig. 4 heatmaps, the generalisation trend, the noise floor.
* ``report`` -- ``report.html`` with the table, heatmaps, locality and generalisation figures,
  predicted-vs-true maps and timings.

This module composes stages; the physics lives in synthetic/radiative/rings, the models in
gp/patch_cnn/baselines, training in darkml.learn.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..config import config_to_dict
from ..learn import fit, load_best
from ..parallel import run_chunks
from ..runs import Run, atomic_write_bytes, atomic_write_json
from ..storage import ArraySpec, DatasetError, SampleStore
from . import hpsearch as hps
from .baselines import ConditionalMedian, RingLinear, physics_inverse
from .config import GasConfig, SkyCfg, ConversionCfg, load_gas_config
from .gp import LinePatchGP
from .metrics import METRICS, heatmap, nan_to_none, score_planes, summarize, trend
from .patch_cnn import PatchCNN, PatchRegressor, predict_map
from .patches import PatchDataset, PatchPlanes, patch_loader, preprocess, smooth_planes, split_tiles, tiles_in_region, wmae_weights
from .radiative import isotope_ratio
from .rings import ring_centres
from .synthetic import TileSpec, simulate_tile, survey_layout

log = logging.getLogger(__name__)

STUDY = "gas"
__all__ = ["STUDY", "load", "create_run", "simulate", "train", "evaluate", "report", "run", "prepare", "Prepared",
           "MODEL_LABELS"]

MODEL_LABELS = {
    "gp": "Matern GP",
    "cnn_wmae": "WMAE CNN",
    "cnn_poisson": "Poisson CNN",
    "ring_linear": "per-ring linear",
    "physics_inverse": "physics inverse",
}
FLOOR_LABELS = {
    "floor_conditional_median": "floor: MC median[13CO|12CO]",
    "floor_oracle_inverse": "floor: oracle inverse",
    "floor_target_noise": "bound: noise-free target",
}


# ---------------------------------------------------------------------------------------------
# config and run
# ---------------------------------------------------------------------------------------------
def load(preset: str = "quick", overrides: Iterable[str] = (), mopra_dir: str | None = None) -> GasConfig:
    """Validated config from a preset, ``a.b=value`` overrides and an optional MOPRA folder."""
    ov = list(overrides or ())
    if mopra_dir:
        ov += ["data.source=mopra", f"data.mopra_dir={mopra_dir}"]
    return load_gas_config(preset, ov)


def create_run(cfg: GasConfig, run_dir: str | Path | None = None) -> Run:
    return Run.create(STUDY, cfg, path=run_dir)


def _threads(cfg: GasConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))


# ---------------------------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------------------------
def _array_specs(n_rings: int, n: int, synthetic: bool) -> dict[str, ArraySpec]:
    plane = (n_rings, n, n)
    arrays = {
        "co12": ArraySpec(plane, "float32"),
        "co13": ArraySpec(plane, "float32"),
        "noise12": ArraySpec(plane, "float32"),
        "noise13": ArraySpec(plane, "float32"),
        "coverage": ArraySpec((n, n), "float32"),
        "glon": ArraySpec((n,), "float32"),
        "glat": ArraySpec((n,), "float32"),
        "l_lo": ArraySpec((), "float64"),
        "tile": ArraySpec((), "int32"),
        "realization": ArraySpec((), "int32"),
    }
    if synthetic:
        arrays.update({"truth13": ArraySpec(plane, "float32"), "sigma_v": ArraySpec(plane, "float32"),
                       "ratio": ArraySpec(plane, "float32"), "tex": ArraySpec((n, n), "float32")})
    return arrays


UNITS = {
    "co12": "N(H2) from 12CO [cm^-2] = X_CO W(12CO) / eta_mb",
    "co13": "N(H2) from 13CO [cm^-2] = 7.5e5 N_LTE(13CO)",
    "noise12": "1-sigma noise of co12 [cm^-2]", "noise13": "1-sigma noise of co13 [cm^-2] (linearised)",
    "truth13": "co13 of the noise-free, stripe-free sky [cm^-2]", "sigma_v": "line dispersion [km/s]",
    "ratio": "12C/13C isotope ratio", "tex": "excitation temperature [K]", "coverage": "fraction of valid channels",
    "glon": "pixel-centre Galactic longitude [deg]", "glat": "pixel-centre Galactic latitude [deg]",
    "l_lo": "tile low-longitude edge [deg]",
}


def _simulate_chunk(sky: dict, conversion: dict, seed: int, path: str, layout: list, i: int) -> None:
    store = SampleStore.open(path, require_complete=False, mode="r+")
    spec = TileSpec(*layout[i])
    d = simulate_tile(SkyCfg(**sky), ConversionCfg(**conversion), seed, spec)
    m = d.pop("meta")
    n = d["co12"].shape[-1]
    arrays = {k: v[None] for k, v in d.items()}
    arrays["coverage"] = np.ones((1, n, n), np.float32)
    arrays["l_lo"] = np.array([m["l_lo_deg"]])
    arrays["tile"] = np.array([spec.tile], np.int32)
    arrays["realization"] = np.array([spec.realization], np.int32)
    table = {k: np.array([v]) for k, v in m.items()}
    store.write_chunk(i, arrays, tables={"tiles": table})


def simulate(cfg: GasConfig, run: Run, workers: int | None = None, scheduler: str | None = None) -> SampleStore:
    """Make (or resume) the dataset: the synthetic survey, or the tiles of the MOPRA cubes."""
    with run.stage("simulate"):
        if cfg.data.source == "mopra":
            return _load_mopra(cfg, run)
        n_floor = cfg.sky.floor_realizations if cfg.eval.noise_floor else 0
        layout = [[s.sample, s.tile, s.realization]
                  for s in survey_layout(cfg.sky.n_tiles, cfg.sky.l_start_deg, cfg.data.test_l_deg, n_floor)]
        sky, conversion = config_to_dict(cfg.sky), config_to_dict(cfg.conversion)
        attrs = {"source": "synthetic", "seed": cfg.seed, "sky": sky, "conversion": conversion, "units": UNITS,
                 "layout": layout}
        store = SampleStore.create(run.dataset_path, len(layout), 1,
                                   _array_specs(cfg.sky.n_rings, cfg.sky.pixels_per_tile, True), attrs=attrs,
                                   tables=["tiles"])
        todo = store.missing_chunks()
        fn = functools.partial(_simulate_chunk, sky, conversion, cfg.seed, str(run.dataset_path), layout)
        run_chunks(fn, todo, workers=workers or cfg.data.workers, scheduler=scheduler, desc="simulate tiles")
        store = SampleStore.open(run.dataset_path)
        run.update_metrics({"dataset": {"n_samples": store.n_samples, "source": "synthetic",
                                        "n_survey_tiles": cfg.sky.n_tiles,
                                        "floor_realizations": n_floor}})
        return store


def _load_mopra(cfg: GasConfig, run: Run) -> SampleStore:
    from .mopra import load_survey

    xco = cfg.conversion.xco_per_ring(cfg.sky.n_rings)
    tiles = load_survey(cfg.data.mopra_dir, xco, cfg.conversion.eta_mb, cfg.conversion.lte_tex_k,
                        cfg.data.mopra_12co_glob, cfg.data.mopra_13co_glob, cfg.data.mopra_rms_suffix,
                        cfg.sky.ring_edges_kpc)
    if not tiles:
        raise DatasetError(f"no tiles could be cut from the cubes in {cfg.data.mopra_dir}")
    n = tiles[0]["co12"].shape[-1]
    attrs = {"source": "mopra", "mopra_dir": str(cfg.data.mopra_dir), "conversion": config_to_dict(cfg.conversion),
             "units": UNITS, "files": [t["source"] for t in tiles]}
    store = SampleStore.create(run.dataset_path, len(tiles), 1, _array_specs(cfg.sky.n_rings, n, False), attrs=attrs,
                               tables=[])
    for i in store.missing_chunks():
        t = tiles[i]
        arrays = {k: t[k][None] for k in ("co12", "co13", "noise12", "noise13", "coverage", "glon", "glat")}
        arrays["l_lo"] = np.array([t["l_lo_deg"]])
        arrays["tile"] = np.array([i], np.int32)
        arrays["realization"] = np.array([0], np.int32)
        store.write_chunk(i, arrays)
    run.update_metrics({"dataset": {"n_samples": len(tiles), "source": "mopra", "pixels_per_tile": n,
                                    "l_lo_deg": [t["l_lo_deg"] for t in tiles]}})
    return SampleStore.open(run.dataset_path)


# ---------------------------------------------------------------------------------------------
# preprocessing and splits
# ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """Everything the learners and metrics need, in scaled units (``x / src_scale``, ``y / tgt_scale``)."""

    train: PatchPlanes
    val: PatchPlanes
    test: PatchPlanes
    src_scale: float
    tgt_scale: float
    train_tiles: np.ndarray
    val_tiles: np.ndarray
    test_tiles: np.ndarray
    l_lo: dict
    synthetic: bool
    floor: PatchPlanes | None
    store: SampleStore
    n_rings: int


def prepare(cfg: GasConfig, store: SampleStore) -> Prepared:
    """Preprocess every survey tile (filter, 3-sigma cut), split by longitude, scale to O(1)."""
    real = store.read("realization")
    tile = store.read("tile")
    l_lo_all = store.read("l_lo")
    survey = np.nonzero(real == 0)[0]
    n_rings, n_px = store.arrays["co12"]["shape"][0], store.arrays["co12"]["shape"][-1]
    rc = ring_centres(cfg.sky.ring_edges_kpc, cfg.sky.r_gas_max_kpc)
    l_lo = {int(tile[s]): float(l_lo_all[s]) for s in survey}

    def planes_of(samples: np.ndarray) -> PatchPlanes:
        if samples.size == 0:
            z = np.zeros((0, n_px, n_px), np.float32)
            return PatchPlanes(z, z, z, np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32), z)
        co12 = store.read("co12", idx=samples).reshape(-1, n_px, n_px)
        co13 = store.read("co13", idx=samples).reshape(co12.shape)
        n13 = store.read("noise13", idx=samples).reshape(co12.shape)
        src, tgt, thr = preprocess(co12, co13, n13, cfg.prep.smooth_sigma_px, cfg.prep.mask_nsigma)
        tiles = np.repeat(tile[samples], n_rings)
        rings = np.tile(np.arange(n_rings), samples.size)
        return PatchPlanes(src, tgt, wmae_weights(tgt, cfg.prep.weight_smooth_px), tiles, rings,
                           rc[rings].astype(np.float32), thr, {"sample": np.repeat(samples, n_rings)})

    tile_ids = np.array(sorted(l_lo))
    lows = np.array([l_lo[t] for t in tile_ids])
    train_tiles = tile_ids[tiles_in_region(lows, cfg.data.train_l_deg)]
    test_tiles = tile_ids[tiles_in_region(lows, cfg.data.test_l_deg)]
    if train_tiles.size == 0:
        raise DatasetError(f"no tile lies inside the training region {cfg.data.train_l_deg} deg")
    if test_tiles.size == 0:
        raise DatasetError(f"no tile lies inside the test region {cfg.data.test_l_deg} deg")
    tr_tiles, val_tiles = split_tiles(train_tiles, cfg.data.val_fraction, cfg.seed)
    by_tile = {int(tile[s]): s for s in survey}
    train = planes_of(np.array([by_tile[t] for t in tr_tiles]))
    val = planes_of(np.array([by_tile[t] for t in val_tiles], dtype=int))
    test = planes_of(np.array([by_tile[t] for t in test_tiles]))
    both_src = np.concatenate([train.src.ravel(), val.src.ravel()])
    both_tgt = np.concatenate([train.tgt.ravel(), val.tgt.ravel()])
    src_scale = float(np.percentile(both_src[both_src > 0], 99)) if np.any(both_src > 0) else 1.0
    tgt_scale = float(np.percentile(both_tgt[both_tgt > 0], 99)) if np.any(both_tgt > 0) else 1.0
    floor = None
    synthetic = store.attrs.get("source") == "synthetic"
    if synthetic and np.any(real > 0):
        floor = planes_of(np.nonzero(real > 0)[0])
    for p in (train, val, test) + ((floor,) if floor is not None else ()):
        p.src /= src_scale
        p.tgt /= tgt_scale
        if p.thr is not None:
            p.thr /= tgt_scale
    return Prepared(train, val, test, src_scale, tgt_scale, tr_tiles, val_tiles, test_tiles, l_lo, synthetic, floor,
                    store, n_rings)


def _nonempty(p: PatchPlanes) -> PatchPlanes:
    flat = np.abs(p.src).reshape(len(p.src), -1).max(axis=1) + np.abs(p.tgt).reshape(len(p.tgt), -1).max(axis=1)
    return p.select(flat > 0)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _cnn_module(cfg: GasConfig, loss: str, window: int, filters: int, lr: float, max_weight: float, epochs: int):
    model = PatchCNN(window=window, filters=filters, hidden=tuple(cfg.cnn.hidden), dropout=cfg.cnn.dropout,
                     ring_feature=cfg.cnn.ring_feature, positive=(loss == "poisson"))
    return PatchRegressor(model, lr=lr, loss=loss, max_weight=max_weight, weighting=cfg.cnn.weighting,
                          max_epochs=epochs, optimizer=cfg.cnn.optimizer)


def _val_subset(val: PatchPlanes, n_max: int, seed: int) -> np.ndarray | None:
    n = int(np.prod(val.shape))
    if n <= n_max:
        return None
    return np.sort(np.random.default_rng([seed, 5]).choice(n, size=n_max, replace=False))


def _train_cnn(cfg: GasConfig, prep: Prepared, run: Run, loss: str, ckpt: Path, window: int, filters: int, lr: float,
               max_weight: float, epochs: int, patches_per_epoch: int | None, tag: str, devices: Any = "auto",
               accelerator: str | None = None):
    train = _nonempty(prep.train)
    val = _nonempty(prep.val) if len(prep.val.src) else train
    module = _cnn_module(cfg, loss, window, filters, lr, max_weight, epochs)
    module.model.set_output_bias(float(train.tgt.mean()) if loss == "poisson" else float(np.median(train.tgt)))
    tl = patch_loader(PatchDataset(train, window), cfg.cnn.batch_size, True, cfg.seed, patches_per_epoch,
                      cfg.cnn.num_workers)
    vl = patch_loader(PatchDataset(val, window, _val_subset(val, 200_000, cfg.seed)), cfg.cnn.batch_size, False)
    res = fit(module, tl, vl, ckpt, max_epochs=epochs, patience=cfg.cnn.patience, devices=devices,
              accelerator=accelerator or cfg.cnn.accelerator, log_dir=run.logs, tag=tag, seed=cfg.seed,
              precision="32-true")
    load_best(module, res.best_path)
    return module, res


def _save_torch(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _scaled_cfg(cfg: GasConfig) -> dict:
    return {"seed": cfg.seed, "gp": config_to_dict(cfg.gp), "prep": config_to_dict(cfg.prep)}


def train(cfg: GasConfig, run: Run, devices: Any = "auto", accelerator: str | None = None) -> dict[str, Any]:
    """Fit the baselines, the GP, the Optuna search and the CNNs (each skipped when already done)."""
    _threads(cfg)
    store = SampleStore.open(run.dataset_path)
    out: dict[str, Any] = {}
    with run.stage("train"):
        prep = prepare(cfg, store)
        info = {"src_scale": prep.src_scale, "tgt_scale": prep.tgt_scale,
                "train_tiles": prep.train_tiles.tolist(), "val_tiles": prep.val_tiles.tolist(),
                "test_tiles": prep.test_tiles.tolist()}
        atomic_write_json(run.checkpoints / "scales.json", info)
        # per-ring linear baseline (seconds)
        both = _concat(prep.train, prep.val)
        lin = RingLinear(prep.n_rings).fit(both.src, both.tgt, both.ring)
        atomic_write_json(run.checkpoints / "ring_linear.json",
                          {"coef": {str(k): v for k, v in lin.coef.items()}, "pooled": lin.pooled})
        # GP
        if cfg.gp.enabled:
            path = run.checkpoints / "gp" / "gp.pt"
            if path.is_file():
                log.info("GP: already trained (%s)", path)
                state = torch.load(path, map_location="cpu", weights_only=False)
                gp = LinePatchGP.from_state(state, _device(cfg.gp.device))
            else:
                with run.stage("train_gp"):
                    gp = LinePatchGP(cfg.gp.patch, cfg.gp.stride, cfg.gp.max_train_points, cfg.gp.iters, cfg.gp.lr,
                                     cfg.gp.min_active, cfg.gp.predict_chunk, cfg.seed, prep.n_rings,
                                     device=_device(cfg.gp.device)).fit(both)
                    _save_torch(gp.state(), path)
            hp = gp.model.hyperparameters()
            out["gp"] = {"fit_seconds": gp.fit_seconds, "pooled_rings": gp.pooled_rings,
                         "n_train_per_gp": int(gp.model.train_inputs[0].shape[-2]),
                         "n_gps": int(gp.model.train_inputs[0].shape[0]),
                         "final_loss": gp.history[-1] if gp.history else None,
                         "hyperparameters_median": {k: float(np.median(v)) for k, v in hp.items()}}
        # Optuna search
        if cfg.cnn.enabled and cfg.hpsearch.enabled:
            with run.stage("hpsearch"):
                out["hpsearch"] = _hpsearch(cfg, prep, run, devices, accelerator)
        # CNNs
        if cfg.cnn.enabled:
            out["cnn"] = {}
            for loss in cfg.cnn.losses:
                tag = f"cnn_{loss}"
                t0 = time.perf_counter()
                with run.stage(f"train_{tag}"):
                    module, res = _train_cnn(cfg, prep, run, loss, run.checkpoints / tag, cfg.cnn.window, cfg.cnn.filters,
                                             cfg.cnn.lr, cfg.cnn.max_weight, cfg.cnn.epochs, cfg.cnn.patches_per_epoch,
                                             tag, devices, accelerator)
                thr = [h["train_images_per_s"] for h in res.history if "train_images_per_s" in h]
                out["cnn"][tag] = {"epochs": res.epochs, "best_val_mae_scaled": res.best_score,
                                   "train_patches_per_s_median": float(np.median(thr)) if thr else None,
                                   "seconds_this_call": time.perf_counter() - t0,
                                   "val_curve": [h.get("val_loss") for h in res.history]}
        run.update_metrics({"train": out})
    return out


def _concat(a: PatchPlanes, b: PatchPlanes) -> PatchPlanes:
    return PatchPlanes(np.concatenate([a.src, b.src]), np.concatenate([a.tgt, b.tgt]),
                       np.concatenate([a.weight, b.weight]), np.concatenate([a.tile, b.tile]),
                       np.concatenate([a.ring, b.ring]), np.concatenate([a.ring_r, b.ring_r]),
                       None if a.thr is None or b.thr is None else np.concatenate([a.thr, b.thr]))


def _hpsearch(cfg: GasConfig, prep: Prepared, run: Run, devices: Any, accelerator: str | None) -> dict[str, Any]:
    hp = cfg.hpsearch
    val = _nonempty(prep.val) if len(prep.val.src) else _nonempty(prep.train)
    root = run.checkpoints / "hpsearch"

    def objective(params: dict[str, Any], number: int) -> float:
        ckpt = root / f"trial_{number:04d}"
        hps.clean_trial_dir(ckpt)
        module, _ = _train_cnn(cfg, prep, run, hp.loss, ckpt, int(params["window"]), int(params["filters"]),
                               float(params["lr"]), float(params["max_weight"]), hp.epochs, hp.patches_per_epoch,
                               f"hpsearch/trial_{number:04d}", devices, accelerator)
        pred = predict_map(module.model, val.src, val.ring_r, device=_device("auto"))
        sae = score_planes(val.tgt, pred)["scaled_abs_error"]
        hps.clean_trial_dir(ckpt)
        value = summarize(sae, n_boot=0)["value"]
        return float("nan") if value is None else value

    study = hps.run_search(hp, objective, root / "journal.log", seed=cfg.seed)
    rows = hps.trials_table(study)
    best = min(rows, key=lambda r: r["val_scaled_abs_error"]) if rows else None
    return {"trials": rows, "by_window": {str(k): v for k, v in hps.by_window(rows).items()}, "best": best,
            "sampler": hp.sampler, "n_trials": len(rows)}


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------
def _predictions(cfg: GasConfig, prep: Prepared, run: Run) -> dict[str, np.ndarray]:
    test = prep.test
    preds: dict[str, np.ndarray] = {}
    lin_state = json.loads((run.checkpoints / "ring_linear.json").read_text())
    lin = RingLinear(prep.n_rings)
    lin.coef = {int(k): tuple(v) for k, v in lin_state["coef"].items()}
    lin.pooled = tuple(lin_state["pooled"])
    preds["ring_linear"] = lin.predict(test.src, test.ring)
    # physics inverse with the known Tex, ring isotope ratio and mean line width
    xco = np.asarray(cfg.conversion.xco_per_ring(prep.n_rings))[test.ring][:, None, None]
    ratio = isotope_ratio(ring_centres(cfg.sky.ring_edges_kpc, cfg.sky.r_gas_max_kpc))[test.ring][:, None, None]
    phys = physics_inverse(test.src * prep.src_scale, ratio, cfg.sky.sigma_v_kms, cfg.conversion.lte_tex_k, xco,
                           cfg.conversion.lte_tex_k) / prep.tgt_scale
    preds["physics_inverse"] = np.where(phys > test.thr, phys, 0.0).astype(np.float32)
    gp_path = run.checkpoints / "gp" / "gp.pt"
    if cfg.gp.enabled and gp_path.is_file():
        t0 = time.perf_counter()
        gp = LinePatchGP.from_state(torch.load(gp_path, map_location="cpu", weights_only=False), _device(cfg.gp.device))
        preds["gp"] = gp.predict(test)
        run.update_metrics({"timings_s": {"predict_gp": round(time.perf_counter() - t0, 3)}})
    if cfg.cnn.enabled:
        for loss in cfg.cnn.losses:
            tag = f"cnn_{loss}"
            best = run.checkpoints / tag / "best.ckpt"
            if not best.is_file():
                log.warning("%s: no checkpoint at %s (train first); skipped", tag, best)
                continue
            module = _cnn_module(cfg, loss, cfg.cnn.window, cfg.cnn.filters, cfg.cnn.lr, cfg.cnn.max_weight, cfg.cnn.epochs)
            load_best(module, best)
            t0 = time.perf_counter()
            preds[tag] = predict_map(module.model, test.src, test.ring_r, device=_device("auto"))
            run.update_metrics({"timings_s": {f"predict_{tag}": round(time.perf_counter() - t0, 3)}})
    return preds


def _floor_predictions(cfg: GasConfig, prep: Prepared) -> dict[str, np.ndarray]:
    """Noise-floor predictors (synthetic sky only): see docs/gas.md, 'Noise floor'."""
    if not prep.synthetic or not cfg.eval.noise_floor:
        return {}
    store, test = prep.store, prep.test
    samples = test.extra["sample"][:: prep.n_rings]
    shape = test.src.shape
    out: dict[str, np.ndarray] = {}
    truth = store.read("truth13", idx=samples).reshape(shape)
    t = smooth_planes(truth, cfg.prep.smooth_sigma_px) / prep.tgt_scale
    out["floor_target_noise"] = np.where(t > test.thr, t, 0.0).astype(np.float32)
    co12 = store.read("co12", idx=samples).reshape(shape)
    sv = store.read("sigma_v", idx=samples).reshape(shape)
    ratio = store.read("ratio", idx=samples).reshape(shape)
    tex = np.repeat(store.read("tex", idx=samples), prep.n_rings, axis=0)
    xco = np.asarray(cfg.conversion.xco_per_ring(prep.n_rings))[test.ring][:, None, None]
    orc = physics_inverse(co12, ratio, sv, tex, xco, cfg.conversion.lte_tex_k)
    orc = smooth_planes(orc, cfg.prep.smooth_sigma_px) / prep.tgt_scale
    out["floor_oracle_inverse"] = np.where(orc > test.thr, orc, 0.0).astype(np.float32)
    if prep.floor is not None and len(prep.floor.src):
        keys_fit = np.stack([prep.floor.tile, prep.floor.ring], axis=1)
        cm = ConditionalMedian(cfg.eval.floor_bins).fit(prep.floor.src, prep.floor.tgt, keys_fit)
        out["floor_conditional_median"] = cm.predict(test.src, np.stack([test.tile, test.ring], axis=1))
    return out


def evaluate(cfg: GasConfig, run: Run) -> dict[str, Any]:
    """Predict the test region with every model and floor predictor; write metrics and predictions."""
    _threads(cfg)
    store = SampleStore.open(run.dataset_path)
    with run.stage("evaluate"):
        prep = prepare(cfg, store)
        test = prep.test
        preds = _predictions(cfg, prep, run)
        preds.update(_floor_predictions(cfg, prep))
        tiles = prep.test_tiles.tolist()
        results: dict[str, Any] = {"models": {}, "heatmaps": {}, "generalisation": {}}
        for name, pred in preds.items():
            sc = score_planes(test.tgt, pred)
            results["models"][name] = {m: summarize(sc[m], cfg.eval.n_boot, cfg.seed) for m in METRICS}
            results["heatmaps"][name] = {m: heatmap(sc[m], test.tile, test.ring, tiles, prep.n_rings) for m in METRICS}
            # Fig. 3: mean scaled absolute error across bins per longitude, vs distance from the training region
            per_tile = []
            for t in tiles:
                v = sc["scaled_abs_error"][test.tile == t]
                per_tile.append(float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"))
            dist = [prep.l_lo[t] + 0.5 - cfg.data.train_l_deg[1] for t in tiles]
            results["generalisation"][name] = {"distance_deg": dist, "mean_scaled_abs_error": per_tile,
                                               "trend": trend(dist, per_tile)}
        floor_names = [k for k in preds if k.startswith("floor_") and k != "floor_target_noise"]
        if floor_names:
            best_sae = min((results["models"][k]["scaled_abs_error"]["value"] for k in floor_names
                            if results["models"][k]["scaled_abs_error"]["value"] is not None), default=None)
            best_r = max((results["models"][k]["pearson"]["value"] for k in floor_names
                          if results["models"][k]["pearson"]["value"] is not None), default=None)
            results["noise_floor"] = {"scaled_abs_error": best_sae, "pearson": best_r,
                                      "definition": "best of the oracle inverse and the Monte-Carlo conditional median"}
            if best_sae:
                results["ratio_to_floor"] = {k: (results["models"][k]["scaled_abs_error"]["value"] / best_sae
                                                 if results["models"][k]["scaled_abs_error"]["value"] is not None else None)
                                             for k in preds if not k.startswith("floor_")}
        results["ranking"] = _ranking(results["models"], [k for k in preds if not k.startswith("floor_")])
        results["test_tiles"] = tiles
        results["test_l_lo_deg"] = [prep.l_lo[t] for t in tiles]
        results["n_test_planes"] = int(len(test.src))
        buf = io.BytesIO()
        np.savez_compressed(buf, target=test.tgt, source=test.src, tile=test.tile, ring=test.ring,
                            tgt_scale=prep.tgt_scale, src_scale=prep.src_scale, **{f"pred_{k}": v for k, v in preds.items()})
        atomic_write_bytes(run.path / "predictions.npz", buf.getvalue())
        results = nan_to_none(results)
        run.update_metrics({"evaluate": results})
    return results


def _ranking(models: dict[str, Any], names: list[str]) -> dict[str, list[str]]:
    """Models ordered best-first by median scaled error overall and on hot spots (the paper's comparison)."""
    def order(metric: str) -> list[str]:
        vals = [(models[n][metric]["value"], n) for n in names if models[n][metric]["value"] is not None]
        return [n for _, n in sorted(vals)]
    return {"scaled_abs_error": order("scaled_abs_error"), "hotspot_abs_error": order("hotspot_abs_error"),
            "pearson": list(reversed([n for _, n in sorted((models[n]["pearson"]["value"], n) for n in names
                                                           if models[n]["pearson"]["value"] is not None)]))}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def report(cfg: GasConfig, run: Run) -> Path:
    """Write ``report.html`` from metrics.json and predictions.npz."""
    from .figures import build_report

    with run.stage("report"):
        path = build_report(cfg, run)
    return path


def run(cfg: GasConfig, run_dir: str | Path | None = None, workers: int | None = None, scheduler: str | None = None,
        devices: Any = "auto", accelerator: str | None = None) -> Run:
    """All stages in order (each resumes if already done)."""
    r = create_run(cfg, run_dir)
    t0 = time.perf_counter()
    simulate(cfg, r, workers, scheduler)
    train(cfg, r, devices, accelerator)
    evaluate(cfg, r)
    r.update_metrics({"timings_s": {"total_wall": round(time.perf_counter() - t0, 3)}})
    report(cfg, r)
    return r

