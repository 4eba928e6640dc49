"""allStar catalog reader (DR14, DR16, DR17) → one pandas DataFrame with allStar column names.

The releases name things differently:
- DR17: TEFF, LOGG, M_H, FE_H, <X>_FE (+ _ERR) as named columns.
- DR16: the spectroscopic TEFF_SPEC / LOGG_SPEC where TEFF / LOGG are absent.
- DR14-style files without named abundance columns: PARAM (Teff, logg, vmicro, [M/H], …)
  with PARAM_COV, and the X_H / X_H_ERR arrays (Fe in column 17); TEFF, LOGG, FE_H and
  every <X>_FE = [X/H] − [Fe/H] are derived from them (<X>_FE_ERR is [X/H]'s error).
Symbol tables (PARAM_SYMBOL, ELEM_SYMBOL in a later HDU) are used when present.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from ..errors import BadFileError
from . import fitsutil as fu
from .tables import clean_column

BASE_COLUMNS = (
    "APOGEE_ID", "TELESCOPE", "FIELD", "TARGET_ID", "SNR", "STARFLAG", "ASPCAPFLAG",
    "ASPCAPFLAGS", "VSCATTER", "TEFF", "TEFF_ERR", "LOGG", "LOGG_ERR", "M_H", "M_H_ERR",
    "FE_H", "FE_H_ERR", "VMICRO",
)  # fmt: skip
STRING_COLUMNS = frozenset({"APOGEE_ID", "TELESCOPE", "FIELD", "TARGET_ID", "ASPCAPFLAGS"})
FLAG_COLUMNS = frozenset({"STARFLAG", "ASPCAPFLAG"})

#: Element order of the DR14 X_H array (Fe is column 17).
DR14_ELEMENTS = (
    "C", "CI", "N", "O", "NA", "MG", "AL", "SI", "P", "S", "K", "CA", "TI", "TIII", "V",
    "CR", "MN", "FE", "CO", "NI", "CU", "GE", "CE", "RB", "Y", "ND",
)  # fmt: skip
#: Order of the DR14 PARAM array.
DR14_PARAMS = ("TEFF", "LOGG", "VMICRO", "M_H", "C_M", "N_M", "ALPHA_M")

# Alternative source columns, tried in order, for base columns that changed names.
_ALIASES = {
    "TEFF": ("TEFF", "TEFF_SPEC"),
    "LOGG": ("LOGG", "LOGG_SPEC"),
    "TEFF_ERR": ("TEFF_ERR", "TEFF_SPEC_ERR"),
    "LOGG_ERR": ("LOGG_ERR", "LOGG_SPEC_ERR"),
    "STARFLAG": ("STARFLAG",),
    "ASPCAPFLAG": ("ASPCAPFLAG",),
}
_X_FE = re.compile(r"^([A-Z]+)_FE$")


def _symbols(hdul: fits.HDUList, column: str) -> list[str] | None:
    """Upper-cased symbols from the first table HDU holding ``column`` (e.g. ELEM_SYMBOL)."""
    for hdu in hdul[1:]:
        if not isinstance(hdu, fits.BinTableHDU) or column not in hdu.columns.names:
            continue
        try:
            values = np.atleast_1d(np.asarray(hdu.data[column][0]))
        except Exception:
            return None
        names = clean_column(values)
        return [str(v).upper().replace("/", "") for v in names]
    return None


def guess_release(path, names: set[str]) -> int | None:
    """The data release a catalog looks like (from its name, else its columns)."""
    name = Path(path).name.lower()
    for token, dr in (
        ("dr17", 17),
        ("l33", 16),
        ("r12", 16),
        ("dr16", 16),
        ("l31c", 14),
        ("dr14", 14),
    ):
        if token in name:
            return dr
    if any(_X_FE.match(n) for n in names):
        return 16 if "TEFF_SPEC" in names and "TEFF" not in names else 17
    if "X_H" in names:
        return 14
    return None


class _Columns:
    """Resolve output column names against one allStar table (named, aliased or derived)."""

    def __init__(self, path, hdul: fits.HDUList, data):
        self.path, self.data = path, data
        self.names = set(data.names)
        self.elements = _symbols(hdul, "ELEM_SYMBOL") or list(DR14_ELEMENTS)
        self.params = _symbols(hdul, "PARAM_SYMBOL") or list(DR14_PARAMS)
        self.named_x_fe = [n for n in data.names if _X_FE.match(n)]
        self.uses_arrays = not self.named_x_fe and "X_H" in self.names
        self._cache: dict[str, np.ndarray] = {}

    def raw(self, name: str) -> np.ndarray | None:
        """A file column, cleaned (and cached: the DR14 arrays are read once per element)."""
        if name not in self.names:
            return None
        if name not in self._cache:
            try:
                self._cache[name] = clean_column(self.data[name])
            except Exception as exc:
                raise BadFileError(
                    self.path, f"column {name} cannot be read ({type(exc).__name__}: {exc})"
                ) from None
        return self._cache[name]

    def _array_column(self, array: str, index: int) -> np.ndarray | None:
        arr = self.raw(array)
        if arr is None or arr.ndim != 2 or index >= arr.shape[1]:
            return None
        return arr[:, index]

    def _param(self, symbol: str, error: bool = False) -> np.ndarray | None:
        aliases = {"VMICRO": ("VMICRO", "LOG10VDOP", "LOG10VMICRO")}.get(symbol, (symbol,))
        for alias in aliases:
            if alias not in self.params:
                continue
            k = self.params.index(alias)
            if error:
                cov = self.raw("PARAM_COV")
                if cov is None or cov.ndim != 3 or k >= cov.shape[1]:
                    return None
                with np.errstate(invalid="ignore"):
                    return np.sqrt(cov[:, k, k])
            values = self._array_column("PARAM", k)
            if values is not None and alias.startswith("LOG10"):
                values = 10.0**values
            return values
        return None

    def _fe_index(self) -> int:
        if "FE" in self.elements:
            return self.elements.index("FE")
        raise BadFileError(self.path, "X_H array present but no Fe among the element symbols")

    def _x_h(self, index: int, error: bool) -> np.ndarray | None:
        return self._array_column("X_H_ERR" if error else "X_H", index)

    def x_fe_names(self) -> list[str]:
        if not self.uses_arrays:
            return self.named_x_fe
        return [f"{e}_FE" for e in self.elements if e != "FE"]

    def get(self, name: str) -> np.ndarray | None:
        """Values of output column ``name``, or None when the file cannot provide it."""
        for source in _ALIASES.get(name, (name,)):
            values = self.raw(source)
            if values is not None and values.ndim == 1:
                return values
        error = name.endswith("_ERR")
        stem = name[:-4] if error else name
        if stem in ("TEFF", "LOGG", "M_H", "VMICRO") and "PARAM" in self.names:
            return None if (error and stem == "VMICRO") else self._param(stem, error)
        if self.uses_arrays:
            if stem == "FE_H":
                return self._x_h(self._fe_index(), error)
            match = _X_FE.match(stem)
            if match and match.group(1) in self.elements:
                x_h = self._x_h(self.elements.index(match.group(1)), error)
                if error or x_h is None:
                    return x_h
                fe_h = self._x_h(self._fe_index(), False)
                return None if fe_h is None else x_h - fe_h
        return None


def _empty(name: str, n: int) -> np.ndarray:
    if name in STRING_COLUMNS:
        return np.full(n, "", dtype=object)
    return np.full(n, np.nan)


def read_allstar(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Read an allStar catalog.

    ``columns=None`` gives :data:`BASE_COLUMNS` (filled with NaN / "" where the file lacks
    one; ``df.attrs["missing_columns"]`` lists them) followed by every ``<X>_FE`` and
    ``<X>_FE_ERR``.  Otherwise exactly ``columns``, which may also name any 1-D column of
    the file.  ``df.attrs["release"]`` is the guessed data release.
    """
    with fu.open_fits(path) as hdul:
        index, hdu = fu.first_table(hdul, path, "allStar catalog")
        data = fu.table_data(hdu, index, path)
        cols = _Columns(path, hdul, data)
        if "APOGEE_ID" not in cols.names:
            raise BadFileError(path, f"HDU{index} has no APOGEE_ID column: not an allStar catalog")
        n = len(data)
        out, missing = {}, []
        if columns is None:
            wanted = list(BASE_COLUMNS)
            for x_fe in cols.x_fe_names():
                wanted += [x_fe, f"{x_fe}_ERR"]
        else:
            wanted = list(columns)
        for name in wanted:
            values = cols.get(name)
            if values is None:
                if columns is not None:
                    raise BadFileError(path, f"has no column {name!r} and cannot derive it")
                missing.append(name)
                values = _empty(name, n)
            out[name] = values
        release = guess_release(path, cols.names)
    frame = pd.DataFrame(out)
    frame.attrs.update(release=release, missing_columns=missing, source=os.fspath(path))
    return frame
