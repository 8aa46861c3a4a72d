"""The layout check every report figure goes through (darkml.report.figure_overlaps)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from darkml.report import FigureLayoutError, Report, figure_overlaps  # noqa: E402


def test_clean_grid_with_colour_bars_and_inset_passes():
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    im = axes[0].imshow(np.zeros((4, 4)))
    fig.colorbar(im, ax=axes[0])
    axes[1].plot([0, 1], label="a")
    axes[1].legend(loc="upper left")
    axes[0].inset_axes([0.6, 0.6, 0.35, 0.35])
    assert figure_overlaps(fig) == []
    plt.close(fig)


def test_inset_reaching_into_the_next_panel_is_found():
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].set_title("mu_l")
    axes[1].set_title("mu_b")
    axes[0].inset_axes([0.7, 0.5, 0.6, 0.45])            # sticks out to the right, into mu_b
    bad = figure_overlaps(fig)
    assert any("inset" in b and "sticks out" in b for b in bad)
    assert any("'mu_b'" in b and "inset" in b and "overlaps" in b for b in bad)
    plt.close(fig)


def test_overlapping_panels_colour_bar_and_legend_are_found(tmp_path, monkeypatch):
    fig = plt.figure(figsize=(6, 4))
    a = fig.add_axes([0.1, 0.1, 0.5, 0.8], title="left")
    fig.add_axes([0.5, 0.1, 0.4, 0.8], title="right")
    im = a.imshow(np.zeros((3, 3)))
    fig.colorbar(im, cax=fig.add_axes([0.55, 0.1, 0.03, 0.8]))
    a.plot([0, 1], label="x")
    a.legend(loc="center left", bbox_to_anchor=(0.9, 0.5))
    bad = figure_overlaps(fig)
    assert any("panel 'left' overlaps panel 'right'" in x for x in bad)
    assert any("colour bar" in x for x in bad)
    assert any("legend of panel 'left' covers panel 'right'" in x for x in bad)
    monkeypatch.setenv("DARKML_STRICT_FIGURES", "1")
    with pytest.raises(FigureLayoutError, match="overlaps"):
        Report("t").add_figure(fig, "bad", name="bad")
