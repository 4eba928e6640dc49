"""Per-chip continuum normalisation of APOGEE spectra (one spectrum or a batch).

On each detector chip a weighted Chebyshev polynomial (degree 2 by default, as astroNN)
is fitted to the flux, and flux and error are divided by it.  The abscissa is the pixel
index within the chip rescaled to [-1, 1]; the weights are 1/σ² with 0 at bad pixels.
Which pixels the fit uses:

``method="mask"``
    a fixed set of continuum pixels: the project's mask in ``assets/continuum`` (see
    :mod:`core.preprocess.contmask`) or the boolean ``mask`` given.
``method="clip"``
    no mask: start from every good pixel and iterate fit → reject.  Rejection is
    asymmetric because absorption lines only pull the flux *down*: pixels more than
    ``lower`` times their own error below the fit, or ``upper`` times the robust
    (1.4826·MAD) scatter of the kept residuals above it, are dropped (see
    :func:`fit_chip_clipped`).  This finds the upper envelope of the flux, i.e. the true
    continuum of synthetic spectra even when lines cover most pixels; on cool,
    line-blanketed giants it sits a few per cent above the pseudo-continuum of a mask.

Conventions (astroNN's ``apogee_continuum``, with one deliberate difference):
astroNN fits on the raw pixel index with weights 1/(σ² + 1e-8); here the index is rescaled
to [-1, 1] (same polynomial space, better conditioned).  After dividing, negative flux is
set to 0 (``clip_negative``), and pixels that are flagged (``bad_bits``), NaN/inf, outside
every chip, or whose chip fit failed get flux 1.0 — as astroNN — but error
:data:`~core.preprocess.masks.LARGE_ERROR` where astroNN writes 0 or 1, so that
σ-weighted losses ignore them.  PIXMASK is never changed: it still says which pixels were
filled.  A spectrum whose flux is mostly non-positive (:func:`flux_problem`) is refused:
:func:`normalize` raises, :func:`normalize_arrays` reports it in ``problem`` with no chip fit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.polynomial import chebyshev

from ..errors import BadDataError
from ..grid import APOGEE_7514, Grid, get_grid
from ..spectrum import Spectrum
from .masks import LARGE_ERROR, bad_mask, inverse_variance

DEFAULT_DEGREE = 2
#: Asymmetric clipping defaults: reject lines (below) harder than noise spikes (above).
CLIP_LOWER = 2.0
CLIP_UPPER = 3.0
CLIP_ITERATIONS = 20
METHODS = ("mask", "clip")

#: Detector chips in apStar pixels: the chips of the 7514 grid, which every APOGEE grid
#: lies inside, so the same physical chip is fitted whatever the grid.
DETECTOR_CHIPS_APSTAR: tuple[tuple[int, int], ...] = APOGEE_7514.chips


class Normalized(NamedTuple):
    """Result of :func:`normalize_arrays`; arrays have the input's shape."""

    flux: np.ndarray  #: normalised flux (float32), bad pixels 1.0
    error: np.ndarray  #: normalised error (float32), bad pixels LARGE_ERROR
    continuum: np.ndarray  #: the fitted continuum (float32), NaN where no fit
    fit_ok: np.ndarray  #: (N, n_chips) bool: the chip had enough pixels for a fit
    #: (N,) why a spectrum was refused ("" when it was not); refused rows have no chip fit
    problem: np.ndarray | None = None


def flux_problems(flux, good) -> np.ndarray:
    """Why each spectrum (row of ``flux``) cannot be a star's spectrum; "" where it can.

    A continuum fit through non-positive flux gives a non-positive continuum, and dividing
    by it used to leave every pixel filled (1 ± LARGE_ERROR) — a spectrum of no data that
    fits anything perfectly.  So a median flux ≤ 0 over the good pixels (at least half of
    them zero or negative) is refused.  Rows with no good pixel pass: callers say that in
    their own words.
    """
    f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    good = np.atleast_2d(np.asarray(good, bool))
    n_good = good.sum(axis=1)
    median = _row_nanmedian(np.where(good, f, np.nan))[:, 0]
    negative = (good & (f < 0)).sum(axis=1) / np.maximum(n_good, 1)
    out = np.full(f.shape[0], "", dtype=object)
    for i in np.flatnonzero((n_good > 0) & (median <= 0)):
        out[i] = (f"the median flux of its {n_good[i]} good pixels is {median[i]:.3g} (≤ 0; "
                  f"{negative[i]:.0%} of them negative): not a star's spectrum that can be "
                  f"continuum-normalised (sky-subtracted to nothing, or the wrong HDU?)")
    return out


def flux_problem(flux, good) -> str:
    """:func:`flux_problems` of one spectrum."""
    return str(flux_problems(flux, good)[0])


def chip_slices(grid: Grid | str) -> list[slice]:
    """Slices of a grid's pixels, one per detector chip (gap pixels of apStar fall outside)."""
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    out = []
    for a, b in DETECTOR_CHIPS_APSTAR:
        lo, hi = np.searchsorted(g.index, [a, b])
        if hi > lo:
            out.append(slice(int(lo), int(hi)))
    return out


