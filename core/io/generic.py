"""Reader for spectra a user prepared themselves: an HDF5 or NPZ file of plain arrays.

Recognised entries (HDF5 dataset paths or NPZ keys; first match wins):
  flux        ``flux`` | ``spectra`` | ``spec``            N × P (or P for one star)
  error       ``error`` | ``err`` | ``flux_err`` | ``sigma``, or ``ivar`` (→ 1/√ivar)
  mask        ``mask`` | ``pixmask`` | ``bitmask``          optional PIXMASK ints
  wavelength  ``wavelength`` | ``wave`` | ``lambda``       optional, vacuum Å; else the
              APOGEE grid with P pixels
  labels      a compound/structured ``labels`` array, or 1-D entries ``labels/<NAME>``
  ids         ``ids`` | ``apogee_id`` | ``APOGEE_ID``
NPZ files are opened with ``allow_pickle=False``: object arrays are refused, never unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import BadFileError
from ..grid import GRIDS, get_grid
from ..spectrum import Spectrum
from . import fitsutil as fu
from .tables import clean_column

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"

FLUX_KEYS = ("flux", "spectra", "spec")
ERROR_KEYS = ("error", "err", "flux_err", "sigma")
IVAR_KEYS = ("ivar",)
MASK_KEYS = ("mask", "pixmask", "bitmask")
WAVE_KEYS = ("wavelength", "wave", "lambda")
ID_KEYS = ("ids", "apogee_id", "APOGEE_ID")
LABEL_PREFIX = "labels/"
_KNOWN = frozenset(
    FLUX_KEYS + ERROR_KEYS + IVAR_KEYS + MASK_KEYS + WAVE_KEYS + ID_KEYS + ("labels",)
)


def _wanted(key: str) -> bool:
    """Only recognised entries are loaded: a big file may hold much else."""
    return key in _KNOWN or key.startswith(LABEL_PREFIX)


@dataclass
class SpectraArrays:
    """N spectra on P shared pixels, with per-star labels and IDs."""

    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray
    wavelength: np.ndarray
    grid: str | None
    labels: pd.DataFrame
    ids: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.flux.shape[0])

    def spectrum(self, i: int) -> Spectrum:
        """Row ``i`` as a :class:`Spectrum` (labels go into ``meta``)."""
        meta = dict(self.meta)
        meta.update(
            {k: v.item() if hasattr(v, "item") else v for k, v in self.labels.iloc[i].items()}
        )
        if self.ids is not None:
            meta["APOGEE_ID"] = str(self.ids[i])
        meta["ROW"] = int(i)
        return Spectrum(
            self.wavelength, self.flux[i], self.error[i], self.mask[i], meta, grid=self.grid
        )


def _file_kind(path: Path) -> str:
    with fu.open_binary(path) as fh:  # permission problems become BadFileError
        head = fh.read(8)
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    if head.startswith(_ZIP_MAGIC):
        return "npz"
    raise BadFileError(path, "neither an HDF5 nor an NPZ file (unrecognised first bytes)")


def _read_hdf5(path: Path) -> dict[str, np.ndarray]:
    import h5py

    entries: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as h5:

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    key = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
                    if _wanted(key):
                        entries[key] = obj[()]

            h5.visititems(visit)
    except BadFileError:
        raise
    except Exception as exc:
        raise BadFileError(path, f"cannot be read as HDF5 ({type(exc).__name__}: {exc})") from None
    return entries


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        # np.load leaks its own handle on a damaged archive; owning the handle avoids that.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files if _wanted(key)}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise BadFileError(
                path, "holds Python-object arrays, which are refused (no unpickling)"
            ) from None
        raise BadFileError(path, f"cannot be read as NPZ ({exc})") from None
    except Exception as exc:  # zipfile, zlib and numpy header errors for damaged archives
        raise BadFileError(path, f"cannot be read as NPZ ({type(exc).__name__}: {exc})") from None


def _pick(entries: dict, keys: tuple[str, ...]) -> np.ndarray | None:
    for key in keys:
        if key in entries:
            return entries[key]
    return None


def _labels(path, entries: dict, n: int) -> pd.DataFrame:
    columns = {}
    table = entries.get("labels")
    if table is not None:
        if table.dtype.names is None:
            raise BadFileError(
                path, "'labels' must be a structured/compound array or a group of 1-D arrays"
            )
        for name in table.dtype.names:
            columns[name] = table[name]
    for key, values in entries.items():
        if key.startswith(LABEL_PREFIX):
            columns[key[len(LABEL_PREFIX) :]] = values
    out = {}
    for name, values in columns.items():
        values = np.asarray(values)
        if values.shape != (n,):
            raise BadFileError(path, f"label {name!r} has shape {values.shape}, expected ({n},)")
        out[name] = clean_column(values)
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def _grid_of(path, wavelength: np.ndarray | None, npix: int) -> tuple[np.ndarray, str | None]:
    if wavelength is None:
        try:
            g = get_grid(npix)
        except KeyError:
            raise BadFileError(
                path, f"no wavelength array and {npix} pixels match no APOGEE grid"
            ) from None
        return g.wavelength, g.name
    wave = fu.native(np.asarray(wavelength), np.float64).ravel()
    if wave.shape != (npix,):
        raise BadFileError(
            path, f"wavelength has {wave.size} values, the spectra have {npix} pixels"
        )
    if not np.all(np.isfinite(wave)) or not np.all(np.diff(wave) > 0):
        raise BadFileError(path, "wavelength must be finite and strictly increasing")
    for g in GRIDS.values():
        if g.n_pix == npix and np.allclose(wave, g.wavelength, rtol=0, atol=1e-3):
            return g.wavelength, g.name
    return wave, None


def read_generic(path: str | os.PathLike) -> SpectraArrays:
    """Read an HDF5/NPZ file of spectra (see the module docstring for the entry names)."""
    p = fu.check_readable_file(path)
    entries = _read_hdf5(p) if _file_kind(p) == "hdf5" else _read_npz(p)
    try:
        return _assemble(p, entries)
    except BadFileError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. entries with dtypes that cannot be cast
        raise BadFileError(p, f"unusable array contents ({type(exc).__name__}: {exc})") from None


def _assemble(p: Path, entries: dict) -> SpectraArrays:
    flux = _pick(entries, FLUX_KEYS)
    if flux is None:
        raise BadFileError(p, f"no flux array (looked for {', '.join(FLUX_KEYS)})")
    flux = np.atleast_2d(fu.native(flux, np.float32)) if flux.dtype.kind in "fiu" else None
    if flux is None or flux.ndim != 2:
        raise BadFileError(p, "flux must be a numeric N × P or P array")
    n, npix = flux.shape
    if n == 0 or npix == 0:
        raise BadFileError(p, f"holds no spectra (flux has shape {flux.shape})")

    error = _pick(entries, ERROR_KEYS)
    if error is None:
        ivar = _pick(entries, IVAR_KEYS)
        if ivar is None:
            raise BadFileError(
                p, f"no error array (looked for {', '.join(ERROR_KEYS + IVAR_KEYS)})"
            )
        ivar = np.atleast_2d(fu.native(ivar, np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            error = np.where(ivar > 0, 1.0 / np.sqrt(ivar), np.inf)
    error = np.atleast_2d(fu.native(np.asarray(error), np.float32))
    if error.shape != flux.shape:
        raise BadFileError(p, f"error has shape {error.shape}, flux has {flux.shape}")

    mask = _pick(entries, MASK_KEYS)
    if mask is None:
        mask = np.zeros(flux.shape, dtype=np.uint16)
    else:
        mask = np.atleast_2d(np.asarray(mask))
        if mask.dtype.kind not in "iub":
            raise BadFileError(p, f"mask must hold integers (PIXMASK bits), got {mask.dtype}")
        if mask.shape != flux.shape:
            raise BadFileError(p, f"mask has shape {mask.shape}, flux has {flux.shape}")
        mask = (mask.astype(np.int64) & 0xFFFF).astype(np.uint16)

    if not np.isfinite(flux).any():
        raise BadFileError(p, "the flux is NaN/inf everywhere")
    wavelength, grid = _grid_of(p, _pick(entries, WAVE_KEYS), npix)

    ids = _pick(entries, ID_KEYS)
    if ids is not None:
        ids = clean_column(np.asarray(ids).ravel())
        if ids.shape != (n,):
            raise BadFileError(p, f"ids has {ids.size} values for {n} spectra")
        ids = ids.astype(str)
    labels = _labels(p, entries, n)
    if ids is not None and "APOGEE_ID" not in labels:
        labels.insert(0, "APOGEE_ID", ids)
    return SpectraArrays(
        flux=flux,
        error=error,
        mask=mask,
        wavelength=wavelength,
        grid=grid,
        labels=labels,
        ids=ids,
        meta={"SOURCE": os.fspath(p), "READER": "generic"},
    )
