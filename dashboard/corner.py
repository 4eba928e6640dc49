"""Corner-plot numbers: datashader aggregates of catalog column pairs and 1-D histograms.

Pure numpy/pandas/datashader (no Panel, no Bokeh), so the bench times exactly what the
Catalog view computes on every zoom and brush.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def aggregate(frame: pd.DataFrame, xcol: str, ycol: str, x_range, y_range,
              width: int = PANEL_BINS, height: int = PANEL_BINS, color: str | None = None,
              ) -> Aggregate:
    """Star counts (``color`` None) or the mean of ``color`` per pixel; empty pixels are NaN."""
    x0, x1 = sorted(map(float, x_range))
    y0, y1 = sorted(map(float, y_range))
    cvs = ds.Canvas(plot_width=int(width), plot_height=int(height), x_range=(x0, x1),
                    y_range=(y0, y1))
    agg = cvs.points(frame, xcol, ycol, agg=ds.count() if color is None else ds.mean(color))
    if color is None and float(agg.values.sum()) < SPARSE_STARS:
        agg = tf.spread(agg, px=1, how="max")
    image = np.asarray(agg.values, dtype=np.float32)
    if color is None:
        image[image == 0] = np.nan  # no stars: transparent, not the colormap's low end
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
