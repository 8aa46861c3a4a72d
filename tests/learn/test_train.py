import numpy as np
import pytest
import torch
from torch import nn

from darkml.learn import (
    ArrayDataset,
    ClassifierModule,
    RegressorModule,
    fit,
    load_best,
    make_loader,
    predict,
    split_indices,
)


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    return x, y


def _loaders(x, y):
    tr, va = split_indices(len(x), (0.75, 0.25), seed=0)
    return (make_loader(ArrayDataset(x[tr], y[tr]), 32, True, seed=0),
            make_loader(ArrayDataset(x[va], y[va]), 64, False))


def test_classifier_learns_and_resumes(tmp_path):
    x, y = _data()
    train, val = _loaders(x, y)
    torch.manual_seed(0)
    mod = ClassifierModule(nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)), num_classes=2, lr=1e-2)
    res = fit(mod, train, val, tmp_path / "ck", max_epochs=2, patience=5, log_dir=tmp_path / "logs", tag="m")
    assert res.best_path.is_file() and (tmp_path / "ck" / "last.ckpt").is_file()
    assert [h["epoch"] for h in res.history] == [0, 1] and "val_auc" in res.history[-1]
    # "interrupted" run: drop done.json, ask for more epochs -> continues from epoch 2, not 0
    (tmp_path / "ck" / "done.json").unlink()
    res2 = fit(mod, train, val, tmp_path / "ck", max_epochs=6, patience=5, log_dir=tmp_path / "logs", tag="m")
    assert res2.history[-1]["epoch"] == 5 and len(res2.history) == 6
    assert res2.history[-1]["val_auc"] > 0.95
    # finished: a re-run returns immediately with the same best checkpoint
    res3 = fit(mod, train, val, tmp_path / "ck", max_epochs=6, log_dir=tmp_path / "logs", tag="m")
    assert res3.best_path == res2.best_path
    fresh = ClassifierModule(nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)), num_classes=2, lr=1e-2)
    p = predict(load_best(fresh, res2.best_path), val)
    assert p.shape == (64, 2) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_regressor_standardises_targets(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3)).astype("float32")
    t = (-23 + 0.5 * x[:, 0]).astype("float32")  # like log10 m_a: far from 0
    tr, va = split_indices(200, (0.8, 0.2), seed=1)
    mod = RegressorModule(nn.Linear(3, 1), lr=5e-2, target_mean=float(t.mean()), target_std=float(t.std()))
    fit(mod, make_loader(ArrayDataset(x[tr], t[tr]), 20, True), make_loader(ArrayDataset(x[va], t[va]), 40, False),
        tmp_path / "ck", max_epochs=8, log_dir=tmp_path / "l")
    pred = predict(mod, make_loader(ArrayDataset(x[va], t[va]), 40, False))
    assert np.sqrt(np.mean((pred - t[va]) ** 2)) < 0.05


def test_bad_arguments():
    with pytest.raises(ValueError, match="lr"):
        ClassifierModule(nn.Linear(2, 2), num_classes=2, lr=0)
    with pytest.raises(ValueError, match="samples"):
        ArrayDataset(np.zeros((3, 1)), np.zeros(2))


def test_tensorboard_logger_writes_event_files_beside_the_csv(tmp_path):
    x, y = _data(64)
    train, val = _loaders(x, y)
    torch.manual_seed(0)
    mod = ClassifierModule(nn.Sequential(nn.Linear(4, 2)), num_classes=2, lr=1e-2)
    res = fit(mod, train, val, tmp_path / "ck", max_epochs=1, log_dir=tmp_path / "logs", tag="m", tensorboard=True)
    assert (tmp_path / "logs" / "m" / "metrics.csv").is_file()
    assert res.history[-1]["lr"] == pytest.approx(1e-2) and res.history[-1]["train_images_per_s"] > 0
    assert list((tmp_path / "logs" / "m-tb").rglob("events.out.tfevents.*"))


def test_without_a_terminal_each_epoch_is_one_log_line(tmp_path, caplog):
    import logging

    x, y = _data(64)
    train, val = _loaders(x, y)
    torch.manual_seed(0)
    mod = ClassifierModule(nn.Sequential(nn.Linear(4, 2)), num_classes=2, lr=1e-2)
    with caplog.at_level(logging.INFO, logger="darkml.learn.callbacks"):
        fit(mod, train, val, tmp_path / "ck", max_epochs=3, log_dir=tmp_path / "logs", tag="m", progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "darkml.learn.callbacks"]
    assert [line.split(":")[0] for line in lines] == ["m epoch 1/3", "m epoch 2/3", "m epoch 3/3"]
    assert all("train_loss" in line and "val_loss" in line and "images/s" in line and "ETA" in line for line in lines)
    assert lines[-1].endswith("ETA 0 s")
    # a study whose samples are not images names its own unit (the phase-space flows: stars)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="darkml.learn.callbacks"):
        fit(mod, train, val, tmp_path / "ck2", max_epochs=1, log_dir=tmp_path / "logs", tag="s", progress=False,
            sample_unit="stars")
    line = [r.getMessage() for r in caplog.records if r.name == "darkml.learn.callbacks"][0]
    assert "stars/s" in line and "images/s" not in line
