"""End-to-end and bad-input behaviour of the astrometric-lensing study (tiny preset)."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from darkml.astrometry import simulate as sim
from darkml.astrometry import study
from darkml.cli import app
from darkml.storage import DatasetError, SampleStore

runner = CliRunner()


@pytest.mark.parametrize(
    "override, words",
    [
        ("data.scenarios=[A,Z]", ["data.scenarios", "unknown scenario 'Z'", "allowed: A, B, C, D, E"]),
        ("sky.nside=48", ["sky.nside", "power of two"]),
        ("data.custom_scenarios={X: {n_q: 0, sigma_u: 1}}", ["n_q", "> 0"]),
        ("data.custom_scenarios={X: {n_q: 1e9, sigma_u: -0.1}}", ["sigma_u", "> 0"]),
        ("population.m_min=1e11", ["m_min", "must be < population.m_max", "inverted"]),
    ],
)
def test_bad_config_is_one_line_before_work(tmp_path, override, words):
    res = runner.invoke(app, ["astrometry", "simulate", "--preset", "tiny", "--set", override, "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and line.startswith("error:")
    for w in words:
        assert w in line
    assert not (tmp_path / "r").exists()  # nothing written


def test_custom_survey_is_accepted():
    cfg = study.load("tiny", ["data.custom_scenarios={SKA20: {n_q: 1e8, sigma_u: 0.5}}", "data.scenarios=[SKA20]"])
    assert cfg.data.survey("SKA20").sigma_u == 0.5


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("astro")
    cfg = study.load("tiny")
    run = study.run(cfg, root / "run")
    return run


def test_paper_preset_rates_and_per_model_override():
    cfg = study.load("paper")
    assert cfg.train.lr == pytest.approx(0.1)  # the paper's rate for ResNet-18
    assert study._module(cfg, "resnet18").hparams.lr == pytest.approx(0.1)
    assert study._module(cfg, "vgg11").hparams.lr == pytest.approx(1e-3)  # documented departure
    assert cfg.sky.compile and cfg.data.n_train == 25000 and cfg.train.max_epochs == 50


def test_pipeline_end_to_end(tiny_run):
    m = tiny_run.metrics()
    auc = m["evaluation"]["auc"]["D"]["resnet18"]
    assert 0 <= auc["lo"] <= auc["value"] <= auc["hi"] <= 1
    assert "D" in m["evaluation"]["baseline"]
    assert set(m["timings_s"]) >= {"simulate", "train", "evaluate", "report"}
    html = tiny_run.report_path.read_text()
    assert "AUC per scenario" in html and html.count("data:image/png;base64") >= 4
    assert (tiny_run.figures / "roc.png").is_file()


def test_catalogue_recomputes_the_signal_map(tiny_run):
    from darkml.astrometry import sky

    cfg = tiny_run.load_config(study.AstrometryConfig)
    store = SampleStore.open(tiny_run.dataset_path / "signal.zarr")
    cat = store.table("subhalos", samples=[5])
    assert len(cat["m200"]) == store.read("n_subhalos", [5])[0]
    cat = {k: v for k, v in cat.items() if k != "sample"}
    again = sky.signal_map(cat, nside=cfg.sky.nside, max_angle_deg=cfg.sky.max_angle_deg, device="cpu")
    stored = store.read("signal", [5])[0]
    assert np.allclose(np.asarray(again, np.float32), stored, rtol=1e-5, atol=1e-6 * np.abs(stored).max())


def test_splits_and_labels_are_balanced(tiny_run):
    store = SampleStore.open(tiny_run.dataset_path / "D.zarr")
    label, split = store.read("label"), store.read("split")
    for code, n in ((0, 24), (1, 8), (2, 16)):
        assert np.sum((split == code) & (label == 1)) == n and np.sum((split == code) & (label == 0)) == n
    assert np.all(store.read("signal_index")[label == 0] == -1)


def test_same_bytes_on_one_or_two_workers_and_resume(tmp_path, tiny_run):
    cfg = tiny_run.load_config(study.AstrometryConfig)
    sim.simulate(cfg, tmp_path / "w2", workers=2)
    for name in ("signal", "D"):
        a = SampleStore.open(tiny_run.dataset_path / f"{name}.zarr")
        b = SampleStore.open(tmp_path / "w2" / f"{name}.zarr")
        key = "signal" if name == "signal" else "maps"
        assert a.read(key).tobytes() == b.read(key).tobytes()
    # an interrupted generation: chunk 2 of scenario D lost its completion marker
    marker = tmp_path / "w2" / "D.zarr" / ".complete" / "000002.json"
    other = tmp_path / "w2" / "D.zarr" / ".complete" / "000001.json"
    before = other.stat().st_mtime_ns
    marker.unlink()
    with pytest.raises(DatasetError, match="incomplete"):
        sim.open_scenario(tmp_path / "w2", "D")
    sim.simulate(cfg, tmp_path / "w2", workers=1)
    assert marker.is_file() and other.stat().st_mtime_ns == before
    assert SampleStore.open(tmp_path / "w2" / "D.zarr").read("maps").tobytes() == \
        SampleStore.open(tiny_run.dataset_path / "D.zarr").read("maps").tobytes()


def test_train_refuses_corrupted_or_foreign_dataset(tmp_path, tiny_run):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run.path, run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    store = SampleStore.open(run_dir / "dataset" / "D.zarr", mode="r+")
    store.group["maps"][3, 0, 0, 0] = 123.0
    res = runner.invoke(app, ["astrometry", "train", "--run-dir", str(run_dir)])
    assert res.exit_code == 2 and "corrupted" in res.output and "'maps' chunk 0" in res.output
    assert not any((run_dir / "checkpoints").glob("*/last.ckpt"))
    # a dataset path that holds something else is refused, and left alone
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_run.path, foreign, ignore=shutil.ignore_patterns("dataset"))
    (foreign / "dataset" / "D.zarr").mkdir(parents=True)
    (foreign / "dataset" / "D.zarr" / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["astrometry", "train", "--run-dir", str(foreign)])
    assert res.exit_code == 2 and "not a darkml dataset" in res.output
    assert (foreign / "dataset" / "D.zarr" / "notes.txt").read_text() == "mine"


def test_run_dir_with_other_config_is_refused(tmp_path, tiny_run):
    res = runner.invoke(app, ["astrometry", "simulate", "--preset", "tiny", "--set", "seed=5", "--run-dir", str(tiny_run.path)])
    assert res.exit_code == 2 and "different config" in res.output and "seed" in res.output


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_every_read_is_verified_and_simulate_repair_restores_the_bytes(tmp_path, tiny_run, damage):
    """A lost, truncated or altered chunk of the test maps is one line naming store, array and
    chunk (never an AUC); `simulate --repair` recomputes exactly that chunk, bit for bit."""
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run.path, run_dir)
    store_dir = run_dir / "dataset" / "D.zarr"
    before = SampleStore.open(store_dir).read("maps").tobytes()
    chunk = sorted(p for p in (store_dir / "maps").rglob("*") if p.is_file() and p.name != "zarr.json")[-1]
    if damage == "delete":
        chunk.unlink()
    elif damage == "truncate":
        chunk.write_bytes(chunk.read_bytes()[:20])
    else:
        raw = bytearray(chunk.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        chunk.write_bytes(bytes(raw))
    metrics_before = (run_dir / "metrics.json").read_text()
    for stage in ("evaluate", "train"):
        res = runner.invoke(app, ["astrometry", stage, "--run-dir", str(run_dir)])
        assert res.exit_code == 2, res.output
        err = res.stderr.strip()
        assert len(err.splitlines()) == 1 and "D.zarr" in err and "'maps' chunk" in err and "--repair" in err, err
    assert (run_dir / "metrics.json").read_text() == metrics_before  # no number from damaged data
    res = runner.invoke(app, ["astrometry", "simulate", "--run-dir", str(run_dir), "--repair"])
    assert res.exit_code == 0, res.output
    assert SampleStore.open(store_dir).read("maps").tobytes() == before
    for stage in ("train", "evaluate"):  # train failed on the damaged data: it reruns (finished fits are reused)
        res = runner.invoke(app, ["astrometry", stage, "--run-dir", str(run_dir)])
        assert res.exit_code == 0, res.output


def test_interrupted_simulate_and_train_resume_to_the_uninterrupted_result(tmp_path, tiny_run, monkeypatch):
    """Ctrl-C (or SIGTERM) during a stage: one line, exit 130, and the same command resumes to
    the dataset bytes and the checkpoint epochs of an uninterrupted run."""
    import darkml.learn.callbacks as cb

    run_dir = tmp_path / "r"
    calls = {"n": 0}
    real_chunk = sim.simulate_scenario_chunk

    def flaky_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_chunk(*args, **kwargs)

    monkeypatch.setattr(sim, "simulate_scenario_chunk", flaky_chunk)
    res = runner.invoke(app, ["astrometry", "simulate", "--preset", "tiny", "--run-dir", str(run_dir)])
    assert res.exit_code == 130 and res.stderr.strip() == "interrupted — rerun the same command to resume"
    assert json.loads((run_dir / "run.json").read_text())["stages"]["simulate"]["status"] == "interrupted"
    monkeypatch.setattr(sim, "simulate_scenario_chunk", real_chunk)
    res = runner.invoke(app, ["astrometry", "simulate", "--preset", "tiny", "--run-dir", str(run_dir)])
    assert res.exit_code == 0, res.output
    for name, key in (("D", "maps"), ("signal", "signal")):
        assert SampleStore.open(run_dir / "dataset" / f"{name}.zarr").read(key).tobytes() == \
            SampleStore.open(tiny_run.dataset_path / f"{name}.zarr").read(key).tobytes()
    # training: stop at the end of the first epoch, then resume from last.ckpt
    real_end = cb.EpochStats.on_train_epoch_end

    def stop_after_first(self, trainer, pl_module):
        real_end(self, trainer, pl_module)
        raise KeyboardInterrupt

    monkeypatch.setattr(cb.EpochStats, "on_train_epoch_end", stop_after_first)
    res = runner.invoke(app, ["astrometry", "train", "--run-dir", str(run_dir)])
    assert res.exit_code == 130 and "rerun the same command to resume" in res.stderr
    assert not (run_dir / "checkpoints" / "D-resnet18" / "done.json").exists()
    monkeypatch.setattr(cb.EpochStats, "on_train_epoch_end", real_end)
    res = runner.invoke(app, ["astrometry", "train", "--run-dir", str(run_dir)])
    assert res.exit_code == 0, res.output
    done = json.loads((run_dir / "checkpoints" / "D-resnet18" / "done.json").read_text())
    ref = json.loads((tiny_run.checkpoints / "D-resnet18" / "done.json").read_text())
    assert done["epochs"] == ref["epochs"]


def test_a_damaged_signal_map_never_reaches_the_scenario_maps(tmp_path, tiny_run):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run.path, run_dir)
    store = SampleStore.open(run_dir / "dataset" / "signal.zarr", mode="r+", verify=False)
    store.group["signal"][1, 0, 0] = 1e3
    (run_dir / "dataset" / "D.zarr" / ".complete" / "000001.json").unlink()  # a scenario chunk still to write
    res = runner.invoke(app, ["astrometry", "simulate", "--run-dir", str(run_dir)])
    assert res.exit_code == 2 and "signal.zarr" in res.stderr and "'signal' chunk 0" in res.stderr
    assert not (run_dir / "dataset" / "D.zarr" / ".complete" / "000001.json").exists()
    res = runner.invoke(app, ["astrometry", "simulate", "--run-dir", str(run_dir), "--repair"])
    assert res.exit_code == 0, res.output
    assert SampleStore.open(run_dir / "dataset" / "D.zarr").read("maps").tobytes() == \
        SampleStore.open(tiny_run.dataset_path / "D.zarr").read("maps").tobytes()
