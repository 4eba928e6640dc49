"""User masks for fits: read the wavelength ranges a person excluded (e.g. in the Fit view).

Two CSV layouts are accepted (vacuum Å):

* the Fit view's mask export: one row per pixel, columns ``wavelength_vac`` and ``user_masked``;
* ranges: columns ``start`` and ``end``, one excluded range per row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import BadFileError

MAX_BYTES = 50 * 1024 * 1024


def read_user_mask(path, wavelength: np.ndarray) -> np.ndarray:
    """True where ``wavelength`` (the model grid) falls in a masked range of the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise BadFileError(path, f"over the {MAX_BYTES // 2**20} MB limit for mask files")
        table = pd.read_csv(path, comment="#")
    except FileNotFoundError as exc:
        raise BadFileError(path, "no such file") from exc
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise BadFileError(path, f"not a readable CSV mask ({exc})") from exc
    lam = np.asarray(wavelength, dtype=np.float64)
    cols = set(table.columns)
    if {"wavelength_vac", "user_masked"} <= cols:
        lo, hi = _ranges_of_flags(path, table)
    elif {"start", "end"} <= cols:
        a = pd.to_numeric(table["start"], errors="coerce").to_numpy(float)
        b = pd.to_numeric(table["end"], errors="coerce").to_numpy(float)
        if not (np.isfinite(a) & np.isfinite(b)).all():
            raise BadFileError(path, "start/end must be numbers (vacuum Å) on every row")
        lo, hi = np.minimum(a, b), np.maximum(a, b)
    else:
        raise BadFileError(path, "a mask CSV needs columns wavelength_vac,user_masked (the Fit "
                           f"view's export) or start,end (ranges in vacuum Å); found "
                           f"{sorted(map(str, cols))}")
    return ((lam[:, None] >= lo[None]) & (lam[:, None] <= hi[None])).any(axis=1)


def _ranges_of_flags(path: Path, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel flags → ranges reaching half-way to the neighbouring pixels."""
    w = pd.to_numeric(table["wavelength_vac"], errors="coerce").to_numpy(float)
    m = pd.to_numeric(table["user_masked"], errors="coerce").to_numpy(float)
    ok = np.isfinite(w) & np.isfinite(m)
    if ok.sum() < 2:
        raise BadFileError(path, "fewer than two numeric wavelength_vac / user_masked rows")
    order = np.argsort(w[ok])
    w, m = w[ok][order], m[ok][order] > 0
    half = np.diff(w) / 2
    left = np.concatenate([[w[0] - half[0]], w[1:] - half])
    right = np.concatenate([w[:-1] + half, [w[-1] + half[-1]]])
    edges = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    # strictly inside the half-pixel edges, so a neighbour pixel is never caught
    pad = 1e-6 * np.median(half)
    return left[starts] + pad, right[ends - 1] - pad
