"""The benchmark pipeline on tiny synthetic images (no simulator): all stages, report, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from darkml.config import ConfigError
from darkml.equivariant.benchmark import subsample
from darkml.equivariant.study import load as load_benchmark_config
from darkml.equivariant.study import run_benchmark
from darkml.learn.dihedral import d4_transforms, predict_tta

SIZE = 16
TINY = [
    "models=[cnn,c8,etn]",   # cnn: a cheap non-equivariant baseline in place of ResNet50; hnet: see unit tests
    "model_options={cnn: {width: 0.125}, c8: {width: 0.125}, etn: {width: 0.125}}",
    "data.datasets={euclid: euclid}",
    "data.val_fraction=0.25",
    "train.epochs=1", "train.batch_size=16", "train.lr=3e-3", "train.accelerator=cpu", "train.eval_batch_size=64",
    "eval.n_boot=20", "eval.tta_models=[cnn]", "eval.tta=c4",
    "data_efficiency.models=[cnn]", "data_efficiency.fractions=[0.5,1.0]", "data_efficiency.max_epochs=2",
]


def toy_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rings (class 0), rings + bright dots (1), rings + a line through the centre whose
    length grows with log10 m (2); random orientations, noise. Classes interleave like the
    simulator's (sample k has label k % 3)."""
    rng = np.random.default_rng(seed)
    n = 3 * n_per_class
    c = (SIZE - 1) / 2
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    r = np.hypot(xx - c, yy - c)
    x = np.zeros((n, 1, SIZE, SIZE), np.float32)
    y = np.arange(n) % 3
    m = np.full(n, np.nan, np.float32)
    for i in range(n):
        img = np.exp(-((r - rng.uniform(3.5, 4.5)) ** 2) / 1.0)
        if y[i] == 1:
            for _ in range(4):
                a, rr = rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 6)
                img += 1.5 * np.exp(-((xx - c - rr * np.cos(a)) ** 2 + (yy - c - rr * np.sin(a)) ** 2) / 1.0)
        elif y[i] == 2:
            m[i] = rng.uniform(-24, -22)
            half = 1.5 + 2 * (m[i] + 24)        # 1.5 .. 5.5 pixels
            a = rng.uniform(0, np.pi)
            along = (xx - c) * np.cos(a) + (yy - c) * np.sin(a)
            across = -(xx - c) * np.sin(a) + (yy - c) * np.cos(a)
            img += 1.5 * np.exp(-across**2 / 1.0) * (np.abs(along) < half)
        x[i, 0] = img + 0.1 * rng.normal(size=img.shape)
    return x, y.astype(np.int64), m


@pytest.fixture(scope="module")
def toy():
    return {"euclid": {"train": toy_images(16, 1), "test": toy_images(8, 2)}}


def test_classify_pipeline_end_to_end(tmp_path_factory, toy):
    cfg = load_benchmark_config("quick", TINY)
    run_dir = tmp_path_factory.mktemp("bench") / "run"
    run = run_benchmark(cfg, run_dir, data=toy, accelerator="cpu")
    bench = json.loads(run.metrics_path.read_text())["benchmark"]
    assert set(bench["test"]["euclid"]) == {"cnn", "c8", "etn"}
    for model, res in bench["test"]["euclid"].items():
        for key in ("accuracy", "macro_auc"):
            v = res[key]
            assert 0 <= v["lo"] <= v["value"] <= v["hi"] <= 1, (model, key, v)
        assert set(res["roc"]) == {"no_substructure", "cdm", "axion"}
        assert res["n_test"] == 24
        tr = bench["training"]["euclid"][model]
        assert tr["epochs"] == 1 and tr["train_images_per_s"] > 0 and tr["params"] > 0
        assert "val_auc" in tr["per_epoch"][0]
    assert "cnn" in bench["tta"]["euclid"]
    assert set(bench["comparison"]["euclid"]) == {"c8-minus-cnn", "etn-minus-cnn"}
    eff = bench["data_efficiency"]["euclid"]["cnn"]
    assert set(eff) == {"0.5", "1"} and eff["0.5"]["n_train"] < eff["1"]["n_train"]
    html = run.report_path.read_text()
    for text in ("Table 1", "ROC", "Convergence", "Data efficiency", "C8 steerable CNN", "0.99967", "TTA"):
        assert text in html, text
    assert (run.path / "predictions" / "classify-euclid-c8.npz").is_file()


