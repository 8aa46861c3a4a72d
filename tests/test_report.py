import base64
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from darkml.report import Report, fmt_ci  # noqa: E402


def test_report_is_self_contained(tmp_path):
    rep = Report("Demo <study>")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    rep.add_figure(fig, "ROC", name="roc", figures_dir=tmp_path / "fig")
    rep.add_table([{"scenario": "A", "AUC": {"value": 0.5, "lo": 0.49, "hi": 0.51}}], "AUC")
    rep.add_config({"seed": 1})
    out = rep.write(tmp_path / "report.html")
    html = out.read_text()
    assert "Demo &lt;study&gt;" in html and "0.500 [0.490, 0.510]" in html
    assert not re.search(r"""(src|href)=["'](http|/|\.\.)""", html)  # nothing external
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", html).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "fig" / "roc.png").is_file()


def test_fmt_ci():
    assert fmt_ci({"value": 1e-5, "lo": 9e-6, "hi": 2e-5}).startswith("1e-05")
    assert fmt_ci(None) == "–"


def test_report_in_a_run_directory_shows_its_provenance(tmp_path):
    import json

    from darkml.report import Report

    (tmp_path / "run.json").write_text(json.dumps({"darkml": "9.9", "git": {"commit": "abc123", "dirty": True},
                                                   "python": "3.11", "packages": {"torch": "2.14.1"}, "seed": 7,
                                                   "invocations": [{"time": "t0", "command": "darkml x run"}],
                                                   "stages": {"simulate": {"status": "finished", "wall_s": 1.5}}}))
    html = Report("r").write(tmp_path / "report.html").read_text()
    assert "Provenance" in html and "abc123 (dirty)" in html and "darkml x run" in html and "finished" in html
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    assert "Provenance" not in Report("r").write(elsewhere / "report.html").read_text()
