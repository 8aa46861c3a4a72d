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
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from darkml.learn.devices import resolve_device, save_torch
from darkml.study import Shortcut, Stage, Study, execute

from ..config import config_to_dict
from ..learn import fit, load_best
from ..parallel import run_chunks
from ..runs import Run, atomic_write_bytes, atomic_write_json
from ..storage import SampleStore
from . import hpsearch as hps
from .baselines import ConditionalMedian, RingLinear, physics_inverse
from .config import PRESETS_DIR, GasConfig, load_gas_config
from .figures import build_report
from .gp import LinePatchGP
from .metrics import (
    HOTSPOT_RULES,
    METRICS,
    bin_maxima,
    heatmap,
    hot_thresholds,
    nan_to_none,
    score_planes,
    summarize,
    trend,
)
from .mopra import MopraError
from .patch_cnn import PatchCNN, PatchRegressor, predict_map
from .patches import (
    PatchDataset,
    PatchPlanes,
    patch_loader,
    smooth_planes,
)
from .planes import Prepared, _concat, _nonempty, prepare
from .radiative import isotope_ratio
from .release import check_release
from .rings import ring_centres
from .survey import UNITS, _array_specs, _load_mopra, _simulate_chunk
from .synthetic import survey_layout

log = logging.getLogger(__name__)

STUDY_NAME = "gas"
__all__ = ["STUDY", "load", "create_run", "simulate", "train", "evaluate", "report", "run", "prepare", "Prepared"]


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
    return Run.create(STUDY_NAME, cfg, path=run_dir)


def _threads(cfg: GasConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))


def simulate(run: Run, workers: int | None = None, scheduler: str | None = None) -> SampleStore:
    """Make (or resume) the dataset: the synthetic survey, or the tiles of the MOPRA cubes."""
    cfg = run.load_config(GasConfig)
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


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def _device(name: str) -> str:
    return str(resolve_device(name, field="gp.device"))


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
              precision="32-true", tensorboard=cfg.cnn.logger == "tensorboard")
    load_best(module, res.best_path)
    return module, res



def _scaled_cfg(cfg: GasConfig) -> dict:
    return {"seed": cfg.seed, "gp": config_to_dict(cfg.gp), "prep": config_to_dict(cfg.prep)}


def train(run: Run, devices: Any = "auto", accelerator: str | None = None) -> dict[str, Any]:
    """Fit the baselines, the GP, the Optuna search and the CNNs (each skipped when already done)."""
    cfg = run.load_config(GasConfig)
    _threads(cfg)
    store = SampleStore.open(run.dataset_path)
    out: dict[str, Any] = {}
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
            with run.step("train/gp"):
                gp = LinePatchGP(cfg.gp.patch, cfg.gp.stride, cfg.gp.max_train_points, cfg.gp.iters, cfg.gp.lr,
                                 cfg.gp.min_active, cfg.gp.predict_chunk, cfg.seed, prep.n_rings,
                                 device=_device(cfg.gp.device)).fit(both)
                save_torch(path, gp.state())
        hp = gp.model.hyperparameters()
        out["gp"] = {"fit_seconds": gp.fit_seconds, "pooled_rings": gp.pooled_rings,
                     "n_train_per_gp": int(gp.model.train_inputs[0].shape[-2]),
                     "n_gps": int(gp.model.train_inputs[0].shape[0]),
                     "final_loss": gp.history[-1] if gp.history else None,
                     "hyperparameters_median": {k: float(np.median(v)) for k, v in hp.items()}}
    # Optuna search
    if cfg.cnn.enabled and cfg.hpsearch.enabled:
        with run.step("train/hpsearch"):
            out["hpsearch"] = _hpsearch(cfg, prep, run, devices, accelerator)
    # CNNs
    if cfg.cnn.enabled:
        out["cnn"] = {}
        for loss in cfg.cnn.losses:
            tag = f"cnn_{loss}"
            t0 = time.perf_counter()
            with run.step(f"train/{tag}"):
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
        run.update_metrics({"timings_s": {"evaluate/predict/gp": round(time.perf_counter() - t0, 3)}})
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
            run.update_metrics({"timings_s": {f"evaluate/predict/{tag}": round(time.perf_counter() - t0, 3)}})
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


def evaluate(run: Run) -> dict[str, Any]:
    """Predict the test region with every model and floor predictor; write metrics and predictions."""
    cfg = run.load_config(GasConfig)
    _threads(cfg)
    store = SampleStore.open(run.dataset_path)
    prep = prepare(cfg, store)
    test = prep.test
    preds = _predictions(cfg, prep, run)
    preds.update(_floor_predictions(cfg, prep))
    tiles = prep.test_tiles.tolist()
    results: dict[str, Any] = {"models": {}, "heatmaps": {}, "generalisation": {}}
    thresholds = hot_thresholds(test.tgt, test.ring, cfg.eval.hotspot)
    scaled: dict[str, np.ndarray] = {}
    for name, pred in preds.items():
        sc = score_planes(test.tgt, pred, thresholds)
        scaled[name] = sc["scaled_abs_error"]
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
    results["hotspot_definitions"] = _hotspot_definitions(test.tgt, test.ring, preds, scaled, cfg)
    results["hotspot"] = cfg.eval.hotspot
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


