"""The SSL pipeline: config checks, data helpers, the summary count, and a tiny end-to-end run
(pre-train → fine-tune / probe / baseline → metrics → report) on toy images."""

import json
import re

import numpy as np
import pytest

from darkml.config import ConfigError, validate
from darkml.learn import ssl as pretrain
from darkml.runs import RunError
from darkml.ssl.config import PAPER_TABLES, SSLConfig
from darkml.ssl.data import label_subset, toy_images
from darkml.ssl.figures import summarise
from darkml.ssl.study import load, run_ssl


def test_presets_load_and_state_their_encoders():
    q = load("quick")
    assert q.preset == "quick" and q.encoders == ["resnet-tiny", "vit-tiny"] and set(q.methods) == set(pretrain.METHODS)
    p = load("ssl-paper")
    assert p.encoders == ["resnet50", "vit"] and p.patch_size == 8
    assert p.data.n_per_class_train == 30_000 and p.data.n_per_class_test == 5_000
    assert p.data.instruments == ["hst", "euclid"]


@pytest.mark.parametrize("override, match", [
    ("methods=[simclr, byol]", "methods"),
    ("encoders=[resnet101]", "encoders"),
    ("patch_size=7", "patch_size"),
    ("finetune.label_fractions=[0.1, 0.5]", "must include 1.0"),
    ("finetune.label_fractions=[0, 1.0]", r"\(0, 1\]"),
    ("augment.noise_sigma=[0.1, 0.01]", "noise_sigma"),
    ("pretrain.lr=-1", "pretrain.lr"),
    ("data.instruments=[]", "instruments"),
])
def test_bad_config_is_one_clear_error(override, match):
    with pytest.raises(ConfigError, match=match):
        load("quick", [override, "encoders=[vit-tiny]"] if override.startswith("patch") else [override])


def test_unknown_instrument_fails_before_work(tmp_path):
    with pytest.raises(ConfigError, match="jwst"):
        run_ssl(load("quick", ["data.instruments=[jwst]"]), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_toy_images_contract():
    s = toy_images(5, seed=3, size=32)
    assert s.images.shape == (15, 1, 32, 32) and s.images.dtype == np.float32
    assert s.labels.dtype == np.int64 and list(s.labels[:6]) == [0, 1, 2, 0, 1, 2]
    ax = s.labels == 2
    assert np.isnan(s.log10_m[~ax]).all() and np.all((s.log10_m[ax] >= -24) & (s.log10_m[ax] <= -22))
    assert np.array_equal(toy_images(5, seed=3, size=32).images, s.images)
    assert not np.array_equal(toy_images(5, seed=4, size=32).images, s.images)


def test_label_subset_is_stratified_and_reproducible():
    y = np.repeat([0, 1, 2], [100, 200, 50])
    idx = np.arange(len(y))
    sub = label_subset(y, idx, 0.1, 2, seed=0)
    assert [int((y[sub] == c).sum()) for c in range(3)] == [10, 20, 5]
    tiny = label_subset(y, idx, 0.001, 2, seed=0)
    assert [int((y[tiny] == c).sum()) for c in range(3)] == [2, 2, 2]  # at least min_per_class
    assert np.array_equal(label_subset(y, idx, 0.1, 2, seed=0), sub) and len(np.unique(sub)) == len(sub)
    assert np.array_equal(label_subset(y, idx, 1.0, 2, seed=0), idx)


def test_summary_counts_ssl_at_least_supervised():
    cfg = load("quick", ["methods=[byol, dino]", "finetune.label_fractions=[0.1, 1.0]"])
    auc = lambda v: {"macro_auc": {"value": v}}  # noqa: E731
    m = {"results": {"hst": {"resnet-tiny": {
        "supervised": {"classify": {"100": auc(0.90), "10": auc(0.70)}},
        "byol": {"classify": {"100": auc(0.95), "10": auc(0.60)}},
        "dino": {"classify": {"100": auc(0.90), "10": auc(0.80)}},  # a tie counts as >=
    }}}}
    s = summarise(cfg, m)
    assert s["ssl_ge_supervised"]["100"] == {"count": 2, "of": 2}
    assert s["ssl_ge_supervised"]["10"] == {"count": 1, "of": 2}


def test_paper_tables_are_the_papers():
    # Tables 1 and 2 of Deshmukh et al. (2023): 7 rows each; Model A = HST-like, B = Euclid-like
    assert len(PAPER_TABLES["hst"]) == len(PAPER_TABLES["euclid"]) == 7
    assert PAPER_TABLES["hst"][("dino", "resnet50")] == (0.996, 0.997)
    assert PAPER_TABLES["euclid"][("byol", "resnet50")] == (0.963, 0.960)  # the one exception
    wins = sum(s >= b for t in PAPER_TABLES.values() for b, s in t.values())
    assert wins == 13


def _tiny_cfg(**changes):
    data = {
        "preset": "test", "methods": ["dino"], "encoders": ["resnet-tiny"], "accelerator": "cpu",
        "data": {"source": "toy", "instruments": ["hst"], "n_per_class_train": 16, "n_per_class_test": 8,
                 "image_size": 32, "val_fraction": 0.25},
        "pretrain": {"epochs": 2, "batch_size": 16, "warmup_epochs": 0, "proj_hidden": 32, "proj_dim": 16,
                     "dino_out_dim": 32, "dino_bottleneck_dim": 8, "dino_local_crops": 1, "dino_local_size": 16},
        "finetune": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "head_hidden": 16, "label_fractions": [0.25, 1.0],
                     "regression_epochs": 1, "max_epoch_scale": 1},
        "eval": {"n_boot": 20},
    }
    data.update(changes)
    return validate(SSLConfig, data)


