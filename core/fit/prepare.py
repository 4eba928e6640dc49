"""Put any :class:`~core.spectrum.Spectrum` on an emulator's grid, normalised, ready to fit.

Accepted: a spectrum on the model's grid; one on another APOGEE grid (apStar 8575, 7514,
7214 — pixels the source lacks come back masked); or one on its own wavelength array (an
apVisit), which is resampled linearly chip by chip, masking pixels that no chip covers.
A spectrum that is not continuum-normalised is then normalised the way
:mod:`core.preprocess.policy` decides for every entry point.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadDataError
from ..grid import APSTAR_NPIX, PIXMASK_VALUE, Grid, apstar_pixel, get_grid
from ..preprocess.masks import LARGE_ERROR
from ..spectrum import Spectrum

#: Written into pixels the source spectrum does not cover.
MISSING_BITS = PIXMASK_VALUE["BADPIX"]


def normalized(spectrum: Spectrum) -> Spectrum:
    """The spectrum itself if normalised, else its copy normalised by the one file policy
    (:func:`core.preprocess.policy.normalise_for_models`); non-positive flux is refused."""
    from ..preprocess.policy import normalise_for_models

    return normalise_for_models(spectrum)


def on_grid(spectrum: Spectrum, grid: Grid | str) -> Spectrum:
    """The spectrum's pixels on ``grid``, continuum-normalised."""
    grid = grid if isinstance(grid, Grid) else get_grid(grid)
    spec = spectrum
    if spec.grid != grid.name:
        if spec.grid is not None:
            flux, error, mask = _between_grids(spec, get_grid(spec.grid), grid)
        else:
            flux, error, mask = _resample(spec, grid)
        meta = {**spec.meta, "RESAMPLED_FROM": spec.grid or "own wavelength array"}
        spec = Spectrum(grid.wavelength, flux, error, mask, meta=meta, grid=grid.name,
                        normalized=spec.normalized)
    return normalized(spec)


def _between_grids(spec: Spectrum, src: Grid, dst: Grid):
    flux = dst.from_apstar(src.to_apstar(spec.flux, fill=np.nan))
    error = dst.from_apstar(src.to_apstar(spec.error, fill=np.inf))
    covered = dst.from_apstar(src.to_apstar(np.ones(src.n_pix, bool), fill=False))
    mask = dst.from_apstar(src.to_apstar(spec.pixmask, fill=0)).astype(np.uint16)
    mask[~covered] |= MISSING_BITS
    return flux, error, mask


def _resample(spec: Spectrum, grid: Grid):
    """Resample a spectrum on its own (vacuum) wavelengths onto ``grid``, chip by chip."""
    from ..io.resample import resample_linear
    from ..preprocess.continuum import chip_slices_from_wavelength

    flux = np.full(APSTAR_NPIX, np.nan)
    error = np.full(APSTAR_NPIX, np.inf)
    mask = np.full(APSTAR_NPIX, MISSING_BITS, np.int64)
    for sl in chip_slices_from_wavelength(spec.wavelength):
        lam = spec.wavelength[sl]
        order = np.argsort(lam)
        pos = apstar_pixel(lam[order])
        if pos.size < 2 or not np.all(np.diff(pos) > 0):
            raise BadDataError(f"{spec.label}: wavelengths within a chip are not distinct")
        res = resample_linear(pos, spec.flux[sl][order], spec.error[sl][order],
                              spec.pixmask[sl][order], APSTAR_NPIX)
        flux = np.where(res.covered, res.flux, flux)
        error = np.where(res.covered, res.error, error)
        mask = np.where(res.covered, res.pixmask, mask)
    return grid.from_apstar(flux), grid.from_apstar(error), grid.from_apstar(mask).astype(np.uint16)


def fit_arrays_of(spectrum: Spectrum, grid: Grid, bad_bits="astronn",
                  extra_mask: np.ndarray | None = None):
    """(flux, error, good) on ``grid`` with clear errors for unusable spectra.

    ``extra_mask`` (True = exclude) is a user mask on the grid's pixels.
    """
    spec = on_grid(spectrum, grid)
    # pixels filled by normalisation (1 ± LARGE_ERROR) carry no data
    good = spec.good(bad_bits) & (spec.error < LARGE_ERROR)
    if extra_mask is not None:
        extra_mask = np.asarray(extra_mask, bool)
        if extra_mask.shape != good.shape:
            raise BadDataError(
                f"{spec.label}: user mask has {extra_mask.shape} pixels, the model grid "
                f"{grid.name} has {good.shape}"
            )
        good &= ~extra_mask
    if not np.isfinite(spec.flux).any():
        raise BadDataError(f"{spec.label}: the flux is NaN or inf at every pixel")
    if not good.any():
        raise BadDataError(f"{spec.label}: every pixel is masked, NaN/inf, has no error or "
                           f"was filled by normalisation")
    flux = np.where(good, spec.flux, 1.0).astype(np.float32)
    error = np.where(good, spec.error, 1.0).astype(np.float32)
    return spec, flux, error, good
