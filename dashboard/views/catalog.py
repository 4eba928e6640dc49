"""Catalog view: a datashaded corner plot of the whole catalog with linked selection, and
the catalog table filtered by that selection.

Each off-diagonal panel is a datashader aggregate of every star (counts, or the mean of a
chosen column) drawn as a Bokeh image that the browser colour-maps; no star is sent to the
browser.  Panels share one Range1d per column, so zooming a column anywhere zooms it
everywhere and re-aggregates the affected panels on the server.  A box or a lasso drawn in any
panel (or a span on a histogram) selects stars in :class:`~dashboard.state.SelectionState`, the
stars inside being found on the server (:mod:`dashboard.corner`); every panel then shows the selected stars in colour over the rest in grey, the table lists them and
the count says how many.  Clicking a panel opens the nearest star; clicking a row opens that
row's star; the focused star is marked in every panel.

Why not ``hv.link_selections``: on this 2-core machine one selection event over a 4-column
corner of 20k stars took 25-43 s through HoloViews (every stream refreshed every panel), and
rendering a 6-column corner took ~30 s.  Direct datashader aggregation into Bokeh sources keeps
each brush to one aggregation per panel (see bench/dashboard.py).
"""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.events import RangesUpdate, SelectionGeometry, Tap
from bokeh.layouts import gridplot
from bokeh.models import (
    BoxAnnotation,
    BoxSelectTool,
    ColorBar,
    ColumnDataSource,
    EqHistColorMapper,
    HoverTool,
    LassoSelectTool,
    LinearColorMapper,
    LogColorMapper,
    NumberFormatter,
    PolyAnnotation,
    Range1d,
)
from bokeh.palettes import Greys256, Oranges256, Plasma256, Viridis256
from bokeh.plotting import figure

from .. import corner, data
from ..jobs import Throttle
from ..persist import restore_widgets, widget_state
from ..spectra import LABEL_ROWS
from ..state import AppContext, FocusState, SelectionState

MAX_AXES = 6
PANEL_PX = 170
#: HR-diagram convention: hotter to the left, giants up.
INVERTED = ("TEFF", "LOGG")
TABLE_FIRST = ("APOGEE_ID", "TELESCOPE", "FIELD", "SNR", "TEFF", "LOGG", "M_H", "FE_H",
               "MG_FE", "POPULATION", "VAE_CHI2")
UNITS = {"TEFF": "K", "VMICRO": "km/s", "RA": "deg", "DEC": "deg"}
#: How a new box or lasso combines with the current selection.
SELECT_MODES = {"new shape replaces": "replace", "new shape narrows": "intersect"}
TRANSPARENT = "rgba(0, 0, 0, 0)"
EMPTY_IMAGE = {"image": [], "x": [], "y": [], "dw": [], "dh": []}
LIGHT_GREYS = list(reversed(Greys256[40:230]))
SELECTED_COUNT = list(reversed(Oranges256[:200]))
#: How the box or lasso behind the selection stays drawn in its panel.
OUTLINE_STYLE = {"fill_color": "#e6550d", "fill_alpha": 0.08, "line_color": "#e6550d",
                 "line_width": 1.5, "line_dash": "dashed", "visible": False}