def test_pipeline_end_to_end_on_toy_images(tmp_path):
    cfg = _tiny_cfg()
    run = run_ssl(cfg, tmp_path / "run", devices=1)
    m = json.loads(run.metrics_path.read_text())
    res = m["results"]["hst"]["resnet-tiny"]
    assert set(res) == {"supervised", "dino"}
    for init, r in res.items():
        assert set(r["classify"]) == {"25", "100"}
        for c in r["classify"].values():
            v = c["macro_auc"]
            assert 0 <= v["lo"] <= v["hi"] <= 1 and 0 <= v["value"] <= 1
        assert r["classify"]["25"]["n_train"] < r["classify"]["100"]["n_train"] == 36  # 48 train images - 25% val
        assert r["regress"]["n_train"] == 12 and np.isfinite(r["regress"]["rmse"]["value"])
        assert 0 <= r["probe"]["macro_auc"]["value"] <= 1
    p = res["dino"]["pretrain"]
    assert p["epochs"] == 2 and np.isfinite(p["train_loss"]) and p["collapse_final"] > 0
    assert (run.checkpoints / "hst" / "resnet-tiny" / "dino" / "encoder.pt").is_file()
    assert m["summary"]["ssl_ge_supervised"]["100"]["of"] == 1
    html = run.report_path.read_text()
    for needle in ("Table 1: Model A (HST-like)", "Figure 2", "Label efficiency", "Linear probes", "paper: supervised",
                   "0.997", "Pre-training diagnostics"):
        assert needle in html, needle
    assert len(re.findall(r"data:image/png;base64", html)) == 3
    # predictions behind Fig. 2 are on disk
    d = np.load(run.checkpoints / "hst" / "resnet-tiny" / "dino" / "regress" / "predictions.npz")
    assert d["pred"].shape == d["true"].shape == (8,)

    # resuming a finished run retrains nothing and gives the same numbers
    enc = run.checkpoints / "hst" / "resnet-tiny" / "dino" / "encoder.pt"
    t_enc = enc.stat().st_mtime_ns
    run2 = run_ssl(cfg, tmp_path / "run", devices=1)
    assert enc.stat().st_mtime_ns == t_enc
    assert json.loads(run2.metrics_path.read_text())["results"] == m["results"]
    # a different config in the same directory is refused
    with pytest.raises(RunError):
        run_ssl(_tiny_cfg(seed=1), tmp_path / "run", devices=1)


@pytest.mark.slow
def test_pipeline_on_simulated_images(tmp_path):
    """The simulator's dataset contract (study.simulate_dataset / load_images) end to end, with the
    ssl-cpu execution settings (bf16-mixed, channels-last, cosine fine-tuning) and the regression's
    Bayes-optimal ceiling on the test axion images."""
    cfg = _tiny_cfg(data={"source": "simulate", "instruments": ["euclid"], "n_per_class_train": 8,
                          "n_per_class_test": 4, "val_fraction": 0.25, "sim_set": ["dataset.compile=false"]},
                    methods=["simsiam"], pretrain={"epochs": 1, "batch_size": 8, "proj_hidden": 16, "proj_dim": 16},
                    precision="bf16-mixed", channels_last=True, eval={"n_boot": 20, "oracle_grid": 11},
                    finetune={"epochs": 1, "batch_size": 16, "lr": 1e-3, "head_hidden": 16, "label_fractions": [0.25, 1.0],
                              "regression_epochs": 1, "max_epoch_scale": 1, "schedule": "cosine"})
    run = run_ssl(cfg, tmp_path / "run", devices=1)
    m = run.metrics()
    assert m["data"]["euclid"]["image_shape"] == [1, 64, 64] and m["data"]["euclid"]["n_test"] == 12
    c = m["ceiling"]["euclid"]
    assert c["n_images"] == 4 and 0 <= c["rmse"]["value"] < 1.0 and c["grid_step"] == pytest.approx(0.2)
    html = run.report_path.read_text()
    assert "Table 1: Model B (Euclid-like)" in html and "Bayes-optimal oracle" in html


def test_simulate_stage_draws_from_the_lensing_simulator(tmp_path):
    """The study's own data path (not the toy set): simulate writes each instrument's stores
    into the run and train/evaluate read them back."""
    from darkml.ssl import study
    from darkml.study import execute

    cfg = load("quick", ["data.source=simulate", "data.instruments=[hst]", "data.n_per_class_train=4",
                         "data.n_per_class_test=2", "data.sim_set=[dataset.chunk_size=6]"])
    run, out = execute(study.STUDY, cfg, tmp_path / "r", ["simulate"])
    assert out["simulate"] == {"hst": 3 * 4 + 3 * 2}
    assert (run.dataset_path / "hst" / "train.zarr").is_dir() and run.stage_finished("simulate")
    from darkml.ssl.data import load_data

    train, test = load_data(cfg, run, "hst")  # what the train stage reads
    assert train.images.shape == (12, 1, 64, 64) and len(test) == 6 and sorted(np.bincount(train.labels)) == [4, 4, 4]
