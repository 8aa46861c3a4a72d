"""The astrometric-lensing study as stages: simulate → train → evaluate → report.

Each stage reads and writes only the run directory, so any stage can be re-run, resumed or
moved to another machine::

    from darkml.astrometry import study
    cfg = study.load("quick", ["data.n_train=200"])
    run = study.run(cfg, "runs/astro")          # all stages
    study.train(Run.open("runs/astro"))          # or one at a time

``STUDY`` declares the stages for the shared runner and CLI (:mod:`darkml.study`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .. import metrics
from ..config import load_config
from ..learn import ArrayDataset, ClassifierModule, fit, load_best, make_loader, predict
from ..runs import Run
from ..study import Stage, Study, execute
from . import attribution, baseline, ceiling, figures, frontier, maps
from . import simulate as sim
from .config import AstrometryConfig
from .models import build_model

log = logging.getLogger(__name__)

PRESETS = Path(__file__).parent / "presets"
STUDY_NAME = "astrometry"

__all__ = ["load", "create_run", "simulate", "train", "evaluate", "report", "run", "PRESETS"]


def load(preset: str = "quick", overrides: Iterable[str] = ()) -> AstrometryConfig:
    """Validated config from a preset plus ``key=value`` overrides (errors before any work)."""
    return load_config(AstrometryConfig, PRESETS, preset, list(overrides), study=STUDY_NAME)


def create_run(cfg: AstrometryConfig, run_dir: Path | str | None = None) -> Run:
    return Run.create(STUDY_NAME, cfg, path=run_dir)


# ---- data helpers ----------------------------------------------------------------------
def noise_scale(cfg: AstrometryConfig, scenario: str) -> float:
    """Nominal per-pixel noise σ_u / sqrt(N_q / N_pix) [µas/yr]: the maps' input scale."""
    s = cfg.data.survey(scenario)
    return maps.per_pixel_noise(s.n_q, s.sigma_u, cfg.sky.nside)


def network_input(cfg: AstrometryConfig, maps: np.ndarray, scenario: str, batch: int = 512) -> np.ndarray:
    """What the CNN sees: maps in units of the nominal per-pixel noise, optionally low-pass filtered
    (``train.input_smoothing_px``: the χ² baseline's Gaussian, periodic in longitude)."""
    x = (np.asarray(maps) / noise_scale(cfg, scenario)).astype(np.float32)
    sm = cfg.train.input_smoothing_px
    if sm > 0:
        for i in range(0, len(x), batch):
            x[i:i + batch] = baseline.smooth_images(x[i:i + batch], sm).astype(np.float32)
    return x


def load_split(cfg: AstrometryConfig, run: Run, scenario: str, split: str, verify: bool = True) -> dict[str, np.ndarray]:
    store = sim.open_scenario(run.dataset_path, scenario, verify=verify)
    code = sim.SPLITS[split]
    idx = np.nonzero(store.read("split") == code)[0]
    return {
        "maps": store.read("maps", idx),
        "label": store.read("label", idx),
        "signal_index": store.read("signal_index", idx),
        "index": idx,
    }


