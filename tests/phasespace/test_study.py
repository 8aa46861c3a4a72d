"""End to end at a tiny size: simulate -> train -> evaluate -> report, resume, CLI errors, catalogue input."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from darkml.config import ConfigError
from darkml.phasespace import study
from darkml.phasespace.flows import SupportError
from darkml.runs import Run, RunError

TINY = [
    "mock.n_stars=3000", "mock.chunk_size=2000", "flow.transforms=2", "flow.hidden=[16,16]", "train.ensemble=2",
    "train.ensemble_smeared=1", "train.max_epochs=3", "train.patience=2", "train.batch_size=512",
    "measure.n_velocities=64", "measure.profile_points=3", "measure.density_profile_points=2", "measure.fast_velocities=32",
    "measure.fast_nodes=[2,2,4]", "measure.paper_estimator=true", "measure.paper_kernel_points=64",
    "measure.paper_velocities=32", "jeans.n_boot=2", "jeans.min_count=5", "measure.moments_velocities=32",
]


def test_tiny_pipeline_end_to_end(tmp_path):
    cfg = study.load("quick", TINY)
    run = study.run_all(cfg, tmp_path / "run")
    m = run.metrics()
    assert set(m["train"]) == {"original", "smeared", "reperturbed"}
    assert len(m["train"]["original"]["members"]) == 2
    meas = m["measure"]
    comps = {(r["component"], r["dataset"]) for r in meas["sun_acceleration"]}
    assert ("a_x", "truth") in comps and ("a_z", "jeans") in comps and ("a_y", "smeared") in comps
    smeared = [r for r in meas["sun_acceleration"] if r["dataset"] == "smeared"]
    assert all("syst" in r for r in smeared)
    assert "accuracy" in meas and "original" in meas["accuracy"]["density_at_sun_rel_error"]
    assert meas["cost"]["paper_density_evaluations_per_point"] == 64 * 32
    # the moment (Jeans-of-the-flows) density beside the Boltzmann one, for every dataset
    mom = {r["dataset"]: r for r in meas["sun_density"] if "moments" in r["dataset"]}
    assert set(mom) == {"original (smoothed, moments)", "smeared (smoothed, moments)", "reperturbed (smoothed, moments)"}
    assert "syst" in mom["smeared (smoothed, moments)"] and np.isfinite(mom["original (smoothed, moments)"]["value"])
    assert "original_moments" in meas["accuracy"]["density_at_sun_rel_error"]
    dm = {r["dataset"]: r for r in meas["dark_matter"]["sun"]}
    rho_b = dm["truth (smoothed)"]["rho_baryon"]
    assert dm["original (moments)"]["rho_dm"] == pytest.approx(mom["original (smoothed, moments)"]["value"] - rho_b)
    # the hybrid (a_x, a_y least squares + a_z moments) has its own row for every dataset (its arithmetic:
    # test_gauss.test_hybrid_density_splits_linearly)
    hyb = {r["dataset"]: r for r in meas["sun_density"] if "hybrid" in r["dataset"]}
    assert set(hyb) == {"original (smoothed, hybrid)", "smeared (smoothed, hybrid)", "reperturbed (smoothed, hybrid)"}
    assert np.isfinite(hyb["original (smoothed, hybrid)"]["value"]) and "original_hybrid" in meas["accuracy"]["density_at_sun_rel_error"]
    A = np.load(run.path / "profiles.npz")
    assert A["original_acc"].shape == (1 + 2 * 3, 3) and np.all(np.isfinite(A["original_acc"]))
    assert np.isfinite(A["true_rho_smoothed"]).all()
    html = run.report_path.read_text()
    assert "Acceleration at the Sun" in html and "data:image/png;base64" in html
    # the truth in the report is the exact model's: radial acceleration at the Sun ≈ −v_c²/R
    a_true = [r["value"] for r in meas["sun_acceleration"] if r["dataset"] == "truth" and r["component"] == "a_x"][0]
    assert -7000 < a_true < -5000
    # accelerations at any point inside the support; a clear error outside it
    a, a_sd = study.accelerations_at(cfg, run, [[8.0, 0.5, 0.1]])
    assert a.shape == (1, 3) and a_sd.shape == (1, 3) and a[0, 0] < 0
    with pytest.raises(SupportError, match="outside the data's support"):
        study.accelerations_at(cfg, run, [[8.122, 0.0, 4.0]])
    # the same members evaluated with ν tilted (tilt.py): each member fitted on its own training stars,
    # reported with its held-out gain; the densities change, the truth does not
    from darkml.phasespace.ensembles import measured_member
    from darkml.phasespace.measure import measure
    from darkml.phasespace.tilt import TiltedFlow

    cfg_t = study.load("quick", TINY + ["flow.nu_tilt_terms=3", "flow.nu_tilt_samples=20000"])
    tf = measured_member(run, cfg_t, "original", 1)
    assert isinstance(tf, TiltedFlow) and tf.fit.n_stars == int(round(0.8 * len(study.load_stars(run, cfg, "original")[0])))
    s_t = measure(cfg_t, run)
    assert [len(s_t["nu_tilt"][d]["val_gain_nats_per_star"]) for d in ("original", "smeared", "reperturbed")] == [2, 1, 1]
    assert np.isfinite(s_t["nu_tilt"]["original"]["val_gain_nats_per_star"]).all()
    assert all(0 <= p <= 1 for p in s_t["nu_tilt"]["original"]["p_value"])
    from darkml.phasespace.figures import build_report

    assert "Vertical tilt of ν" in build_report(cfg_t, run).read_text()
    A_t = np.load(run.path / "profiles.npz")
    assert A_t["original_dlnnu_dz_members"].shape == A_t["original_dlnnu_dz_untilted_members"].shape == (2, len(A_t["nu_z"]))
    # the tilt changes the slope of ln ν along z
    assert not np.allclose(A_t["original_dlnnu_dz_members"], A_t["original_dlnnu_dz_untilted_members"])
    # the exact slope: the disc's ν falls away from the mid-plane on both sides
    t = A_t["true_dlnnu_dz"]
    assert t[0] > 0 > t[-1]
    assert (run.figures / "dlnnu_dz.png").is_file()
    rho_t = {r["dataset"]: r["value"] for r in s_t["sun_density"]}
    rho_0 = {r["dataset"]: r["value"] for r in meas["sun_density"]}
    assert rho_t["original (smoothed, fast)"] != rho_0["original (smoothed, fast)"]
    assert rho_t["truth (smoothed)"] == rho_0["truth (smoothed)"]
    # the isolation rows for every member: the Boltzmann solve with the exact f (b) gives the exact field's
    # density (a), whatever the flows (a's own error here is the tiny run's coarse cubature, [2, 2, 4] nodes)
    from darkml.phasespace import isolation

    assert isolation.main([str(run.path), "--members", "2", "--json", str(tmp_path / "iso.json")]) == 0  # run's own config: no tilt
    iso = isolation.isolate(cfg_t, run, 1, swap=False)
    assert iso["nu_tilt_terms"] == 3 and "gradient_swap" not in iso
    assert iso["rows"]["b"]["rho"] == pytest.approx(iso["rows"]["a"]["rho"], rel=1e-4)
    assert json.loads((tmp_path / "iso.json").read_text())[1]["member"] == 1
    # a second run resumes: nothing is retrained (done.json) and the data are reused
    before = (run.checkpoints / "original" / "m0" / "best.ckpt").stat().st_mtime
    study.train(Run.open(run.path))
    assert (run.checkpoints / "original" / "m0" / "best.ckpt").stat().st_mtime == before
    # a different config in the same run directory is refused
    with pytest.raises(RunError, match="different config"):
        study.open_run(study.load("quick", TINY + ["seed=1"]), run.path)


def test_catalogue_input(tmp_path):
    cfg = study.load("quick", TINY + ["smearing.enabled=false"])
    run = study.open_run(cfg, tmp_path / "mock")
    study.simulate(run)
    x, v = study.load_stars(run, cfg, "original")
    pd.DataFrame({"x": x[:, 0], "y": x[:, 1], "z": x[:, 2], "vx": v[:, 0], "vy": v[:, 1], "vz": v[:, 2]}).to_csv(
        tmp_path / "stars.csv", index=False)
    cfg2 = study.load("quick", TINY + [f"catalogue.path={tmp_path / 'stars.csv'}", "smearing.reperturb=true"])
    run2 = study.open_run(cfg2, tmp_path / "cat")
    study.simulate(run2)
    assert study.dataset_names(cfg2) == ["original", "reperturbed"]
    x2, v2 = study.load_stars(run2, cfg2, "original")
    np.testing.assert_allclose(x2, x)
    assert len(study.load_stars(run2, cfg2, "reperturbed")[0]) > 0.9 * len(x)


@pytest.mark.slow
def test_simulation_is_deterministic_across_workers(tmp_path):
    cfg = study.load("quick", TINY)
    runs = []
    for name, workers in (("a", 1), ("b", 2)):
        run = study.open_run(cfg, tmp_path / name)
        study.simulate(run, workers=workers)
        runs.append(run)
    for key in ("original", "smeared", "reperturbed"):
        xa, va = study.load_stars(runs[0], cfg, key)
        xb, vb = study.load_stars(runs[1], cfg, key)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(va, vb)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"measure.n_velocities = 2: must be >= 16"):
        study.load("quick", ["measure.n_velocities=2"])
    with pytest.raises(ConfigError, match=r"measure.moments_velocities = 5: must be 0 \(off\) or >= 16"):
        study.load("quick", ["measure.moments_velocities=5"])
    with pytest.raises(ConfigError, match="too few stars for the requested flows"):
        study.load("quick", ["mock.n_stars=500"])
    with pytest.raises(ConfigError, match="fractions sum to"):
        study.load("quick", ["mock.components=[{fraction: 0.5}]"])
    with pytest.raises(ConfigError, match="kernel reach"):
        study.load("quick", ["measure.bandwidth_kpc=[2.0,2.0,0.2]"])


def test_cli_reports_user_errors(tmp_path):
    from darkml.cli import app

    r = CliRunner().invoke(app, ["phasespace", "simulate", "--set", "measure.truncation=9", "--run-dir", str(tmp_path / "r")])
    assert r.exit_code == 2 and "truncation" in r.output
    r = CliRunner().invoke(app, ["phasespace", "evaluate", "--run-dir", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "not a darkml run directory" in r.output
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"x": [8.0] * 10, "y": [0.0] * 10, "z": [0.0] * 10}).to_csv(bad, index=False)
    r = CliRunner().invoke(app, ["phasespace", "simulate", "--set", f"catalogue.path={bad}", "--run-dir", str(tmp_path / "c")])
    assert r.exit_code == 2 and "missing column" in r.output


def test_support_error_for_points_outside(tmp_path):
    with pytest.raises(ConfigError, match="half_range"):
        study.load("quick", ["measure.z_half_range_kpc=3.6"])


def test_cpu_presets_train_to_the_end_and_add_the_moment_density():
    """The cpu presets (both mocks) use the cosine schedule without early stopping, tilt ν and report the
    moment density beside the Boltzmann one; quick keeps the paper's plateau schedule and untilted ν."""
    for preset, galaxy in (("cpu", "mw2014"), ("cpu-h277", "h277-like")):
        cfg = study.load(preset)
        assert cfg.mock.galaxy == galaxy and cfg.mock.n_stars == 150_000
        assert (cfg.train.schedule, cfg.train.max_epochs, cfg.measure.moments_velocities) == ("cosine", 100, 2000)
        assert (cfg.flow.nu_tilt_terms, cfg.flow.nu_tilt_width_kpc) == (3, 0.5)
    quick = study.load("quick")
    assert quick.train.schedule == "plateau" and quick.measure.moments_velocities == 0 and quick.flow.nu_tilt_terms == 0
