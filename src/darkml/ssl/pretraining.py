"""Self-supervised pre-training, fine-tuning and linear probes (``darkml ssl``).

For each dataset (instrument: ``hst`` = this paper's Model A, ``euclid`` = its Model B), each
encoder and each method:

1. **pre-train** the encoder on the training images without labels (:mod:`darkml.learn.ssl`);
2. **linear probe**: logistic regression (3 classes) and ridge regression (log10 m_a on the
   axion images) on the frozen encoder's features;
3. **fine-tune** encoder + fully connected head with labels — 3-way classification with 1%,
   10% and 100% of the training labels (label-efficiency curve), and 1-output regression of
   log10(m_a / eV) on the axion images;
4. the **supervised baseline**: the same architecture from random initialisation, the same
   augmentations and schedule;
5. test-set macro AUC (one-vs-rest) and RMSE/MAE with bootstrap intervals → ``metrics.json``
   and ``report.html`` (the paper's Tables 1 and 2 beside its numbers, Fig. 2 predicted vs
   simulated axion mass, label efficiency, linear probes, pre-training diagnostics).

Everything is resumable: each training writes ``done.json`` (``darkml.learn.fit``) and each
evaluated model a ``result.json``; a re-run skips finished pieces.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from darkml import metrics
from darkml.learn import ClassifierModule, RegressorModule, fit, load_best, predict
from darkml.learn.devices import save_torch
from darkml.learn.ssl import build_method
from darkml.learn.ssl.module import embedding_std
from darkml.learn.views import ViewAugment, default_views
from darkml.runs import Run, atomic_write_json

from .config import SSLConfig
from .data import Split, _axion, _loader, _subset, label_subset
from .encoders import FineTuneModel, build_encoder, extract_features

log = logging.getLogger(__name__)

__all__ = ["pretrain_encoder", "finetune", "linear_probe"]


def _fit_kw(cfg: SSLConfig, devices) -> dict[str, Any]:
    return {"devices": devices, "accelerator": cfg.accelerator, "precision": cfg.precision}


def _memory_format(cfg: SSLConfig, module: torch.nn.Module) -> torch.nn.Module:
    """The module in channels-last format when ``cfg.channels_last`` (convolution weights only;
    the one-channel images are the same bytes in either layout)."""
    return module.to(memory_format=torch.channels_last) if cfg.channels_last else module


def _method_options(cfg: SSLConfig) -> dict[str, Any]:
    p = cfg.pretrain
    return {
        "lr": p.lr, "weight_decay": p.weight_decay, "warmup_epochs": p.warmup_epochs, "optimizer": "adamw",
        "seed": cfg.seed, "proj_hidden": p.proj_hidden, "proj_dim": p.proj_dim, "temperature": p.temperature,
        "out_dim": p.dino_out_dim, "bottleneck_dim": p.dino_bottleneck_dim, "n_local": p.dino_local_crops,
        "local_size": p.dino_local_size, "teacher_temp": p.teacher_temp, "warmup_teacher_temp": p.teacher_temp,
    }


def _views(cfg: SSLConfig, method: str) -> ViewAugment:
    a = cfg.augment
    return default_views(method, a.max_shift_px, a.noise_sigma, a.psf_sigma_px)


def pretrain_encoder(cfg: SSLConfig, method: str, encoder_name: str, images: np.ndarray, val_images: np.ndarray,
                     out_dir: Path, log_dir: Path | None = None, devices: int | str = "auto") -> tuple[torch.nn.Module, dict]:
    """Pre-train ``encoder_name`` with ``method`` on unlabelled ``images``; return the encoder
    used as the representation (DINO: the EMA teacher; others: the online encoder) and a
    summary (final losses, collapse indices, throughput, history). Resumable: the encoder is
    saved as ``out_dir/encoder.pt`` and reused when present."""
    out_dir = Path(out_dir)
    enc_path, info_path = out_dir / "encoder.pt", out_dir / "pretrain.json"
    encoder = build_encoder(encoder_name, image_size=images.shape[-1], patch_size=cfg.patch_size, seed=cfg.seed)
    if enc_path.is_file() and info_path.is_file():
        encoder.load_state_dict(torch.load(enc_path, map_location="cpu", weights_only=True))
        return encoder, json.loads(info_path.read_text())
    p = cfg.pretrain
    if p.max_images is not None and len(images) > p.max_images:
        keep = np.sort(np.random.default_rng([cfg.seed, 0xB0]).choice(len(images), p.max_images, replace=False))
        images = images[keep]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        module = build_method(method, encoder, views=_views(cfg, method),
                              momentum=p.dino_momentum if method == "dino" else p.byol_momentum, **_method_options(cfg))
    module = _memory_format(cfg, module)
    collapse_init = _collapse(module, val_images)
    train = _loader(images, batch_size=p.batch_size, shuffle=True, seed=cfg.seed)
    val = _loader(val_images, batch_size=p.batch_size, shuffle=False, seed=cfg.seed,
                  drop_last=len(val_images) > p.batch_size and len(val_images) % p.batch_size == 1)
    tag = "-".join(out_dir.parts[-3:])
    res = fit(module, train, val, out_dir / "ckpt", max_epochs=p.epochs, patience=None, log_dir=log_dir, tag=tag,
              seed=cfg.seed, tensorboard=p.logger == "tensorboard", **_fit_kw(cfg, devices))
    last = out_dir / "ckpt" / "last.ckpt"
    load_best(module, last if last.is_file() else res.best_path)
    collapse_final = _collapse(module, val_images)
    rep = module.representation_encoder().cpu()
    state = {k: v.detach().clone() for k, v in rep.state_dict().items()}
    encoder.load_state_dict(state)
    hist = res.history
    final = hist[-1] if hist else {}
    info = {
        "method": method, "encoder": encoder_name, "epochs": len(hist), "n_images": int(len(images)),
        "train_loss": final.get("train_loss"), "val_loss": final.get("val_loss"),
        "embed_std": final.get("embed_std"), "proj_std": final.get("proj_std"),
        "val_embed_std": final.get("val_embed_std"), "val_proj_std": final.get("val_proj_std"),
        "collapse_init": collapse_init[0], "collapse_final": collapse_final[0], "collapse_projector": collapse_final[1],
        "images_per_s": float(np.median([h["train_images_per_s"] for h in hist if "train_images_per_s" in h]))
        if any("train_images_per_s" in h for h in hist) else None,
        "history": [{k: h.get(k) for k in ("epoch", "train_loss", "val_loss", "embed_std", "val_embed_std")} for h in hist],
    }
    save_torch(enc_path, state)
    atomic_write_json(info_path, info)
    _drop_checkpoints(out_dir / "ckpt")
    return encoder, info


def _collapse(module, images: np.ndarray, n: int = 512) -> tuple[float, float]:
    """Collapse indices (representation, projector output) on up to ``n`` clean images, eval mode."""
    dev = next(module.parameters()).device
    was = module.training
    module.eval()
    x = torch.as_tensor(images[:n]).to(dev, torch.float32)
    hs, zs = [], []
    for i in range(0, len(x), 128):
        h, z = module.embed(x[i : i + 128])
        hs.append(h.float().cpu())
        zs.append(z.float().cpu())
    module.train(was)
    return embedding_std(torch.cat(hs)), embedding_std(torch.cat(zs))



def _drop_checkpoints(ckpt_dir: Path) -> None:
    for f in Path(ckpt_dir).glob("*.ckpt"):
        f.unlink(missing_ok=True)


def finetune(cfg: SSLConfig, encoder: torch.nn.Module, task: Literal["classify", "regress"], train: Split, val: Split,
             test: Split, out_dir: Path, epochs: int, log_dir: Path | None = None, devices: int | str = "auto") -> dict:
    """Fine-tune a copy of ``encoder`` + head on ``train`` (early stopping on ``val``) and
    evaluate on ``test``: macro AUC and accuracy (classify, 3 outputs) or RMSE/MAE of
    log10 m_a (regress, 1 output), with bootstrap intervals. Resumable via ``result.json``."""
    out_dir = Path(out_dir)
    res_path = out_dir / "result.json"
    if res_path.is_file():
        return json.loads(res_path.read_text())
    f = cfg.finetune
    enc = copy.deepcopy(encoder)
    for prm in enc.parameters():
        prm.requires_grad_(True)
    n_out = 3 if task == "classify" else 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        model = FineTuneModel(enc, n_out, hidden=f.head_hidden)
    if task == "classify":
        module = ClassifierModule(model, num_classes=3, lr=f.lr, weight_decay=f.weight_decay, optimizer=f.optimizer,
                                  plateau_patience=f.plateau_patience, schedule=f.schedule,
                                  warmup_fraction=f.warmup_fraction)
        y_tr, y_va = train.labels, val.labels
    else:
        y_tr, y_va = train.log10_m, val.log10_m
        module = RegressorModule(model, lr=f.lr, weight_decay=f.weight_decay, optimizer=f.optimizer,
                                 plateau_patience=f.plateau_patience, schedule=f.schedule,
                                 warmup_fraction=f.warmup_fraction, target_mean=float(np.mean(y_tr)),
                                 target_std=float(max(np.std(y_tr), 1e-3)))
    module = _memory_format(cfg, module)
    aug = ViewAugment(f.rotate, f.flip, f.shift_px)
    tr_loader = _loader(train.images, y_tr, batch_size=f.batch_size, shuffle=True, seed=cfg.seed, transform=aug,
                        num_workers=cfg.data.loader_workers)
    va_loader = _loader(val.images, y_va, batch_size=max(256, f.batch_size), shuffle=False, seed=cfg.seed)
    tag = "-".join(out_dir.parts[-4:])
    res = fit(module, tr_loader, va_loader, out_dir / "ckpt", max_epochs=epochs, patience=f.patience, log_dir=log_dir,
              tag=tag, seed=cfg.seed, tensorboard=f.logger == "tensorboard", **_fit_kw(cfg, devices))
    load_best(module, res.best_path)
    te_loader = _loader(test.images, None, batch_size=max(256, f.batch_size), shuffle=False, seed=cfg.seed)
    out = predict(module, te_loader)
    e = cfg.eval
    result: dict[str, Any] = {"task": task, "n_train": int(len(train)), "n_val": int(len(val)), "epochs": int(res.epochs) + 1}
    if task == "classify":
        mc = metrics.multiclass_report(test.labels, out, n_boot=e.n_boot, level=e.level, seed=cfg.seed)
        result["macro_auc"], result["accuracy"] = mc["macro_auc"], mc["accuracy"]
        np.savez_compressed(out_dir / "predictions.npz", probs=out.astype(np.float32), labels=test.labels)
    else:
        result.update(metrics.regression_metrics(test.log10_m, out, n_boot=e.n_boot, level=e.level, seed=cfg.seed))
        np.savez_compressed(out_dir / "predictions.npz", pred=out.astype(np.float32), true=test.log10_m)
    if f.keep_weights:
        save_torch(out_dir / "model.pt", model.state_dict())
    atomic_write_json(res_path, result)
    _drop_checkpoints(out_dir / "ckpt")
    return result


def linear_probe(cfg: SSLConfig, encoder: torch.nn.Module, train: Split, test: Split) -> dict:
    """Frozen-encoder evaluation: multinomial logistic regression on standardised features
    (macro AUC) and ridge regression of log10 m_a on the axion images (RMSE, MAE)."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f_tr = extract_features(encoder, train.images)
    f_te = extract_features(encoder, test.images)
    e = cfg.eval
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(f_tr, train.labels)
    probs = clf.predict_proba(f_te)
    out: dict[str, Any] = {
        "macro_auc": metrics.bootstrap_ci(metrics.macro_auc_ovr, test.labels, probs, n_boot=e.n_boot, level=e.level, seed=cfg.seed),
    }
    ax_tr, ax_te = train.labels == 2, test.labels == 2
    if ax_tr.sum() >= 3 and ax_te.sum() >= 2:
        reg = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        reg.fit(f_tr[ax_tr], train.log10_m[ax_tr])
        pred = reg.predict(f_te[ax_te])
        r = metrics.regression_metrics(test.log10_m[ax_te], pred, n_boot=e.n_boot, level=e.level, seed=cfg.seed)
        out["rmse"], out["mae"] = r["rmse"], r["mae"]
    return out