def axis_label(col: str) -> str:
    """A readable axis title with units: 'Teff [K]', 'log g [dex]', '[Fe/H]'."""
    if col in LABEL_ROWS:
        name, unit = LABEL_ROWS[col]
        return f"{name} [{unit}]" if unit != "dex" or col == "LOGG" else name
    if col.startswith("VAE_Z"):
        return f"VAE z{col[5:]}"
    if col.startswith("FIT_") and col[4:] in LABEL_ROWS:
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
                 on_box, on_tap, on_lasso=None):
        self.frame, self.cols, self.color, self.cnorm = frame, cols, color, cnorm
        self.on_box, self.on_tap, self.on_lasso = on_box, on_tap, on_lasso
        self.rows: np.ndarray | None = None
        self.ranges: dict[str, Range1d] = {}
        for c in cols:
            lo, hi = corner.finite_range(frame[c].to_numpy())
            self.ranges[c] = Range1d(hi, lo) if c in INVERTED else Range1d(lo, hi)
        self.color_range = (corner.finite_range(frame[color].to_numpy(), 1, 99, 0)
                            if color else None)
        self.panels: dict[tuple[str, str], dict] = {}
        self._reaggregate = Throttle(self._refresh_changed, 0.1)
        self._seen = {c: self._span(c) for c in cols}
        self.layout = self._build()
        self.refresh()

    # -- models -----------------------------------------------------------------------------
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
        fig = figure(frame_width=PANEL_PX, frame_height=PANEL_PX, x_range=self.ranges[xcol],
                     y_range=y_range, tools="pan,wheel_zoom,reset,save",
                     active_scroll="wheel_zoom", min_border=4, toolbar_location=None,
                     output_backend="canvas",
                     # room for the axes kept on every panel of the first column / last row, so
                     # the frames line up whatever the tick labels' widths
                     min_border_left=64 if j == 0 else 4, min_border_bottom=58 if i == k - 1 else 4)
        dummy = fig.scatter([], [], alpha=0)  # select tools need a renderer to talk to
        # histograms use the box's x-span only, so they get no lasso
        box = BoxSelectTool(dimensions="both", renderers=[dummy], persistent=False)
        fig.add_tools(box)
        if ycol:
            # only the finished polygon is sent (continuous=False): the server selects once
            fig.add_tools(LassoSelectTool(renderers=[dummy], persistent=False, continuous=False))
        fig.toolbar.active_drag = box  # the merged toolbar alone does not reach the figures
        fig.xaxis.visible = i == k - 1
        fig.yaxis.visible = j == 0
        fig.xaxis.axis_label = axis_label(xcol)
        if ycol:
            fig.yaxis.axis_label = axis_label(ycol)
        fig.grid.grid_line_alpha = 0.25
        fig.xaxis.major_label_orientation = 0.6
        highlight = BoxAnnotation(**OUTLINE_STYLE)
        fig.add_layout(highlight)
        outline = PolyAnnotation(**OUTLINE_STYLE) if ycol else None
        if outline is not None:
            fig.add_layout(outline)
        fig.on_event(SelectionGeometry, partial(self._on_geometry, xcol, ycol))
        fig.on_event(RangesUpdate, lambda e: self._reaggregate())
        if ycol:
            fig.on_event(Tap, partial(self._on_tap_event, xcol, ycol))
        return fig, highlight, outline

    def _build(self):
        k = len(self.cols)
        grid = [[None] * k for _ in range(k)]
        for i, ycol in enumerate(self.cols):
            for j, xcol in enumerate(self.cols[: i + 1]):
                diag = i == j
                fig, highlight, outline = self._figure(xcol, None if diag else ycol, i, j)
                p = {"fig": fig, "highlight": highlight, "outline": outline, "x": xcol,
                     "y": None if diag else ycol}
                if diag:
                    p["base"] = ColumnDataSource({"left": [], "right": [], "top": []})
                    p["sel"] = ColumnDataSource({"left": [], "right": [], "top": []})
                    fig.quad(left="left", right="right", top="top", bottom=0, source=p["base"],
                             fill_color="#8aa5c4", line_color="#6b8fb5")
                    fig.quad(left="left", right="right", top="top", bottom=0, source=p["sel"],
                             fill_color="#e6550d", line_color="#c44a0b", fill_alpha=0.8)
                    fig.yaxis.axis_label = "stars"
                else:
                    p["base"] = ColumnDataSource(dict(EMPTY_IMAGE))
                    p["sel"] = ColumnDataSource(dict(EMPTY_IMAGE))
                    p["base_map"], p["sel_map"] = self._mapper(False), self._mapper(True)
                    r = fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=p["base"],
                                  color_mapper=p["base_map"])
                    fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=p["sel"],
                              color_mapper=p["sel_map"])
                    what = f"mean {axis_label(self.color)}" if self.color else "stars"
                    fig.add_tools(HoverTool(renderers=[r], tooltips=[
                        (axis_label(xcol), "$x{0.00}"), (axis_label(ycol), "$y{0.00}"),
                        (what, "@image{0.00}")]))
                    p["focus"] = ColumnDataSource({"x": [], "y": []})
                    fig.scatter("x", "y", source=p["focus"], marker="circle", size=11,
                                fill_alpha=0, line_color="#d62728", line_width=2.2)
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
        fig = figure(frame_width=60, frame_height=PANEL_PX, toolbar_location=None,
                     min_border=4, outline_line_color=None)
        fig.axis.visible = False
        fig.grid.visible = False
        mapper = self._mapper(False)
        fig.add_layout(ColorBar(color_mapper=mapper, title=f"mean {axis_label(self.color)}",
                                width=12), "right")
        fig.scatter([0], [0], alpha=0)
        return fig

    # -- aggregation ----------------------------------------------------------------------
    def _span(self, col: str) -> tuple[float, float]:
        r = self.ranges[col]
        return tuple(sorted((float(r.start), float(r.end))))

    def _selected_frame(self) -> pd.DataFrame | None:
        if self.rows is None:
            return None
        used = list(dict.fromkeys(self.cols + ([self.color] if self.color else [])))
        return self.frame[used].take(self.rows)

    def refresh(self, columns=None, base: bool = True) -> None:
        """Re-aggregate the panels that involve ``columns`` (all when None)."""
        sel = self._selected_frame()
        with pn.io.hold():
            for (xcol, ycol), p in self.panels.items():
                if columns is not None and xcol not in columns and ycol not in columns:
                    continue
                if p["y"] is None:
                    self._draw_hist(p, xcol, sel, base)
                else:
                    self._draw_image(p, xcol, ycol, sel, base)

    def _draw_image(self, p, xcol, ycol, sel, base) -> None:
        xr, yr = self._span(xcol), self._span(ycol)
        if base:
            a = corner.aggregate(self.frame, xcol, ycol, xr, yr, color=self.color)
            p["base"].data = {"image": [a.image], "x": [a.x0], "y": [a.y0], "dw": [a.dw],
                              "dh": [a.dh]}
        if sel is None:
            p["sel"].data = dict(EMPTY_IMAGE)
        else:
            a = corner.aggregate(sel, xcol, ycol, xr, yr, color=self.color)
            p["sel"].data = {"image": [a.image], "x": [a.x0], "y": [a.y0], "dw": [a.dw],
                             "dh": [a.dh]}
        p["base_map"].palette = LIGHT_GREYS if sel is not None else Viridis256

    def _draw_hist(self, p, col, sel, base) -> None:
        xr = self._span(col)
        counts, edges = corner.histogram(self.frame[col].to_numpy(), xr)
        if base:
            p["base"].data = {"left": edges[:-1], "right": edges[1:], "top": counts}
            p["fig"].y_range.update(start=0, end=float(max(counts.max(), 1)) * 1.08)
        if sel is None:
            p["sel"].data = {"left": [], "right": [], "top": []}
        else:
            c, e = corner.histogram(sel[col].to_numpy(), xr)
            p["sel"].data = {"left": e[:-1], "right": e[1:], "top": c}

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
        with pn.io.hold():
            for key, p in self.panels.items():
                here = rows is not None and key == panel
                keep = rows is not None and keep_boxes
                hl, outline = p["highlight"], p["outline"]
                if here and box is not None:
                    edges = {"left": min(box[0], box[1]), "right": max(box[0], box[1])}
                    if p["y"] is not None:
                        edges.update(bottom=min(box[2], box[3]), top=max(box[2], box[3]))
                    hl.update(visible=True, **edges)
                elif not keep:
                    hl.visible = False
                if outline is None:
                    continue
                if here and lasso is not None:
                    outline.update(visible=True, xs=[float(v) for v in lasso[0]],
                                   ys=[float(v) for v in lasso[1]])
                elif not keep:
                    outline.visible = False
            self.refresh(base=False)

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


