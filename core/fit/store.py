"""Fit every star of a store in chunks (on the GPU when present) and write catalog columns.

Columns written (one per catalog row; rows not fitted keep earlier values or NaN):
``FIT_<LABEL>``, ``FIT_<LABEL>_ERR`` for every emulated label, ``FIT_RV``, ``FIT_RV_ERR``,
``FIT_CHI2`` (reduced χ²), ``FIT_NPIX``, ``FIT_FLAG`` (bits in :data:`FLAG_NAMES`) and
``FIT_FLAG_NAMES`` (the same, readable: "NO_RV_SIGNAL,MODEL_MISMATCH"; '' when clean).
TOO_FEW_PIXELS rows have NaN labels, RV and χ²; NO_RV_SIGNAL rows a NaN RV; MODEL_MISMATCH
rows σ already widened by √χ²_ν.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..errors import BadDataError
from ..grid import bad_pixels
from ..models.emulator import Emulator
from ..store import SpectraStore
from .engine import FitOptions, fit_batch
from .flags import FLAG_DESCRIPTIONS, FLAG_NAMES, flag_names_column

PREFIX = "FIT_"


def default_chunk(emulator: Emulator) -> int:
    """Stars per chunk: memory for the Jacobians grows as chunk × starts × pixels × labels."""
    return 1024 if emulator.device.type == "cuda" else 64


def _batch_arrays(store: SpectraStore, emulator: Emulator, batch, bad_bits):
    flux, error, pixmask = batch.flux, batch.error, batch.pixmask
    good = ~bad_pixels(pixmask, bad_bits) & np.isfinite(flux) & np.isfinite(error) & (error > 0)
    if store.grid.name != emulator.grid.name:  # e.g. a Payne 7214 network on a 7514 store
        src, dst = store.grid, emulator.grid
        flux = dst.from_apstar(src.to_apstar(flux, fill=1.0))
        error = dst.from_apstar(src.to_apstar(error, fill=1.0))
        good = dst.from_apstar(src.to_apstar(good, fill=False))
    return flux, error, good


def fit_store_table(store: SpectraStore, emulator: Emulator, options: FitOptions | None = None,
                    *, rows=None, chunk: int | None = None, progress: bool = True,
                    on_part=None, mask: np.ndarray | None = None,
                    on_progress=None) -> pd.DataFrame:
    """Fit the store's stars (or ``rows``); a DataFrame of FIT_ columns indexed by row.

    ``on_part(table)`` receives each chunk's columns as soon as they are fitted (checkpoints);
    ``mask`` (True = exclude, on the emulator's grid) applies to every star;
    ``on_progress(done, total)`` follows the run (e.g. an app's progress bar).
    """
    if not store.normalized:
        raise BadDataError(
            f"{store.path}: the store's spectra are not continuum-normalised; normalise them "
            f"when ingesting before fitting"
        )
    opts = options or FitOptions()
    rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
    chunk = chunk or default_chunk(emulator)
    parts = []
    bar = tqdm(total=rows.size, desc="fitting", unit="star", file=sys.stderr,
               disable=not progress or None)
    for batch in store.iter_batches(chunk, rows=rows):
        flux, error, good = _batch_arrays(store, emulator, batch, opts.bad_bits)
        if mask is not None:
            good &= ~mask[None]
        fit = fit_batch(emulator, flux, error, good, opts)
        parts.append(_columns(fit, batch.rows))
        if on_part is not None:
            on_part(parts[-1])
        bar.update(len(batch))
        if on_progress is not None:
            on_progress(int(bar.n), int(rows.size))
    bar.close()
    return pd.concat(parts) if parts else pd.DataFrame()


def unfitted_rows(store: SpectraStore) -> np.ndarray:
    """Rows without a FIT_ result yet (what ``fit --all --resume`` fits)."""
    col = f"{PREFIX}FLAG"
    if col not in store.catalog.columns:
        return np.arange(len(store))
    return np.flatnonzero(store.catalog[col].to_numpy() < 0)


def _columns(fit, rows) -> pd.DataFrame:
    cols: dict[str, np.ndarray] = {}
    for k, name in enumerate(fit.label_names):
        cols[f"{PREFIX}{name}"] = fit.labels[:, k]
        cols[f"{PREFIX}{name}_ERR"] = fit.labels_err[:, k]
    cols[f"{PREFIX}RV"] = fit.rv
    cols[f"{PREFIX}RV_ERR"] = fit.rv_err
    cols[f"{PREFIX}CHI2"] = fit.chi2_nu
    cols[f"{PREFIX}NPIX"] = fit.n_pix.astype(np.int32)
    cols[f"{PREFIX}FLAG"] = fit.flags.astype(np.int32)
    cols[f"{PREFIX}FLAG_NAMES"] = flag_names_column(fit.flags)
    return pd.DataFrame(cols, index=np.asarray(rows))


def write_fit_columns(store: SpectraStore, table: pd.DataFrame, note: dict | None = None) -> list[str]:
    """Put a :func:`fit_store_table` result into the catalog (other rows keep old values).

    Only the table's rows are written, inside the store's lock against the catalog on disk,
    so another process fitting other rows into the same columns loses nothing.
    """
    out = {}
    for col in table.columns:
        values = table[col].to_numpy()
        out[col] = values.astype(np.float64) if values.dtype.kind == "f" else values
    store.add_columns(out, rows=table.index.to_numpy(), fill=_FILL, note=note)
    return list(out)


# Rows never fitted: -1 flags / pixel counts, no flag names, NaN for the rest.
_FILL = {f"{PREFIX}FLAG": -1, f"{PREFIX}NPIX": -1, f"{PREFIX}FLAG_NAMES": ""}


def fit_store(store: SpectraStore, emulator: Emulator, options: FitOptions | None = None, *,
              rows=None, chunk: int | None = None, progress: bool = True,
              model_path: str = "", checkpoint_stars: int = 50_000,
              mask: np.ndarray | None = None, on_progress=None) -> dict:
    """Fit and write the FIT_ columns; returns a summary (stars, seconds, flags).

    Results are written every ``checkpoint_stars`` stars (and at the end), so an interrupted
    run keeps what it fitted and :func:`unfitted_rows` picks up from there.
    """
    t0 = time.time()
    note = {"source": "stellarscope fit --all", "model": model_path,
            "model_name": str(emulator.config.training.get("name", emulator.config.preset)),
            "flags": {str(k): v for k, v in FLAG_NAMES.items()},
            "flag_descriptions": {v: FLAG_DESCRIPTIONS[k] for k, v in FLAG_NAMES.items()}}
    pending, written = [], []

    def flush():
        nonlocal written
        if pending:
            written = write_fit_columns(store, pd.concat(pending), note)
            pending.clear()

    def on_part(part):
        pending.append(part)
        if sum(len(p) for p in pending) >= checkpoint_stars:
            flush()

    table = fit_store_table(store, emulator, options, rows=rows, chunk=chunk, progress=progress,
                            on_part=on_part, mask=mask, on_progress=on_progress)
    flush()
    seconds = time.time() - t0
    if table.empty:
        return {"store": str(store.path), "stars": 0, "seconds": round(seconds, 2),
                "stars_per_second": None, "device": str(emulator.device), "columns": [],
                "flag_counts": {}, "median_chi2_nu": None}
    flags = table[f"{PREFIX}FLAG"].to_numpy()
    return {
        "store": str(store.path),
        "stars": int(len(table)),
        "seconds": round(seconds, 2),
        "stars_per_second": round(len(table) / seconds, 2) if seconds > 0 else None,
        "device": str(emulator.device),
        "columns": written,
        "flag_counts": {name: int(((flags & bit) != 0).sum()) for bit, name in FLAG_NAMES.items()},
        "median_chi2_nu": _median_finite(table[f"{PREFIX}CHI2"].to_numpy(float)),
    }


def _median_finite(values: np.ndarray) -> float:
    """Median of the finite values (TOO_FEW_PIXELS rows have NaN χ²); NaN if there are none."""
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")
