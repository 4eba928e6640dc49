"""apVisit / asVisit reader: one visit's spectrum, observed frame, three detector chips.

Layout: HDU1 flux, HDU2 error, HDU3 PIXMASK (int16), HDU4 vacuum wavelength (float64) per
pixel, each (3 chips, 4096 pixels).  Real files store the chips red → blue with wavelength
decreasing along each row; this reader always returns pixels blue → red.

``frame="rest"`` shifts to the star's rest frame with the header's radial velocity and
resamples onto the apStar grid (then the requested grid) with linear interpolation in
log λ; ``frame="observed"`` returns the concatenated, wavelength-sorted raw pixels.
"""

from __future__ import annotations

import math
import os

import numpy as np
from astropy.io import fits

from ..errors import BadFileError
from ..grid import APSTAR_NPIX, Grid, apstar_pixel, doppler_factor, get_grid
from ..spectrum import Spectrum
from . import fitsutil as fu
from .apstar import flag_unusable, on_grid_spectrum
from .naming import apogee_id_from_name
from .resample import BADPIX, resample_linear

FRAMES = ("rest", "observed")
#: Larger |RV| than any star in the Galaxy: a header value beyond it is corrupt.
MAX_RV_KMS = 5000.0


def _visit_table(hdul: fits.HDUList) -> dict:
    """Scalars from the visit's one-row table (HDU11 in DR17), when present and readable."""
    for hdu in hdul[1:]:
        if not isinstance(hdu, fits.BinTableHDU):
            continue
        try:
            data = hdu.data
            if data is None or len(data) == 0 or "APOGEE_ID" not in data.names:
                continue
            row = {}
            for name in data.names:
                value = data[name][0]
                if np.ndim(value) == 0:
                    row[name] = value.strip() if isinstance(value, str) else value
            return row
        except Exception:  # an unreadable optional table leaves the header as the only source
            return {}
    return {}


def _table_float(table: dict, key: str) -> float:
    try:
        value = float(table[key])
    except (KeyError, TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) and value > fu.SENTINEL_LIMIT else math.nan


def radial_velocity(header: fits.Header, table: dict) -> tuple[float, str] | None:
    """(RV in km/s, where it came from) of the visit's spectrum as observed, or None.

    apVisit wavelengths are not barycentric-corrected, so the shift to undo is VRAD
    (= VHELIO − BC).  Fallbacks: the table's VREL, then VHELIO − BC, then VHELIO alone
    (off by the barycentric correction, at most ~30 km/s).
    """
    for key in ("VRAD", "VREL"):
        value = fu.header_float(header, key)
        if not math.isnan(value):
            return value, key
    value = _table_float(table, "VREL")
    if not math.isnan(value):
        return value, "table VREL"
    vhelio = fu.header_float(header, "VHELIO")
    if math.isnan(vhelio):
        vhelio = _table_float(table, "VHELIO")
    bc = fu.header_float(header, "BC")
    if math.isnan(bc):
        bc = _table_float(table, "BC")
    if not math.isnan(vhelio):
        if not math.isnan(bc):
            return vhelio - bc, "VHELIO-BC"
        return vhelio, "VHELIO (no BC in file; barycentric correction not removed)"
    return None


def _load_chips(path, hdul: fits.HDUList):
    flux = fu.read_image(hdul, 1, path, "flux", ndim=(2,))
    shape = flux.shape
    error = fu.read_image(hdul, 2, path, "error", ndim=(2,))
    mask = fu.read_image(hdul, 3, path, "PIXMASK", ndim=(2,))
    wave = fu.read_image(hdul, 4, path, "wavelength", ndim=(2,))
    fu.check_shape(path, error, shape, "HDU2 (error)")
    fu.check_shape(path, mask, shape, "HDU3 (PIXMASK)")
    fu.check_shape(path, wave, shape, "HDU4 (wavelength)")
    if shape[1] < 2:
        raise BadFileError(path, f"HDU1 (flux) has shape {shape}: too few pixels per chip")
    fu.check_integer(path, mask, "HDU3 (PIXMASK)")
    mask = fu.native(mask)
    # int16 masks carry bit 15 as the sign; reinterpret as unsigned bits.
    mask = mask.astype(np.int64) & (0xFFFF if mask.dtype.itemsize <= 2 else 0x7FFFFFFFFFFFFFFF)
    return (
        fu.native(wave, np.float64),
        fu.native(flux, np.float32),
        fu.native(error, np.float32),
        mask,
    )