class CatalogView(pn.viewable.Viewer):
    """Corner plot + linked selection + filtered table over the whole catalog."""

    focus = param.ClassSelector(class_=FocusState)
    selection = param.ClassSelector(class_=SelectionState)
    context = param.ClassSelector(class_=AppContext)

    def __init__(self, **params):
        super().__init__(**params)
        store = self.context.store
        self.available = store is not None
        self.message = pn.pane.Alert(self.context.store_problem or "", alert_type="warning",
                                     visible=not self.available)
        self.count = pn.pane.Markdown("", css_classes=["ss-selection-count"], margin=(5, 10))
        self.plot = None
        if not self.available:
            return
        self.frame = data.catalog_frame(store)
        self.ids = store.catalog["APOGEE_ID"].astype(str)
        columns = data.axis_columns(self.frame)
        default = [c for c in data.PREFERRED_AXES if c in columns][:MAX_AXES] or columns[:4]
        self.axes = pn.widgets.MultiChoice(label="Corner-plot columns (2 to 6)", options=columns,
                                           value=default, max_items=MAX_AXES, width=460)
        self.color_by = pn.widgets.Select(label="Colour by", options=["count"] + columns,
                                          value="count", width=170)
        self.cnorm = pn.widgets.Select(label="Count scale", options=["eq_hist", "log", "linear"],
                                       value="eq_hist", width=110)
        self.mode = pn.widgets.RadioButtonGroup(options=list(SELECT_MODES),
                                                value=next(iter(SELECT_MODES)))
        self.clear_button = pn.widgets.Button(label="Clear selection", width=130)
        self.clear_button.on_click(lambda e: self.clear_selection())
        self.corner_pane = pn.pane.Bokeh(None, css_classes=["ss-corner"])
        self.constraints: list[str] = []
        cat = store.catalog
        self.table_columns = [c for c in TABLE_FIRST if c in cat.columns]
        self._table_frame = cat[self.table_columns]
        self.table = pn.widgets.Tabulator(
            self._table_frame, pagination="remote", page_size=12, show_index=False,
            header_filters=True, disabled=True, selectable=1, sizing_mode="stretch_width",
            height=430, theme="simple", layout="fit_data_stretch", css_classes=["ss-table"],
            formatters={c: NumberFormatter(format="0" if c in ("TEFF", "SNR") else "0.000")
                        for c in self.table_columns if pd.api.types.is_float_dtype(cat[c])},
        )
        self.table.param.watch(self._on_table_select, "selection")
        for w in (self.axes, self.color_by, self.cnorm):
            w.param.watch(lambda e: self.built and self.rebuild(), "value")
        self.focus.param.watch(lambda e: self._mark_focus(), "spectrum")
        self.context.param.watch(lambda e: self.reload_columns(), "catalog_version")
        self.built = False

    def reload_columns(self) -> None:
        """Offer columns added to the store (e.g. FIT_* from a fit of the selection); the plot
        and the selection stay as they are until the user picks new columns."""
        self.frame = data.catalog_frame(self.context.store)
        columns = data.axis_columns(self.frame)
        with pn.io.hold():
            self.axes.options = columns
            self.color_by.options = ["count"] + columns

    # -- session file ---------------------------------------------------------------------------
    def _persisted(self) -> dict:
        if not self.available:
            return {}
        return {"axes": self.axes, "color_by": self.color_by, "cnorm": self.cnorm,
                "mode": self.mode}

    def state_dict(self) -> dict:
        return widget_state(self._persisted())

    def load_state(self, state: dict, sync: bool = False) -> list[str]:
        return restore_widgets(self._persisted(), state)

    def ensure_built(self) -> None:
        """Build the corner plot the first time it is needed (it costs a second or two)."""
        if self.available and not self.built:
            self.built = True
            self.corner_pane.loading = True
            try:
                self.rebuild()
            finally:
                self.corner_pane.loading = False

    # -- corner plot ----------------------------------------------------------------------
    def rebuild(self) -> None:
        """(Re)build the corner plot for the chosen columns; the selection starts afresh."""
        cols = list(self.axes.value)
        self._reset_selection()
        if len(cols) < 2:
            self.plot = None
            self.corner_pane.object = None
            self.count.object = "Choose at least two columns for the corner plot."
            return
        color = None if self.color_by.value == "count" else self.color_by.value
        self.cnorm.visible = color is None  # a mean has its own linear scale and colour bar
        self.plot = CornerPlot(self.frame, cols, color, self.cnorm.value, self.select_box,
                               self.open_nearest, self.select_lasso)
        self.corner_pane.object = self.plot.layout
        self._mark_focus()
        self._update_count()

    def select_box(self, xcol: str, ycol: str | None, box) -> None:
        """Select the stars in a box of panel (xcol, ycol), or an x span of a histogram."""
        mask = corner.box_mask(self.frame, xcol, box[:2], ycol, box[2:] if ycol else None)
        text = self._describe(xcol, box[:2])
        if ycol:
            text += " and " + self._describe(ycol, box[2:])
        self._select(mask, text, (xcol, ycol or xcol), box=box)

    def select_lasso(self, xcol: str, ycol: str, xs, ys) -> None:
        """Select the stars inside a lasso polygon (vertices xs, ys) of panel (xcol, ycol)."""
        mask = corner.polygon_mask(self.frame, xcol, ycol, xs, ys)
        text = f"lasso on {short_label(xcol)}–{short_label(ycol)} ({len(xs)} vertices)"
        self._select(mask, text, (xcol, ycol), lasso=(xs, ys))

    def _select(self, mask: np.ndarray, text: str, panel, box=None, lasso=None) -> None:
        """Make the rows in ``mask`` the selection, or narrow the current one to them, as the
        select mode says; ``text`` describes the new shape."""
        narrow = SELECT_MODES[self.mode.value] == "intersect" and self.selection.active
        if narrow:
            keep = np.zeros(len(self.frame), dtype=bool)
            keep[self.selection.rows] = True
            mask &= keep
            self.constraints.append(text)
        else:
            self.constraints = [text]
        rows = np.flatnonzero(mask)
        self.selection.select(rows, description="; ".join(self.constraints))
        self.table.value = self._table_frame.iloc[rows]
        if self.plot is not None:
            self.plot.set_selection(rows, panel, box, keep_boxes=narrow, lasso=lasso)
        self._update_count()

    @staticmethod
    def _describe(col: str, span) -> str:
        lo, hi = sorted(span)
        return f"{axis_label(col)} ∈ [{lo:.4g}, {hi:.4g}]"

    def open_nearest(self, xcol: str, ycol: str, x: float, y: float) -> str | None:
        """Focus the star nearest to (x, y) in the (xcol, ycol) panel; returns its APOGEE_ID."""
        spans = [abs(self.plot.ranges[c].end - self.plot.ranges[c].start) if self.plot else 1.0
                 for c in (xcol, ycol)]
        row = data.nearest_row(self.frame, xcol, ycol, x, y, spans[0], spans[1],
                               self.selection.rows)
        if row is None:
            return None
        star = str(self.ids.iloc[row])
        self.focus.star_id = star
        return star

    def _mark_focus(self) -> None:
        if self.plot is None:
            return
        spec, store = self.focus.spectrum, self.context.store
        row = None
        if spec is not None and self.focus.source == "store" and store.has_star(spec.apogee_id):
            row = store.row_of(spec.apogee_id)
        self.plot.mark_star(row)

    # -- selection ------------------------------------------------------------------------
    def _reset_selection(self) -> None:
        self.constraints = []
        self.selection.clear()
        self.table.value = self._table_frame

    def clear_selection(self) -> None:
        self._reset_selection()
        if self.plot is not None:
            self.plot.set_selection(None)
        self._update_count()

    def _update_count(self) -> None:
        total = self.selection.total
        if self.selection.active:
            self.count.object = (f"**{self.selection.count:,}** of {total:,} stars selected: "
                                 f"{self.selection.description}")
        else:
            self.count.object = (f"No selection: **{total:,}** stars. Drag a box in any panel "
                                 "(or a lasso: pick it in the plot's toolbar) to select; click a "
                                 "panel or a table row to open a star.")

    def _on_table_select(self, event) -> None:
        if not event.new:
            return
        row = self.table.value.iloc[event.new[0]]
        self.focus.star_id = str(row["APOGEE_ID"])

    # -- layout ---------------------------------------------------------------------------
    def __panel__(self):
        if not self.available:
            return pn.Column(self.message)
        controls = pn.FlexBox(
            self.axes, self.color_by, self.cnorm,
            pn.Column(pn.pane.Markdown("**Box / lasso select**", margin=(0, 10, -8, 10)), self.mode),
            pn.Column(pn.Spacer(height=20), self.clear_button), gap="0px 10px",
            sizing_mode="stretch_width")
        return pn.Column(
            controls, self.count, self.corner_pane,
            pn.pane.Markdown("#### Catalog: filter with the header boxes; click a row to open "
                             "the star", margin=(10, 10, 0, 10)),
            self.table, sizing_mode="stretch_width")