def _hotspot_definitions(targets: np.ndarray, ring: np.ndarray, preds: dict[str, np.ndarray],
                         glob_p: dict[str, np.ndarray], cfg: GasConfig) -> dict:
    """Table 1's hot-spot error under each reading of the paper's definition (metrics.py), with the
    hot-spot / global ratio the paper reports as 0.0238 / 0.0137 = 1.74 (GP), 1.90, 1.94 (CNNs).
    ``glob_p``: each model's per-plane scaled error (errors over the plane's maximum)."""
    out: dict[str, Any] = {}
    bmax = bin_maxima(targets, ring)
    glob_b = {n: score_planes(targets, p, scales=bmax)["scaled_abs_error"] for n, p in preds.items()}
    variants = [(rule, norm, None) for rule in HOTSPOT_RULES for norm in ("hot", "all")] + [("bin", "hot", "binmax")]
    for rule, norm, denom in variants:
        thr = hot_thresholds(targets, ring, rule)
        key = f"{rule}/{norm}" + (f"/{denom}" if denom else "")
        out[key] = {}
        glob = glob_b if denom else glob_p
        for name, pred in preds.items():
            sc = score_planes(targets, pred, thr, norm, bmax if denom else None)
            hot = summarize(sc["hotspot_abs_error"], cfg.eval.n_boot, cfg.seed)
            both = np.isfinite(sc["hotspot_abs_error"]) & np.isfinite(glob[name])
            ratio = (float(np.median(sc["hotspot_abs_error"][both] / glob[name][both])) if both.any() else None)
            g = np.nanmedian(glob[name]) if np.isfinite(glob[name]).any() else None
            out[key][name] = {"hotspot_abs_error": hot, "median_ratio_to_scaled": ratio,
                              "ratio_of_medians": (hot["value"] / g if hot["value"] is not None and g else None),
                              "hot_pixel_fraction": float(np.nanmean(sc["n_hot"] / targets[0].size)),
                              "planes_with_hot_spots": int(np.isfinite(sc["hotspot_abs_error"]).sum())}
    return out


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
def report(run: Run) -> Path:
    """Write report.html from the run's metrics and predictions."""
    return build_report(run.load_config(GasConfig), run)


def run(cfg: GasConfig, run_dir: str | Path | None = None, workers: int | None = None, scheduler: str | None = None,
        devices: Any = None, accelerator: str | None = None) -> Run:
    """All stages in order (each resumes if already done)."""
    return execute(STUDY, cfg, run_dir, workers=workers, scheduler=scheduler, devices=devices, accelerator=accelerator)[0]


def _echo_evaluate(ev: dict[str, Any]) -> str:
    def fmt(v) -> str:
        return "–" if v is None else f"{v:.4f}"

    return "\n".join(f"{name:26s} r={fmt(m['pearson']['value'])}  SAE={fmt(m['scaled_abs_error']['value'])}  "
                     f"hot={fmt(m['hotspot_abs_error']['value'])}" for name, m in ev["models"].items())


def expected_outputs(cfg: GasConfig) -> dict[str, int]:
    s = cfg.sky
    n = s.n_tiles * (1 + (s.floor_realizations if cfg.eval.noise_floor else 0))
    return {"dataset": n * 2 * s.n_rings * s.pixels_per_tile**2 * 4}


def preflight(cfg: GasConfig) -> None:
    """A MOPRA release is searched recursively, every FITS header classified and checked, and the
    inventory printed, before any work."""
    if cfg.data.source == "mopra":
        check_release(cfg.data.mopra_dir)


STUDY = Study(
    name=STUDY_NAME, title="13CO gas maps from 12CO: Gaussian processes and a patch CNN.", config_model=GasConfig,
    presets=PRESETS_DIR,
    stages=(Stage("simulate", simulate, uses=("workers", "scheduler")),
            Stage("train", train, uses=("devices", "accelerator")),
            Stage("evaluate", evaluate, echo=_echo_evaluate),
            Stage("report", report, echo=lambda p: f"report: {p}")),
    shortcuts=(Shortcut("--mopra", "folder of MOPRA FITS cubes to use instead of the synthetic sky",
                        lambda v, _: ["data.source=mopra", f"data.mopra_dir={v}"]),),
    expected_outputs=expected_outputs, user_errors=(MopraError,), preflight=preflight,
)