def chip_slices_from_wavelength(wavelength: np.ndarray) -> list[slice]:
    """Chips of an arbitrary wavelength array (e.g. an apVisit's 3×4096 pixels).

    A new chip starts where the wavelength step changes sign or jumps to more than five
    times the median step.
    """
    wl = np.asarray(wavelength, dtype=np.float64)
    if wl.size < 2:
        return [slice(0, wl.size)]
    step = np.diff(wl)
    med = np.median(np.abs(step))
    sign = np.sign(np.median(step))
    breaks = np.nonzero((np.sign(step) != sign) | (np.abs(step) > 5 * med))[0] + 1
    edges = np.concatenate([[0], breaks, [wl.size]])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _chebyshev_basis(n: int, degree: int) -> np.ndarray:
    """(n, degree+1) Chebyshev design matrix on n pixels spread over [-1, 1]."""
    x = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    return chebyshev.chebvander(x, degree)


def fit_chip(flux: np.ndarray, weight: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares Chebyshev fit of each row of one chip.

    ``flux`` and ``weight`` are (N, n); returns the continuum (N, n; NaN where no fit)
    and a (N,) flag that is False for rows with fewer usable pixels than coefficients.
    """
    n_rows, n = flux.shape
    m = degree + 1
    basis = _chebyshev_basis(n, degree)
    w = np.where(np.isfinite(flux), weight, 0.0)
    # Scale each row's weights to max 1: the solution does not change, the conditioning does.
    wmax = w.max(axis=1, keepdims=True)
    w = np.divide(w, wmax, out=np.zeros_like(w), where=wmax > 0)
    f = np.where(w > 0, flux, 0.0)
    # Normal equations as two matrix products (BLAS) instead of a per-row loop.
    outer = (basis[:, :, None] * basis[:, None, :]).reshape(n, m * m)
    normal = (w @ outer).reshape(n_rows, m, m)
    rhs = (w * f) @ basis
    ok = (np.count_nonzero(w > 0, axis=1) > degree) & (np.linalg.cond(normal) < 1e12)
    normal[~ok] = np.eye(m)
    rhs[~ok] = 0.0
    coef = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0]
    cont = coef @ basis.T
    cont[~ok] = np.nan
    return cont, ok


def _row_nanmedian(a: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN, shape (N, 1); NaN for rows with no value.

    Sorting whole rows is vectorised, unlike ``np.nanmedian`` along an axis of a large array.
    """
    s = np.sort(a, axis=1)  # NaN sorts last
    k = np.count_nonzero(~np.isnan(a), axis=1)
    lo = np.clip((k - 1) // 2, 0, a.shape[1] - 1)
    hi = np.clip(k // 2, 0, a.shape[1] - 1)
    rows = np.arange(a.shape[0])
    med = 0.5 * (s[rows, lo] + s[rows, hi])
    return np.where(k > 0, med, np.nan)[:, None]


def _robust_sigma(resid: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """1.4826·MAD of each row's residuals over the kept pixels, shape (N, 1)."""
    r = np.where(keep, resid, np.nan)
    med = _row_nanmedian(r)
    return 1.4826 * _row_nanmedian(np.abs(r - med))


def fit_chip_clipped(flux: np.ndarray, weight: np.ndarray, degree: int, lower: float,
                     upper: float, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_chip` with iterative asymmetric clipping of the pixels used.

    The lower cut is in units of each pixel's own error (1/√weight): an absorption line is
    a *significant* dip, and measuring it against the noise lets the fit climb out of
    line-blanketed regions, where a scatter-based σ would be inflated by the lines
    themselves.  The upper cut is in units of the robust scatter of the kept residuals, so
    only real outliers (sky-line residuals, cosmic rays) go, never the continuum the fit
    is climbing towards.
    """
    keep = weight > 0
    cont, ok = fit_chip(flux, weight, degree)
    with np.errstate(divide="ignore"):
        sigma_pix = 1.0 / np.sqrt(weight)
    for _ in range(iterations):
        with np.errstate(all="ignore"):
            resid = flux / cont - 1.0
            below = (flux - cont) / sigma_pix
            above = resid / _robust_sigma(resid, keep)
        new_keep = (weight > 0) & (below > -lower) & ~(above > upper)
        new_keep[~ok] = keep[~ok]
        if np.array_equal(new_keep, keep):
            break
        new_cont, new_ok = fit_chip(flux, np.where(new_keep, weight, 0.0), degree)
        # A row clipped down to too few pixels keeps its previous fit and pixels.
        lost = ok & ~new_ok
        new_cont[lost], new_ok[lost], new_keep[lost] = cont[lost], True, keep[lost]
        cont, ok, keep = new_cont, new_ok, new_keep
    return cont, ok


def normalize_arrays(flux, error, pixmask, grid: Grid | str | None = None, *,
                     method: str = "mask", degree: int = DEFAULT_DEGREE,
                     mask: np.ndarray | None = None, bad_bits="astronn",
                     lower: float = CLIP_LOWER, upper: float = CLIP_UPPER,
                     iterations: int = CLIP_ITERATIONS, clip_negative: bool = True,
                     chips: list[slice] | None = None) -> Normalized:
    """Continuum-normalise spectra (N×P, or one P-vector) on an APOGEE grid.

    ``grid`` fixes the chips and the default continuum mask; pass ``chips`` instead for an
    arbitrary wavelength array (``method="clip"`` only, unless ``mask`` is given).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if degree < 0:
        raise ValueError(f"degree must be ≥ 0, got {degree}")
    flux = np.asarray(flux, dtype=np.float64)
    one = flux.ndim == 1
    flux = np.atleast_2d(flux)
    error = np.atleast_2d(np.asarray(error, dtype=np.float64))
    pm = None if pixmask is None else np.atleast_2d(np.asarray(pixmask))
    if error.shape != flux.shape or (pm is not None and pm.shape != flux.shape):
        raise BadDataError(
            f"flux {flux.shape}, error {error.shape} and pixmask "
            f"{None if pm is None else pm.shape} must have the same shape"
        )
    n_pix = flux.shape[1]
    g = None if grid is None else (grid if isinstance(grid, Grid) else get_grid(grid))
    if g is not None and g.n_pix != n_pix:
        raise BadDataError(f"grid {g.name} has {g.n_pix} pixels, the spectra have {n_pix}")
    if chips is None:
        if g is None:
            raise BadDataError("normalize_arrays needs a grid or explicit chips")
        chips = chip_slices(g)
    if method == "mask":
        if mask is None:
            if g is None:
                raise BadDataError(
                    "the shipped continuum mask needs an APOGEE grid; use method='clip' for "
                    "spectra on their own wavelengths"
                )
            from .contmask import load_continuum_mask

            mask = load_continuum_mask(g)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n_pix,):
            raise BadDataError(f"continuum mask has shape {mask.shape}, expected ({n_pix},)")

    bad = bad_mask(flux, error, pm, bad_bits)
    problem = flux_problems(flux, ~bad)
    refused = problem != ""
    bad = bad | refused[:, None]
    weight = inverse_variance(error, bad)
    cont = np.full(flux.shape, np.nan)
    fit_ok = np.zeros((flux.shape[0], len(chips)), dtype=bool)
    for k, sl in enumerate(chips):
        f, w = flux[:, sl], weight[:, sl]
        if method == "mask":
            c, ok = fit_chip(f, w * mask[sl], degree)
        else:
            c, ok = fit_chip_clipped(f, w, degree, lower, upper, iterations)
        # a continuum that is not positive across the chip is no continuum to divide by
        cont[:, sl], fit_ok[:, k] = c, ok & (_row_nanmedian(c)[:, 0] > 0)

    with np.errstate(all="ignore"):
        nflux = flux / cont
        nerr = error / cont
    unusable = bad | ~(cont > 0) | ~np.isfinite(nflux) | ~np.isfinite(nerr)
    if clip_negative:
        nflux = np.where(nflux < 0, 0.0, nflux)
    nflux = np.where(unusable, 1.0, nflux).astype(np.float32)
    nerr = np.where(unusable, LARGE_ERROR, nerr).astype(np.float32)
    cont = cont.astype(np.float32)
    if one:
        return Normalized(nflux[0], nerr[0], cont[0], fit_ok[0], problem[0])
    return Normalized(nflux, nerr, cont, fit_ok, problem)


def normalize(spectrum: Spectrum, method: str = "mask", degree: int = DEFAULT_DEGREE, *,
              force: bool = False, **kwargs) -> Spectrum:
    """A continuum-normalised copy of ``spectrum`` (``normalized=True``).

    An already normalised spectrum is returned as a copy unless ``force``.  Spectra without
    an APOGEE grid (an apVisit on its own wavelengths) are split into chips at wavelength
    breaks and need ``method="clip"`` (or an explicit ``mask``).  Keyword arguments go to
    :func:`normalize_arrays` (use it directly to get the fitted continuum).
    """
    if spectrum.normalized and not force:
        return spectrum.copy()
    chips = None if spectrum.grid else chip_slices_from_wavelength(spectrum.wavelength)
    res = normalize_arrays(spectrum.flux, spectrum.error, spectrum.pixmask, spectrum.grid,
                           method=method, degree=degree, chips=chips, **kwargs)
    if res.problem:
        raise BadDataError(f"{spectrum.label}: {res.problem}; refusing to normalise it")
    if not res.fit_ok.any():
        raise BadDataError(f"{spectrum.label}: no chip had enough good pixels for a continuum fit")
    out = spectrum.copy(flux=res.flux, error=res.error, normalized=True)
    out.meta.update(CONTINUUM_METHOD=method, CONTINUUM_DEGREE=degree)
    return out
