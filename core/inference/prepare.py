"""Model-ready arrays from store rows, shared by training and inference.

Every model sees a spectrum the same way: pixels are *good* when not flagged (``bad_bits``),
with finite flux and error and error > 0; bad pixels get flux 0 and χ² weight 0, and the
weights are :func:`core.chi2.pixel_weights` (error floor in quadrature).  Also here: catalog
label arrays, putting batches on another APOGEE grid, the device choice and a background
read-ahead, so neither training nor inference imports the other.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd

from ..chi2 import ERROR_FLOOR, pixel_weights
from ..device import autocast, choose_device  # noqa: F401  (the runner and predictors take them from here)
from ..errors import BadDataError
from ..grid import PIXMASK_VALUE, Grid, bad_pixels

LABEL_NAMES = ("TEFF", "LOGG", "FE_H")

#: PIXMASK bit written into pixels that a grid change leaves uncovered.
MISSING_BITS = PIXMASK_VALUE["BADPIX"]


def label_arrays(catalog: pd.DataFrame, names=LABEL_NAMES, where: str = "catalog"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N × L) and their errors from ``<NAME>_ERR`` (0 when that column is absent)."""
    missing = [n for n in names if n not in catalog.columns]
    if missing:
        raise BadDataError(f"{where}: catalog has no {', '.join(missing)} column(s); "
                           f"the model needs {', '.join(names)}")
    labels = np.column_stack([pd.to_numeric(catalog[n], errors="coerce").to_numpy(np.float64)
                              for n in names]).astype(np.float32)
    errs = []
    for n in names:
        col = f"{n}_ERR"
        errs.append(pd.to_numeric(catalog[col], errors="coerce").to_numpy(np.float64)
                    if col in catalog.columns else np.zeros(len(catalog)))
    return labels, np.column_stack(errs).astype(np.float32)


def good_pixels(flux: np.ndarray, error: np.ndarray, pixmask: np.ndarray, bad_bits="astronn"
                ) -> np.ndarray:
    """Pixels to fit: not flagged, finite flux and error, error > 0."""
    with np.errstate(invalid="ignore"):
        return (~bad_pixels(pixmask, bad_bits) & np.isfinite(flux) & np.isfinite(error)
                & (error > 0))


def prepare_arrays(batch, labels: np.ndarray, label_err: np.ndarray, bad_bits="astronn",
                   floor: float = ERROR_FLOOR) -> dict[str, np.ndarray]:
    """Model-ready arrays for the store rows in ``batch`` (labels indexed by global row)."""
    good = good_pixels(batch.flux, batch.error, batch.pixmask, bad_bits)
    return {
        "flux": np.where(good, batch.flux, np.float32(0.0)).astype(np.float32),
        "weight": pixel_weights(batch.error, good, floor),
        "labels": labels[batch.rows],
        "label_err": label_err[batch.rows],
        "rows": batch.rows.astype(np.int64),
    }


def regrid(flux, error, pixmask, src: Grid, dst: Grid):
    """(flux, error, pixmask) of (B, P_src) arrays on ``dst``; uncovered pixels are flagged."""
    if src.name == dst.name:
        return flux, error, pixmask
    covered = dst.from_apstar(src.to_apstar(np.ones(src.n_pix, bool), fill=False))
    flux = dst.from_apstar(src.to_apstar(np.asarray(flux, np.float32), fill=np.nan))
    error = dst.from_apstar(src.to_apstar(np.asarray(error, np.float32), fill=np.inf))
    mask = dst.from_apstar(src.to_apstar(np.asarray(pixmask, np.uint16), fill=0))
    mask = np.where(covered, mask, mask | np.uint16(MISSING_BITS)).astype(np.uint16)
    return flux, error, mask


def prefetched(fn, items, depth: int = 2) -> Iterator:
    """``fn(item)`` for each item, computed up to ``depth`` ahead on a background thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def worker():
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(("ok", fn(item)))
            q.put(("ok", done))
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(("err", exc))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "err":
                raise value
            if value is done:
                return
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
