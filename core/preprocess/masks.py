"""Bad pixels: which ones not to trust, what to put in their place, and the error floor.

A pixel is *bad* when any bit of the chosen bad set is set in its PIXMASK (see
:data:`core.grid.BAD_BIT_SETS`; astroNN's set by default), or its flux or error is NaN/inf,
or its error is ≤ 0.  Cleaning follows astroNN's convention of filling bad pixels with a flux
of 1.0 (the continuum level of a normalised spectrum) but gives them a *large* error instead
of astroNN's 1.0 or 0.0, so any σ-weighted loss or fit ignores them without special cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..grid import bad_pixels

#: Error given to filled pixels: weight 1/σ² ≈ 1e-4, ≥ 10⁴ times below any real pixel of a
#: normalised spectrum with SNR > 1, and still finite in float16 stores.
LARGE_ERROR = 100.0

#: The APOGEE VAE's floor on spectral σ (= 1/200, "all errors > 1/200").
VAE_ERROR_FLOOR = 0.005


@dataclass
class Cleaned:
    """Arrays after :func:`clean`: filled flux and error, inverse-variance weights, bad mask."""

    flux: np.ndarray
    error: np.ndarray
    weight: np.ndarray
    bad: np.ndarray


def bad_mask(flux, error, pixmask, bad_bits="astronn") -> np.ndarray:
    """True where a pixel is flagged by ``bad_bits``, non-finite, or has error ≤ 0."""
    flux = np.asarray(flux)
    error = np.asarray(error)
    bad = ~np.isfinite(flux) | ~np.isfinite(error) | ~(error > 0)
    if pixmask is not None:
        bad |= bad_pixels(np.asarray(pixmask), bad_bits)
    return bad


def inverse_variance(error, bad: np.ndarray | None = None) -> np.ndarray:
    """Weights 1/σ² (float64), zero at bad pixels."""
    error = np.asarray(error, dtype=np.float64)
    if bad is None:
        bad = ~np.isfinite(error) | ~(error > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = 1.0 / np.square(error)
    return np.where(bad, 0.0, w)


def clean(flux, error, pixmask, bad_bits="astronn", fill: float = 1.0,
          error_fill: float = LARGE_ERROR) -> Cleaned:
    """Copies of flux/error (float32) with bad pixels set to ``fill`` and ``error_fill``.

    Works on one spectrum or a batch (any leading axes).  ``weight`` is 1/σ² of the
    original errors with zeros at the bad pixels.
    """
    flux = np.asarray(flux, dtype=np.float32)
    error = np.asarray(error, dtype=np.float32)
    if flux.shape != error.shape:
        raise ValueError(f"flux {flux.shape} and error {error.shape} differ in shape")
    if pixmask is not None and np.shape(pixmask) != flux.shape:
        raise ValueError(f"pixmask {np.shape(pixmask)} and flux {flux.shape} differ in shape")
    bad = bad_mask(flux, error, pixmask, bad_bits)
    return Cleaned(
        flux=np.where(bad, np.float32(fill), flux),
        error=np.where(bad, np.float32(error_fill), error),
        weight=inverse_variance(error, bad),
        bad=bad,
    )


def apply_error_floor(error, floor: float = VAE_ERROR_FLOOR) -> np.ndarray:
    """σ clipped from below at ``floor`` (NaN stays NaN); the APOGEE VAE uses 0.005."""
    if floor < 0:
        raise ValueError(f"error floor must be ≥ 0, got {floor}")
    error = np.asarray(error)
    out_dtype = error.dtype if error.dtype.kind == "f" else np.float32
    return np.maximum(error, floor).astype(out_dtype, copy=False)