def _blue_to_red(path, wave, flux, error, mask):
    """Chips as (wave, flux, error, mask) with wavelength increasing, ordered blue → red,
    and a note of how the file stored them."""
    if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise BadFileError(path, "HDU4 (wavelength) holds non-finite or non-positive values")
    chips = []
    for k in range(wave.shape[0]):
        step = np.diff(wave[k])
        if np.all(step < 0):
            flip = slice(None, None, -1)
        elif np.all(step > 0):
            flip = slice(None)
        else:
            raise BadFileError(path, f"HDU4 (wavelength) of chip {k} is not monotonic")
        chips.append(tuple(a[k][flip] for a in (wave, flux, error, mask)))
    chips.sort(key=lambda c: c[0][0])
    for blue, red in zip(chips[:-1], chips[1:], strict=True):
        if blue[0][-1] >= red[0][0]:
            raise BadFileError(path, "HDU4 (wavelength): the chips' wavelength ranges overlap")
    order = "red to blue" if wave[0].mean() > wave[-1].mean() else "blue to red"
    direction = "descending" if wave[0, 0] > wave[0, -1] else "ascending"
    return chips, f"{order}, {direction}"


def _header_meta(path, header: fits.Header, table: dict) -> dict:
    return {
        "APOGEE_ID": fu.header_str(header, "OBJID", "APOGEE_ID")
        or (str(table["APOGEE_ID"]) if table.get("APOGEE_ID") else None)
        or apogee_id_from_name(path),
        "SNR": fu.header_float(header, "SNR"),
        "TELESCOPE": fu.header_str(header, "TELESCOP", "TELESCOPE")
        or table.get("TELESCOPE")
        or None,
        "FIELD": fu.header_str(header, "FIELD") or table.get("FIELD") or None,
        "RA": fu.header_float(header, "RA"),
        "DEC": fu.header_float(header, "DEC"),
        "PLATE": fu.header_str(header, "PLATE"),
        "MJD": fu.header_int(header, "MJD5", "MJD"),
        "FIBERID": fu.header_int(header, "FIBERID"),
        "VRAD": fu.header_float(header, "VRAD"),
        "VHELIO": fu.header_float(header, "VHELIO"),
        "BC": fu.header_float(header, "BC"),
        "STARFLAG": fu.header_int(header, "STARFLAG"),
    }


def read_apvisit(
    path: str | os.PathLike,
    grid: str | Grid | None = "apogee7514",
    frame: str = "rest",
    rv: float | None = None,
) -> Spectrum:
    """Read an apVisit file.

    ``frame="rest"``: shift by the radial velocity (``rv`` if given, else the header's,
    see :func:`radial_velocity`; ``meta["RV_SOURCE"]`` says which) and resample onto
    ``grid``; pixels the visit does not cover get flux 0, error ∞ and BADPIX.
    ``frame="observed"``: the raw pixels blue → red with their own wavelengths, grid None.
    """
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    with fu.open_fits(path) as hdul:
        header = hdul[0].header
        raw = _load_chips(path, hdul)
        table = _visit_table(hdul)
    chips, stored_order = _blue_to_red(path, *raw)
    fu.check_values(path, raw[1], raw[2], what="apVisit spectrum")
    meta = _header_meta(path, header, table)
    meta.update(
        SOURCE=os.fspath(path),
        READER="apvisit",
        FRAME=frame,
        N_CHIPS=len(chips),
        CHIP_ORDER_IN_FILE=stored_order,
    )
    if frame == "observed":
        wave, flux, error, mask = (np.concatenate([c[j] for c in chips]) for j in range(4))
        return Spectrum(wave, flux, error, flag_unusable(mask, flux, error), meta, grid=None)

    target = grid if isinstance(grid, Grid) else get_grid(grid or "apogee7514")
    found = (float(rv), "argument") if rv is not None else radial_velocity(header, table)
    if found is None:
        raise BadFileError(
            path,
            "no radial velocity (VRAD, VREL, VHELIO) to shift to the rest frame; "
            "use frame='observed' or pass rv=",
        )
    velocity, source = found
    if not abs(velocity) < MAX_RV_KMS:
        raise BadFileError(path, f"radial velocity {velocity} km/s ({source}) is not plausible")
    factor = float(doppler_factor(velocity))
    flux8575 = np.zeros(APSTAR_NPIX)
    err8575 = np.full(APSTAR_NPIX, np.inf)
    mask8575 = np.full(APSTAR_NPIX, BADPIX, dtype=np.int64)
    covered = np.zeros(APSTAR_NPIX, dtype=bool)
    for wave, flux, error, mask in chips:
        res = resample_linear(apstar_pixel(wave / factor), flux, error, mask, APSTAR_NPIX)
        flux8575 = np.where(res.covered, res.flux, flux8575)
        err8575 = np.where(res.covered, res.error, err8575)
        mask8575 = np.where(res.covered, res.pixmask, mask8575)
        covered |= res.covered
    on_grid = target.from_apstar(covered)
    if not on_grid.any():
        raise BadFileError(
            path, f"no pixel of the visit falls on the {target.name} grid after the RV shift"
        )
    flux, error, mask = (target.from_apstar(a) for a in (flux8575, err8575, mask8575))
    fu.check_values(path, flux[on_grid], error[on_grid], what="apVisit spectrum on the grid")
    meta.update(RV_USED=velocity, RV_SOURCE=source, COVERED_FRACTION=float(on_grid.mean()))
    return on_grid_spectrum(target, flux, error, mask, meta)
