"""A table of user mistakes across every study: each is one line on stderr (at most three),
exit code 2, no traceback, the field or file named, and nothing written or changed on disk."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from darkml.cli import app

CASES = [
    # astrometry
    ("astrometry simulate --set sky.nside=48", "sky.nside"),
    ("astrometry simulate --set data.scenarios=[A,Z]", "data.scenarios"),
    ("astrometry simulate --set sky.device=tpu", "sky.device"),
    ("astrometry simulate --set sky.device=cuda", "sky.device"),
    ("astrometry run --set train.precision=bogus", "train.precision"),
    ("astrometry run --set train.lr=abc", "train.lr"),
    ("astrometry run --set train.logger=wandb", "train.logger"),
    ("astrometry run --set train.accelerator=gpu", "train.accelerator"),
    ("astrometry simulate --scheduler {bad_address}", "--scheduler"),
    ("astrometry simulate --scheduler tcp://127.0.0.1:1", "no Dask scheduler answers"),
    ("astrometry train --run-dir {run} --devices 0", "--devices"),
    ("astrometry simulate --workers 0", "--workers"),
    ("astrometry run --accelerator tpu", "--accelerator"),
    ("astrometry simulate --run-dir {file}", "is a file"),
    ("astrometry simulate --run-dir {foreign}", "holds no config.yaml"),
    ("astrometry evaluate --run-dir {missing}", "not a darkml run directory"),
    ("astrometry evaluate", "--run-dir is required"),
    ("astrometry run --preset nope", "unknown preset"),
    ("astrometry run --set sky.nsid=3", "did you mean sky.nside"),
    ("astrometry run --set seed=-1", "seed"),
    ("astrometry train --run-dir {run} --repair", "--repair"),
    ("astrometry fit", "'fit'"),
    ("astrometry run --bogus", "--bogus"),
    ("nosuchstudy run", "'nosuchstudy'"),
    # lensing
    ("lensing simulate --set lens.shear=[0.2,0.1]", "inverted"),
    ("lensing simulate --backend galfit", "backend"),
    ("lensing simulate -n 0", "n_per_class_train"),
    ("lensing simulate --set dataset.chunk_size=10", "dataset.chunk_size"),
    ("lensing simulate --accelerator gpu", "--accelerator"),
    ("lensing report --run-dir {missing}", "not a darkml run directory"),
    # equivariant
    ("equivariant run --models resnet50,vit", "'vit' is not a model"),
    ("equivariant run --task segment", "task"),
    ("equivariant run --set train.lr=-1", "train.lr"),
    ("equivariant run --set data.datasets.euclid=nope", "unknown simulator preset"),
    ("equivariant run --set data.device=tpu", "data.device"),
    ("equivariant run --preset benchmark-huge", "unknown preset"),
    # ssl
    ("ssl run --methods simclr,byol", "methods"),
    ("ssl run --encoders resnet101", "encoders"),
    ("ssl run --set data.instruments=[jwst]", "jwst"),
    ("ssl run --set precision=fp8", "precision"),
    ("ssl run --set patch_size=7 --set encoders=[vit-tiny]", "patch_size"),
    ("ssl run --set finetune.logger=wandb", "finetune.logger"),
    # phase space
    ("phasespace simulate --set measure.truncation=9", "truncation"),
    ("phasespace simulate --set measure.n_velocities=2", "measure.n_velocities"),
    ("phasespace simulate --set mock.n_stars=500", "too few stars"),
    ("phasespace simulate --set measure.device=cuda", "measure.device"),
    ("phasespace train --run-dir {missing}", "not a darkml run directory"),
    # gas
    ("gas simulate --set cnn.window=4", "cnn.window"),
    ("gas simulate --set gp.device=cuda", "gp.device"),
    ("gas simulate --set cnn.logger=wandb", "cnn.logger"),
    ("gas train --run-dir {missing}", "not a darkml run directory"),
    # files a config names are read and checked before any work
    ("phasespace simulate --set catalogue.path={missing_csv}", "missing.csv"),
    ("phasespace simulate --set catalogue.path={bad_fits}", "bad.fits"),
    ("phasespace simulate --set catalogue.path={nan_csv}", "column 'vx'"),
    ("phasespace simulate --set catalogue.path={nan_csv}", "column 'vz'"),
    ("gas simulate --mopra {missing}", "missing"),
    ("gas simulate --mopra {mopra}", "G300-12CO.fits: not a readable FITS file"),
    ("gas simulate --mopra {mopra_truncated}", "truncated FITS file"),
]


@pytest.mark.parametrize("command, words", CASES, ids=[c for c, _ in CASES])
def test_user_mistake_is_one_line_exit_2_and_touches_nothing(tmp_path, command, words):
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("study: astrometry\npreset: tiny\n")  # a run of the wrong shape is never touched
    (tmp_path / "bad.fits").write_bytes(b"garbage, not FITS")
    (tmp_path / "mopra").mkdir()
    for iso in ("12CO", "13CO"):
        (tmp_path / "mopra" / f"G300-{iso}.fits").write_bytes(b"SIMPLE  = nonsense")
    import numpy as np
    from astropy.io import fits

    (tmp_path / "cut").mkdir()
    for iso in ("12CO", "13CO"):
        hdu = fits.PrimaryHDU(np.zeros((20, 8, 8), np.float32))
        hdu.header.update({"BUNIT": "K", "CTYPE1": "GLON-CAR", "CTYPE2": "GLAT-CAR", "CTYPE3": "VELO-LSR",
                           "CDELT3": 1000.0, "CRVAL3": 0.0, "CRPIX3": 1.0, "CUNIT3": "m/s"})
        hdu.writeto(tmp_path / "cut" / f"G300-{iso}.fits")
        raw = (tmp_path / "cut" / f"G300-{iso}.fits").read_bytes()
        (tmp_path / "cut" / f"G300-{iso}.fits").write_bytes(raw[: len(raw) - 3000])
    rows = ["x,y,z,vx,vy,vz"] + [f"8.1,0.0,0.0,{'nan' if i % 7 == 0 else 10},230,{'nan' if i % 5 == 0 else 1}"
                                 for i in range(50)]
    (tmp_path / "nan.csv").write_text("\n".join(rows) + "\n")
    paths = {"file": tmp_path / "afile", "foreign": tmp_path / "foreign", "missing": tmp_path / "missing",
             "run": run, "bad_address": "nowhere:port", "bad_fits": tmp_path / "bad.fits",
             "missing_csv": tmp_path / "missing.csv", "nan_csv": tmp_path / "nan.csv", "mopra": tmp_path / "mopra",
             "mopra_truncated": tmp_path / "cut"}
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a default run directory would appear here
    try:
        res = CliRunner().invoke(app, [part.format(**paths) for part in command.split()])
    finally:
        os.chdir(cwd)
    err = res.stderr.strip()
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert "Traceback" not in res.output and 1 <= len(err.splitlines()) <= 3, err
    assert words in err, err
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}
    assert after == before, set(after) ^ set(before)


def test_the_table_covers_every_study_and_forty_cases():
    studies = {c.split()[0] for c, _ in CASES}
    assert {"astrometry", "lensing", "equivariant", "ssl", "phasespace", "gas"} <= studies and len(CASES) >= 40
