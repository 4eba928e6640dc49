"""The catalog's corner plot: aggregated ("datashaded") panels sharing one range per column,
a linked box / lasso selection, named subsets in their own colours, the focused star marked in
every panel.

Each off-diagonal panel is an aggregate of every star (counts, or the mean of a chosen column)
coloured on the server and drawn as a Bokeh RGBA image (the numbers ride along for the hover);
no star is sent to the browser, which only copies pixels.  Zooming a column anywhere zooms it
everywhere and re-aggregates the affected panels on the server (:mod:`dashboard.corner` holds
the numerics).  Subsets are aggregated too: one RGBA image per panel holds every shown subset
(each in its colour), and each histogram gets one outline per subset, so a subset of 700,000
stars costs what the base layer costs.  A brush changes only the selection layer (and, the
first time, the base layer's colours to grey) and the outline of its shape, which is glyph
data like the rest.
"""

from __future__ import annotations

import contextlib
import warnings
from functools import partial

import numpy as np
import pandas as pd
import panel as pn
from bokeh.core.properties import field
from bokeh.events import RangesUpdate, SelectionGeometry, Tap
from bokeh.layouts import gridplot
from bokeh.models import (
    BasicTicker,
    BoxAnnotation,
    BoxSelectTool,
    ColorBar,
    ColumnDataSource,
    CustomJSHover,
    EqHistColorMapper,
    GlyphRenderer,
    Grid,
    HoverTool,
    ImageRGBA,
    LassoSelectTool,
    LinearAxis,
    LinearColorMapper,
    LogColorMapper,
    MultiLine,
    PanTool,
    Patches,
    Quad,
    Range1d,
    ResetTool,
    Scatter,
    UnionRenderers,
    WheelZoomTool,
)
from bokeh.palettes import Greys256, Oranges256, Plasma256, Viridis256
from bokeh.plotting import figure

from core.labels import LABELS, axis_title

from .. import corner
from ..jobs import Throttle

PANEL_PX = 170
#: HR-diagram convention: hotter to the left, giants up.
INVERTED = ("TEFF", "LOGG")
UNITS = {"RA": "deg", "DEC": "deg"}
TRANSPARENT = "rgba(0, 0, 0, 0)"
EMPTY_IMAGE = {"image": [], "x": [], "y": [], "dw": [], "dh": []}
LIGHT_GREYS = list(reversed(Greys256[40:230]))
HIST_FILL, HIST_LINE = "#8aa5c4", "#6b8fb5"
#: histogram bars under subset outlines: grey, so a blue subset stands out
HIST_FILL_UNDER, HIST_LINE_UNDER = "#d4d4d4", "#bdbdbd"
SELECTED_COUNT = list(reversed(Oranges256[:200]))
#: How the box or lasso behind the selection stays drawn in its panel.
OUTLINE_STYLE = {"fill_color": "#e6550d", "fill_alpha": 0.08, "line_color": "#e6550d",
                 "line_width": 1.5, "line_dash": "dashed"}
EMPTY_OUTLINE = {"xs": [], "ys": []}
#: A pixel's mean in the hover, "no stars" where there is none (NaN).
MEAN_HOVER_JS = "return Number.isFinite(value) ? value.toFixed(2) : 'no stars'"


def axis_label(col: str) -> str:
    """A readable axis title with units: 'Teff [K]', 'log g [dex]', '[Fe/H]'."""
    if col in LABELS:
        return axis_title(col)
    if col.startswith("VAE_Z"):
        return f"VAE z{col[5:]}"
    if col.startswith("FIT_") and col[4:] in LABELS:
        return "fit " + axis_label(col[4:])
    if col == "VAE_CHI2":
        return "VAE χ²_ν"
    if col == "SNR":
        return "S/N"
    unit = UNITS.get(col)
    return f"{col} [{unit}]" if unit else col


def short_label(col: str) -> str:
    """The axis title without its unit: 'Teff', 'log g', '[Fe/H]'."""
    return axis_label(col).split(" [")[0]


