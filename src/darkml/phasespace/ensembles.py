"""Flow ensembles of the phase-space study: training per dataset (original / smeared /
re-perturbed), the KL to the mock's exact DF, and loading members for the evaluate stage
(optionally with the vertical tilt of ν, tilt.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from darkml.config import ConfigError
from darkml.phasespace import flows, tilt
from darkml.runs import Run
from darkml.storage import DatasetError

from .config import PhaseSpaceConfig, n_flow_parameters
from .dataset import dataset_names, load_stars, truth_model

log = logging.getLogger(__name__)

#: per-dataset offsets of the training seed (each dataset's members draw their own splits)
_SEED_OFFSET = {"original": 0, "smeared": 1000, "reperturbed": 2000}


# =============================================================================================
# Training
# =============================================================================================
def _settings(cfg: PhaseSpaceConfig) -> flows.TrainSettings:
    t = cfg.train
    return flows.TrainSettings(batch_size=t.batch_size, lr=t.lr, max_epochs=t.max_epochs, patience=t.patience,
                               plateau_patience=t.plateau_patience, val_fraction=t.val_fraction, bootstrap=t.bootstrap,
                               accelerator=t.accelerator, devices=t.devices, cpu_threads=t.cpu_threads,
                               tensorboard=t.logger == "tensorboard", schedule=t.schedule,
                               warmup_fraction=t.warmup_fraction)


def _members(cfg: PhaseSpaceConfig, name: str) -> int:
    return cfg.train.ensemble if name == "original" else cfg.train.ensemble_smeared


def _spec_kwargs(cfg: PhaseSpaceConfig) -> dict[str, Any]:
    f = cfg.flow
    return dict(observer=cfg.mock.observer_kpc, radius=cfg.mock.radius_kpc, model=f.model, transforms=f.transforms,
                hidden=f.hidden, activation=f.activation, residual=f.residual, z_stretch=f.z_stretch_kpc)


def train_ensembles(cfg: PhaseSpaceConfig, run: Run, datasets: list[str] | None = None) -> dict[str, list]:
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
                                   cfg.seed + _SEED_OFFSET[name], run.logs, name)
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


def load_trained_member(run: Run, name: str, k: int, device: str | torch.device = "cpu"):
    """The best checkpoint of ensemble member ``k`` trained on dataset ``name`` (``original``,
    ``smeared``, ``reperturbed``), in eval mode."""
    import json

    done = run.checkpoints / name / f"m{k}" / "done.json"
    if not done.is_file():
        raise DatasetError(f"no trained flow {name}/m{k} in {run.path}; run the train stage first")
    return flows.load_member(json.loads(done.read_text())["best_path"], device)


def measured_member(run: Run, cfg: PhaseSpaceConfig, name: str, k: int, device: str | torch.device = "cpu",
                    stars: tuple[np.ndarray, np.ndarray] | None = None):
    """Member ``k`` as the evaluate stage uses it: the trained flow, with its ν tilted
    (``flow.nu_tilt_terms > 0``; tilt.py) by a fit on the member's own training stars."""
    model = load_trained_member(run, name, k, device)
    f = cfg.flow
    if not f.nu_tilt_terms:
        return model
    x, _ = stars if stars is not None else load_stars(run, cfg, name)
    tr, va = flows.member_split(len(x), k, cfg.seed + _SEED_OFFSET[name], cfg.train.val_fraction, cfg.train.bootstrap)
    fit = tilt.fit_vertical_tilt(model, x[tr], f.nu_tilt_terms, f.nu_tilt_width_kpc, f.nu_tilt_samples,
                                 seed=cfg.seed * 7919 + 500 + k, x_val=x[va], resampled=cfg.train.bootstrap)
    log.info("%s m%d: nu tilt fitted (%d terms, w = %.3g kpc): %+.2e nats/star on held-out stars", name, k,
             f.nu_tilt_terms, f.nu_tilt_width_kpc, fit.val_gain)
    return tilt.TiltedFlow(model, fit)


def _load_ensemble(run: Run, cfg: PhaseSpaceConfig, name: str, device) -> list:
    stars = load_stars(run, cfg, name) if cfg.flow.nu_tilt_terms else None
    return [measured_member(run, cfg, name, k, device, stars) for k in range(_members(cfg, name))]