def _flip_transform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror l -> -l (µ_l changes sign) and/or b -> -b (µ_b changes sign)."""
    if torch.rand((), generator=g) < 0.5:
        x = torch.flip(x, dims=(-1,))
        x = torch.stack([-x[0], x[1]])
    if torch.rand((), generator=g) < 0.5:
        x = torch.flip(x, dims=(-2,))
        x = torch.stack([x[0], -x[1]])
    return x


def _module(cfg: AstrometryConfig, model_name: str) -> ClassifierModule:
    t = cfg.train
    lr = t.model_lr.get(model_name, t.lr)
    width = t.width if model_name == "resnet18" else 64
    return ClassifierModule(build_model(model_name, in_channels=2, num_outputs=2, width=width), num_classes=2, lr=lr,
                            weight_decay=t.weight_decay, plateau_patience=t.plateau_patience, plateau_factor=t.plateau_factor)


def _jobs(cfg: AstrometryConfig) -> list[tuple[str, str]]:
    jobs = [(s, cfg.train.model) for s in cfg.data.scenarios]
    for m in cfg.train.compare_models:
        if (cfg.train.compare_scenario, m) not in jobs and cfg.train.compare_scenario in cfg.data.scenarios:
            jobs.append((cfg.train.compare_scenario, m))
    return jobs


def _curve_jobs(cfg: AstrometryConfig) -> list[tuple[str, int]]:
    """(scenario, maps per class) of the learning curve below data.n_train (the full size is the main job)."""
    return [(s, n) for s in cfg.train.curve_scenarios for n in cfg.train.train_sizes if n < cfg.data.n_train] \
        if cfg.train.train_sizes else []


def _tag(scenario: str, model: str, n: int | None = None) -> str:
    return f"{scenario}-{model}" if n is None else f"{scenario}-{model}-n{n}"


def _subset(split: dict[str, np.ndarray], n_per_class: int) -> dict[str, np.ndarray]:
    """The first ``n_per_class`` signal/no-signal pairs of a split (the store alternates them)."""
    sel = np.r_[np.nonzero(split["label"] == 1)[0][:n_per_class], np.nonzero(split["label"] == 0)[0][:n_per_class]]
    sel.sort()
    return {k: v[sel] for k, v in split.items()}


# ---- stages --------------------------------------------------------------------------------
def simulate(run: Run, workers: int = 1, scheduler: str | None = None) -> dict[str, Path]:
    """Simulate signal maps and noisy maps per scenario (zarr; resumable, deterministic)."""
    cfg = run.load_config(AstrometryConfig)
    return sim.simulate(cfg, run.dataset_path, workers=workers, scheduler=scheduler)


def train(run: Run, devices: int | str | None = None, accelerator: str | None = None) -> dict[str, Any]:
    """Train one classifier per (scenario, model) job; resumes interrupted jobs."""
    cfg = run.load_config(AstrometryConfig)
    t = cfg.train
    # refuse an incomplete or corrupted dataset before any training starts
    for scenario in {s for s, _ in _jobs(cfg)}:
        sim.open_scenario(run.dataset_path, scenario, verify=True)
    results: dict[str, Any] = {}
    jobs = [(s, m, None) for s, m in _jobs(cfg)] + [(s, t.model, n) for s, n in _curve_jobs(cfg)]
    for scenario, model_name, n_sub in jobs:
        tr = load_split(cfg, run, scenario, "train")
        if n_sub is not None:
            tr = _subset(tr, n_sub)
        va = load_split(cfg, run, scenario, "val")
        transform = _flip_transform if t.augment_flips else None
        train_loader = make_loader(ArrayDataset(network_input(cfg, tr["maps"], scenario), tr["label"], transform=transform,
                                                seed=cfg.seed),
                                   t.batch_size, shuffle=True, seed=cfg.seed, num_workers=t.num_workers)
        val_loader = make_loader(ArrayDataset(network_input(cfg, va["maps"], scenario), va["label"]), 256, shuffle=False)
        torch.manual_seed(cfg.seed)
        module = _module(cfg, model_name)
        tag = _tag(scenario, model_name, n_sub)
        log.info("training %s on scenario %s (%d train / %d val maps)", model_name, scenario, len(tr["label"]), len(va["label"]))
        res = fit(module, train_loader, val_loader, run.checkpoints / tag, max_epochs=t.max_epochs, patience=t.patience,
                  devices=devices if devices is not None else t.devices,
                  accelerator=accelerator if accelerator is not None else t.accelerator,
                  precision=t.precision, log_dir=run.logs, tag=tag, seed=cfg.seed,
                  tensorboard=t.logger == "tensorboard")
        results[tag] = {"best_checkpoint": str(res.best_path), "best_val_loss": res.best_score, "epochs": res.epochs,
                        "history": res.history}
    run.update_metrics({"training": results})
    return results


def _trained(cfg: AstrometryConfig, run: Run, scenario: str, model_name: str, n: int | None = None) -> ClassifierModule:
    done = run.checkpoints / _tag(scenario, model_name, n) / "best.ckpt"
    if not done.is_file():
        raise FileNotFoundError(f"no trained {model_name} for scenario {scenario} in {run.path}; run the train stage first")
    return load_best(_module(cfg, model_name), done).eval()


def evaluate(run: Run) -> dict[str, Any]:
    """Test-set ROC/AUC with bootstrap intervals, the χ² baseline, and attributions."""
    cfg = run.load_config(AstrometryConfig)
    e = cfg.evaluate
    out: dict[str, Any] = {"auc": {}, "roc": {}, "baseline": {}, "ceiling": {}}
    scores: dict[str, dict[str, np.ndarray]] = {}
    tests: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}   # scenario -> (test split, network input)
    for scenario, model_name in _jobs(cfg):
        te, x = _test_split(cfg, run, scenario, tests)
        scale = noise_scale(cfg, scenario)
        module = _trained(cfg, run, scenario, model_name)
        probs = predict(module, make_loader(ArrayDataset(x, te["label"]), 256, shuffle=False))
        rep = metrics.binary_report(te["label"], probs[:, 1], n_boot=e.n_boot, level=e.ci_level, seed=cfg.seed)
        if model_name == cfg.train.model:
            scores[scenario] = {"label": te["label"], "signal_index": te["signal_index"], "pair": te["index"] // 2,
                                "cnn": probs[:, 1]}
        out["auc"].setdefault(scenario, {})[model_name] = rep["auc"]
        out["roc"].setdefault(scenario, {})[model_name] = rep["roc"]
        if scenario not in out["baseline"]:
            score = baseline.chi2_excess(te["maps"] / scale, nside=cfg.sky.nside)
            scores.setdefault(scenario, {})["chi2"] = score
            b = metrics.binary_report(te["label"], score, n_boot=e.n_boot, level=e.ci_level, seed=cfg.seed)
            out["baseline"][scenario] = {"auc": b["auc"], "roc": b["roc"]}
        if scenario not in out["ceiling"]:
            out["ceiling"][scenario] = _ceiling(cfg, run, scenario, te)
        log.info("scenario %s %s: AUC %.3f (χ² baseline %.3f, oracle %.3f)", scenario, model_name, rep["auc"]["value"],
                 out["baseline"][scenario]["auc"]["value"], out["ceiling"][scenario]["oracle_auc"]["value"])
    if _curve_jobs(cfg):
        out["learning_curve"] = _learning_curve(cfg, run, out, tests)
    if e.frontier:
        out["frontier"] = frontier.frontier_claims(out, scores, {s: cfg.data.survey(s) for s in cfg.data.scenarios},
                                                   cfg.sky.nside, cfg.train.model, e.n_boot, e.ci_level, cfg.seed)
    out["attribution"] = _attribution(cfg, run, tests)
    flat = {f"{s}/{k}": v for s, d in scores.items() for k, v in d.items()}
    np.savez_compressed(run.path / "test_scores.npz", **flat)
    run.update_metrics({"evaluation": out})
    return out


def _test_split(cfg: AstrometryConfig, run: Run, scenario: str, cache: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A scenario's test split and the CNN's input made from it, read and computed once per evaluation."""
    if scenario not in cache:
        te = load_split(cfg, run, scenario, "test")
        cache[scenario] = (te, network_input(cfg, te["maps"], scenario))
    return cache[scenario]


