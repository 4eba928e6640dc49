"""Training data for spectrum models: label columns, the split by star, batches.

Every batch is a dict of aligned tensors — ``flux``, ``weight`` (χ² weights, 0 on bad
pixels), ``labels``, ``label_err``, ``rows`` — built row by row from the store, so a
spectrum's mask and errors always travel with it, however the rows are shuffled.

Two sources give the same batches: :class:`MemorySource` holds the prepared arrays (on the
training device when they fit) and :class:`StoreSource` streams them from the store with a
background reader.  Both shuffle with a generator seeded by (seed, epoch), so an epoch's
order is the same after a resume, and both shard each step's rows across DDP ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..errors import BadDataError
from ..inference.prepare import (  # noqa: F401  (re-exported: the old home of these helpers)
    LABEL_NAMES,
    good_pixels,
    label_arrays,
    prefetched,
    prepare_arrays,
)
from ..store import SpectraStore

# -- labels and rows ----------------------------------------------------------------------------

def labelled_rows(labels: np.ndarray) -> np.ndarray:
    """Rows whose labels are all finite."""
    return np.nonzero(np.isfinite(labels).all(axis=1))[0].astype(np.int64)


def validation_stars(ids, fraction: float, seed: int = 0) -> np.ndarray:
    """True for stars in the validation split: a hash of (seed, APOGEE_ID), so every row of
    a star lands on the same side and the split survives reordering and appends."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    out = np.empty(len(ids), dtype=bool)
    for i, star in enumerate(ids):
        h = hashlib.blake2b(f"{seed}:{star}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "little") / 2.0**64 < fraction
    return out


@dataclass
class Split:
    train: np.ndarray
    validation: np.ndarray


def split_rows(catalog: pd.DataFrame, rows: np.ndarray, fraction: float, seed: int = 0) -> Split:
    ids = catalog["APOGEE_ID"].astype(str).to_numpy()[rows]
    is_val = validation_stars(ids, fraction, seed)
    return Split(train=rows[~is_val], validation=rows[is_val])


def checked_split(store: SpectraStore, rows: np.ndarray, fraction: float, seed: int, world: int,
                  wanted: str) -> Split:
    """:func:`split_rows`, refusing a split too small to train on (``wanted`` says which
    spectra were eligible, for the message)."""
    split = split_rows(store.catalog, rows, fraction, seed)
    if len(split.train) < 2 * world or len(split.validation) == 0:
        raise BadDataError(f"{store.path}: {len(split.train)} training and "
                           f"{len(split.validation)} validation spectra with {wanted}: too few "
                           "to train (check the labels and --val-fraction)")
    return split


# -- preparing spectra --------------------------------------------------------------------------

def flux_statistics(store: SpectraStore, rows: np.ndarray, bad_bits="astronn",
                    max_rows: int = 4000, batch_size: int = 512, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and spread of the good flux over (a sample of) ``rows``.

    Pixels never good in the sample get mean 1 and the median spread; spreads are floored
    at 1e-3 so a nearly constant pixel does not blow up the standardised input.
    """
    rows = np.sort(np.random.default_rng(seed).permutation(rows)[:max_rows])
    n_pix = store.grid.n_pix
    s, s2, n = np.zeros(n_pix), np.zeros(n_pix), np.zeros(n_pix)
    for b in store.iter_batches(batch_size, rows=rows):
        good = good_pixels(b.flux, b.error, b.pixmask, bad_bits)
        f = np.where(good, b.flux, 0.0).astype(np.float64)
        s += f.sum(0)
        s2 += (f**2).sum(0)
        n += good.sum(0)
    seen = n > 0
    mean = np.ones(n_pix)
    mean[seen] = s[seen] / n[seen]
    var = np.zeros(n_pix)
    var[seen] = np.maximum(s2[seen] / n[seen] - mean[seen] ** 2, 0.0)
    spread = np.sqrt(var)
    fill = float(np.median(spread[seen])) if seen.any() else 1.0
    spread[~seen | (n < 2)] = fill
    return mean.astype(np.float32), np.maximum(spread, 1e-3).astype(np.float32)


def label_statistics(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (floored) of finite training labels, for z-scoring."""
    mean = np.nanmean(labels, axis=0)
    std = np.nanstd(labels, axis=0)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


# -- epoch order, shared by both sources ---------------------------------------------------------

def epoch_chunks(n: int, batch_size: int, world: int, rank: int, epoch: int, seed: int,
                 shuffle: bool, drop_last: bool, block: int | None = None) -> list[np.ndarray]:
    """Positions (into a row list of length ``n``) for each of this rank's steps.

    One step takes ``batch_size × world`` positions and deals them to the ranks, so every
    rank runs the same number of steps (DDP needs that).  With ``block`` the shuffle keeps
    contiguous blocks of that many steps together, for streaming from disk.
    """
    step = batch_size * world
    if shuffle:
        rng = np.random.default_rng([seed, epoch])
        if block:
            span = step * block
            starts = rng.permutation(np.arange(0, n, span))
            order = np.concatenate([s + rng.permutation(min(span, n - s)) for s in starts]) \
                if n else np.empty(0, np.int64)
        else:
            order = rng.permutation(n)
    else:
        order = np.arange(n)
    chunks = [order[i:i + step] for i in range(0, n, step)]
    if drop_last and len(chunks) > 1 and len(chunks[-1]) < step:
        chunks.pop()
    mine = [c[rank::world] for c in chunks]
    # training (drop_last) must give every rank the same step count; evaluation can skip
    # the empty shares of a tiny last step
    return mine if drop_last else [c for c in mine if len(c)]


def to_tensors(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    pin = device.type == "cuda"
    out = {}
    for k, v in arrays.items():
        if isinstance(v, torch.Tensor) and v.device == device:
            out[k] = v  # already converted (shared by a training and a validation source)
            continue
        t = torch.from_numpy(np.ascontiguousarray(v))
        out[k] = (t.pin_memory() if pin else t).to(device, non_blocking=pin)
    return out


class MemorySource:
    """All prepared rows held as tensors (on ``device``); batches are index selections.

    ``index`` makes the source a subset of the arrays' rows without copying them, so a
    training and a validation source can share one set of tensors (``to_tensors``).
    """

    def __init__(self, arrays: dict[str, np.ndarray], device: torch.device, batch_size: int,
                 seed: int = 0, world: int = 1, rank: int = 0, index: np.ndarray | None = None):
        self.tensors = to_tensors(arrays, device)
        self.index = (None if index is None
                      else torch.as_tensor(np.asarray(index, np.int64), device=device))
        # aligned arrays, one row each
        self.n = int(len(next(iter(arrays.values()))) if index is None else len(index))
        self.device, self.batch_size, self.seed = device, batch_size, seed
        self.world, self.rank = world, rank

    @classmethod
    def from_store(cls, store: SpectraStore, rows: np.ndarray, labels: np.ndarray,
                   label_err: np.ndarray, device: torch.device, batch_size: int,
                   bad_bits="astronn", seed: int = 0, world: int = 1, rank: int = 0,
                   read_batch: int = 1024) -> MemorySource:
        n, p = len(rows), store.grid.n_pix
        arrays = {"flux": np.empty((n, p), np.float32), "weight": np.empty((n, p), np.float32),
                  "labels": np.empty((n, labels.shape[1]), np.float32),
                  "label_err": np.empty((n, labels.shape[1]), np.float32),
                  "rows": np.empty(n, np.int64)}
        at = 0
        for b in store.iter_batches(read_batch, rows=rows):
            prepared = prepare_arrays(b, labels, label_err, bad_bits)
            for k, v in prepared.items():
                arrays[k][at:at + len(b)] = v
            at += len(b)
        return cls(arrays, device, batch_size, seed, world, rank)

    def n_steps(self, drop_last: bool = True) -> int:
        return len(epoch_chunks(self.n, self.batch_size, self.world, self.rank, 0, self.seed,
                                False, drop_last))

    def batches(self, epoch: int = 0, shuffle: bool = True, drop_last: bool = True
                ) -> Iterator[dict[str, torch.Tensor]]:
        for pos in epoch_chunks(self.n, self.batch_size, self.world, self.rank, epoch, self.seed,
                                shuffle, drop_last):
            idx = torch.from_numpy(pos).to(self.device)
            if self.index is not None:
                idx = self.index.index_select(0, idx)
            yield {k: v.index_select(0, idx) for k, v in self.tensors.items()}


class StoreSource:
    """Rows streamed from the store in shuffled contiguous blocks, read ahead on a thread."""

    def __init__(self, store: SpectraStore, rows: np.ndarray, labels: np.ndarray,
                 label_err: np.ndarray, device: torch.device, batch_size: int,
                 bad_bits="astronn", seed: int = 0, world: int = 1, rank: int = 0,
                 block: int = 8, prefetch: int = 2):
        self.store, self.rows = store, np.asarray(rows, np.int64)
        self.labels, self.label_err, self.bad_bits = labels, label_err, bad_bits
        self.n = len(self.rows)
        self.device, self.batch_size, self.seed = device, batch_size, seed
        self.world, self.rank, self.block, self.prefetch = world, rank, block, prefetch

    def n_steps(self, drop_last: bool = True) -> int:
        return len(epoch_chunks(self.n, self.batch_size, self.world, self.rank, 0, self.seed,
                                False, drop_last))

    def batches(self, epoch: int = 0, shuffle: bool = True, drop_last: bool = True
                ) -> Iterator[dict[str, torch.Tensor]]:
        chunks = epoch_chunks(self.n, self.batch_size, self.world, self.rank, epoch, self.seed,
                              shuffle, drop_last, block=self.block)

        def read(pos: np.ndarray) -> dict[str, np.ndarray]:
            return prepare_arrays(self.store.read(self.rows[pos]), self.labels, self.label_err,
                                  self.bad_bits)

        for arrays in prefetched(read, chunks, self.prefetch):
            yield to_tensors(arrays, self.device)


class MixedSource:
    """Each batch of ``main`` with ``n_extra`` rows of ``extra`` appended (rehearsal).

    The extra rows are dealt from a permutation seeded by (seed, epoch, rank), cycled when
    an epoch needs more than there are, so a resumed run mixes the same rows.
    """

    def __init__(self, main: MemorySource, extra: MemorySource, n_extra: int, seed: int = 0,
                 rank: int = 0):
        self.main, self.extra, self.n_extra = main, extra, int(n_extra)
        self.seed, self.rank = seed, rank

    def n_steps(self, drop_last: bool = True) -> int:
        return self.main.n_steps(drop_last)

    def batches(self, epoch: int = 0, shuffle: bool = True, drop_last: bool = True
                ) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch, self.rank, 7])
        n_steps = self.main.n_steps(drop_last)
        reps = -(-n_steps * self.n_extra // max(1, self.extra.n))
        order = np.concatenate([rng.permutation(self.extra.n) for _ in range(max(1, reps))])
        for i, batch in enumerate(self.main.batches(epoch, shuffle, drop_last)):
            pos = torch.from_numpy(order[i * self.n_extra:(i + 1) * self.n_extra]).to(
                self.extra.device)
            if self.extra.index is not None:
                pos = self.extra.index.index_select(0, pos)
            yield {k: torch.cat([v, self.extra.tensors[k].index_select(0, pos)])
                   for k, v in batch.items()}
