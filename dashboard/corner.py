"""Corner-plot numbers: aggregates of catalog column pairs (star counts or a column's mean
per pixel, as datashader's ``Canvas.points`` makes them) and 1-D histograms.

Pure numpy/pandas (no Panel, no Bokeh), so the bench times exactly what the Catalog view
computes on every zoom and brush.  The aggregation is numpy's ``bincount`` over pixel indices
rather than datashader's numba kernels: those were compiled on first use in each server
process, once per pair of column dtypes (12-18 s before the first corner after a restart on
the 2-core machine), for no faster counting (bench/dashboard.py).  The pixel index of every
star in each column of a shared frame is cached per display range, so a selection's panels
are counted from the cached indices of its rows.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

PANEL_BINS = 180
HIST_BINS = 40
#: Below this many stars in a panel, each occupied pixel is grown by one pixel so that
#: isolated stars stay visible (counts only; a mean has no honest way to spread).
SPARSE_STARS = 30_000


def finite_range(values: np.ndarray, lo_q: float = 0.2, hi_q: float = 99.8,
                 pad: float = 0.04) -> tuple[float, float]:
    """A display range holding nearly all finite values (a few outliers would squash the rest)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(v, [lo_q, hi_q])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    return float(lo - pad * span), float(hi + pad * span)


@dataclass
class Aggregate:
    """One panel's image: ``image[row, col]`` with row 0 at ``y0`` (Bokeh's convention)."""

    image: np.ndarray
    x0: float
    y0: float
    dw: float
    dh: float


# -- aggregates of shared frames, cached per process ----------------------------------------
#: Frames every session reads (a store's catalog frame, :func:`dashboard.data.catalog_frame`):
#: id → weak reference.  Their aggregates are cached, so the first corner plot of every later
#: session (same columns and ranges) costs no aggregation.
_SHARED: dict[int, weakref.ref] = {}
_CACHE: OrderedDict = OrderedDict()
CACHE_SIZE = 512  # aggregates (a 180×180 float32 image each: ~130 kB; 512 → ≤ 66 MB)
#: pixel indices of a shared frame's columns per display range (int16: 1.5 MB per column
#: of the 733,901-row allStar; 36 → ≤ 53 MB)
_PIXELS: OrderedDict = OrderedDict()
PIXELS_SIZE = 36
_LOCK = threading.Lock()


def share(frame: pd.DataFrame) -> pd.DataFrame:
    """Mark ``frame`` as shared by sessions and never modified: its aggregates are cached
    until it is garbage collected."""
    key = id(frame)

    def forget(_ref, key=key):
        with _LOCK:
            if _SHARED.get(key) is _ref:
                del _SHARED[key]
            for cache in (_CACHE, _PIXELS):
                for k in [k for k in cache if k[0] == key]:
                    del cache[k]

    with _LOCK:
        _SHARED[key] = weakref.ref(frame, forget)
    return frame


def cache_info() -> dict:
    return {"shared_frames": len(_SHARED), "aggregates": len(_CACHE)}


