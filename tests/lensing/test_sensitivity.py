"""The sensitivity stage end to end on a tiny budget."""

import json

from darkml.lensing import study


def test_sensitivity_stage_runs_and_orders_its_points(tmp_path):
    cfg = study.load("quick", ["sensitivity.slopes=[-0.9,-1.9]", "sensitivity.n_per_class_train=20",
                               "sensitivity.n_per_class_test=10", "sensitivity.epochs=1",
                               "sensitivity.n_detectability=4", "detectability.n_per_class=4"])
    run = study.run(cfg, tmp_path / "run")
    rows = json.loads((run.path / "metrics.json").read_text())["sensitivity"]["points"]
    assert [r["slope"] for r in rows] == [-1.9, -0.9]
    # the physics, not the tiny network: more mass per image, more detectable
    assert rows[1]["median_sub_mass_total"] > 30 * rows[0]["median_sub_mass_total"]
    assert rows[1]["oracle_refit"]["sqrt_chi2"]["median"] > rows[0]["oracle_refit"]["sqrt_chi2"]["median"]
    assert rows[1]["oracle_refit"]["oracle_auc"]["value"] >= rows[0]["oracle_refit"]["oracle_auc"]["value"]
    for r in rows:
        assert 0 <= r["cnn"]["auc"]["value"] <= 1 and r["cnn"]["n_test"] == 20
        assert r["oracle_refit"]["sqrt_chi2"]["median"] <= r["oracle_raw"]["sqrt_chi2"]["median"] + 1e-9
    html = run.report_path.read_text()
    assert "Substructure sensitivity" in html and "Detectability of the substructure" in html
    # re-running resumes: nothing is retrained or re-simulated, same numbers
    again = study.run(cfg, run.path)
    assert json.loads((again.path / "metrics.json").read_text())["sensitivity"]["points"] == rows
