"""Label metadata shared by every model, command and view: names, units, the missing sentinel.

APOGEE writes −9999 (or −9999.99) for "no value"; anything at or below :data:`MISSING_BELOW`
is read as missing everywhere.
"""

from __future__ import annotations

import numpy as np

#: allStar's "no value".
MISSING_VALUE = -9999.0
#: Values at or below this are APOGEE "no value" sentinels (−9999, −9999.99 …).
MISSING_BELOW = -9000.0

_ELEMENTS = ("C", "CI", "N", "O", "NA", "MG", "AL", "SI", "P", "S", "K", "CA", "TI", "TIII",
             "V", "CR", "MN", "CO", "NI", "CU", "CE", "ND", "RB", "YB", "GE")

#: column → (display name, unit).  Abundance ratios are in dex.
LABELS: dict[str, tuple[str, str]] = {
    "TEFF": ("Teff", "K"),
    "LOGG": ("log g", "dex"),
    "M_H": ("[M/H]", "dex"),
    "FE_H": ("[Fe/H]", "dex"),
    "ALPHA_M": ("[α/M]", "dex"),
    "VMICRO": ("v_micro", "km/s"),
    "VMACRO": ("v_macro", "km/s"),
    "VSINI": ("v sin i", "km/s"),
    "C12_C13": ("¹²C/¹³C", ""),
    **{f"{el}_FE": (f"[{el.title()}/Fe]", "dex") for el in _ELEMENTS},
}


def is_missing(values) -> np.ndarray:
    """True where a value is NaN, ±inf or an APOGEE "no value" sentinel."""
    v = np.asarray(values, dtype=np.float64)
    return ~np.isfinite(v) | (v <= MISSING_BELOW)


def clean(values) -> np.ndarray:
    """float64 copy with missing values (NaN, inf, sentinels) as NaN."""
    v = np.array(values, dtype=np.float64, copy=True)
    v[is_missing(v)] = np.nan
    return v


def display_name(col: str) -> str:
    """'Teff', 'log g', '[Mg/Fe]'; unknown columns as they are."""
    return LABELS.get(col, (col, ""))[0]


def unit(col: str) -> str:
    return LABELS.get(col, ("", ""))[1]


def axis_title(col: str) -> str:
    """Display name with its unit in brackets where it helps: 'Teff [K]', 'log g [dex]',
    '[Fe/H]' (abundance ratios are understood to be dex)."""
    name, u = LABELS.get(col, (col, ""))
    if not u or (u == "dex" and col != "LOGG"):
        return name
    return f"{name} [{u}]"