def test_regression_pipeline_end_to_end(tmp_path, toy):
    cfg = load_benchmark_config("quick", TINY + ["task=regress", "models=[etn]", "eval.tta_models=[etn]",
                                                 "data_efficiency.enabled=false", "train.epochs=2"])
    run = run_benchmark(cfg, tmp_path / "run", data=toy, accelerator="cpu")
    bench = json.loads(run.metrics_path.read_text())["benchmark"]
    res = bench["test"]["euclid"]["etn"]
    assert res["n_test"] == 8  # axion class only
    assert res["mse"]["value"] == pytest.approx(res["rmse"]["value"] ** 2)
    d = np.load(run.path / "predictions" / "regress-euclid-etn.npz")
    assert np.all((d["target"] >= -24) & (d["target"] <= -22)) and np.all(np.isfinite(d["pred"]))
    # ETN is rotation invariant: C4 test-time averaging changes nothing (to float32 round-off)
    np.testing.assert_allclose(d["pred_tta"], d["pred"], atol=1e-3)
    ref = bench["reference"]["euclid"]["rmse"]["value"]
    assert ref >= float(np.std(d["target"])) - 1e-6  # RMSE of any constant >= the test targets' std
    html = run.report_path.read_text()
    assert "Table 2" in html and "Predicted vs true" in html and "training-set mean" in html
    # re-running reuses the finished fit (resume) and reproduces the metrics exactly
    run2 = run_benchmark(cfg, tmp_path / "run", data=toy, accelerator="cpu")
    res2 = json.loads(run2.metrics_path.read_text())["benchmark"]["test"]["euclid"]["etn"]
    assert res2["rmse"] == res["rmse"]


@pytest.mark.parametrize("override,words", [
    (["models=[resnet51]"], "not a model"),
    (["data_efficiency.fractions=[0,1]"], "must be in (0, 1]"),
    (["data.datasets={euclid: nope}"], "unknown simulator preset"),
    (["data_efficiency.datasets=[hst]", "data.datasets={euclid: euclid}"], "not in data.datasets"),
    (["task=segment"], "task"),
    (["train.lr=-1"], "must be > 0"),
])
def test_bad_config_fails_in_one_line(override, words):
    with pytest.raises(ConfigError, match=None) as exc:
        load_benchmark_config("quick", override)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_preset_aliases_and_paper_settings():
    paper = load_benchmark_config("paper")
    assert paper.preset == "paper"
    t = paper.train
    assert (t.optimizer, t.lr, t.batch_size, t.epochs) == ("adam", 1e-4, 64, 10)
    assert (paper.data.n_per_class_train, paper.data.n_per_class_test) == (30_000, 5_000)
    assert paper.models == ["resnet50", "c8", "hnet", "etn"] and paper.model_options == {}
    with pytest.raises(ConfigError, match="unknown preset"):
        load_benchmark_config("euclid")
    assert load_benchmark_config("quick", ["models=resnet50,c8"]).models == ["resnet50", "c8"]
    # the CPU comparison: the papers' data (euclid only), the paper's four families at CPU widths
    cpu = load_benchmark_config("benchmark-cpu")
    assert cpu.preset == "cpu" and cpu.data.datasets == {"euclid": "euclid"}
    assert cpu.models == ["resnet50", "c8", "hnet", "etn"] and cpu.model_options["resnet50"] == {"width": 16}
    from darkml.equivariant.benchmark import _epochs

    assert _epochs(cpu) == 10 and _epochs(load_benchmark_config("benchmark-cpu", ["task=regress"])) == 30
    assert _epochs(load_benchmark_config("paper", ["task=regress"])) == 10
    # the regression preset: same models and widths, 10,000 images per class, the same optimiser
    # steps as `cpu --task regress` (9 epochs of 9,000 axion images ≈ 30 of 2,700), cosine schedule
    reg = load_benchmark_config("benchmark-cpu-regress")
    assert reg.task == "regress" and reg.models == cpu.models and reg.model_options == cpu.model_options
    assert reg.data.datasets == {"euclid": "euclid"} and reg.data.n_per_class_train == 10_000
    assert _epochs(reg) * 0.9 * reg.data.n_per_class_train == pytest.approx(30 * 0.9 * 3000)
    assert reg.train.schedule == "cosine" and cpu.train.schedule == "plateau"
    assert reg.eval.mass_oracle and reg.eval.oracle_grid == cpu.eval.oracle_grid == 61


