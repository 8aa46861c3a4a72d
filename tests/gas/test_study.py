"""A tiny end-to-end run of the gas study (synthetic sky), its resume, the CLI and a MOPRA folder."""

import json

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from darkml.cli import app
from darkml.config import ConfigError
from darkml.gas import study
from darkml.storage import SampleStore

TINY = [
    "sky.n_tiles=6", "sky.l_start_deg=334.0", "sky.pixels_per_tile=16", "sky.channel_kms=5.0",
    "sky.floor_realizations=1",
    "data.train_l_deg=[334.0,338.0]", "data.test_l_deg=[338.0,340.0]",
    "gp.iters=5", "gp.stride=4",
    "cnn.losses=[wmae]", "cnn.epochs=2", "cnn.patches_per_epoch=2000", "cnn.batch_size=512", "cnn.filters=8",
    "cnn.hidden=[8]", "cnn.window=5", "cnn.accelerator=cpu",
    "hpsearch.n_trials=1", "hpsearch.epochs=1", "hpsearch.patches_per_epoch=1000", "hpsearch.windows=[3]",
    "eval.n_boot=20", "eval.maps_shown=1", "threads=null",
]


def test_tiny_pipeline_end_to_end(tmp_path):
    cfg = study.load("quick", TINY)
    run = study.run(cfg, tmp_path / "run")
    m = json.loads(run.metrics_path.read_text())                 # strict JSON: no NaN anywhere
    assert "NaN" not in run.metrics_path.read_text()
    ev = m["evaluate"]
    assert set(ev["models"]) >= {"gp", "cnn_wmae", "ring_linear", "physics_inverse", "floor_conditional_median",
                                 "floor_oracle_inverse", "floor_target_noise"}
    assert ev["n_test_planes"] == 2 * 17
    for name, res in ev["models"].items():
        for metric, s in res.items():
            assert s["n_planes"] == 34
            assert s["value"] is None or np.isfinite(s["value"])
        assert res["scaled_abs_error"]["n_valid"] >= 5             # empty rings are invalid, not NaN
    g = np.array(ev["heatmaps"]["gp"]["pearson"], dtype=float)
    assert g.shape == (17, 2)
    assert ev["noise_floor"]["scaled_abs_error"] > 0
    assert run.report_path.is_file() and run.report_path.stat().st_size > 10_000
    store = SampleStore.open(run.dataset_path)
    assert store.n_samples == 6 + 2 and store.attrs["source"] == "synthetic"
    # resume: a second train call reuses GP and CNN checkpoints
    out = study.train(run)
    assert out["gp"]["n_gps"] >= 2 and out["cnn"]["cnn_wmae"]["epochs"] >= 1

    # the CLI reads the stored config from the run directory
    res = CliRunner().invoke(app, ["gas", "evaluate", "--run-dir", str(run.path)])
    assert res.exit_code == 0, res.output
    assert "cnn_wmae" in res.output


def test_cli_bad_config_is_one_line_error(tmp_path):
    res = CliRunner().invoke(app, ["gas", "simulate", "--set", "cnn.window=4", "--run-dir", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "cnn.window = 4: must be odd" in res.output
    with pytest.raises(ConfigError, match="sky.pixels_per_tile"):
        study.load("quick", ["sky.pixels_per_tile=4"])


def _write_cube(path, lc, data):
    h = fits.Header()
    h["CTYPE1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = "GLON-CAR", lc, -0.125, 4.5
    h["CTYPE2"], h["CRVAL2"], h["CDELT2"], h["CRPIX2"] = "GLAT-CAR", 0.0, 0.125, 4.5
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = "VELO-LSR", -150000.0, 2500.0, 1.0, "m/s"
    h["BUNIT"] = "K"
    fits.PrimaryHDU(data, h).writeto(path)


def test_mopra_folder_becomes_the_dataset(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mopra"
    folder.mkdir()
    for lc in (336.5, 337.5, 338.5):
        data = rng.normal(0, 0.5, size=(80, 8, 8)).astype(np.float32)
        data[30:36] += 3.0
        data[0, 0, 0] = np.nan
        _write_cube(folder / f"G{lc}-12CO_Vcrop.fits", lc, data)
        _write_cube(folder / f"G{lc}-13CO_Vcrop.fits", lc, 0.3 * data)
    cfg = study.load("quick", ["data.train_l_deg=[336.0,338.0]", "data.test_l_deg=[338.0,339.0]"], mopra_dir=str(folder))
    run = study.create_run(cfg, tmp_path / "run")
    store = study.simulate(run)
    assert store.n_samples == 3 and store.attrs["source"] == "mopra"
    prep = study.prepare(cfg, store)
    assert prep.test.src.shape == (17, 8, 8) and not prep.synthetic and prep.floor is None
    assert np.all(np.isfinite(prep.train.src)) and np.all(np.isfinite(prep.test.tgt))


def test_mock_release_runs_end_to_end_through_the_cli(tmp_path):
    """A release in MOPRA's layout (sub-folders, 2-D Tsys/coverage/RMS images, odd and even NAXIS,
    both CRPIX phases, varied BUNIT spellings, a C18O cube) through ``darkml gas run --mopra``."""
    from darkml.gas.mockrelease import write_mock_release

    sky = study.load("quick", TINY)
    write_mock_release(tmp_path / "release", sky.sky, sky.conversion, tiles=range(6))
    args = ["gas", "run", "--mopra", str(tmp_path / "release"), "--run-dir", str(tmp_path / "run")]
    for kv in TINY:
        args += ["--set", kv]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["dataset"]["source"] == "mopra" and m["dataset"]["l_lo_deg"] == [334.0 + i for i in range(6)]
    assert all(t["footprint"] == 1.0 for t in m["dataset"]["tiles"])
    inv = m["dataset"]["inventory"]
    assert inv["n_pairs"] == 6 and sum(f["used"] for f in inv["files"]) == 24       # 12 cubes + 12 RMS images
    assert m["evaluate"]["n_test_planes"] == 2 * 17 and "floor_conditional_median" not in m["evaluate"]["models"]
    assert "Survey release" in (tmp_path / "run" / "report.html").read_text()
