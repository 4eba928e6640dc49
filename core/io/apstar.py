"""apStar / asStar reader: a star's combined (or one visit's) spectrum on the apStar grid.

Layout (SDSS DR13-DR17): HDU1 flux, HDU2 error, HDU3 PIXMASK, each 8575 pixels on the
log-linear apStar grid.  Multi-visit stars store rows [pixel-weighted combined, globally
weighted combined, visit 1, visit 2, …].  A single-visit star stores a 1-D array (older
releases), one row, or (DR17) two rows of which the second may be all zero; its spectrum is
then row 0, and an empty row is never used.
"""

from __future__ import annotations

import math
import os

import numpy as np
from astropy.io import fits

from ..errors import BadFileError
from ..grid import APSTAR_CDELT1, APSTAR_CRVAL1, APSTAR_NPIX, PIXMASK_VALUE, Grid, get_grid
from ..spectrum import Spectrum
from . import fitsutil as fu
from .naming import apogee_id_from_name, field_from_path, telescope_from_path

#: Row of a 2-D apStar holding the globally weighted combination (astroNN / The Payne use it).
GLOBAL_WEIGHTED_ROW = 1
FIRST_VISIT_ROW = 2
BADPIX = PIXMASK_VALUE["BADPIX"]


def check_apstar_wavelength(path, header: fits.Header, npix: int) -> None:
    """BadFileError unless the header's CRVAL1/CDELT1 and ``npix`` describe the apStar grid."""
    crval = fu.header_float(header, "CRVAL1")
    cdelt = fu.header_float(header, "CDELT1")
    if math.isnan(crval) or math.isnan(cdelt):
        raise BadFileError(path, "no CRVAL1/CDELT1 wavelength keywords: cannot place the pixels")
    if abs(crval - APSTAR_CRVAL1) > 1e-9 or abs(cdelt - APSTAR_CDELT1) > 1e-12:
        raise BadFileError(
            path,
            f"wavelength grid CRVAL1={crval}, CDELT1={cdelt} is not the apStar grid "
            f"(CRVAL1={APSTAR_CRVAL1}, CDELT1={APSTAR_CDELT1})",
        )
    crpix = fu.header_float(header, "CRPIX1", default=1.0)
    if crpix != 1.0:
        raise BadFileError(path, f"CRPIX1={crpix}: the apStar grid starts at pixel 1")
    if npix != APSTAR_NPIX:
        raise BadFileError(path, f"spectra have {npix} pixels, the apStar grid has {APSTAR_NPIX}")


def flag_unusable(
    pixmask: np.ndarray, flux: np.ndarray, error: np.ndarray, zero_is_bad: bool = False
) -> np.ndarray:
    """PIXMASK with BADPIX added where flux or error is non-finite (or zero, when asked)."""
    bad = ~np.isfinite(flux) | ~np.isfinite(error)
    if zero_is_bad:
        bad |= (flux == 0) | (error == 0)
    return np.where(bad, pixmask | BADPIX, pixmask)


def on_grid_spectrum(target: Grid, flux, error, mask, meta: dict) -> Spectrum:
    """An un-normalised spectrum on ``target``'s pixels, non-finite pixels flagged BADPIX."""
    return Spectrum(wavelength=target.wavelength, flux=flux, error=error,
                    pixmask=flag_unusable(mask, flux, error), meta=meta, grid=target.name,
                    normalized=False)


def _usable(row: np.ndarray) -> bool:
    """True when a row holds at least one finite, non-zero flux value."""
    finite = np.isfinite(row)
    return bool(finite.any() and np.any(row[finite] != 0))


def _pick_row(
    path, flux_all: np.ndarray, visit: int | None
) -> tuple[int | None, str, int, str]:
    """(row index or None for 1-D, description, visits stored in the file, note)."""
    shape = flux_all.shape
    if len(shape) == 1 or shape[0] <= 2:
        if visit not in (None, 0):
            raise BadFileError(path, f"holds a single visit; visit={visit} does not exist (use 0)")
        if len(shape) == 1:
            return None, "single visit", 1, "1-D file: its one spectrum"
        if shape[0] == 1:
            return 0, "single visit", 1, "one row: its one spectrum"
        # DR17 writes a single visit as two rows, the second often all zero: take row 0
        # (the visit itself); row 1 only when row 0 is the empty one.
        if not _usable(flux_all[0]) and _usable(flux_all[1]):
            return 1, "single visit", 1, "two rows, row 0 empty: row 1"
        empty = "" if _usable(flux_all[1]) else ", row 1 all zero"
        return 0, "single visit", 1, f"two rows (DR17 single visit{empty}): row 0"
    n_visits = shape[0] - FIRST_VISIT_ROW
    if visit is None:
        if _usable(flux_all[GLOBAL_WEIGHTED_ROW]):
            return (GLOBAL_WEIGHTED_ROW, "combined (global weighting)", n_visits,
                    "combined rows 0 (pixel-weighted) and 1 (globally weighted): row 1, "
                    "the combination astroNN and The Payne use")
        if _usable(flux_all[0]):
            return (0, "combined (pixel weighting)", n_visits,
                    "row 1 (globally weighted) is empty: row 0 (pixel-weighted combination)")
        if any(_usable(flux_all[FIRST_VISIT_ROW + k]) for k in range(n_visits)):
            raise BadFileError(
                path,
                "both combined rows (0 and 1) hold no flux; read one visit instead "
                f"(visit=0..{n_visits - 1})",
            )
        return GLOBAL_WEIGHTED_ROW, "combined (global weighting)", n_visits, "every row is empty"
    if not 0 <= visit < n_visits:
        raise BadFileError(
            path,
            f"holds {n_visits} visits (0-based 0..{n_visits - 1}); visit={visit} does not exist",
        )
    return FIRST_VISIT_ROW + visit, f"visit {visit}", n_visits, f"visit {visit}: row {2 + visit}"


