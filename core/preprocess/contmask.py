"""Continuum-pixel masks: the one shipped in ``assets/continuum`` and how to derive one.

The shipped mask lists apStar pixel numbers, so it applies to every APOGEE grid (a grid
takes the listed pixels it contains).  It was derived by :func:`derive_continuum_mask`
from the real spectra in ``../shared/data/apogee_real`` (``python -m
core.preprocess.build_contmask FILE …`` rebuilds it; the asset's JSON records the
inputs and parameters, and ``assets/continuum/README.md`` explains its limits).

The method ranks pixels rather than thresholding them, so it works from a handful of
stars as well as from thousands:

1. normalise every spectrum by asymmetric clipping (no mask needed);
2. score each pixel by how far below the continuum it lies, in units of its error,
   after a 3-pixel running mean (which also penalises line wings); the pixel's score is
   its worst over all stars; pixels far *above* the continuum (sky-line residuals) and
   pixels flagged in any spectrum (bad, sky-line and telluric bits) are excluded;
3. keep the best-scoring pixels of each chip, spread over equal bins so the polynomial is
   pinned down across the whole chip (see :func:`_pick_spread`);
4. renormalise with the new mask and repeat.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import BadDataError, BadFileError
from ..grid import APOGEE_7514, APSTAR_NPIX, Grid, bad_pixels, get_grid
from ..paths import ASSETS
from ..store.atomic import write_json_atomic
from .continuum import chip_slices, normalize_arrays
from .masks import bad_mask

CONTINUUM_DIR = ASSETS / "continuum"
SHIPPED_MASK = CONTINUUM_DIR / "stellarscope_continuum_pixels.json"
MASK_FORMAT = "stellarscope-continuum-mask"

#: Bits that make a pixel a poor continuum pixel: the bad set and pixels near sky or telluric
#: lines (tied to wavelength).  Persistence is left out: it belongs to a detector region and
#: fibre, not to a wavelength.
AVOID_BITS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 12, 13)

DEFAULT_N_TARGET = 540  # close to astroNN's 529-532 so fits are equally constrained
DEFAULT_N_BINS = 16
EMISSION_SIGMA = 3.0


def _running_mean(a: np.ndarray, half: int) -> np.ndarray:
    if half <= 0:
        return a
    k = np.ones(2 * half + 1) / (2 * half + 1)
    return np.stack([np.convolve(row, k, mode="same") for row in a])


def _pixel_scores(nflux: np.ndarray, nerr: np.ndarray, usable: np.ndarray, half: int) -> np.ndarray:
    """Worst (largest) depth-in-σ over all rows; +inf for excluded pixels."""
    width = 2 * half + 1
    f = _running_mean(np.where(usable, nflux, 1.0), half)
    e = _running_mean(np.where(usable, nerr, np.inf), half) / np.sqrt(width)
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = (1.0 - f) / e
    depth = np.where(~np.isfinite(depth) | (depth < -EMISSION_SIGMA), np.inf, depth)
    return depth.max(axis=0)


def _pick_spread(score: np.ndarray, grid: Grid, n_target: int, n_bins: int) -> np.ndarray:
    """The best-scoring pixels of each chip, spread over ``n_bins`` equal bins.

    Every bin first gets a quarter of its even share (its best pixels), so the chip ends
    are pinned down; the rest of the chip's share goes to the best pixels anywhere, with
    no bin taking more than twice its even share.
    """
    mask = np.zeros(grid.n_pix, dtype=bool)
    for sl in chip_slices(grid):
        n_chip = sl.stop - sl.start
        share = n_target * n_chip / grid.n_pix
        floor_, cap = max(1, int(share / n_bins / 4)), max(1, int(np.ceil(2 * share / n_bins)))
        s = score[sl]
        bins = np.minimum((np.arange(n_chip) * n_bins) // n_chip, n_bins - 1)
        order = np.argsort(s, kind="stable")
        order = order[np.isfinite(s[order])]
        taken = np.zeros(n_chip, dtype=bool)
        counts = np.zeros(n_bins, dtype=int)
        for i in order:  # guaranteed floor per bin
            if counts[bins[i]] < floor_:
                taken[i] = True
                counts[bins[i]] += 1
        for i in order:  # then the best pixels anywhere, capped per bin
            if taken.sum() >= round(share):
                break
            if not taken[i] and counts[bins[i]] < cap:
                taken[i] = True
                counts[bins[i]] += 1
        mask[sl] = taken
    return mask


def derive_continuum_mask(flux, error, pixmask, grid: Grid | str = APOGEE_7514, *,
                          n_target: int = DEFAULT_N_TARGET, n_bins: int = DEFAULT_N_BINS,
                          iterations: int = 3, smooth_half: int = 1,
                          avoid_bits=AVOID_BITS) -> np.ndarray:
    """A boolean continuum-pixel mask on ``grid`` from spectra (N × n_pix, not normalised).

    Give one row per star (several rows of the same star only add noise).  See the module
    docstring for the method; about ``n_target`` pixels are returned, spread over
    ``n_bins`` bins per chip.
    """
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    error = np.atleast_2d(np.asarray(error, dtype=np.float64))
    pixmask = np.atleast_2d(np.asarray(pixmask))
    if flux.shape[1] != g.n_pix:
        raise BadDataError(f"spectra have {flux.shape[1]} pixels, grid {g.name} has {g.n_pix}")
    avoid = (bad_pixels(pixmask, avoid_bits) | bad_mask(flux, error, pixmask)).any(axis=0)
    usable = ~bad_mask(flux, error, pixmask)
    res = normalize_arrays(flux, error, pixmask, g, method="clip")
    mask = np.zeros(g.n_pix, dtype=bool)
    for _ in range(max(1, iterations)):
        score = _pixel_scores(res.flux, res.error, usable, smooth_half)
        score[avoid] = np.inf
        new = _pick_spread(score, g, n_target, n_bins)
        if np.array_equal(new, mask):
            break
        mask = new
        res = normalize_arrays(flux, error, pixmask, g, method="mask", mask=mask)
    return mask


# --- the shipped asset ----------------------------------------------------------------------


def save_continuum_mask(mask: np.ndarray, grid: Grid | str, path: str | os.PathLike, *,
                        note: str = "", inputs: list | None = None,
                        parameters: dict | None = None) -> Path:
    """Write a mask as JSON listing its apStar pixels (atomic)."""
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (g.n_pix,):
        raise BadDataError(f"mask has shape {mask.shape}, grid {g.name} needs ({g.n_pix},)")
    pixels = g.index[mask]
    doc = {
        "format": MASK_FORMAT,
        "version": 1,
        "pixels": "apStar pixel numbers (0-based); log10(lambda/A) = 4.179 + 6e-6 * pixel",
        "derived_on_grid": g.name,
        "n_pixels": int(pixels.size),
        "per_chip_on_7514": [int(mask_on(pixels, APOGEE_7514)[sl].sum())
                             for sl in chip_slices(APOGEE_7514)],
        "note": note,
        "inputs": list(inputs or []),
        "parameters": dict(parameters or {}),
        "apstar_pixels": [int(p) for p in pixels],
    }
    write_json_atomic(path, doc)
    return Path(path)


def mask_on(apstar_pixels: np.ndarray, grid: Grid | str) -> np.ndarray:
    """Boolean mask on ``grid`` of the given apStar pixel numbers (those it contains)."""
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    full = np.zeros(APSTAR_NPIX, dtype=bool)
    full[np.asarray(apstar_pixels, dtype=np.int64)] = True
    return g.from_apstar(full)


@lru_cache(maxsize=8)
def _read_pixels(path: str) -> np.ndarray:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise BadFileError(p, "continuum mask not found (reinstall Stellarscope or pass a mask)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BadFileError(p, f"unreadable continuum mask ({exc})") from None
    if doc.get("format") != MASK_FORMAT:
        raise BadFileError(p, f"not a continuum mask (format={doc.get('format')!r})")
    pixels = np.asarray(doc.get("apstar_pixels", []), dtype=np.int64)
    if pixels.size == 0 or pixels.min() < 0 or pixels.max() >= APSTAR_NPIX:
        raise BadFileError(p, "continuum mask lists no pixels or pixels outside the apStar grid")
    pixels.setflags(write=False)
    return pixels


def load_continuum_mask(grid: Grid | str = APOGEE_7514,
                        path: str | os.PathLike | None = None) -> np.ndarray:
    """The continuum mask on ``grid`` (a fresh boolean array); the shipped one by default."""
    return mask_on(_read_pixels(os.fspath(path or SHIPPED_MASK)), grid)
