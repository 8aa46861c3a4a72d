"""End to end at a tiny size: simulate -> zarr stores -> load -> re-simulate -> report, and the CLI."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from darkml.config import ConfigError
from darkml.lensing import dataset as study
from darkml.lensing.figures import report_dataset
from darkml.lensing.simulate import observe
from darkml.storage import DatasetError, SampleStore

TINY = ["dataset.n_per_class_train=6", "dataset.n_per_class_test=2", "dataset.chunk_size=9"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("lensing") / "ds"
    cfg = study.load_sim_config("euclid-quick", TINY)
    study.simulate_dataset(cfg, path, device="cpu")
    return path, cfg


def test_stores_contract(dataset):
    path, cfg = dataset
    x, y, m = study.load_images(path, "train")
    assert x.shape == (18, 1, 64, 64) and x.dtype == np.float32
    assert y.dtype == np.int64 and list(y[:6]) == [0, 1, 2, 0, 1, 2]
    assert m.dtype == np.float32 and np.all(np.isnan(m[y != 2])) and np.all((m[y == 2] >= -24) & (m[y == 2] <= -22))
    assert np.allclose(x.reshape(18, -1).max(1), 1.0)
    xt, yt, _ = study.load_images(path, "test")
    assert xt.shape == (6, 1, 64, 64) and np.bincount(yt).tolist() == [2, 2, 2]
    assert not np.array_equal(xt, x[:6])  # a separate draw
    x2, _, _ = study.load_images(path)  # a dataset directory defaults to train
    assert np.array_equal(x, x2)
    x3, _, _ = study.load_images(path / "test.zarr")  # or a store itself
    assert np.array_equal(x3, xt)
    store = SampleStore.open(path / "train.zarr")
    assert store.attrs["param_names"][0] == "label" and store.attrs["split"] == "train"
    sub = store.table("subhalos")
    assert set(np.unique(sub["sample"]) % 3) == {1}


def test_stored_records_resimulate_with_lenstronomy(dataset):
    path, _ = dataset
    store = SampleStore.open(path / "train.zarr")
    samples = np.array([3, 4, 5])  # one image per class
    rec, cfg = study.load_records(path, "train", samples)
    phys = store.read("images", samples).astype(np.float64) * store.read("flux_scale", samples)[:, None, None, None]
    again = observe(rec, cfg, "lenstronomy")
    for i in range(3):
        assert np.abs(again[i] - phys[i]).max() < 1e-3 * phys[i].max()


def test_resume_is_bit_identical_and_config_change_is_refused(dataset, tmp_path):
    path, cfg = dataset
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    (copy / "train.zarr" / ".complete" / "000001.json").unlink()  # an interrupted chunk
    with pytest.raises(DatasetError, match="incomplete"):
        study.load_images(copy, "train")
    study.simulate_dataset(cfg, copy, device="cpu")
    a, _, _ = study.load_images(path, "train")
    b, _, _ = study.load_images(copy, "train")
    assert np.array_equal(a, b)
    other = study.load_sim_config("euclid-quick", TINY + ["seed=1"])
    with pytest.raises(DatasetError, match="different config"):
        study.simulate_dataset(other, copy, device="cpu")


def test_report_states_flux_only_auc(dataset):
    path, _ = dataset
    html = report_dataset(path, n_examples=3)
    assert html.is_file() and "Flux-only check" in html.read_text()
    metrics = json.loads((path / "report" / "metrics.json").read_text())
    auc = metrics["flux_only_auc"]["physical_flux"]["no_substructure_vs_cdm"]
    assert 0 <= auc["lo"] <= auc["value"] <= auc["hi"] <= 1
    assert metrics["images_per_class"] == {"no_substructure": 6, "cdm": 6, "axion": 6}


def test_config_helpers_and_errors(tmp_path):
    cfg = study.load_sim_config("hst", n_per_class=12, backend="lenstronomy")
    assert cfg.instrument.pixel_scale == 0.08 and cfg.dataset.n_per_class_train == 12
    assert cfg.dataset.n_per_class_test == 2 and cfg.dataset.backend == "lenstronomy"
    with pytest.raises(ConfigError, match="unknown preset"):
        study.load_sim_config("jwst")
    with pytest.raises(ConfigError, match="unknown backend"):
        study.load_sim_config("euclid", backend="galfit")
    with pytest.raises(ConfigError, match="num_pix"):
        study.load_sim_config("euclid", ["image.num_pix=0"])
    with pytest.raises(DatasetError, match="no train.zarr"):
        study.load_images(tmp_path)


def test_cli_simulate_report_and_user_errors(tmp_path):
    from darkml.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["lensing", "simulate", "--preset", "quick", "-n", "3", "--run-dir", str(out),
                              "--accelerator", "cpu", "--set", "dataset.chunk_size=9"])
    assert res.exit_code == 0, res.output
    assert (out / "dataset" / "train.zarr").is_dir() and (out / "dataset" / "test.zarr").is_dir()
    assert (out / "run.json").is_file()
    other = tmp_path / "other"
    res = runner.invoke(app, ["lensing", "simulate", "--preset", "nope", "--run-dir", str(other)])
    assert res.exit_code == 2 and "unknown preset" in res.output
    res = runner.invoke(app, ["lensing", "simulate", "--backend", "galfit", "--run-dir", str(other)])
    assert res.exit_code == 2 and "unknown backend" in res.output
    res = runner.invoke(app, ["lensing", "simulate", "--set", "lens.shear=[0.2,0.1]", "--run-dir", str(other)])
    assert res.exit_code == 2 and "inverted range" in res.output
    assert not other.exists()
    res = runner.invoke(app, ["lensing", "report", "--run-dir", str(tmp_path / "missing")])
    assert res.exit_code == 2


@pytest.mark.slow
def test_parallel_workers_and_dask_are_bit_identical(dataset, tmp_path):
    path, cfg = dataset
    ref, _, _ = study.load_images(path, "train")
    study.simulate_dataset(cfg, tmp_path / "w2", workers=2, device="cpu")
    assert np.array_equal(study.load_images(tmp_path / "w2", "train")[0], ref)
    study.simulate_dataset(cfg, tmp_path / "dask", workers=2, scheduler="local", device="cpu")
    assert np.array_equal(study.load_images(tmp_path / "dask", "train")[0], ref)