class CornerPlot:
    """One corner plot's Bokeh models and the server-side work behind them."""

    def __init__(self, frame: pd.DataFrame, cols: list[str], color: str | None, cnorm: str,
                 on_box, on_tap, on_lasso=None, subsets=None):
        self.frame, self.cols, self.color, self.cnorm = frame, cols, color, cnorm
        self.on_box, self.on_tap, self.on_lasso = on_box, on_tap, on_lasso
        self.rows: np.ndarray | None = None
        #: shown subsets: (name, row mask, colour), drawn in this order
        self.subset_items: list[tuple[str, np.ndarray, str]] = list(subsets or [])
        self._subset_cache: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}
        self.ranges: dict[str, Range1d] = {}
        for c in cols:
            lo, hi = corner.finite_range(frame[c].to_numpy())
            self.ranges[c] = Range1d(hi, lo) if c in INVERTED else Range1d(lo, hi)
        self.color_range = (corner.finite_range(frame[color].to_numpy(), 1, 99, 0)
                            if color else None)
        self.panels: dict[tuple[str, str], dict] = {}
        #: panel → ("box" | "lasso", xs, ys): the shapes behind the selection, drawn in them
        self.outlines: dict[tuple[str, str], tuple[str, list, list]] = {}
        self._reaggregate = Throttle(self._refresh_changed, 0.1)
        self._seen = {c: self._span(c) for c in cols}
        self.layout = self._build()
        self.refresh()

    # -- models -----------------------------------------------------------------------------
    # Built from Bokeh's plain models (GlyphRenderer, LinearAxis …), not figure()'s helpers: a
    # corner of 6 columns is 21 plots, and figure()'s extra models (title, hidden axes and grids, copied
    # selection glyphs, a dummy renderer for the select tools, annotations never shown) were
    # ~1,650 models per session, whose construction, serialisation and BokehJS views were most
    # of the wait for the first corner.
    def _mapper(self, selected: bool):
        if self.color:
            lo, hi = self.color_range
            palette = Plasma256 if selected else Viridis256
            return LinearColorMapper(palette=palette, low=lo, high=hi, nan_color=TRANSPARENT)
        palette = SELECTED_COUNT if selected else Viridis256
        kind = {"eq_hist": EqHistColorMapper, "log": LogColorMapper,
                "linear": LinearColorMapper}[self.cnorm]
        return kind(palette=palette, nan_color=TRANSPARENT)

    def _figure(self, xcol: str, ycol: str | None, i: int, j: int):
        k = len(self.cols)
        y_range = self.ranges[ycol] if ycol else Range1d(0, 1)
        # a figure without figure()'s own axes, grids and tools (a Bokeh "Figure" in the page)
        fig = figure(frame_width=PANEL_PX, frame_height=PANEL_PX, x_range=self.ranges[xcol],
                     y_range=y_range, title=None, toolbar_location=None, tools="",
                     x_axis_type=None, y_axis_type=None, output_backend="canvas", min_border=4,
                     # room for the axes of the first column / last row, so the frames line up
                     # whatever the tick labels' widths
                     min_border_left=64 if j == 0 else 4,
                     min_border_bottom=58 if i == k - 1 else 4)
        xticks = self._tickers[xcol]
        yticks = self._tickers[ycol] if ycol else self._hist_ticker
        fig.add_layout(Grid(dimension=0, ticker=xticks, grid_line_alpha=0.25), "center")
        fig.add_layout(Grid(dimension=1, ticker=yticks, grid_line_alpha=0.25), "center")
        if i == k - 1:
            fig.add_layout(LinearAxis(ticker=xticks, axis_label=axis_label(xcol),
                                      major_label_orientation=0.6), "below")
        if j == 0:
            fig.add_layout(LinearAxis(ticker=yticks,
                                      axis_label=axis_label(ycol) if ycol else "stars"), "left")
        return fig

    def _tools(self, fig, target, xcol: str, ycol: str | None) -> dict:
        """Box select (active), lasso (off-diagonal), pan, wheel zoom, reset; the select
        tools report their shapes through ``target`` (the focused-star marker: a select tool
        needs a renderer, and that one holds at most one point)."""
        box = BoxSelectTool(dimensions="both", renderers=[target], persistent=False)
        box.overlay.handles = self._handles
        tools = [PanTool(), WheelZoomTool(), box, ResetTool()]
        if ycol:
            # only the finished polygon is sent (continuous=False): the server selects once
            tools.append(LassoSelectTool(renderers=[target], persistent=False, continuous=False))
        fig.add_tools(*tools)
        fig.toolbar.active_drag = box  # the merged toolbar alone does not reach the figures
        fig.toolbar.active_scroll = tools[1]
        fig.on_event(SelectionGeometry, partial(self._on_geometry, xcol, ycol))
        fig.on_event(RangesUpdate, lambda e: self._reaggregate())
        if ycol:
            fig.on_event(Tap, partial(self._on_tap_event, xcol, ycol))
        return {"box": box}

    def _source(self, data: dict) -> ColumnDataSource:
        return ColumnDataSource(data, selection_policy=self._policy)

    @staticmethod
    def _renderer(fig, source, glyph):
        r = GlyphRenderer(data_source=source, glyph=glyph)
        fig.renderers.append(r)
        return r

    def _image_panel(self, fig, xcol: str, ycol: str) -> dict:
        src = self._source
        p = {"base": src(dict(EMPTY_IMAGE)), "sel": src(dict(EMPTY_IMAGE)),
             "subsets": src(dict(EMPTY_IMAGE)), "focus": src({"x": [], "y": []}),
             "outline": src(dict(EMPTY_OUTLINE))}
        img = {"image": "image", "x": "x", "y": "y", "dw": "dw", "dh": "dh"}
        # coloured on the server (corner.colorize): the browser only copies the pixels
        r = self._renderer(fig, p["base"], ImageRGBA(**img))
        self._renderer(fig, p["subsets"], ImageRGBA(**img))
        self._renderer(fig, p["sel"], ImageRGBA(**img))
        self._renderer(fig, p["outline"], Patches(xs="xs", ys="ys", **OUTLINE_STYLE))
        focus = self._renderer(fig, p["focus"], Scatter(
            x="x", y="y", marker="circle", size=11, fill_alpha=0, line_color="#d62728",
            line_width=2.2))
        self._tools(fig, focus, xcol, ycol)
        if self.color:  # a pixel without stars has no mean
            value, formatters = "@value{custom}", {"@value": self._mean_hover}
        else:
            value, formatters = "@value{0,0}", {}
        what = f"mean {axis_label(self.color)}" if self.color else "stars"
        fig.add_tools(HoverTool(renderers=[r], formatters=formatters, tooltips=[
            (axis_label(xcol), "$x{0.00}"), (axis_label(ycol), "$y{0.00}"), (what, value)]))
        return p

    def _hist_panel(self, fig, col: str) -> dict:
        src = self._source
        p = {"base": src({"left": [], "right": [], "top": []}),
             "sel": src({"left": [], "right": [], "top": []}),
             "subsets": src({"xs": [], "ys": [], "color": []}), "outline": src(dict(EMPTY_OUTLINE))}
        bars = {"left": "left", "right": "right", "top": "top", "bottom": 0}
        p["bars"] = Quad(**bars, fill_color=HIST_FILL, line_color=HIST_LINE)
        target = self._renderer(fig, p["base"], p["bars"])
        self._renderer(fig, p["sel"], Quad(**bars, fill_color="#e6550d", line_color="#c44a0b",
                                           fill_alpha=0.8))
        self._renderer(fig, p["subsets"], MultiLine(xs="xs", ys="ys", line_color=field("color"),
                                                    line_width=2.2))
        self._renderer(fig, p["outline"], Patches(xs="xs", ys="ys", **OUTLINE_STYLE))
        self._tools(fig, target, col, None)
        return p

    # Not under Bokeh's without_property_validation: that switch is process-wide, and the corner
    # is built in a worker thread, so figures built meanwhile by other sessions lost their
    # property conversions (a title left as a str: "'str' object has no attribute
    # 'text_font_size'" when a restored session built its Fit view).
    def _build(self):
        k = len(self.cols)
        self._tickers = {c: BasicTicker() for c in self.cols}
        self._hist_ticker = BasicTicker()
        self._handles = BoxAnnotation().handles  # one style for every box's (unused) handles
        self._policy = UnionRenderers()  # one (stateless) selection policy for every source
        self._mean_hover = CustomJSHover(code=MEAN_HOVER_JS)
        grid = [[None] * k for _ in range(k)]
        for i, ycol in enumerate(self.cols):
            for j, xcol in enumerate(self.cols[: i + 1]):
                diag = i == j
                fig = self._figure(xcol, None if diag else ycol, i, j)
                p = self._hist_panel(fig, xcol) if diag else self._image_panel(fig, xcol, ycol)
                p.update(fig=fig, x=xcol, y=None if diag else ycol)
                self.panels[(xcol, xcol if diag else ycol)] = p
                grid[i][j] = fig
        if self.color and k >= 2:
            grid[0][k - 1] = self._colorbar_figure()
        with warnings.catch_warnings():  # every figure names its own active drag: expected
            warnings.filterwarnings("ignore", message="found multiple competing values")
            layout = gridplot(grid, toolbar_location="right", merge_tools=True)
        for tool in layout.toolbar.tools:
            if isinstance(getattr(tool, "tools", [None])[0], BoxSelectTool):
                layout.toolbar.active_drag = tool
        return layout

    def _colorbar_figure(self):
        fig = figure(frame_width=60, frame_height=PANEL_PX, toolbar_location=None, title=None,
                     tools="", x_axis_type=None, y_axis_type=None, min_border=4,
                     outline_line_color=None, x_range=Range1d(0, 1), y_range=Range1d(0, 1))
        fig.add_layout(ColorBar(color_mapper=self._mapper(False),
                                title=f"mean {axis_label(self.color)}", width=12), "right")
        return fig

    # -- aggregation ----------------------------------------------------------------------
    def _span(self, col: str) -> tuple[float, float]:
        r = self.ranges[col]
        return tuple(sorted((float(r.start), float(r.end))))

    def _subset_frames(self) -> list[np.ndarray]:
        """The shown subsets' row numbers, cached per subset mask."""
        rows = []
        for name, mask, _ in self.subset_items:
            cached = self._subset_cache.get(name)
            if cached is None or cached[0] is not mask:
                cached = (mask, np.flatnonzero(mask))
                self._subset_cache[name] = cached
            rows.append(cached[1])
        return rows

    def _hold(self):
        """Hold the events of the document this plot is shown in, so that a refresh goes to
        the browser as one patch; a plot not shown yet (built in a worker) has none to hold.

        Never ``pn.io.hold()``'s default document, ``pn.state.curdoc``: off the session's
        thread that is Bokeh's process-wide "current document", i.e. whichever session the
        server happens to be serving at that instant.  A corner built in a worker took that
        other session's hold and released it from the wrong thread; when the other session
        held its document at the same time, its own release restored the worker's hold and
        the document stayed held for good: its page never received another change (four
        concurrent Catalog sessions, one without its corner, the server idle, no error)."""
        doc = self.layout.document if getattr(self, "layout", None) is not None else None
        return pn.io.hold(doc) if doc is not None else contextlib.nullcontext()

    def refresh(self, columns=None, base: bool = True, selection: bool = True,
                subsets: bool = True) -> None:
        """Re-aggregate the panels that involve ``columns`` (all when None): the ``base``
        layer, the ``selection`` and the ``subsets``, as asked."""
        sel = self.rows if selection else None
        subs = self._subset_frames() if subsets else None
        with self._hold():
            for (xcol, ycol), p in self.panels.items():
                if columns is not None and xcol not in columns and ycol not in columns:
                    continue
                if p["y"] is None:
                    self._draw_hist(p, xcol, sel, base, selection, subs)
                else:
                    self._draw_image(p, xcol, ycol, sel, base, selection, subs)

    def _draw_image(self, p, xcol, ycol, sel, base, selection, subs) -> None:
        xr, yr = self._span(xcol), self._span(ycol)
        if base:
            a = corner.aggregate(self.frame, xcol, ycol, xr, yr, color=self.color)
            p["values"] = a.image
            p["palette"] = self._base_palette()
            p["base"].data = {"image": [self._colour(a.image, p["palette"])],
                              "value": [self._hover_values(a.image)],
                              "x": [a.x0], "y": [a.y0], "dw": [a.dw], "dh": [a.dh]}
        if selection:
            if sel is None:
                p["sel"].data = dict(EMPTY_IMAGE)
            else:
                a = corner.aggregate(self.frame, xcol, ycol, xr, yr, color=self.color, rows=sel)
                selected = Plasma256 if self.color else SELECTED_COUNT
                p["sel"].data = {"image": [self._colour(a.image, selected)], "x": [a.x0],
                                 "y": [a.y0], "dw": [a.dw], "dh": [a.dh]}
        if subs is not None:
            if not subs:
                p["subsets"].data = dict(EMPTY_IMAGE)
            else:
                a = corner.subset_image(subs, [c for _, _, c in self.subset_items], xcol, ycol,
                                        xr, yr, base=self.frame)
                p["subsets"].data = {"image": [a.image], "x": [a.x0], "y": [a.y0],
                                     "dw": [a.dw], "dh": [a.dh]}
        palette = self._base_palette()
        if p["palette"] is not palette:  # recoloured alone: the counts stay in the browser
            p["palette"] = palette
            p["base"].data.update(image=[self._colour(p["values"], palette)])

    def _hover_values(self, image: np.ndarray) -> np.ndarray:
        """The numbers the hover shows: an empty pixel (NaN in the aggregate, so it is drawn
        clear) holds 0 stars; a mean stays NaN there, which the tooltip words."""
        return image if self.color else np.nan_to_num(image, nan=0.0)

    def _base_palette(self):
        """The whole catalog turns grey under a selection or subsets, which carry the colour."""
        return LIGHT_GREYS if self.rows is not None or self.subset_items else Viridis256

    def _colour(self, image: np.ndarray, palette) -> np.ndarray:
        """An aggregate in ``palette``: a mean over the colour column's range, counts by the
        chosen count scale."""
        if self.color:
            return corner.colorize(image, palette, "linear", self.color_range)
        return corner.colorize(image, palette, self.cnorm)

    def _draw_hist(self, p, col, sel, base, selection, subs) -> None:
        xr = self._span(col)
        if base:
            counts, edges = corner.histogram(self.frame[col].to_numpy(), xr)
            p["base"].data = {"left": edges[:-1], "right": edges[1:], "top": counts}
            p["fig"].y_range.update(start=0, end=float(max(counts.max(), 1)) * 1.08)
        if selection:
            if sel is None:
                p["sel"].data = {"left": [], "right": [], "top": []}
            else:
                c, e = corner.histogram(self.frame[col].to_numpy()[sel], xr)
                p["sel"].data = {"left": e[:-1], "right": e[1:], "top": c}
        if subs is not None:
            xs, ys, colours = [], [], []
            values = self.frame[col].to_numpy()
            for rows, (_, _, colour) in zip(subs, self.subset_items, strict=True):
                c, e = corner.histogram(values[rows], xr)
                xs.append(np.repeat(e, 2)[1:-1].tolist())  # a step outline of the bins
                ys.append(np.repeat(c, 2).astype(float).tolist())
                colours.append(colour)
            p["subsets"].data = {"xs": xs, "ys": ys, "color": colours}
            under = bool(self.subset_items)
            p["bars"].update(fill_color=HIST_FILL_UNDER if under else HIST_FILL,
                             line_color=HIST_LINE_UNDER if under else HIST_LINE)

    def set_subsets(self, items: list[tuple[str, np.ndarray, str]]) -> None:
        """Draw these subsets ((name, row mask, colour), later ones on top) in every panel."""
        self.subset_items = list(items)
        keep = {name for name, _, _ in self.subset_items}
        self._subset_cache = {k: v for k, v in self._subset_cache.items() if k in keep}
        self.refresh(base=False, selection=False)

    def _refresh_changed(self) -> None:
        changed = [c for c in self.cols if self._span(c) != self._seen[c]]
        self._seen = {c: self._span(c) for c in self.cols}
        if changed:
            self.refresh(changed)

    def set_selection(self, rows: np.ndarray | None, panel=None, box=None,
                      keep_boxes: bool = False, lasso=None) -> None:
        """Show ``rows`` as the selection; outline the ``box`` or the ``lasso`` (xs, ys) in the
        ``panel`` it was drawn in, keeping the other panels' outlines when ``keep_boxes``."""
        self.rows = rows
        outlines = dict(self.outlines) if rows is not None and keep_boxes else {}
        if rows is not None and panel in self.panels:
            if box is not None:
                x0, x1 = sorted(map(float, box[:2]))
                if self.panels[panel]["y"] is None:  # a histogram's span: the full height
                    y0, y1 = 0.0, float(self.panels[panel]["fig"].y_range.end)
                else:
                    y0, y1 = sorted(map(float, box[2:]))
                outlines[panel] = ("box", [x0, x1, x1, x0], [y0, y0, y1, y1])
            elif lasso is not None:
                outlines[panel] = ("lasso", [float(v) for v in lasso[0]],
                                   [float(v) for v in lasso[1]])
        with self._hold():
            # the outlines are glyph data, not annotations: changing an annotation's edges
            # makes Bokeh re-walk every model of the page (~1 s here on each brush)
            for key, p in self.panels.items():
                new, old = outlines.get(key), self.outlines.get(key)
                if new != old:
                    p["outline"].data = (dict(EMPTY_OUTLINE) if new is None else
                                         {"xs": [new[1]], "ys": [new[2]]})
            self.outlines = outlines
            self.refresh(base=False, subsets=False)

    def mark_star(self, row: int | None) -> None:
        for p in self.panels.values():
            if "focus" not in p:
                continue
            if row is None:
                p["focus"].data = {"x": [], "y": []}
            else:
                p["focus"].data = {"x": [float(self.frame[p["x"]].iloc[row])],
                                   "y": [float(self.frame[p["y"]].iloc[row])]}

    # -- events ---------------------------------------------------------------------------
    def _on_geometry(self, xcol, ycol, event) -> None:
        g = event.geometry
        if not event.final:
            return
        if g.get("type") == "rect":
            self._on_box(xcol, ycol, g)
        elif g.get("type") == "poly" and ycol is not None:
            self._on_lasso(xcol, ycol, g)

    def _on_box(self, xcol, ycol, geometry) -> None:
        box = (geometry["x0"], geometry["x1"], geometry.get("y0"), geometry.get("y1"))
        if not (np.isfinite(box[0]) and np.isfinite(box[1])) or box[0] == box[1]:
            return
        self.on_box(xcol, ycol, box)

    def _on_lasso(self, xcol, ycol, geometry) -> None:
        xs = np.asarray(geometry.get("x", []), dtype=np.float64).ravel()
        ys = np.asarray(geometry.get("y", []), dtype=np.float64).ravel()
        if (self.on_lasso is None or xs.size < 3 or xs.size != ys.size
                or not (np.isfinite(xs).all() and np.isfinite(ys).all())):
            return  # a click, or a lasso that left the plot's scales: nothing to select
        self.on_lasso(xcol, ycol, xs, ys)

    def _on_tap_event(self, xcol, ycol, event) -> None:
        if event.x is None or event.y is None:
            return
        self.on_tap(xcol, ycol, float(event.x), float(event.y))