def pixel_index(values: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """Each value's pixel (0 … n-1) on [lo, hi], as datashader bins (the upper edge falls in
    the last pixel); -1 for values outside or NaN."""
    dtype = np.int16 if n < 32_000 else np.int32
    if not hi > lo:
        return np.full(np.shape(values), -1, dtype=dtype)
    pix = np.asarray(values, dtype=np.float64) - lo  # a copy: the frame is not touched
    pix *= n / (hi - lo)
    with np.errstate(invalid="ignore"):
        outside = ~((pix >= 0) & (pix <= n))  # NaN: outside
    np.minimum(pix, n - 1, out=pix)
    pix[outside] = -1
    return pix.astype(dtype)


def _column_pixels(frame: pd.DataFrame, col: str, lo: float, hi: float, n: int) -> np.ndarray:
    """:func:`pixel_index` of a column, cached for a :func:`share`d frame (read only)."""
    ref = _SHARED.get(id(frame))
    if ref is None or ref() is not frame:
        return pixel_index(frame[col].to_numpy(), lo, hi, n)
    key = (id(frame), col, lo, hi, int(n))
    with _LOCK:
        hit = _PIXELS.get(key)
        if hit is not None:
            _PIXELS.move_to_end(key)
            return hit
    hit = pixel_index(frame[col].to_numpy(), lo, hi, n)
    hit.flags.writeable = False
    with _LOCK:
        _PIXELS[key] = hit
        while len(_PIXELS) > PIXELS_SIZE:
            _PIXELS.popitem(last=False)
    return hit


def aggregate(frame: pd.DataFrame, xcol: str, ycol: str, x_range, y_range,
              width: int = PANEL_BINS, height: int = PANEL_BINS, color: str | None = None,
              rows: np.ndarray | None = None) -> Aggregate:
    """Star counts (``color`` None) or the mean of ``color`` per pixel; empty pixels are NaN.
    ``rows``: of these rows of ``frame`` only.  Cached for a :func:`share`d frame and all its
    rows (each caller gets its own copy of the image)."""
    x0, x1 = sorted(map(float, x_range))
    y0, y1 = sorted(map(float, y_range))
    ref = _SHARED.get(id(frame))
    if rows is not None or ref is None or ref() is not frame:
        return _aggregate(frame, xcol, ycol, x0, x1, y0, y1, width, height, color, rows)
    key = (id(frame), xcol, ycol, x0, x1, y0, y1, int(width), int(height), color)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
    if hit is None:
        hit = _aggregate(frame, xcol, ycol, x0, x1, y0, y1, width, height, color, None)
        with _LOCK:
            _CACHE[key] = hit
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return replace(hit, image=hit.image.copy())


def _counts(frame, xcol, ycol, x0, x1, y0, y1, width, height, rows, weights=None):
    """Per-pixel star counts (and sums of ``weights``) as flat arrays of width × height."""
    xi = _column_pixels(frame, xcol, x0, x1, width)
    yi = _column_pixels(frame, ycol, y0, y1, height)
    if rows is not None:
        xi, yi = xi[rows], yi[rows]
        if weights is not None:
            weights = weights[rows]
    ok = (xi >= 0) & (yi >= 0)
    if weights is not None:
        ok &= np.isfinite(weights)  # as datashader's mean: a NaN value is not counted
    flat = yi[ok].astype(np.intp) * int(width) + xi[ok]
    size = int(width) * int(height)
    counts = np.bincount(flat, minlength=size)
    sums = None if weights is None else np.bincount(flat, weights=weights[ok], minlength=size)
    return counts, sums


def _aggregate(frame, xcol, ycol, x0, x1, y0, y1, width, height, color, rows) -> Aggregate:
    shape = (int(height), int(width))
    if color is None:
        counts, _ = _counts(frame, xcol, ycol, x0, x1, y0, y1, width, height, rows)
        image = counts.reshape(shape).astype(np.float32)
        if float(image.sum()) < SPARSE_STARS:
            image = spread(image)
        image[image == 0] = np.nan  # no stars: transparent, not the colormap's low end
    else:
        weights = frame[color].to_numpy(np.float64)
        counts, sums = _counts(frame, xcol, ycol, x0, x1, y0, y1, width, height, rows, weights)
        with np.errstate(invalid="ignore", divide="ignore"):
            image = (sums / counts).reshape(shape).astype(np.float32)  # 0/0: NaN, empty
    return Aggregate(image, x0, y0, x1 - x0, y1 - y0)


def spread(image: np.ndarray) -> np.ndarray:
    """Each pixel the largest value of its 3 × 3 neighbourhood (isolated stars grow to 3 × 3
    pixels; datashader's ``spread(px=1, how="max")``)."""
    padded = np.pad(image, 1)
    out = image.copy()
    h, w = image.shape
    for dy in range(3):
        for dx in range(3):
            np.maximum(out, padded[dy:dy + h, dx:dx + w], out=out)
    return out


#: Opacity of a subset's faintest occupied pixel (0-255): sparse regions stay visible.
SUBSET_MIN_ALPHA = 110


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _shade(counts: np.ndarray, colour: str) -> np.ndarray:
    """Straight RGBA floats (0-1) of one subset: its colour, opacity by histogram-equalised
    count from SUBSET_MIN_ALPHA (fewest stars) to opaque (most); empty pixels clear."""
    rgba = np.zeros(counts.shape + (4,), dtype=np.float64)
    occupied = counts > 0
    if not occupied.any():
        return rgba
    values = counts[occupied]
    levels, inverse = np.unique(values, return_inverse=True)
    cdf = np.cumsum(np.bincount(inverse)) / values.size  # share of pixels at or below
    rank = cdf[inverse]
    lo = cdf[0]
    level = (rank - lo) / (1 - lo) if lo < 1 else np.ones_like(rank)
    low = SUBSET_MIN_ALPHA / 255
    rgba[occupied, 3] = low + (1 - low) * level
    rgba[occupied, :3] = np.array(_rgb(colour)) / 255
    return rgba


def _over(top: np.ndarray, under: np.ndarray) -> np.ndarray:
    """``top`` composited over ``under`` (straight-alpha RGBA floats)."""
    a_t, a_u = top[..., 3:], under[..., 3:]
    a = a_t + a_u * (1 - a_t)
    with np.errstate(invalid="ignore", divide="ignore"):
        rgb = np.where(a > 0, (top[..., :3] * a_t + under[..., :3] * a_u * (1 - a_t)) / a, 0)
    return np.concatenate([rgb, a], axis=-1)


def subset_image(frames: list, colours: list[str], xcol: str, ycol: str,
                 x_range, y_range, width: int = PANEL_BINS, height: int = PANEL_BINS,
                 base: pd.DataFrame | None = None) -> Aggregate:
    """Several subsets' star counts in one RGBA image (``uint32``, Bokeh's ``image_rgba``):
    each subset shaded in its own colour (opacity by histogram-equalised count, as datashader's
    ``shade(how="eq_hist")``), later subsets drawn over earlier ones.  A subset is a frame of
    its rows, or, with ``base``, an array of row numbers of ``base`` (counted from its cached
    pixel indices).  No star leaves the server."""
    x0, x1 = sorted(map(float, x_range))
    y0, y1 = sorted(map(float, y_range))
    shape = (int(height), int(width))
    out = np.zeros(shape + (4,), dtype=np.float64)
    for sub, colour in zip(frames, colours, strict=True):
        if base is None:
            counts, _ = _counts(sub, xcol, ycol, x0, x1, y0, y1, width, height, None)
            n = len(sub)
        else:
            counts, _ = _counts(base, xcol, ycol, x0, x1, y0, y1, width, height, sub)
            n = len(sub)
        counts = counts.reshape(shape).astype(np.float64)
        if counts.sum() == 0:
            continue
        if n < SPARSE_STARS:
            counts = spread(counts)
        out = _over(_shade(counts, colour), out)
    rgba = np.round(out * 255).astype(np.uint32)
    image = rgba[..., 0] | (rgba[..., 1] << 8) | (rgba[..., 2] << 16) | (rgba[..., 3] << 24)
    return Aggregate(np.ascontiguousarray(image, dtype=np.uint32), x0, y0, x1 - x0, y1 - y0)


def _lut(palette) -> np.ndarray:
    """A palette's colours as opaque little-endian RGBA ``uint32`` (Bokeh's ``image_rgba``)."""
    rgb = np.array([_rgb(c) for c in palette], dtype=np.uint32)
    return rgb[:, 0] | (rgb[:, 1] << 8) | (rgb[:, 2] << 16) | np.uint32(255 << 24)


_LUTS: dict = {}


def colorize(image: np.ndarray, palette, how: str = "eq_hist", span=None) -> np.ndarray:
    """An aggregate coloured on the server, as Bokeh's colour mappers would in the browser:
    ``how`` "linear" over ``span`` (default: the finite values' range), "log", or "eq_hist"
    (histogram-equalised: each colour for about as many occupied pixels); NaN transparent.
    The browser then only copies pixels (its own colour mapping of 15 panels took a second
    on every brush here)."""
    key = tuple(palette)
    lut = _LUTS.get(key)
    if lut is None:
        lut = _LUTS[key] = _lut(palette)
    v = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(v)
    out = np.zeros(v.shape, dtype=np.uint32)
    if not finite.any():
        return out
    vals = v[finite]
    if how == "eq_hist":
        _, inverse = np.unique(vals, return_inverse=True)
        cdf = np.cumsum(np.bincount(inverse)) / vals.size
        lo = cdf[0]
        t = (cdf[inverse] - lo) / (1 - lo) if lo < 1 else np.ones(vals.size)
    else:
        lo, hi = (float(vals.min()), float(vals.max())) if span is None else map(float, span)
        if how == "log":
            vals = np.log(np.maximum(vals, 1e-300))
            lo, hi = np.log(max(lo, 1e-300)), np.log(max(hi, 1e-300))
        t = (vals - lo) / (hi - lo) if hi > lo else np.ones(vals.size)
    idx = np.clip(np.floor(np.clip(t, 0, 1) * len(lut)), 0, len(lut) - 1).astype(np.intp)
    out[finite] = lut[idx]
    return out


def histogram(values: np.ndarray, x_range, bins: int = HIST_BINS
              ) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of the finite values over ``x_range``."""
    lo, hi = sorted(map(float, x_range))
    v = np.asarray(values)
    v = v[np.isfinite(v)]
    return np.histogram(v, bins=bins, range=(lo, hi))


def box_mask(frame: pd.DataFrame, xcol: str, x_range, ycol: str | None = None,
             y_range=None) -> np.ndarray:
    """Rows inside a box (or an x interval when ``ycol`` is None)."""
    x0, x1 = sorted(map(float, x_range))
    x = frame[xcol].to_numpy()
    mask = (x >= x0) & (x <= x1)
    if ycol is not None:
        y0, y1 = sorted(map(float, y_range))
        y = frame[ycol].to_numpy()
        mask &= (y >= y0) & (y <= y1)
    return mask


#: Horizontal strips the candidate stars are sorted into (uint8 bins: a linear-time radix
#: sort), so each polygon edge only tests the stars level with it.
POLYGON_STRIPS = 256


def polygon_mask(frame: pd.DataFrame, xcol: str, ycol: str, xs, ys) -> np.ndarray:
    """Rows inside the polygon with vertices (``xs``, ``ys``), by the even-odd rule.

    The polygon closes itself (a repeated first vertex is harmless); fewer than three vertices
    enclose nothing; a NaN coordinate is never inside.  Only stars in the polygon's bounding box
    are tested, and each edge tests only the stars in the horizontal strips it spans, so the
    cost barely grows with the number of vertices a hand-drawn lasso has.
    """
    vx = np.asarray(xs, dtype=np.float64).ravel()
    vy = np.asarray(ys, dtype=np.float64).ravel()
    if vx.size != vy.size:
        raise ValueError(f"polygon has {vx.size} x but {vy.size} y coordinates")
    if not (np.isfinite(vx).all() and np.isfinite(vy).all()):
        raise ValueError("polygon vertices must be finite")
    mask = np.zeros(len(frame), dtype=bool)
    if vx.size < 3:
        return mask
    x, y = frame[xcol].to_numpy(), frame[ycol].to_numpy()
    y0, y1 = vy.min(), vy.max()
    idx = np.flatnonzero((x >= vx.min()) & (x <= vx.max()) & (y >= y0) & (y <= y1))
    if idx.size == 0 or y1 == y0:
        return mask
    scale = (POLYGON_STRIPS - 1) / (y1 - y0)
    py = y[idx].astype(np.float64)
    strip = ((py - y0) * scale).astype(np.uint8)
    order = np.argsort(strip, kind="stable")
    idx, py = idx[order], py[order]
    px = x[idx].astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(np.bincount(strip, minlength=POLYGON_STRIPS))])
    odd = np.zeros(idx.size, dtype=bool)
    xj, yj = vx[-1], vy[-1]
    for xi, yi in zip(vx.tolist(), vy.tolist(), strict=True):
        if yi != yj:  # a horizontal edge is never crossed by a horizontal ray
            lo, hi = min(yi, yj), max(yi, yj)
            # the strip of a value is computed exactly as for the stars, so no star is missed
            band = slice(starts[int((lo - y0) * scale)], starts[int((hi - y0) * scale) + 1])
            yy = py[band]
            # the ray from the star towards +x crosses this edge (half-open in y: a ray through
            # a vertex counts once)
            odd[band] ^= ((yy >= lo) & (yy < hi)
                          & (px[band] < xi + (yy - yi) * ((xj - xi) / (yj - yi))))
        xj, yj = xi, yi
    mask[idx[odd]] = True
    return mask


def corner_aggregates(frame: pd.DataFrame, cols: list[str], ranges: dict[str, tuple],
                      color: str | None = None, width: int = PANEL_BINS
                      ) -> dict[tuple[str, str], object]:
    """Every panel of a lower-triangle corner plot: aggregates below the diagonal, histograms
    on it."""
    out: dict[tuple[str, str], object] = {}
    for i, ycol in enumerate(cols):
        for j, xcol in enumerate(cols[: i + 1]):
            if i == j:
                out[(xcol, xcol)] = histogram(frame[xcol].to_numpy(), ranges[xcol])
            else:
                out[(xcol, ycol)] = aggregate(frame, xcol, ycol, ranges[xcol], ranges[ycol],
                                              width, width, color)
    return out