def _learning_curve(cfg: AstrometryConfig, run: Run, out: dict[str, Any], tests: dict) -> dict[str, Any]:
    """Test AUC per training-set size for the curve scenarios, and the extrapolation (frontier.py)."""
    e = cfg.evaluate
    res: dict[str, Any] = {}
    for scenario in cfg.train.curve_scenarios:
        te, x = _test_split(cfg, run, scenario, tests)
        sizes, aucs = [], []
        for n in cfg.train.train_sizes:
            if n < cfg.data.n_train:
                probs = predict(_trained(cfg, run, scenario, cfg.train.model, n),
                                make_loader(ArrayDataset(x, te["label"]), 256, shuffle=False))
                auc = metrics.binary_report(te["label"], probs[:, 1], n_boot=e.n_boot, level=e.ci_level, seed=cfg.seed)["auc"]
            else:
                auc = out["auc"][scenario][cfg.train.model]
            sizes.append(n)
            aucs.append(auc)
        if cfg.data.n_train not in sizes:
            sizes.append(cfg.data.n_train)
            aucs.append(out["auc"][scenario][cfg.train.model])
        oracle = out["ceiling"][scenario]["oracle_auc"]["value"]
        res[scenario] = {"sizes": sizes, "auc": aucs, "chi2_auc": out["baseline"][scenario]["auc"], "oracle_auc": oracle,
                         "extrapolation": frontier.extrapolate_learning_curve(sizes, aucs, e.extrapolate_to, oracle,
                                                                              level=e.ci_level, seed=cfg.seed)}
        log.info("learning curve %s: %s", scenario, ", ".join(f"{n}: {a['value']:.3f}" for n, a in zip(sizes, aucs)))
    return res


def _ceiling(cfg: AstrometryConfig, run: Run, scenario: str, te: dict[str, np.ndarray]) -> dict[str, Any]:
    """Oracle SNR and known-template AUC of the scenario's test signal maps (ceiling.py)."""
    idx = np.sort(te["signal_index"][te["label"] == 1])
    signal = sim.SampleStore.open(run.dataset_path / "signal.zarr").read("signal", idx)
    s = cfg.data.survey(scenario)
    return ceiling.ceiling_report(signal, s.n_q, s.sigma_u, cfg.sky.nside, cfg.evaluate.n_boot, cfg.evaluate.ci_level,
                                  cfg.seed)