def _pct(f: float) -> str:
    return f"{100 * f:g}"


def _evaluate_init(cfg: SSLConfig, run: Run, inst: str, enc_name: str, init: str, encoder: torch.nn.Module,
                   train: Split, val: Split, test: Split, devices) -> dict:
    """All fine-tunes (label fractions, regression) and the linear probe of one initialisation."""
    f = cfg.finetune
    base = run.checkpoints / inst / enc_name / init
    out: dict[str, Any] = {"classify": {}}
    for frac in f.label_fractions:
        tr_idx = label_subset(train.labels, np.arange(len(train)), frac, f.min_per_class, cfg.seed)
        va_idx = label_subset(val.labels, np.arange(len(val)), frac, f.min_per_class, cfg.seed + 1)
        epochs = int(math.ceil(f.epochs * min(1.0 / frac, f.max_epoch_scale)))
        with run.step(f"train/finetune/{inst}/{enc_name}/{init}/{_pct(frac)}%"):
            out["classify"][_pct(frac)] = finetune(cfg, encoder, "classify", _subset(train, tr_idx), _subset(val, va_idx),
                                                   test, base / f"classify-{_pct(frac)}", epochs, run.logs, devices)
    if f.regression:
        tr_ax, va_ax, te_ax = _axion(train), _axion(val), _axion(test)
        if len(tr_ax) >= 4 and len(va_ax) >= 2 and len(te_ax) >= 2:
            with run.step(f"train/regress/{inst}/{enc_name}/{init}"):
                out["regress"] = finetune(cfg, encoder, "regress", tr_ax, va_ax, te_ax, base / "regress",
                                          f.regression_epochs, run.logs, devices)
    if f.linear_probe:
        with run.step(f"train/probe/{inst}/{enc_name}/{init}"):
            out["probe"] = linear_probe(cfg, encoder, train, test)
    return out
