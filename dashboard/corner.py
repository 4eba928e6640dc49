"""Corner-plot numbers: datashader aggregates of catalog column pairs and 1-D histograms.

Pure numpy/pandas/datashader (no Panel, no Bokeh), so the bench times exactly what the
Catalog view computes on every zoom and brush.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace

import datashader as ds
import datashader.transfer_functions as tf
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
_LOCK = threading.Lock()


def share(frame: pd.DataFrame) -> pd.DataFrame:
    """Mark ``frame`` as shared by sessions and never modified: its aggregates are cached
    until it is garbage collected."""
    key = id(frame)

    def forget(_ref, key=key):
        with _LOCK:
            if _SHARED.get(key) is _ref:
                del _SHARED[key]
            for k in [k for k in _CACHE if k[0] == key]:
                del _CACHE[k]

    with _LOCK:
        _SHARED[key] = weakref.ref(frame, forget)
    return frame


def cache_info() -> dict:
    return {"shared_frames": len(_SHARED), "aggregates": len(_CACHE)}


def aggregate(frame: pd.DataFrame, xcol: str, ycol: str, x_range, y_range,
              width: int = PANEL_BINS, height: int = PANEL_BINS, color: str | None = None,
              ) -> Aggregate:
    """Star counts (``color`` None) or the mean of ``color`` per pixel; empty pixels are NaN.
    Cached for a :func:`share`d frame (each caller gets its own copy of the image)."""
    x0, x1 = sorted(map(float, x_range))
    y0, y1 = sorted(map(float, y_range))
    ref = _SHARED.get(id(frame))
    if ref is None or ref() is not frame:
        return _aggregate(frame, xcol, ycol, x0, x1, y0, y1, width, height, color)
    key = (id(frame), xcol, ycol, x0, x1, y0, y1, int(width), int(height), color)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
    if hit is None:
        hit = _aggregate(frame, xcol, ycol, x0, x1, y0, y1, width, height, color)
        with _LOCK:
            _CACHE[key] = hit
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return replace(hit, image=hit.image.copy())


def _aggregate(frame, xcol, ycol, x0, x1, y0, y1, width, height, color) -> Aggregate:
    cvs = ds.Canvas(plot_width=int(width), plot_height=int(height), x_range=(x0, x1),
                    y_range=(y0, y1))
    agg = cvs.points(frame, xcol, ycol, agg=ds.count() if color is None else ds.mean(color))
    if color is None and float(agg.values.sum()) < SPARSE_STARS:
        agg = tf.spread(agg, px=1, how="max")
    image = np.asarray(agg.values, dtype=np.float32)
    if color is None:
        image[image == 0] = np.nan  # no stars: transparent, not the colormap's low end
    return Aggregate(image, x0, y0, x1 - x0, y1 - y0)


#: Opacity of a subset's faintest occupied pixel (0-255): sparse regions stay visible.
SUBSET_MIN_ALPHA = 110


def subset_image(frames: list[pd.DataFrame], colours: list[str], xcol: str, ycol: str,
                 x_range, y_range, width: int = PANEL_BINS, height: int = PANEL_BINS
                 ) -> Aggregate:
    """Several subsets' star counts in one RGBA image (``uint32``, Bokeh's ``image_rgba``):
    each subset shaded in its own colour by datashader (opacity by histogram-equalised
    count), later subsets drawn over earlier ones.  No star leaves the server."""
    x0, x1 = sorted(map(float, x_range))
    y0, y1 = sorted(map(float, y_range))
    cvs = ds.Canvas(plot_width=int(width), plot_height=int(height), x_range=(x0, x1),
                    y_range=(y0, y1))
    layers = []
    for frame, colour in zip(frames, colours, strict=True):
        agg = cvs.points(frame, xcol, ycol, agg=ds.count())
        if float(agg.values.sum()) == 0:
            continue
        img = tf.shade(agg, cmap=colour, how="eq_hist", min_alpha=SUBSET_MIN_ALPHA)
        if len(frame) < SPARSE_STARS:
            img = tf.spread(img, px=1)
        layers.append(img)
    if not layers:
        image = np.zeros((int(height), int(width)), dtype=np.uint32)
    else:
        image = np.ascontiguousarray((tf.stack(*layers) if len(layers) > 1 else layers[0]).values,
                                     dtype=np.uint32)
    return Aggregate(image, x0, y0, x1 - x0, y1 - y0)


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