def test_subsample_is_stratified_and_seeded():
    y = np.arange(300) % 3
    idx = subsample(y, 0.1, seed=0, classify=True)
    assert np.bincount(y[idx]).tolist() == [10, 10, 10]
    assert np.array_equal(idx, subsample(y, 0.1, seed=0, classify=True))
    assert not np.array_equal(idx, subsample(y, 0.1, seed=1, classify=True))
    assert np.bincount(y[subsample(y, 0.001, 0, True)]).tolist() == [1, 1, 1]
    assert len(subsample(y, 1.0, 0, True)) == 300


def test_d4_transforms_are_the_eight_grid_symmetries():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    imgs = {tuple(op(x).flatten().tolist()) for op in d4_transforms("d4")}
    assert len(imgs) == 8
    assert len({tuple(op(x).flatten().tolist()) for op in d4_transforms("c4")}) == 4
    # the set is closed: transforming the orbit again gives the same orbit
    orbit2 = {tuple(op(torch.rot90(x, 1, (-2, -1))).flatten().tolist()) for op in d4_transforms("d4")}
    assert orbit2 == imgs


def test_predict_tta_averages_over_the_orbit():
    """For a module whose output is the image's top-left pixel, D4 averaging gives the mean of
    the four corners (each corner visits the top-left twice among the 8 symmetries)."""
    import lightning as L

    class Corner(L.LightningModule):
        def predict_step(self, batch, i):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            return x[:, 0, 0, :1]

    x = np.random.default_rng(0).normal(size=(5, 1, 6, 6)).astype(np.float32)
    got = predict_tta(Corner(), x, batch_size=4, group="d4")[:, 0]
    want = (x[:, 0, 0, 0] + x[:, 0, 0, -1] + x[:, 0, -1, 0] + x[:, 0, -1, -1]) / 4
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cli_rejects_a_bad_model_in_one_line(tmp_path):
    from click.testing import CliRunner

    from darkml.cli import app

    res = CliRunner().invoke(app, ["equivariant", "run", "--models", "resnet50,vit", "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "'vit' is not a model" in res.output
    assert not (tmp_path / "r").exists()  # refused before any work


@pytest.mark.slow
def test_pipeline_learns_a_learnable_toy_problem(tmp_path):
    """With enough epochs the pipeline separates the toy classes (AUC > 0.9) and regresses the
    toy 'mass' (line length) better than predicting the mean: the wiring learns, not only runs."""
    data = {"euclid": {"train": toy_images(60, 11), "test": toy_images(30, 12)}}
    base = TINY + ["models=[cnn,c8]", "data_efficiency.enabled=false", "train.epochs=8", "eval.tta_models=[]"]
    run = run_benchmark(load_benchmark_config("quick", base), tmp_path / "c", data=data, accelerator="cpu")
    test = json.loads(run.metrics_path.read_text())["benchmark"]["test"]["euclid"]
    for model in ("cnn", "c8"):
        assert test[model]["macro_auc"]["value"] > 0.9, (model, test[model]["macro_auc"])
    run = run_benchmark(load_benchmark_config("quick", base + ["task=regress", "train.epochs=15"]), tmp_path / "r",
                        data=data, accelerator="cpu")
    test = json.loads(run.metrics_path.read_text())["benchmark"]["test"]["euclid"]
    m = data["euclid"]["test"][2]
    sd = float(np.nanstd(m))
    for model in ("cnn", "c8"):
        assert test[model]["rmse"]["value"] < 0.7 * sd, (model, test[model]["rmse"], sd)


def test_simulate_stage_writes_the_datasets_the_other_stages_read(tmp_path):
    from darkml.equivariant import benchmark, study
    from darkml.study import execute

    cfg = load_benchmark_config("quick", TINY + ["data.n_per_class_train=4", "data.n_per_class_test=2",
                                                 "data.sim_overrides=[dataset.chunk_size=6]"])
    run, _ = execute(study.STUDY, cfg, tmp_path / "r", ["simulate"])
    data = benchmark.load_data(cfg, run)
    x, y, m = data["euclid"]["train"]
    assert x.shape == (12, 1, 64, 64) and sorted(np.bincount(y)) == [4, 4, 4]
    assert np.isfinite(m[y == 2]).all() and np.isnan(m[y != 2]).all()
    assert run.metrics()["benchmark"]["datasets"]["euclid"]["n_train"] == 12
