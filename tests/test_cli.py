"""The top-level ``darkml`` command: studies are listed without importing them."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from darkml.cli import STUDIES, app


def test_help_lists_every_study_without_importing_torch():
    code = ("import sys; from click.testing import CliRunner; from darkml.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print(r.output); print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in STUDIES:
        assert name in out
    assert out.strip().endswith("NO-TORCH")


def test_study_subcommands_load_on_demand():
    r = CliRunner().invoke(app, ["astrometry", "--help"])
    assert r.exit_code == 0, r.output
    for stage in ("run", "simulate", "train", "evaluate", "report"):
        assert stage in r.output
    assert CliRunner().invoke(app, ["version"]).output.strip()
    bad = CliRunner().invoke(app, ["nosuch"])
    assert bad.exit_code == 2 and "nosuch" in bad.output
