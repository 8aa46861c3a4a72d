"""Optuna search: finds the minimum of a toy objective, resumes from its journal, groups by window."""

import math

import pytest

from darkml.gas.config import HPSearchCfg
from darkml.gas.hpsearch import by_window, run_search, trials_table


def _objective(calls):
    def f(params, number):
        calls.append(number)
        return (math.log10(params["lr"]) + 3) ** 2 + 0.01 * params["window"] + abs(params["max_weight"] - 10) / 100
    return f


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_search_and_resume(tmp_path, sampler):
    cfg = HPSearchCfg(n_trials=6, sampler=sampler, windows=[3, 5, 7])
    calls = []
    study = run_search(cfg, _objective(calls), tmp_path / "journal.log", seed=0)
    assert len(trials_table(study)) == 6 and len(calls) == 6
    # resuming with more trials runs only the missing ones
    cfg2 = HPSearchCfg(n_trials=8, sampler=sampler, windows=[3, 5, 7])
    study2 = run_search(cfg2, _objective(calls), tmp_path / "journal.log", seed=0)
    rows = trials_table(study2)
    assert len(rows) == 8 and len(calls) == 8
    assert all(1e-4 <= r["lr"] <= 1e-2 and 16 <= r["filters"] <= 256 and r["window"] in (3, 5, 7) for r in rows)
    groups = by_window(rows)
    assert sum(g["n"] for g in groups.values()) == 8
    assert all(g["min"] <= g["mean"] for g in groups.values())


def test_non_finite_objective_is_pruned_not_fatal(tmp_path):
    cfg = HPSearchCfg(n_trials=2, sampler="tpe", windows=[3])
    study = run_search(cfg, lambda p, n: float("nan"), tmp_path / "j.log", seed=0)
    assert trials_table(study) == []