def _attribution(cfg: AstrometryConfig, run: Run, tests: dict) -> dict[str, Any]:
    e = cfg.evaluate
    scenario = e.attribution_scenario
    if e.attribution_maps == 0 or scenario not in cfg.data.scenarios:
        return {}
    te, x_all = _test_split(cfg, run, scenario, tests)
    sig = np.nonzero(te["label"] == 1)[0][: e.attribution_maps]
    if sig.size == 0:
        return {}
    scale = noise_scale(cfg, scenario)
    module = _trained(cfg, run, scenario, cfg.train.model)
    x = torch.as_tensor(x_all[sig], dtype=torch.float32)
    attr = attribution.integrated_gradients(module.model, x, target=1, steps=e.ig_steps)
    positive = attribution.positive_smoothed(attr, sigma_px=e.smoothing_px)
    # references on the same maps: a random attribution (smoothed white noise) and the smoothed
    # chi^2 map |K mu|^2 of the noisy map (what the excess-power baseline looks at)
    rng = np.random.default_rng([cfg.seed, 7])
    refs = {"integrated gradients": positive,
            "random attribution": attribution.positive_smoothed(np.abs(rng.standard_normal(x.shape)), e.smoothing_px),
            "smoothed chi2 map": (baseline.smooth_images(te["maps"][sig] / scale, e.smoothing_px) ** 2).sum(axis=1)}
    sig_store = sim.SampleStore.open(run.dataset_path / "signal.zarr")
    per: dict[str, list] = {k: [] for k in refs}
    for k, s in enumerate(sig):
        cat = sig_store.table("subhalos", samples=[int(te["signal_index"][s])])
        for name, att in refs.items():
            per[name].append(attribution.localisation_score(att[k], cat, cfg.sky.image_height, cfg.sky.image_width,
                                                            n_lenses=e.n_lenses, nside=cfg.sky.nside,
                                                            max_angle_deg=cfg.sky.max_angle_deg))
    np.savez_compressed(run.path / "attributions.npz", positive=positive, maps=te["maps"][sig],
                        signal_index=te["signal_index"][sig])
    summary = {}
    for name, rows in per.items():
        vals = np.array([r["score"] for r in rows], float)
        pv = np.array([r["p_value"] for r in rows], float)
        summary[name] = {"score": _mean_ci(vals, e.n_boot, e.ci_level, cfg.seed),
                         "fraction_p_below_0.05": float(np.mean(pv < 0.05)) if pv.size else None}
    vals = np.array([r["score"] for r in per["integrated gradients"]], float)
    return {"scenario": scenario, "maps": [int(te["signal_index"][s]) for s in sig], "per_map": per["integrated gradients"],
            "mean_score": float(np.nanmean(vals)) if vals.size else None, "n_maps": int(len(sig)), "methods": summary}


def _mean_ci(values: np.ndarray, n_boot: int, level: float, seed: int) -> dict[str, float | None]:
    """Mean over the maps with a finite value, with a bootstrap percentile interval."""
    v = values[np.isfinite(values)]
    if v.size < 2:
        return {"value": float(v.mean()) if v.size else None, "lo": None, "hi": None}
    return metrics.bootstrap_ci(np.mean, v, n_boot=n_boot, level=level, seed=seed)


def report(run: Run) -> Path:
    """Assemble figures and tables into ``report.html``."""
    return figures.build_report(run.load_config(AstrometryConfig), run)


def run(cfg: AstrometryConfig, run_dir: Path | str | None = None, workers: int = 1, scheduler: str | None = None,
        devices: int | str | None = None) -> Run:
    """All four stages; each resumes where a previous attempt stopped."""
    return execute(STUDY, cfg, run_dir, workers=workers, scheduler=scheduler, devices=devices)[0]


def expected_outputs(cfg: AstrometryConfig) -> dict[str, int]:
    """Dataset sizes on disk (uncompressed float32) for ``run --dry-run``."""
    d, s = cfg.data, cfg.sky
    per_class = d.n_train + d.n_val + d.n_test
    maps = 2 * per_class * 2 * s.image_height * s.image_width * 4
    return {f"dataset/{sc}.zarr": maps for sc in d.scenarios} | {"dataset/signal.zarr": per_class * 2 * 12 * s.nside**2 * 4}


STUDY = Study(
    name=STUDY_NAME, title="Astrometric lensing of quasars by Milky Way subhalos.", config_model=AstrometryConfig,
    presets=PRESETS, expected_outputs=expected_outputs,
    preset_commands={"frontier": ("frontier", "Sensitivity frontier: CNN, chi2 and oracle AUC on a grid of surveys (N_q, "
                                              "sigma_u) and the paper's two claims tested"),
                     "learning-curve": ("learning-curve", "Test AUC against training maps per class for scenarios C "
                                                          "and E, extrapolated to the paper's 25,000")},
    stages=(Stage("simulate", simulate, uses=("workers", "scheduler")),
            Stage("train", train, uses=("devices", "accelerator")),
            Stage("evaluate", evaluate), Stage("report", report)),
)
