"""Linear resampling of a spectrum with error and PIXMASK propagation.

Positions are given in units of target pixels (for APOGEE: fractional apStar pixel
index, which is linear in log λ), so "linear in pixel" means "linear in log λ".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..grid import PIXMASK_VALUE

BADPIX = PIXMASK_VALUE["BADPIX"]


@dataclass
class Resampled:
    """Arrays on the target pixels; ``covered`` is False where no source sample brackets a pixel."""

    flux: np.ndarray
    error: np.ndarray
    pixmask: np.ndarray
    covered: np.ndarray


def resample_linear(
    position: np.ndarray,
    flux: np.ndarray,
    error: np.ndarray,
    pixmask: np.ndarray,
    n_out: int,
) -> Resampled:
    """Interpolate samples at strictly increasing ``position`` onto pixels 0 … n_out-1.

    Each output pixel is w0·f[i] + w1·f[i+1] over the two bracketing samples; its variance
    is w0²σ[i]² + w1²σ[i+1]² and its mask the OR of both neighbours' bits.  Source samples
    with non-finite flux or error count as flux 0, error ∞ and BADPIX, so they taint (and
    flag) the output pixels they touch.  Uncovered pixels get flux 0, error ∞ and BADPIX.
    """
    x = np.asarray(position, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    m = np.asarray(pixmask, dtype=np.int64)
    if x.ndim != 1 or not (x.shape == f.shape == e.shape == m.shape):
        raise ValueError(
            f"position/flux/error/pixmask shapes differ: {x.shape} {f.shape} {e.shape} {m.shape}"
        )
    if x.size < 2 or not np.all(np.diff(x) > 0):
        raise ValueError("positions must be at least two strictly increasing values")

    unusable = ~np.isfinite(f) | ~np.isfinite(e)
    f = np.where(unusable, 0.0, f)
    e = np.where(unusable, np.inf, e)
    m = np.where(unusable, m | BADPIX, m)

    out_f = np.zeros(n_out)
    out_e = np.full(n_out, np.inf)
    out_m = np.full(n_out, BADPIX, dtype=np.int64)
    pix = np.arange(n_out, dtype=np.float64)
    covered = (pix >= x[0]) & (pix <= x[-1])
    p = pix[covered]
    i = np.clip(np.searchsorted(x, p, side="right") - 1, 0, x.size - 2)
    w1 = (p - x[i]) / (x[i + 1] - x[i])
    w0 = 1.0 - w1
    out_f[covered] = w0 * f[i] + w1 * f[i + 1]
    # A zero weight must not turn an infinite neighbour error into NaN (0·∞).
    var0 = np.where(w0 > 0, w0**2 * e[i] ** 2, 0.0)
    var1 = np.where(w1 > 0, w1**2 * e[i + 1] ** 2, 0.0)
    out_e[covered] = np.sqrt(var0 + var1)
    out_m[covered] = np.where(w0 > 0, m[i], 0) | np.where(w1 > 0, m[i + 1], 0)
    return Resampled(out_f, out_e, out_m, covered)
