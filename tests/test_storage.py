import functools
import json

import numpy as np
import pytest

from darkml.parallel import chunk_rng, run_chunks
from darkml.storage import ArraySpec, DatasetError, SampleStore

SPEC = {"x": ArraySpec((3, 4), "float32"), "y": ArraySpec((), "int64")}


def _fill(path, seed, i):
    """Top-level chunk writer (picklable) used by the determinism test."""
    store = SampleStore.open(path, require_complete=False, mode="r+")
    sl = store.chunk_slice(i)
    n = sl.stop - sl.start
    rng = chunk_rng(seed, i)
    k = rng.poisson(3, n)
    rows = np.repeat(np.arange(sl.start, sl.stop), k)
    store.write_chunk(
        i,
        {"x": rng.normal(size=(n, 3, 4)), "y": rng.integers(0, 2, n)},
        tables={"cat": {"sample": rows, "mass": rng.lognormal(size=rows.size)}},
    )


def _make(path, workers, n=50, chunk=8, seed=11):
    store = SampleStore.create(path, n, chunk, SPEC, attrs={"seed": seed}, tables=["cat"])
    run_chunks(functools.partial(_fill, str(path), seed), store.missing_chunks(), workers=workers)
    return SampleStore.open(path)


def _bytes(path):
    s = SampleStore.open(path)
    cat = s.table("cat")
    return s.read("x").tobytes() + s.read("y").tobytes() + cat["sample"].tobytes() + cat["mass"].tobytes()


def test_same_bytes_for_any_worker_count(tmp_path):
    a = _make(tmp_path / "a.zarr", workers=1)
    _make(tmp_path / "b.zarr", workers=2)
    assert _bytes(tmp_path / "a.zarr") == _bytes(tmp_path / "b.zarr")
    assert a.n_chunks == 7 and a.read("x").shape == (50, 3, 4)
    sub = a.table("cat", samples=[3, 40])
    assert set(np.unique(sub["sample"])) <= {3, 40}


def test_resume_skips_complete_chunks_and_hides_partial(tmp_path):
    path = tmp_path / "d.zarr"
    store = SampleStore.create(path, 50, 8, SPEC, attrs={"seed": 11}, tables=["cat"])
    for i in (0, 1, 2):
        _fill(str(path), 11, i)
    # a "killed" writer: data of chunk 3 on disk but no completion marker
    store.group["x"][24:32] = 99.0
    with pytest.raises(DatasetError, match="incomplete: 4 of 7 chunks missing"):
        SampleStore.open(path)
    assert store.missing_chunks() == [3, 4, 5, 6]
    assert not np.any(store.read("x", store.complete_samples()) == 99.0)
    marker = (path / ".complete" / "000000.json").stat().st_mtime_ns
    again = SampleStore.create(path, 50, 8, SPEC, attrs={"seed": 11}, tables=["cat"])
    run_chunks(functools.partial(_fill, str(path), 11), again.missing_chunks())
    assert (path / ".complete" / "000000.json").stat().st_mtime_ns == marker  # not recomputed
    assert _bytes(path) == _bytes(_make(tmp_path / "ref.zarr", workers=1).path)


def test_refuses_foreign_and_different(tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "data.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a darkml dataset"):
        SampleStore.create(other, 10, 5, SPEC)
    assert (other / "data.txt").read_text() == "keep me"
    SampleStore.create(tmp_path / "s.zarr", 10, 5, SPEC, attrs={"seed": 1})
    with pytest.raises(DatasetError, match="different config"):
        SampleStore.create(tmp_path / "s.zarr", 10, 5, SPEC, attrs={"seed": 2})
    with pytest.raises(DatasetError, match="does not exist"):
        SampleStore.open(tmp_path / "missing.zarr")


def test_verify_detects_corruption(tmp_path):
    store = _make(tmp_path / "c.zarr", workers=1)
    store.verify()
    SampleStore.open(tmp_path / "c.zarr", mode="r+").group["x"][9] = 0.0  # silent corruption after completion
    with pytest.raises(DatasetError, match="'x' chunk 1 is corrupted"):
        SampleStore.open(tmp_path / "c.zarr").verify()


def test_write_chunk_checks_shapes(tmp_path):
    store = SampleStore.create(tmp_path / "s.zarr", 10, 5, SPEC)
    with pytest.raises(DatasetError, match="shape"):
        store.write_chunk(0, {"x": np.zeros((5, 3, 3)), "y": np.zeros(5)})
    assert store.missing_chunks() == [0, 1]
    assert json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())["attributes"]["darkml"]["n_samples"] == 10