def _header_meta(path, header: fits.Header, visit: int | None) -> dict:
    meta = {
        "APOGEE_ID": fu.header_str(header, "OBJID", "APOGEE", "APOGEE_ID")
        or apogee_id_from_name(path),
        "SNR": fu.header_float(header, "SNR"),
        "TELESCOPE": fu.header_str(header, "TELESCOP", "TELESCOPE") or telescope_from_path(path),
        "FIELD": fu.header_str(header, "FIELD") or field_from_path(path),
        "RA": fu.header_float(header, "RA"),
        "DEC": fu.header_float(header, "DEC"),
        "VHELIO": fu.header_float(header, "VHELIO"),
        "VSCATTER": fu.header_float(header, "VSCATTER"),
        "NVISITS": fu.header_int(header, "NVISITS"),
        "STARFLAG": fu.header_int(header, "STARFLAG"),
    }
    if visit is not None:
        n = visit + 1  # visit keywords are 1-based
        meta["SNR"] = fu.header_float(header, f"SNRVIS{n}", "SNR")
        meta["VHELIO"] = fu.header_float(header, f"VHELIO{n}", "VHELIO")
        meta["VRAD"] = fu.header_float(header, f"VRAD{n}")
        meta["VISIT_FILE"] = fu.header_str(header, f"SFILE{n}")
        meta["JD"] = fu.header_float(header, f"JD{n}")
        meta["STARFLAG"] = fu.header_int(header, f"FLAG{n}", "STARFLAG")
    return meta


def read_apstar(
    path: str | os.PathLike, visit: int | None = None, grid: str | Grid = "apogee7514"
) -> Spectrum:
    """Read an apStar file.

    ``visit=None`` gives the globally weighted combined spectrum of a multi-visit file (row 1;
    row 0, the pixel-weighted one, when row 1 is empty) and the one spectrum of a single-visit
    file (1-D, or row 0 of DR17's two rows); ``visit=k`` gives visit k (0-based, row 2+k).
    ``meta["ROW_KIND"]`` and ``meta["ROW_NOTE"]`` say which row was read and why.  The result is on ``grid``
    (default the 7514-pixel gap-removed grid; ``"apstar8575"`` keeps every pixel), with
    ``normalized=False``.  Non-finite flux/error pixels get the BADPIX bit.
    """
    target = grid if isinstance(grid, Grid) else get_grid(grid)
    with fu.open_fits(path) as hdul:
        header0 = hdul[0].header
        flux_all = fu.read_image(hdul, 1, path, "flux")
        wcs_header = hdul[1].header if "CRVAL1" in hdul[1].header else header0
        check_apstar_wavelength(path, wcs_header, flux_all.shape[-1])
        err_all = fu.read_image(hdul, 2, path, "error")
        mask_all = fu.read_image(hdul, 3, path, "PIXMASK")
        fu.check_shape(path, err_all, flux_all.shape, "HDU2 (error)")
        fu.check_shape(path, mask_all, flux_all.shape, "HDU3 (PIXMASK)")
        fu.check_integer(path, mask_all, "HDU3 (PIXMASK)")
        row, row_kind, n_visits, row_note = _pick_row(path, flux_all, visit)
        take = slice(None) if row is None else row
        flux = target.from_apstar(fu.native(flux_all[take], np.float32))
        error = target.from_apstar(fu.native(err_all[take], np.float32))
        mask = target.from_apstar(fu.native(mask_all[take], np.int64))
        mask_row = row
        if row == GLOBAL_WEIGHTED_ROW and row_kind.startswith("combined") and not mask.any():
            # DR17 files leave the globally weighted row's PIXMASK empty; the pixel-weighted
            # row 0 carries the combined bits for the same pixels, so use those.
            mask = target.from_apstar(fu.native(mask_all[0], np.int64))
            mask_row = 0
        is_visit_row = row is not None and row >= FIRST_VISIT_ROW
        meta = _header_meta(path, header0, visit if is_visit_row else None)
    fu.check_values(path, flux, error, what=row_kind)
    if mask.min(initial=0) < 0:
        raise BadFileError(path, "HDU3 (PIXMASK) holds negative values")
    meta.update(
        SOURCE=os.fspath(path),
        READER="apstar",
        ROW=row,
        ROW_KIND=row_kind,
        ROW_NOTE=row_note,
        PIXMASK_ROW=mask_row,
        VISITS_IN_FILE=n_visits,
    )
    if meta["NVISITS"] is None:
        meta["NVISITS"] = n_visits
    return on_grid_spectrum(target, flux, error, mask, meta)
