"""Run any :class:`~core.inference.predictor.Predictor` over a whole store.

:func:`run_store` streams the store in batches (read ahead on a thread, put on the
predictor's grid), collects the columns the predictor declares and writes them to the
catalog once, atomically, through ``SpectraStore.add_columns``.  A partial run
(``rows=``) writes only its rows, inside the store's lock, so rows not run keep the values
they have on disk at that moment (or the column's fill value), whoever wrote them.

Under torchrun (``WORLD_SIZE`` > 1) every rank runs a contiguous shard of the rows and saves
its columns to a temporary ``.npz`` in the store directory; after a barrier rank 0 merges
the shards, writes the catalog once and removes the temporary files (gloo on CPU, NCCL on
GPUs).  Nothing here knows about any family.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..errors import StellarscopeError
from ..store import SpectraStore
from .predictor import Column, Predictor, SpectraBatch
from .prepare import choose_device, prefetched


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def rank_device(preference=None) -> torch.device:
    """The device this process runs on: ``preference`` (CUDA when available), and under
    torchrun on GPUs the local rank's GPU."""
    dev = choose_device(preference)
    _, size, local = world()
    if dev.type == "cuda" and size > 1 and dev.index is None:
        dev = torch.device("cuda", local)
    return dev


def _init_group(device: torch.device) -> bool:
    """Join the torchrun process group when there is one; True if this call created it."""
    if world()[1] <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    return True


def _shard(rows: np.ndarray, rank: int, size: int) -> np.ndarray:
    """This rank's contiguous share of ``rows`` (contiguous reads are the fast ones)."""
    return np.array_split(rows, size)[rank] if size > 1 else rows


def _initial(store: SpectraStore, col: Column) -> np.ndarray:
    """A column's working array; only the rows run are ever written from it."""
    return np.full(len(store), col.fill, dtype=col.dtype)


def _open(store_or_path) -> SpectraStore:
    if isinstance(store_or_path, SpectraStore):
        return store_or_path
    from ..paths import resolve_store

    return SpectraStore.open(resolve_store(store_or_path))


def run_store(predictor: Predictor, store_or_path, *, rows=None, batch_size: int | None = None,
              progress: bool = True, write: bool = True, note: dict | None = None,
              desc: str | None = None) -> dict:
    """Run ``predictor`` over the store (or ``rows``) and write its columns; returns figures.

    Figures: store, family, n_spectra, seconds, spectra_per_s, batch_size, device,
    world_size, columns_written and the predictor's own :meth:`~Predictor.summary`.
    """
    store = _open(store_or_path)
    predictor.check_store(store)
    batch_size = int(batch_size or predictor.default_batch_size)
    if batch_size < 1:
        raise StellarscopeError(f"batch size must be ≥ 1, got {batch_size}")
    created = _init_group(predictor.device)
    rank, size, _ = world()
    try:
        all_rows = np.arange(len(store)) if rows is None else np.asarray(rows, np.int64)
        mine = _shard(all_rows, rank, size)
        cols = predictor.columns()
        values = {c.name: _initial(store, c) for c in cols}
        grid = predictor.grid

        def read(chunk: np.ndarray) -> SpectraBatch:
            return predictor.prepare(SpectraBatch.from_store(store, store.read(chunk)).on_grid(grid))

        chunks = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
        bar = tqdm(total=len(all_rows), desc=desc or f"{predictor.family} inference",
                   unit="spectra", disable=not progress or rank != 0, dynamic_ncols=True,
                   file=sys.stderr)
        t0 = time.perf_counter()
        for batch in prefetched(read, chunks):
            pred = predictor.predict_batch(batch)
            for c in cols:
                values[c.name][batch.rows] = pred.columns[c.name]
            bar.update(len(batch) * size)  # ranks move together; rank 0 speaks for all
        bar.close()
        seconds = time.perf_counter() - t0
        if size > 1:
            values, seconds = _merge(store, values, cols, mine, all_rows, rank, size, seconds)
        written = 0
        if write and rank == 0:
            if rows is None:
                store.add_columns({c.name: values[c.name] for c in cols},
                                  note={**predictor.note(), **(note or {})})
            else:  # only these rows: others keep what is on disk (another writer's rows too)
                store.add_columns({c.name: values[c.name][all_rows] for c in cols},
                                  rows=all_rows, fill={c.name: c.fill for c in cols},
                                  note={**predictor.note(), **(note or {})})
            written = len(cols)
        if size > 1:
            dist.barrier()  # nobody reads the catalog before rank 0 has written it
            store.reload_catalog()
    finally:
        if created:
            dist.destroy_process_group()
    n = len(all_rows)
    figures = {
        "store": str(store.path), "family": predictor.family, "model": str(predictor.model_dir),
        "n_spectra": int(n), "seconds": round(seconds, 3),
        "spectra_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "batch_size": batch_size, "device": str(predictor.device), "world_size": size,
        "columns_written": written,
        **predictor.summary({k: v[all_rows] for k, v in values.items()}),
    }
    if progress and rank == 0:
        print(f"{predictor.family} inference: {n} spectra in {seconds:.1f} s "
              f"({figures['spectra_per_s']} spectra/s) on {size} × {predictor.device}",
              file=sys.stderr)
    return figures


def _merge(store, values, cols, mine, all_rows, rank, size, seconds):
    """Gather every rank's shard on rank 0 through temporary files in the store directory."""
    token = [uuid.uuid4().hex[:12] if rank == 0 else None]
    dist.broadcast_object_list(token, src=0)
    path = Path(store.path) / f".infer-{token[0]}-rank{rank:03d}.npz"
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, rows=mine, seconds=np.float64(seconds),
             **{f"c{i}": _plain(values[c.name][mine]) for i, c in enumerate(cols)})
    os.replace(tmp, path)
    dist.barrier()
    if rank == 0:
        slowest = seconds
        for r in range(1, size):
            other = Path(store.path) / f".infer-{token[0]}-rank{r:03d}.npz"
            with np.load(other, allow_pickle=False) as part:
                for i, c in enumerate(cols):
                    values[c.name][part["rows"]] = part[f"c{i}"]
                slowest = max(slowest, float(part["seconds"]))
        seconds = slowest
    dist.barrier()  # every shard read before any is removed
    path.unlink(missing_ok=True)
    return values, seconds


def _plain(a: np.ndarray) -> np.ndarray:
    """Text columns as unicode arrays: object arrays would need pickling."""
    return a.astype(str) if a.dtype == object else a
