"""The shipped APOGEE H-band line list and element windows (vacuum Å), and the Brackett series.

``assets/linelists/apogee_hband_lines.csv`` holds one row per transition with the columns
:data:`LINE_COLUMNS`; ``assets/linelists/apogee_element_windows.csv`` holds the wavelength
windows in which each element's abundance is measured.  Both are plain CSV files whose
leading ``#`` lines say the wavelength medium; see ``assets/linelists/README.md``.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import BadFileError
from .grid import Grid, get_grid
from .paths import LINELIST_DIR

LINELIST_PATH = LINELIST_DIR / "apogee_hband_lines.csv"
WINDOWS_PATH = LINELIST_DIR / "apogee_element_windows.csv"
SKYLINES_PATH = LINELIST_DIR / "apogee_sky_oh_lines.csv"

LINE_COLUMNS = (
    "wavelength_vac", "species", "element", "ion", "excitation_potential", "log_gf",
    "informs", "kind", "note",
)
WINDOW_COLUMNS = ("element", "species", "start_vac", "end_vac", "n_pixels", "note")
LINE_KINDS = ("atomic", "molecular", "bandhead", "hydrogen")

#: Rydberg constant for infinite nuclear mass (CODATA 2018, m⁻¹) and the electron/proton mass ratio.
RYDBERG_INF = 10_973_731.568160
ELECTRON_PROTON_MASS_RATIO = 1.0 / 1836.15267343
#: Rydberg constant of hydrogen, corrected for the reduced mass of the electron (m⁻¹).
RYDBERG_H = RYDBERG_INF / (1.0 + ELECTRON_PROTON_MASS_RATIO)


def brackett_wavelengths(n_upper) -> np.ndarray | float:
    """Vacuum wavelength (Å) of the hydrogen Brackett line n_upper → 4 (n_upper ≥ 5).

    Rydberg formula with the reduced-mass Rydberg constant of hydrogen: Br11 ≈ 16811.2 Å.
    """
    n = np.asarray(n_upper, dtype=np.float64)
    if np.any(n < 5) or np.any(n != np.round(n)):
        raise ValueError(f"Brackett upper levels are integers ≥ 5, got {n_upper!r}")
    wavenumber = RYDBERG_H * (1.0 / 16.0 - 1.0 / n**2)  # m⁻¹
    lam = 1e10 / wavenumber
    return float(lam) if lam.ndim == 0 else lam


def _read_medium(path: Path) -> str:
    """The medium named in the file's ``# ... medium: X`` header line (``vacuum``/``air``)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            text = line.lower()
            if "medium:" in text:
                return text.split("medium:", 1)[1].split(";")[0].strip()
    return "unknown"


