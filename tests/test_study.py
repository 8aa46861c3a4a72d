"""The Study contract, the shared runner and the CLI factory.

A toy study in a temporary folder (config model + stage functions + presets, and one
registration line) gets every command and option the real studies have; every preset of
every real study resolves (``config``) and plans (``run --dry-run``) without doing work; bad
input is one line with exit code 2 that leaves the run directory untouched.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from darkml import cli
from darkml.cli import STUDIES, StudyEntry, app, load_study
from darkml.runs import Run, atomic_write_text

TOY_STUDY = '''
from pathlib import Path

import numpy as np
from pydantic import Field

from darkml.config import Section, StudyConfig
from darkml.parallel import chunk_rng
from darkml.runs import atomic_write_text
from darkml.study import Stage, Study


class DataCfg(Section):
    n: int = Field(100, gt=0, le=10_000, description="samples")
    scale: float = Field(1.0, gt=0)


class ToyConfig(StudyConfig):
    data: DataCfg = DataCfg()


def simulate(run, workers=1, scheduler=None):
    cfg = run.load_config(ToyConfig)
    x = chunk_rng(cfg.seed, 0).normal(0, cfg.data.scale, cfg.data.n)
    run.dataset_path.mkdir(exist_ok=True)
    np.save(run.dataset_path / "x.npy", x)
    return run.dataset_path


def train(run, devices="auto"):
    x = np.load(run.dataset_path / "x.npy")
    run.update_metrics({"fit": {"mean": float(x.mean()), "std": float(x.std())}})


def evaluate(run):
    cfg = run.load_config(ToyConfig)
    std = run.metrics()["fit"]["std"]
    run.update_metrics({"relative_error": abs(std / cfg.data.scale - 1)})


def report(run):
    atomic_write_text(run.report_path, "<html>toy</html>")
    return run.report_path


STUDY = Study(name="toy", title="A toy study.", config_model=ToyConfig, presets=Path(__file__).parent / "presets",
              stages=(Stage("simulate", simulate, uses=("workers", "scheduler")), Stage("train", train, uses=("devices",)),
                      Stage("evaluate", evaluate), Stage("report", report)),
              expected_outputs=lambda cfg: {"dataset/x.npy": 8 * cfg.data.n})
'''


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    """A sixth study: one folder of the shape every study has, plus one registration line."""
    pkg = tmp_path / "pkgs" / "toystudy"
    (pkg / "presets").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""toy"""\n')
    (pkg / "study.py").write_text(TOY_STUDY)
    (pkg / "presets" / "quick.yaml").write_text("# A quick toy run. Seconds.\ndata:\n  n: 200\n")
    (pkg / "presets" / "big.yaml").write_text("# A bigger toy run.\ninherit: quick\ndata:\n  n: 5000\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setitem(STUDIES, "toy", StudyEntry("toystudy", "A toy study."))  # the registration line
    monkeypatch.setattr(cli.app, "commands", dict(cli.app.commands))  # forget groups built by other tests
    yield tmp_path
    sys.modules.pop("toystudy.study", None)
    sys.modules.pop("toystudy", None)


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_new_study_gets_every_command(toy):
    run_dir = toy / "runs" / "t"
    res = _invoke("toy", "run", "--preset", "quick", "--run-dir", run_dir, "--set", "data.scale=2.5")
    assert res.exit_code == 0, res.output
    assert "Provenance" not in (run_dir / "report.html").read_text()  # the toy writes its own bare html
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["relative_error"] < 0.25 and set(m["timings_s"]) == {"simulate", "train", "evaluate", "report"}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["study"] == "toy" and info["seed"] == 0 and info["darkml"]
    assert {"numpy", "torch", "pydantic"} <= set(info["packages"]) and info["machine"]["cpu_count"] >= 1
    assert info["git"] is None or len(info["git"]["commit"]) == 40
    assert info["invocations"][0]["command"].startswith("darkml toy run --preset quick --run-dir")
    for name in ("simulate", "train", "evaluate", "report"):
        st = info["stages"][name]
        assert st["status"] == "finished" and st["wall_s"] >= 0 and st["start"] <= st["end"]
    # `run` again: every stage finished, nothing recomputed
    before = (run_dir / "dataset" / "x.npy").stat().st_mtime_ns
    res = _invoke("toy", "run", "--run-dir", run_dir)
    assert res.exit_code == 0, res.output
    assert (run_dir / "dataset" / "x.npy").stat().st_mtime_ns == before
    # one stage on its own re-runs, reading the stored config
    res = _invoke("toy", "evaluate", "--run-dir", run_dir)
    assert res.exit_code == 0, res.output
    # config, dry run and the preset listing
    res = _invoke("toy", "config", "--preset", "big", "--set", "seed=3")
    cfg = yaml.safe_load(res.output)
    assert res.exit_code == 0 and cfg["data"]["n"] == 5000 and cfg["seed"] == 3 and cfg["preset"] == "big"
    res = _invoke("toy", "run", "--dry-run", "--preset", "big", "--run-dir", toy / "dry")
    assert res.exit_code == 0 and "simulate [uses workers, scheduler]" in res.output and "dataset/x.npy: ~39.1 KiB" in res.output
    assert not (toy / "dry").exists()
    res = _invoke("presets")
    assert "toy quick A quick toy run." in res.output and "toy big A bigger toy run." in res.output


BAD = [
    (["nosuch", "run"], "'nosuch': unknown study"),
    (["toy", "fit"], "'fit': unknown command of toy"),
    (["toy", "run", "--preset", "huge"], "unknown preset (available: big, quick)"),
    (["toy", "run", "--set", "data.nn=3"], "did you mean data.n?"),
    (["toy", "run", "--set", "dat.n=3"], "did you mean data?"),
    (["toy", "run", "--set", "data.n=many"], "toy.data.n = 'many'"),
    (["toy", "run", "--set", "data.n=0"], "toy.data.n = 0: must be > 0"),
    (["toy", "run", "--set", "data.scale=-1"], "toy.data.scale = -1: must be > 0"),
    (["toy", "run", "--set", "seed"], "expected key=value"),
    (["toy", "run", "--run-dir", "{file}"], "is a file, not a directory"),
    (["toy", "run", "--run-dir", "{foreign}"], "holds no config.yaml"),
    (["toy", "train", "--run-dir", "{missing}"], "not a darkml run directory"),
    (["toy", "evaluate"], "--run-dir is required"),
    (["toy", "run", "--devices", "zero"], "--devices = 'zero'"),
    (["toy", "simulate", "--workers", "0", "--run-dir", "{missing}"], "--workers"),
    (["toy", "run", "--scheduler", "nowhere at all"], "--scheduler = 'nowhere at all'"),
]


@pytest.mark.parametrize("args, words", BAD)
def test_bad_input_is_one_line_before_work(toy, args, words):
    (toy / "afile").write_text("mine")
    (toy / "foreign").mkdir()
    (toy / "foreign" / "notes.txt").write_text("mine")
    paths = {"file": toy / "afile", "foreign": toy / "foreign", "missing": toy / "missing"}
    before = sorted(p.name for p in toy.iterdir())
    res = CliRunner().invoke(app, [a.format(**paths) for a in args])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in res.output and words in err, err
    assert sorted(p.name for p in toy.iterdir()) == before and not (toy / "runs").exists()
    assert (toy / "afile").read_text() == "mine" and os.listdir(toy / "foreign") == ["notes.txt"]


def _presets():
    return [(name, preset) for name, entry in STUDIES.items() for preset in load_study(name).preset_names()]


def test_presets_lists_six_studies():
    res = _invoke("presets")
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert {line.split()[0] for line in lines} == {"astrometry", "lensing", "equivariant", "ssl", "phasespace", "gas"}
    assert len(lines) == len(_presets()) and all(len(line.split(" ", 2)) == 3 for line in lines)


@pytest.mark.parametrize("study, preset", _presets())
def test_every_preset_resolves_and_plans_without_work(tmp_path, study, preset):
    res = _invoke(study, "config", "--preset", preset)
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    assert cfg["preset"] == preset and cfg["study"] == study
    res = _invoke(study, "run", "--preset", preset, "--dry-run", "--run-dir", tmp_path / "r")
    assert res.exit_code == 0, res.output
    for st in load_study(study).stages:
        assert f"#   {st.name}" in res.output
    assert "expected outputs" in res.output and not (tmp_path / "r").exists()


def test_same_options_everywhere_and_no_out_or_device():
    for name in STUDIES:
        group = cli.build_study_group(name)
        assert {"run", "config"} <= set(group.commands)
        for cmd in group.commands.values():
            opts = {o for p in cmd.params for o in p.opts}
            assert not opts & {"--out", "--device"}, (name, cmd.name)
            assert {"--preset", "--set", "--run-dir", "-o"} <= opts, (name, cmd.name)
        run_opts = {o for p in group.commands["run"].params for o in p.opts}
        assert "--dry-run" in run_opts


def test_old_spellings_are_aliases():
    group = cli.build_study_group("lensing")
    assert group.commands["benchmark"].hidden and group.commands["ssl"].hidden
    assert load_study("equivariant").resolve_preset("benchmark-quick") == "quick"
    assert load_study("ssl").resolve_preset("ssl-paper") == "paper"


def test_files_keep_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_run_json_is_written_by_create(tmp_path):
    study = load_study("astrometry")
    run = Run.create("astrometry", study.load("tiny"), path=tmp_path / "r")
    info = json.loads(run.info_path.read_text())
    assert info["study"] == "astrometry" and info["stages"] == {} and len(info["invocations"]) == 1


def test_readme_stage_table_matches_the_cli():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert cli.stage_table() in readme, "regenerate the README's stage table with `python -m darkml.cli table`"


def test_no_module_over_500_lines():
    src = Path(__file__).parents[1] / "src" / "darkml"
    long = {str(p.relative_to(src)): n for p in src.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_shared_layer_imports_no_study():
    """The layers: nothing in the shared layer imports a study at module level."""
    src = Path(__file__).parents[1] / "src" / "darkml"
    studies = [name for name in STUDIES]
    shared = [p for p in src.glob("*.py")] + list((src / "learn").rglob("*.py")) + list((src / "physics").rglob("*.py"))
    for path in shared:
        top = [line for line in path.read_text().splitlines() if line.startswith(("import ", "from "))]
        for line in top:
            for name in studies:
                assert f"darkml.{name}" not in line and f"from .{name}" not in line and f"from ..{name}" not in line, \
                    (path.name, line)



@pytest.mark.parametrize("study, key", [("astrometry", "train.logger"), ("equivariant", "train.logger"),
                                        ("phasespace", "train.logger"), ("gas", "cnn.logger"),
                                        ("ssl", "pretrain.logger"), ("ssl", "finetune.logger")])
def test_every_training_section_exposes_its_logger(study, key):
    res = _invoke(study, "config", "--set", f"{key}=tensorboard")
    assert res.exit_code == 0, res.output
    section, field = key.split(".")
    assert yaml.safe_load(res.output)[section][field] == "tensorboard"
    bad = _invoke(study, "config", "--set", f"{key}=wandb")
    assert bad.exit_code == 2 and f"{key} = 'wandb'" in bad.stderr and "csv" in bad.stderr


def test_one_registry_for_models_encoders_and_heads():
    import torch

    from darkml.learn.heads import create_head
    from darkml.learn.registry import create_encoder, create_model, list_models

    load_study("astrometry"), load_study("equivariant"), load_study("ssl")  # each registers its networks
    assert {"resnet18", "resnet50", "vgg11", "alexnet", "c8", "d8", "hnet", "etn", "cnn"} <= set(list_models())
    assert {"resnet50", "vit", "vit-tiny", "resnet-tiny"} <= set(list_models("encoder"))
    assert set(list_models("head")) == {"linear", "mlp"}
    assert create_model("resnet18", in_channels=2, num_outputs=2)(torch.zeros(1, 2, 32, 64)).shape == (1, 2)
    enc = create_encoder("resnet-tiny")
    assert create_head("mlp", enc.out_dim, 3, hidden=8)(enc(torch.zeros(2, 1, 32, 32))).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown head"):
        create_head("transformer", 4, 2)
    with pytest.raises(ValueError, match="bad option"):
        create_head("linear", 4, 2, hidden=3)


def test_sigterm_stops_a_stage_like_ctrl_c(tmp_path):
    """A batch system's SIGTERM: the one-line message, exit 130, the stage marked interrupted."""
    import signal
    import subprocess
    import time

    run_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "darkml.cli", "astrometry", "simulate", "--preset", "quick",
                             "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info = run_dir / "run.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if info.is_file() and json.loads(info.read_text()).get("stages", {}).get("simulate", {}).get("status") == "running":
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted — rerun the same command to resume"
    assert json.loads(info.read_text())["stages"]["simulate"]["status"] == "interrupted"


def test_a_stage_waits_for_the_stages_before_it(toy):
    run_dir = toy / "r"
    assert _invoke("toy", "simulate", "--run-dir", run_dir).exit_code == 0
    info = (run_dir / "run.json").read_text()
    res = _invoke("toy", "report", "--run-dir", run_dir)
    assert res.exit_code == 2 and "stage 'train' has not finished" in res.stderr and "darkml toy train" in res.stderr
    assert not (run_dir / "report.html").exists() and (run_dir / "run.json").read_text() == info  # refused: untouched
    for stage in ("train", "evaluate", "report"):
        assert _invoke("toy", stage, "--run-dir", run_dir).exit_code == 0
