import json
import os

import numpy as np
import pytest

from darkml.config import StudyConfig
from darkml.runs import Run, RunError, atomic_write_json, machine_info


class Cfg(StudyConfig):
    x: int = 1


def test_create_reopen_and_refuse_mixing(tmp_path):
    run = Run.create("demo", Cfg(x=1), path=tmp_path / "r")
    assert run.config_path.is_file() and run.checkpoints.is_dir() and run.figures.is_dir()
    again = Run.create("demo", Cfg(x=1), path=tmp_path / "r")  # resume is fine
    assert again.load_config(Cfg).x == 1
    with pytest.raises(RunError, match="different config.*x"):
        Run.create("demo", Cfg(x=2), path=tmp_path / "r")


def test_refuse_foreign_dir(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "thesis.tex").write_text("precious")
    with pytest.raises(RunError, match="not empty"):
        Run.create("demo", Cfg(), path=tmp_path / "f")
    assert (tmp_path / "f" / "thesis.tex").read_text() == "precious"
    with pytest.raises(RunError, match="not a darkml run"):
        Run.open(tmp_path / "f")


def test_metrics_merge_and_stage_timing(tmp_path):
    run = Run.create("demo", Cfg(), path=tmp_path / "r")
    run.update_metrics({"auc": {"A": 0.5}})
    run.update_metrics({"auc": {"C": np.float32(0.7)}, "n": np.int64(3)})
    with run.stage("train"):
        pass
    m = json.loads(run.metrics_path.read_text())
    assert m["auc"] == {"A": 0.5, "C": pytest.approx(0.7)} and m["n"] == 3
    assert "train" in m["timings_s"]


def test_atomic_write_leaves_no_temp(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"v": np.arange(3), "nan": float("nan")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": [0, 1, 2], "nan": None}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_machine_info_is_json_ready(tmp_path):
    info = machine_info()
    assert info["cpu_count"] == os.cpu_count() and info["torch_threads"] >= 1 and len(info["load_average"]) == 3
    back = json.loads(atomic_write_json(tmp_path / "m.json", {"machine": info}).read_text())["machine"]
    assert back["torch"] == info["torch"] and back["load_average"] == list(info["load_average"])


def test_a_run_resumes_with_corrected_execution_settings(tmp_path):
    """A stage that failed on an execution setting (a device, a worker count) resumes with the
    corrected value; a change of what the run computes is still refused."""
    import pytest
    from pydantic import BaseModel

    from darkml.runs import Run, RunError

    class Sky(BaseModel):
        device: str = "cuda"
        nside: int = 8

    class Cfg(BaseModel):
        study: str = "x"
        seed: int = 0
        sky: Sky = Sky()

    run = Run.create("x", Cfg(), path=tmp_path / "r")
    again = Run.create("x", Cfg(sky=Sky(device="cpu")), path=tmp_path / "r")
    assert again.config_dict()["sky"]["device"] == "cpu"
    with pytest.raises(RunError, match="differs in: sky.nside"):
        Run.create("x", Cfg(sky=Sky(device="cpu", nside=16)), path=run.path)
