"""FITS table columns → clean pandas-ready arrays (native-endian, stripped, NaN for -9999)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import fitsutil as fu


def clean_column(values) -> np.ndarray:
    """Strings decoded and stripped; numbers native-endian; float sentinels (≤ -9999) → NaN."""
    arr = np.asarray(values)
    if arr.dtype.kind == "O":  # e.g. h5py variable-length strings
        return np.array(
            [
                (v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)).strip()
                for v in arr.ravel()
            ],
            dtype=object,
        ).reshape(arr.shape)
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "ascii", errors="replace")
    if arr.dtype.kind == "U":
        return np.char.strip(arr).astype(object)
    if arr.dtype.kind == "f":
        out = fu.native(arr)
        out[out <= fu.SENTINEL_LIMIT] = np.nan
        return out
    return fu.native(arr)


def frame_from_table(data, names=None) -> tuple[pd.DataFrame, list[str]]:
    """DataFrame of a FITS_rec's 1-D columns (all, or ``names``) and the multi-D ones skipped."""
    columns, skipped = {}, []
    for name in names if names is not None else data.names:
        values = data[name]
        if np.ndim(values) != 1:
            skipped.append(name)
            continue
        columns[name] = clean_column(values)
    return pd.DataFrame(columns), skipped
