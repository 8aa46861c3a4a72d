"""Hyper-parameter search for the patch CNN with Optuna (replacing the paper's SHERPA).

The paper searched learning rate, filter count, window size and the maximum WMAE scaling
(2000 networks, Gaussian-process optimisation) on a validation split of the training data,
and its locality study (Fig. 2) groups the tried models by window size. Here Optuna's
``GPSampler`` or ``TPESampler`` (seeded) proposes the same four parameters; each trial
trains a patch CNN for a few epochs and is scored by the median scaled absolute error of
its validation planes (whole tiles held out of the training region). The study lives in an
Optuna journal file, so an interrupted search resumes with the trials already finished.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["make_sampler", "suggest", "run_search", "trials_table", "by_window"]


def make_sampler(name: str, seed: int):
    import optuna

    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ValueError(f"hpsearch.sampler = {name!r}: must be 'gp' or 'tpe'")


def suggest(trial, cfg) -> dict[str, Any]:
    """The four searched parameters (ranges from the config's ``hpsearch`` section)."""
    return {
        "lr": trial.suggest_float("lr", *cfg.lr_range, log=True),
        "filters": trial.suggest_int("filters", *cfg.filters_range, log=True),
        "window": trial.suggest_categorical("window", list(cfg.windows)),
        "max_weight": trial.suggest_float("max_weight", *cfg.max_weight_range),
    }


def run_search(cfg, objective: Callable[[dict[str, Any], int], float], storage_path: Path | str, seed: int = 0,
               study_name: str = "gas-cnn") -> Any:
    """Run (or resume) the search until ``cfg.n_trials`` trials are complete.

    ``objective(params, trial_number)`` trains and returns the validation score (lower is
    better). Trials left RUNNING by an interrupted process are marked failed and retried.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_path = Path(storage_path)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(storage_path)))
    study = optuna.create_study(study_name=study_name, storage=storage, direction="minimize",
                                sampler=make_sampler(cfg.sampler, seed), load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    remaining = max(0, cfg.n_trials - done)
    if remaining:
        log.info("hpsearch: %d of %d trials done, running %d more (%s sampler)", done, cfg.n_trials, remaining, cfg.sampler)

    def _objective(trial):
        params = suggest(trial, cfg)
        value = float(objective(params, trial.number))
        if not np.isfinite(value):
            raise optuna.TrialPruned(f"non-finite validation error {value}")
        return value

    if remaining:
        study.optimize(_objective, n_trials=remaining, catch=(RuntimeError, ValueError))
    return study


def trials_table(study) -> list[dict[str, Any]]:
    """Completed trials as rows (number, parameters, validation error)."""
    import optuna

    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        rows.append({"trial": t.number, **t.params, "val_scaled_abs_error": float(t.value)})
    return rows


def by_window(rows: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Fig. 2: validation error of the tried models grouped by window size (mean, min, count)."""
    out: dict[int, dict[str, float]] = {}
    for w in sorted({int(r["window"]) for r in rows}):
        v = np.array([r["val_scaled_abs_error"] for r in rows if int(r["window"]) == w], dtype=float)
        out[w] = {"mean": float(v.mean()), "min": float(v.min()), "std": float(v.std()), "n": int(v.size)}
    return out


def clean_trial_dir(path: Path) -> None:
    """Remove a trial's checkpoints once it is scored (they are not needed again)."""
    shutil.rmtree(path, ignore_errors=True)