def _read_table(path, default: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    path = Path(path) if path is not None else default
    if not path.is_file():
        raise BadFileError(path, f"no {what} file here")
    try:
        df = pd.read_csv(path, comment="#", keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise BadFileError(path, f"not a readable {what} CSV ({exc})") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BadFileError(path, f"{what} lacks the column(s) {', '.join(missing)}")
    medium = _read_medium(path)
    if medium != "vacuum":
        raise BadFileError(path, f"{what} must give vacuum wavelengths (header says {medium!r})")
    df.attrs["medium"] = medium
    df.attrs["path"] = str(path)
    return df


@lru_cache(maxsize=8)
def _load_linelist_cached(path: str, mtime: float) -> pd.DataFrame:
    df = _read_table(path, LINELIST_PATH, LINE_COLUMNS, "line list")
    bad = ~df["kind"].isin(LINE_KINDS)
    if bad.any():
        raise BadFileError(path, f"unknown line kind {df.loc[bad, 'kind'].iloc[0]!r} "
                                 f"(expected one of {LINE_KINDS})")
    wl = pd.to_numeric(df["wavelength_vac"], errors="coerce")
    if wl.isna().any():
        raise BadFileError(path, f"non-numeric wavelength_vac in row {int(wl.isna().idxmax()) + 1}")
    df["wavelength_vac"] = wl.astype(np.float64)
    df["ion"] = df["ion"].astype(np.int64)
    df["excitation_potential"] = df["excitation_potential"].astype(np.float64)
    df["log_gf"] = pd.to_numeric(df["log_gf"], errors="coerce")
    for col in ("species", "element", "informs", "kind", "note"):
        df[col] = df[col].fillna("").astype(str)
    return df.sort_values("wavelength_vac", kind="stable").reset_index(drop=True)


def load_linelist(path=None) -> pd.DataFrame:
    """The H-band line list (sorted by vacuum wavelength); ``attrs['medium'] == 'vacuum'``.

    ``log_gf`` is NaN where the oscillator strength is unknown.
    """
    p = Path(path) if path is not None else LINELIST_PATH
    mtime = p.stat().st_mtime if p.is_file() else 0.0
    df = _load_linelist_cached(os.fspath(p), mtime).copy()
    df.attrs = {"medium": "vacuum", "path": os.fspath(p)}
    return df


def load_element_windows(path=None) -> pd.DataFrame:
    """Element windows (vacuum Å): one row per contiguous window of one element."""
    df = _read_table(path, WINDOWS_PATH, WINDOW_COLUMNS, "element-window table")
    for col in ("start_vac", "end_vac"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if df[["start_vac", "end_vac"]].isna().any().any() or (df["end_vac"] < df["start_vac"]).any():
        raise BadFileError(df.attrs["path"], "window edges must be numbers with start ≤ end")
    return df


def element_window_mask(grid: Grid | str | int, element: str, windows=None) -> np.ndarray:
    """Boolean mask over ``grid``'s pixels, True inside the element's windows.

    ``element`` is matched case-insensitively on the element symbol (``"Mg"``, ``"ti"``), so a
    species' windows (Ti II) count for its element.  A pixel belongs to a window when its
    centre lies within half a pixel of the window's edges.
    """
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    w = load_element_windows() if windows is None else windows
    rows = w[w["element"].str.lower() == str(element).strip().lower()]
    if rows.empty:
        known = sorted(w["element"].unique())
        raise KeyError(f"no element windows for {element!r} (known: {known})")
    lam = g.wavelength
    half = 0.5 * lam * (10**6e-6 - 1.0)  # half a pixel in Å
    mask = np.zeros(lam.size, dtype=bool)
    starts = rows["start_vac"].to_numpy()
    ends = rows["end_vac"].to_numpy()
    # every window is short, so test each against the sorted grid with searchsorted
    lo = np.searchsorted(lam + half, starts, side="left")
    hi = np.searchsorted(lam - half, ends, side="right")
    for a, b in zip(lo, hi, strict=True):
        mask[a:b] = True
    return mask


def lines_in_range(lo: float, hi: float, elements=None, kinds=None, linelist=None) -> pd.DataFrame:
    """Lines with lo ≤ λ_vac ≤ hi, optionally only of some elements (``"Mg"`` or a list).

    ``elements`` also matches the species (``"OH"``, ``"Fe II"``); ``kinds`` filters on the
    kind column (``"atomic"``, ``"molecular"``, ``"bandhead"``, ``"hydrogen"``).
    """
    df = load_linelist() if linelist is None else linelist
    sel = (df["wavelength_vac"] >= lo) & (df["wavelength_vac"] <= hi)
    if elements is not None:
        wanted = {elements} if isinstance(elements, str) else set(elements)
        wanted = {str(e).strip().lower() for e in wanted}
        sel &= df["element"].str.lower().isin(wanted) | df["species"].str.lower().isin(wanted)
    if kinds is not None:
        wanted_k = {kinds} if isinstance(kinds, str) else set(kinds)
        sel &= df["kind"].isin(wanted_k)
    return df[sel].reset_index(drop=True)


def file_sha256(path) -> str:
    """Hex SHA-256 of a file (the line list's identity in provenance records)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_sky_lines(path=None) -> pd.DataFrame:
    """Bright OH airglow lines (vacuum Å, observed frame) with a brightness class (1 = brightest)."""
    return _read_table(path, SKYLINES_PATH, ("wavelength_vac", "brightness_class"), "sky-line list")
