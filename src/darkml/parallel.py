"""Map a seeded chunk function over chunk ids: in-process, local worker processes, or Dask.

Determinism is by construction, not by scheduling: chunk ``i`` of a dataset draws only from
:func:`chunk_rng` ``(seed, i)``, and each chunk is written to its own place in the store, so
the dataset is bit-for-bit the same whatever the number of workers or the order in which
chunks finish. We use existing engines only: :mod:`concurrent.futures` for local processes
and :mod:`dask.distributed` (``scheduler="local"`` for a LocalCluster, or a scheduler
address such as ``tcp://10.0.0.5:8786``) for clusters.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import re
import socket
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from .config import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["chunk_rng", "torch_generator", "run_chunks", "progress", "check_scheduler_address"]


_ADDRESS = re.compile(r"^(?:(tcp|tls|inproc|ucx|ws|wss)://)?[A-Za-z0-9_.\-\[\]:]+:(\d{1,5})$")


def check_scheduler_address(address: str, timeout_s: float = 3.0) -> str:
    """Check a Dask scheduler address before any work: ``local``, or ``[proto://]host:port`` that
    accepts a TCP connection within ``timeout_s`` (tcp/tls addresses)."""
    if address == "local":
        return address
    m = _ADDRESS.match(address or "")
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ConfigError(f"--scheduler = {address!r}: must be 'local' or a Dask address such as tcp://host:8786")
    if m.group(1) in (None, "tcp", "tls"):
        host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        try:
            socket.create_connection((host, int(m.group(2))), timeout=timeout_s).close()
        except OSError as exc:
            raise ConfigError(f"--scheduler = {address!r}: no Dask scheduler answers there within {timeout_s:g} s "
                              f"({type(exc).__name__}); start one or check the address") from None
    return address


def chunk_rng(seed: int, chunk_id: int, *stream: int) -> np.random.Generator:
    """The generator for chunk ``chunk_id`` of a dataset made with ``seed``.

    Extra integers select independent sub-streams (e.g. signal vs noise draws).
    """
    return np.random.default_rng([int(seed), int(chunk_id), *map(int, stream)])


def torch_generator(seed: int, chunk_id: int, *stream: int, device: str = "cpu"):
    """A torch Generator seeded from :func:`chunk_rng` (same determinism contract)."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(int(chunk_rng(seed, chunk_id, *stream).integers(0, 2**63 - 1)))
    return g


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", disable: bool = False) -> Iterator[T]:
    """A rich progress bar on a terminal; periodic log lines otherwise."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if disable:
        yield from iterable
        return
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*cols, transient=False) as bar:
            task = bar.add_task(desc or "working", total=total)
            for item in iterable:
                yield item
                bar.advance(task)
        return
    t0 = last = time.perf_counter()
    for n, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if now - last > 10 or n == total:
            last = now
            log.info("%s: %d/%s done (%.0f s)", desc or "progress", n, total if total is not None else "?", now - t0)


def _run_local(fn: Callable[[int], object], ids: Sequence[int], workers: int, desc: str) -> None:
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(fn, i): i for i in ids}
        pending = set(futures)

        def _done() -> Iterator[int]:
            nonlocal pending
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    exc = f.exception()
                    if exc is not None:
                        for p in pending:
                            p.cancel()
                        raise exc
                    yield futures[f]

        for _ in progress(_done(), total=len(ids), desc=desc):
            pass


def _run_dask(fn: Callable[[int], object], ids: Sequence[int], workers: int, scheduler: str, desc: str) -> None:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = client.map(fn, list(ids), pure=False)
        for fut in progress(as_completed(futures), total=len(ids), desc=desc):
            fut.result()  # re-raises the worker's exception
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_chunks(
    fn: Callable[[int], object],
    chunk_ids: Iterable[int],
    workers: int = 1,
    scheduler: str | None = None,
    desc: str = "chunks",
) -> None:
    """Call ``fn(chunk_id)`` for every id; ``fn`` must be picklable (a top-level function or
    a ``functools.partial`` of one) and write its own output.

    ``scheduler=None`` runs locally (in-process for ``workers == 1``, else a spawn-based
    process pool); ``scheduler="local"`` starts a Dask LocalCluster; any other value is a
    Dask scheduler address. The first failing chunk's exception is re-raised; completed
    chunks stay complete, so a re-run resumes.
    """
    ids = [int(i) for i in chunk_ids]
    if workers < 1:
        raise ValueError(f"workers = {workers}: must be >= 1")
    if not ids:
        log.info("%s: nothing to do (all chunks complete)", desc)
        return
    if scheduler:
        _run_dask(fn, ids, workers, scheduler, desc)
    elif workers == 1 or len(ids) == 1:
        for i in progress(ids, total=len(ids), desc=desc):
            fn(i)
    else:
        _run_local(fn, ids, min(workers, len(ids)), desc)
