"""The self-supervised study as stages: simulate → train → evaluate → report.

``simulate`` makes (or reuses) each instrument's dataset; ``train`` pre-trains every
(encoder, method), fine-tunes it at each label fraction, regresses the axion mass and fits
linear probes, beside the supervised baseline from random initialisation (all resumable);
``evaluate`` summarises against the paper's Tables 1 and 2; ``report`` writes report.html::

    from darkml.ssl import study
    run = study.run(study.load("quick", ["methods=[simsiam]"]), "runs/ssl")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from darkml.runs import Run
from darkml.study import Shortcut, Stage, Study, execute

from .config import PRESETS_DIR, SSLConfig
from .config import STUDY as STUDY_NAME
from .data import _subset, _train_val, load_data, simulate_data
from .encoders import build_encoder
from .figures import summarise, write_report
from .pretraining import _evaluate_init, pretrain_encoder

log = logging.getLogger(__name__)

__all__ = ["STUDY", "load", "simulate", "train", "evaluate", "report", "run", "run_ssl"]


def load(preset: str = "quick", overrides: Iterable[str] = ()) -> SSLConfig:
    """Validated config (``ssl-quick``/``ssl-paper`` are accepted for ``quick``/``paper``)."""
    return STUDY.load(preset, overrides)


def simulate(run: Run) -> dict[str, int]:
    """Make (or reuse) each instrument's train and test images (simulated, or the toy set)."""
    return simulate_data(run.load_config(SSLConfig), run)


def train(run: Run, devices: Any = "auto") -> None:
    """Pre-train, fine-tune (label fractions, regression) and probe every encoder and method."""
    cfg = run.load_config(SSLConfig)
    devices = "auto" if devices is None else devices
    log.info("SSL study in %s: methods %s, encoders %s, datasets %s", run.path, cfg.methods, cfg.encoders,
             cfg.data.instruments)
    for inst in cfg.data.instruments:
        train_all, test = load_data(cfg, run, inst)
        tr_idx, va_idx = _train_val(train_all.labels, cfg.data.val_fraction, cfg.seed)
        tr, val = _subset(train_all, tr_idx), _subset(train_all, va_idx)
        run.update_metrics({"data": {inst: {"n_train": len(tr), "n_val": len(val), "n_test": len(test),
                                            "image_shape": list(tr.images.shape[1:])}}})
        for enc_name in cfg.encoders:
            encoder0 = build_encoder(enc_name, image_size=tr.images.shape[-1], patch_size=cfg.patch_size, seed=cfg.seed)
            res = _evaluate_init(cfg, run, inst, enc_name, "supervised", encoder0, tr, val, test, devices)
            run.update_metrics({"results": {inst: {enc_name: {"supervised": res}}}})
            for method in cfg.methods:
                encoder, info = pretrain_encoder(cfg, method, enc_name, tr.images, val.images,
                                                 run.checkpoints / inst / enc_name / method, run.logs, devices)
                res = _evaluate_init(cfg, run, inst, enc_name, method, encoder, tr, val, test, devices)
                res["pretrain"] = info
                run.update_metrics({"results": {inst: {enc_name: {method: res}}}})


def evaluate(run: Run) -> dict[str, Any]:
    """Summarise every result beside the paper's Tables 1 and 2 (metrics.json ``summary``)."""
    cfg = run.load_config(SSLConfig)
    summary = summarise(cfg, run.metrics())
    ceiling = mass_ceiling(cfg, run)
    run.update_metrics({"summary": summary, **({"ceiling": ceiling} if ceiling else {})})
    return summary


def mass_ceiling(cfg: SSLConfig, run: Run) -> dict[str, Any]:
    """The regression's physical ceiling per simulated dataset: the Bayes-optimal log10 m_a of
    every axion test image (:mod:`darkml.lensing.mass_oracle`; cached under ``predictions/``).
    Empty for the toy source or with ``eval.mass_oracle`` off."""
    from darkml.lensing.mass_oracle import stored_ceiling

    if cfg.data.source != "simulate" or not cfg.eval.mass_oracle or not cfg.finetune.regression:
        return {}
    return {inst: stored_ceiling(run.dataset_path / inst, run.path / "predictions" / f"oracle-{inst}.npz",
                                 cfg.eval.oracle_grid, n_boot=cfg.eval.n_boot, level=cfg.eval.level, seed=cfg.seed)[0]
            for inst in cfg.data.instruments}


def report(run: Run) -> Path:
    """Tables 1-2, Fig. 2, label efficiency, linear probes, pre-training diagnostics -> report.html."""
    return write_report(run)


def run(cfg: SSLConfig, run_dir: Path | str | None = None, **options: Any) -> Run:
    return execute(STUDY, cfg, run_dir, **options)[0]


def run_ssl(cfg: SSLConfig, run_dir: Path | str | None = None, devices: int | str = "auto") -> Run:
    """The whole study (all stages)."""
    return run(cfg, run_dir, devices=devices)


def expected_outputs(cfg: SSLConfig) -> dict[str, int]:
    if cfg.data.source == "toy":
        return {"checkpoints": 0}
    n = 3 * (cfg.data.n_per_class_train + cfg.data.n_per_class_test) * (64 * 64 * 4 + 240)
    return {f"dataset/{inst}": n for inst in cfg.data.instruments}


STUDY = Study(
    name=STUDY_NAME, title="Self-supervised pre-training (SimCLR, BYOL, SimSiam, DINO), then fine-tuning.",
    config_model=SSLConfig, presets=PRESETS_DIR, preset_aliases={"ssl-quick": "quick", "ssl-paper": "paper", "ssl-cpu": "cpu"},
    stages=(Stage("simulate", simulate), Stage("train", train, uses=("devices",)), Stage("evaluate", evaluate),
            Stage("report", report, echo=lambda p: f"report: {p}")),
    shortcuts=(Shortcut.key("--methods", "methods", "comma-separated subset of simclr-rotation,simclr-noise,byol,"
                            "simsiam,dino", as_list=True),
               Shortcut.key("--encoders", "encoders", "comma-separated: resnet50,vit (paper), resnet18, vit-tiny, "
                            "resnet-tiny", as_list=True)),
    expected_outputs=expected_outputs,
)
