"""Sample datasets on disk: zarr stores chunked along samples, written chunk by chunk.

Layout of a store (see ``docs/data-format.md``)::

    <path>/                       zarr v3 group
      zarr.json                   attrs: "darkml" (format block) + the study's attrs
      <array>/                    one array per per-sample quantity, shape (n_samples, ...),
                                  zarr chunk = (chunk_size, ...) -> one file set per dataset chunk
      tables/<table>/c00012/<col> ragged per-sample tables (e.g. subhalo catalogues) for
                                  dataset chunk 12; every table has a ``sample`` column
      .complete/00012.json        written (atomically) after all of chunk 12 is on disk;
                                  holds a checksum of every array's bytes for that chunk

A chunk is *visible* only when its ``.complete`` marker exists, so a killed writer never
leaves a half-written chunk that readers would trust; re-running the writer skips complete
chunks and rewrites incomplete ones. ``SampleStore.open`` refuses an incomplete store, and
``verify()`` re-checks checksums so a corrupted chunk is named before training starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import zarr

from . import __version__
from .runs import atomic_write_text, to_jsonable

log = logging.getLogger(__name__)

FORMAT = "darkml-samples"
FORMAT_VERSION = 1

__all__ = ["ArraySpec", "SampleStore", "DatasetError", "FORMAT", "find_stores"]

#: how to rebuild a damaged chunk, named by every error about one
REPAIR_HINT = "repair it with the study's `simulate --repair --run-dir RUN` (recomputes exactly the bad chunks)"

#: stores verified in this process: resolved path -> state of their files when verified
_VERIFIED: dict[str, str] = {}


def _files_state(path: Path) -> str:
    """A fingerprint of every file under ``path`` (name, size, mtime): any write changes it."""
    h = hashlib.sha1()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def find_stores(root: Path | str) -> list[Path]:
    """Every darkml sample store under ``root`` (e.g. a run's ``dataset/`` folder), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob("zarr.json") if SampleStore._try_open_group(p.parent) is not None)


class DatasetError(RuntimeError):
    """A dataset path is missing, foreign, incomplete, corrupted or made with another config."""


@dataclass(frozen=True)
class ArraySpec:
    """Per-sample shape and dtype of one array (the sample axis is prepended)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    fill_value: Any = 0

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": str(np.dtype(self.dtype))}


def _fingerprint(obj: Any) -> str:
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest()


class SampleStore:
    """A chunked, resumable dataset of ``n_samples`` samples (see module docstring)."""

    def __init__(self, path: Path | str, group: zarr.Group):
        self.path = Path(path)
        self.group = group
        meta = dict(group.attrs.get("darkml", {}))
        self._meta = meta
        self.n_samples: int = int(meta["n_samples"])
        self.chunk_size: int = int(meta["chunk_size"])
        self.arrays: dict[str, dict[str, Any]] = meta["arrays"]
        self.tables: list[str] = list(meta.get("tables", []))

    # ---- creation / opening -------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Path | str,
        n_samples: int,
        chunk_size: int,
        arrays: Mapping[str, ArraySpec],
        attrs: Mapping[str, Any] | None = None,
        tables: Sequence[str] = (),
    ) -> "SampleStore":
        """Create a store, or reopen it for resuming when it was made with the same
        ``(n_samples, chunk_size, arrays, tables, attrs)``.

        Raises :class:`DatasetError` if ``path`` holds anything else, before writing.
        """
        if n_samples <= 0:
            raise DatasetError(f"n_samples = {n_samples}: must be > 0")
        if chunk_size <= 0:
            raise DatasetError(f"chunk_size = {chunk_size}: must be > 0")
        path = Path(path)
        attrs = to_jsonable(dict(attrs or {}))
        spec = {k: v.to_dict() for k, v in arrays.items()}
        fp = _fingerprint({"n": n_samples, "chunk": chunk_size, "arrays": spec, "tables": list(tables), "attrs": attrs})
        if path.exists():
            existing = cls._try_open_group(path)
            if existing is None:
                if path.is_dir() and not any(path.iterdir()):
                    shutil.rmtree(path)
                else:
                    raise DatasetError(f"{path} exists and is not a darkml dataset; choose another path or remove it")
            else:
                meta = dict(existing.attrs.get("darkml", {}))
                if meta.get("fingerprint") != fp:
                    raise DatasetError(
                        f"{path} holds a dataset made with a different config or size; "
                        "use another path (or delete it) to make a new one"
                    )
                store = cls(path, existing)
                log.info("resuming dataset %s (%d of %d chunks complete)", path,
                         store.n_chunks - len(store.missing_chunks()), store.n_chunks)
                return store
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(path), mode="w")
        for name, a in arrays.items():
            group.create_array(
                name,
                shape=(n_samples, *a.shape),
                chunks=(chunk_size, *a.shape),
                dtype=np.dtype(a.dtype),
                fill_value=a.fill_value,
            )
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "darkml_version": __version__,
            "n_samples": int(n_samples),
            "chunk_size": int(chunk_size),
            "arrays": spec,
            "tables": list(tables),
            "fingerprint": fp,
        }
        group.attrs.update({**attrs, "darkml": meta})
        (path / ".complete").mkdir(exist_ok=True)
        return cls(path, zarr.open_group(str(path), mode="r+"))

    @staticmethod
    def _try_open_group(path: Path) -> zarr.Group | None:
        try:
            g = zarr.open_group(str(path), mode="r+")
        except Exception:
            return None
        meta = g.attrs.get("darkml")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None
        return g

    @classmethod
    def open(cls, path: Path | str, require_complete: bool = True, mode: str = "r",
             verify: bool | None = None) -> "SampleStore":
        """Open an existing store; refuse a foreign, incomplete or corrupted one.

        A complete store opened for reading is verified (every chunk's checksums against its
        completion marker) once per process and state of its files, so every stage that reads
        data checks it, cheaply on repeated opens; ``verify=False`` skips that."""
        path = Path(path)
        if not path.exists():
            raise DatasetError(f"dataset {path} does not exist; run the simulate stage first")
        g = cls._try_open_group(path)
        if g is None:
            raise DatasetError(f"{path} is not a darkml dataset (no darkml format block in zarr attrs)")
        store = cls(path, zarr.open_group(str(path), mode=mode))
        if require_complete:
            missing = store.missing_chunks()
            if missing:
                raise DatasetError(
                    f"dataset {path} is incomplete: {len(missing)} of {store.n_chunks} chunks missing "
                    "(interrupted generation?); re-run simulate with the same config to resume"
                )
        if verify if verify is not None else (require_complete and mode == "r"):
            store.verify_cached()
        return store

    # ---- geometry -----------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return {k: v for k, v in self.group.attrs.asdict().items() if k != "darkml"}

    @property
    def n_chunks(self) -> int:
        return -(-self.n_samples // self.chunk_size)

    def chunk_slice(self, i: int) -> slice:
        if not 0 <= i < self.n_chunks:
            raise IndexError(f"chunk {i} out of range [0, {self.n_chunks})")
        return slice(i * self.chunk_size, min((i + 1) * self.chunk_size, self.n_samples))

    def _marker(self, i: int) -> Path:
        return self.path / ".complete" / f"{i:06d}.json"

    def is_complete(self, i: int) -> bool:
        return self._marker(i).is_file()

    def missing_chunks(self) -> list[int]:
        return [i for i in range(self.n_chunks) if not self.is_complete(i)]

    def complete_samples(self) -> np.ndarray:
        """Indices of samples in complete chunks (the visible part of the store)."""
        idx = [np.arange(self.chunk_slice(i).start, self.chunk_slice(i).stop) for i in range(self.n_chunks) if self.is_complete(i)]
        return np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)

    # ---- writing ------------------------------------------------------------
    def write_chunk(
        self,
        i: int,
        arrays: Mapping[str, np.ndarray],
        tables: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ) -> None:
        """Write every array (and table) of dataset chunk ``i``, then mark it complete."""
        sl = self.chunk_slice(i)
        n = sl.stop - sl.start
        missing = set(self.arrays) - set(arrays)
        if missing:
            raise DatasetError(f"chunk {i}: arrays {sorted(missing)} missing from the write")
        g = zarr.open_group(str(self.path), mode="r+")
        digests = {}
        for name, spec in self.arrays.items():
            data = np.asarray(arrays[name], dtype=spec["dtype"])
            want = (n, *spec["shape"])
            if data.shape != want:
                raise DatasetError(f"chunk {i}: array {name!r} has shape {data.shape}, expected {want}")
            g[name][sl] = data
            digests[name] = _digest(data)
        for tname, cols in (tables or {}).items():
            if tname not in self.tables:
                raise DatasetError(f"chunk {i}: unknown table {tname!r} (declared: {self.tables})")
            if "sample" not in cols:
                raise DatasetError(f"chunk {i}: table {tname!r} needs a 'sample' column")
            lengths = {len(np.asarray(c)) for c in cols.values()}
            if len(lengths) > 1:
                raise DatasetError(f"chunk {i}: table {tname!r} columns differ in length {sorted(lengths)}")
            tg = g.require_group(f"tables/{tname}/c{i:06d}")
            for col, values in cols.items():
                values = np.asarray(values)
                if col in tg:
                    del tg[col]
                tg.create_array(col, shape=values.shape, chunks=(max(1, values.shape[0]),), dtype=values.dtype)
                if values.size:
                    tg[col][:] = values
                digests[f"tables/{tname}/{col}"] = _digest(values)
        atomic_write_text(self._marker(i), json.dumps({"chunk": i, "n": n, "sha1": digests}))

    # ---- reading ------------------------------------------------------------
    def read(self, name: str, idx: Any = None) -> np.ndarray:
        """Read array ``name`` (all samples, a slice, or an index array)."""
        if name not in self.arrays:
            raise KeyError(f"no array {name!r} in {self.path} (has {sorted(self.arrays)})")
        arr = self.group[name]
        if idx is None:
            return np.asarray(arr[:])
        if isinstance(idx, slice):
            return np.asarray(arr[idx])
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        order = np.argsort(idx)
        out = np.asarray(arr.get_orthogonal_selection((idx[order],) + (slice(None),) * (arr.ndim - 1)))
        res = np.empty_like(out)
        res[order] = out
        return res

    def table(self, name: str, samples: Iterable[int] | None = None) -> dict[str, np.ndarray]:
        """Concatenate table ``name`` over complete chunks; optionally keep only ``samples``."""
        if name not in self.tables:
            raise KeyError(f"no table {name!r} in {self.path} (has {self.tables})")
        wanted = None if samples is None else np.unique(np.asarray(list(samples), dtype=np.int64))
        chunks = range(self.n_chunks)
        if wanted is not None:
            chunks = sorted({int(s) // self.chunk_size for s in wanted})
        parts: dict[str, list[np.ndarray]] = {}
        for i in chunks:
            if not self.is_complete(i):
                continue
            key = f"tables/{name}/c{i:06d}"
            if key not in self.group:
                continue
            tg = self.group[key]
            cols = {c: np.asarray(tg[c][:]) for c in tg.array_keys()}
            if wanted is not None:
                keep = np.isin(cols["sample"], wanted)
                cols = {c: v[keep] for c, v in cols.items()}
            for c, v in cols.items():
                parts.setdefault(c, []).append(v)
        return {c: np.concatenate(v) for c, v in parts.items()}

    def verify(self, chunks: Iterable[int] | None = None) -> None:
        """Re-read chunks and compare checksums with the completion markers."""
        for i in chunks if chunks is not None else range(self.n_chunks):
            if not self.is_complete(i):
                raise DatasetError(f"dataset {self.path}: chunk {i} is incomplete; re-run simulate to resume")
            problem = self._chunk_problem(i)
            if problem:
                raise DatasetError(f"dataset {self.path}: {problem}; {REPAIR_HINT}")

    def _chunk_problem(self, i: int) -> str | None:
        """Why complete chunk ``i`` cannot be trusted (unreadable marker or data, checksum), or None."""
        try:
            marker = json.loads(self._marker(i).read_text())
        except (OSError, ValueError) as exc:
            return f"completion marker of chunk {i} unreadable ({type(exc).__name__})"
        sl = self.chunk_slice(i)
        for name, spec in self.arrays.items():
            try:
                data = np.asarray(self.group[name][sl], dtype=spec["dtype"])
            except Exception as exc:  # truncated / missing / unreadable chunk file
                return f"array {name!r} chunk {i} unreadable ({type(exc).__name__})"
            if _digest(data) != marker.get("sha1", {}).get(name):
                return f"array {name!r} chunk {i} is corrupted (checksum mismatch)"
        return None

    def verify_cached(self) -> None:
        """:meth:`verify` once per process and state of the store's files."""
        key, state = str(self.path.resolve()), _files_state(self.path)
        if _VERIFIED.get(key) == state:
            return
        self.verify()
        _VERIFIED[key] = state

    def repair(self) -> list[int]:
        """Drop the completion marker of every complete chunk whose marker or data fails its
        checksum, so that the writer recomputes exactly those (bit-identical: chunk i depends
        only on the config and seed). Returns the chunk ids."""
        bad = [i for i in range(self.n_chunks) if self.is_complete(i) and self._chunk_problem(i)]
        for i in bad:
            self._marker(i).unlink()
        _VERIFIED.pop(str(self.path.resolve()), None)
        if bad:
            log.warning("dataset %s: %d damaged chunk(s) %s will be recomputed", self.path, len(bad), bad)
        return bad

    def __repr__(self) -> str:
        return f"SampleStore({str(self.path)!r}, n_samples={self.n_samples}, chunks={self.n_chunks})"
