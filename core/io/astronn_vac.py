"""astroNN value-added catalog reader: the published table as a DataFrame, names unchanged.

The VAC holds APOGEE_ID, TELESCOPE, FIELD/LOCATION_ID, astroNN's TEFF, LOGG and [X/H]
abundances (C_H … NI_H) with their _ERR columns, plus distances, ages and orbits.
"""

from __future__ import annotations

import os

import pandas as pd

from ..errors import BadFileError
from . import fitsutil as fu
from .tables import frame_from_table


def read_astronn_vac(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Every 1-D column (or ``columns``) of the VAC's first table; strings stripped, -9999 → NaN.

    Multi-dimensional columns cannot live in a DataFrame and are listed in
    ``df.attrs["skipped_columns"]``.
    """
    with fu.open_fits(path) as hdul:
        index, hdu = fu.first_table(hdul, path, "astroNN VAC")
        data = fu.table_data(hdu, index, path)
        if "APOGEE_ID" not in data.names:
            raise BadFileError(path, f"HDU{index} has no APOGEE_ID column: not an astroNN VAC")
        if columns is not None:
            absent = [c for c in columns if c not in data.names]
            if absent:
                raise BadFileError(path, f"has no column(s) {', '.join(absent)}")
        try:
            frame, skipped = frame_from_table(data, columns)
        except BadFileError:
            raise
        except Exception as exc:  # a damaged table body
            raise BadFileError(
                path, f"table cannot be read ({type(exc).__name__}: {exc})"
            ) from None
    frame.attrs.update(skipped_columns=skipped, source=os.fspath(path))
    return frame
