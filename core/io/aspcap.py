"""aspcapStar reader: ASPCAP's pseudo-continuum-normalised spectrum and best-fit model.

DR17 layout: HDU1 normalised flux, HDU2 its error, HDU3 the best-fit synthetic spectrum,
8575 apStar pixels with zeros in the chip gaps; HDU4 (optional here) a one-row table of
ASPCAP results.  The file has no PIXMASK, so pixels with zero or non-finite flux or error
are marked BADPIX.
"""

from __future__ import annotations

import os

import numpy as np
from astropy.io import fits

from ..errors import BadFileError
from ..grid import APSTAR, APSTAR_NPIX, Grid, get_grid
from ..spectrum import Spectrum
from . import fitsutil as fu
from .apstar import BADPIX, check_apstar_wavelength, flag_unusable
from .naming import apogee_id_from_name, field_from_path, telescope_from_path

_TABLE_META = ("APOGEE_ID", "TELESCOPE", "FIELD", "SNR", "TEFF", "LOGG", "M_H", "ALPHA_M", "VHELIO")


def _source_grid(path, header: fits.Header, npix: int) -> Grid:
    """The grid of the pixels: apStar (checked against CRVAL1/CDELT1) or a gap-removed one."""
    if npix == APSTAR_NPIX:
        if "CRVAL1" in header or "CDELT1" in header:
            check_apstar_wavelength(path, header, npix)
        return APSTAR
    try:
        return get_grid(npix)
    except KeyError:
        raise BadFileError(path, f"spectra have {npix} pixels, which is no APOGEE grid") from None


def _table_meta(hdul: fits.HDUList) -> dict:
    """Scalar values from the ASPCAP results table (HDU4), when the file has one."""
    if len(hdul) < 5 or not isinstance(hdul[4], fits.BinTableHDU):
        return {}
    try:
        data = hdul[4].data
        if data is None or len(data) == 0:
            return {}
        out = {}
        for name in _TABLE_META:
            if name in data.names and np.ndim(data[name][0]) == 0:
                value = data[name][0]
                out[name] = value.strip() if isinstance(value, str) else float(value)
        return {
            k: (np.nan if isinstance(v, float) and v <= fu.SENTINEL_LIMIT else v)
            for k, v in out.items()
        }
    except Exception:  # a damaged optional table must not hide the spectrum
        return {}


def read_aspcapstar(path: str | os.PathLike, grid: str | Grid = "apogee7514") -> Spectrum:
    """Read an aspcapStar → ``Spectrum(normalized=True, model=<ASPCAP best fit>)`` on ``grid``."""
    target = grid if isinstance(grid, Grid) else get_grid(grid)
    with fu.open_fits(path) as hdul:
        header0 = hdul[0].header
        flux = fu.read_image(hdul, 1, path, "normalised flux", ndim=(1,))
        header1 = hdul[1].header
        source = _source_grid(path, header1 if "CRVAL1" in header1 else header0, flux.shape[0])
        error = fu.read_image(hdul, 2, path, "error", ndim=(1,))
        model = fu.read_image(hdul, 3, path, "best-fit model", ndim=(1,))
        fu.check_shape(path, error, flux.shape, "HDU2 (error)")
        fu.check_shape(path, model, flux.shape, "HDU3 (best-fit model)")
        flux, error, model = (fu.native(a, np.float32) for a in (flux, error, model))
        meta = _table_meta(hdul)
        meta.setdefault("APOGEE_ID", fu.header_str(header0, "OBJID", "APOGEE", "APOGEE_ID"))
        meta.setdefault("SNR", fu.header_float(header0, "SNR"))
        meta.setdefault("TELESCOPE", fu.header_str(header0, "TELESCOP", "TELESCOPE"))
        meta.setdefault("FIELD", fu.header_str(header0, "FIELD"))
        meta.setdefault("RA", fu.header_float(header0, "RA"))
        meta.setdefault("DEC", fu.header_float(header0, "DEC"))
    meta["APOGEE_ID"] = meta.get("APOGEE_ID") or apogee_id_from_name(path)
    meta["TELESCOPE"] = meta.get("TELESCOPE") or telescope_from_path(path)
    meta["FIELD"] = meta.get("FIELD") or field_from_path(path)

    on_apstar = [source.to_apstar(a) for a in (flux, error, model)]
    covered = source.to_apstar(np.ones(source.n_pix, dtype=bool), fill=False)
    flux, error, model = (target.from_apstar(a) for a in on_apstar)
    fu.check_values(path, flux, error, what="aspcapStar spectrum")
    mask = flag_unusable(np.zeros(target.n_pix, dtype=np.int64), flux, error, zero_is_bad=True)
    mask = np.where(target.from_apstar(covered), mask, mask | BADPIX)
    meta.update(SOURCE=os.fspath(path), READER="aspcapstar", SOURCE_GRID=source.name)
    return Spectrum(
        wavelength=target.wavelength,
        flux=flux,
        error=error,
        pixmask=mask,
        meta=meta,
        grid=target.name,
        normalized=True,
        model=model,
    )
