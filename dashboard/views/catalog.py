"""Catalog view: a datashaded corner plot of the whole catalog with linked selection, and
the catalog table filtered by that selection.

Every off-diagonal panel is a ``rasterize``d ``hv.Points`` over the whole catalog (zooming
re-aggregates on the server; no point is sent to the browser); the diagonal holds histograms.
One ``link_selections`` instance ties all panels together: a box drawn in any panel highlights
the same stars everywhere, and its expression filters the table and sets the
:class:`~dashboard.state.SelectionState`.  Clicking a panel opens the nearest star; clicking
a table row opens that row's star.
"""

from __future__ import annotations

import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import NumberFormatter
from holoviews.operation.datashader import rasterize

from .. import data
from ..spectra import LABEL_ROWS
from ..state import AppContext, FocusState, SelectionState

MAX_AXES = 6
PANEL_PX = 175
#: HR-diagram convention: hotter to the left, giants up.
INVERTED = ("TEFF", "LOGG")
TABLE_FIRST = ("APOGEE_ID", "TELESCOPE", "FIELD", "SNR", "TEFF", "LOGG", "M_H", "FE_H",
               "MG_FE", "POPULATION", "VAE_CHI2")
UNITS = {"TEFF": "K", "LOGG": "dex", "SNR": "", "VMICRO": "km/s", "RA": "deg", "DEC": "deg"}


def axis_label(col: str) -> str:
    if col in LABEL_ROWS:
        name, unit = LABEL_ROWS[col]
        return f"{name} [{unit}]" if unit != "dex" or col == "LOGG" else name
    if col.startswith("VAE_Z"):
        return f"VAE z{col[5:]}"
    if col == "VAE_CHI2":
        return "VAE χ²_ν"
    if col == "SNR":
        return "S/N"
    unit = UNITS.get(col)
    return f"{col} [{unit}]" if unit else col


def dimension(col: str) -> hv.Dimension:
    return hv.Dimension(col, label=axis_label(col))


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
        if not self.available:
            return
        self.frame = data.catalog_frame(store)
        columns = data.axis_columns(self.frame)
        default = [c for c in data.PREFERRED_AXES if c in columns][:MAX_AXES] or columns[:4]
        self.axes = pn.widgets.MultiChoice(name="Corner-plot columns (up to 6)", options=columns,
                                           value=default, max_items=MAX_AXES, width=520)
        self.color_by = pn.widgets.Select(name="Colour by", options=["count"] + columns,
                                          value="count", width=170)
        self.cnorm = pn.widgets.Select(name="Colour scale", options=["eq_hist", "log", "linear"],
                                       value="eq_hist", width=120)
        self.clear_button = pn.widgets.Button(name="Clear selection", width=130)
        self.clear_button.on_click(lambda e: self.clear_selection())
        self.corner = pn.pane.HoloViews(None, sizing_mode="fixed", linked_axes=True)
        cat = store.catalog
        first = [c for c in TABLE_FIRST if c in cat.columns]
        self.table_columns = first
        self._table_frame = cat[first]
        self.table = pn.widgets.Tabulator(
            self._table_frame, pagination="remote", page_size=12, show_index=False,
            header_filters=True, disabled=True, selectable=1, sizing_mode="stretch_width",
            height=430, theme="simple", layout="fit_data_stretch",
            formatters={c: NumberFormatter(format="0.000" if c not in ("TEFF", "SNR") else "0")
                        for c in first if pd.api.types.is_float_dtype(cat[c])},
        )
        self.table.param.watch(self._on_table_select, "selection")
        self.axes.param.watch(lambda e: self.rebuild(), "value")
        self.color_by.param.watch(lambda e: self.rebuild(), "value")
        self.cnorm.param.watch(lambda e: self.rebuild(), "value")
        self.link = None
        self.rebuild()

    # -- corner plot ----------------------------------------------------------------------
    def rebuild(self) -> None:
        """(Re)build the corner plot for the chosen columns; the selection starts afresh."""
        cols = list(self.axes.value)
        if self.link is not None:
            self.clear_selection()
        self.link = hv.selection.link_selections.instance(
            unselected_alpha=0.25, selected_color="#e6550d", cross_filter_mode="overwrite")
        self.link.param.watch(self._on_expr, "selection_expr")
        if len(cols) < 2:
            self.corner.object = None
            self.count.object = "Choose at least two columns for the corner plot."
            return
        used = list(dict.fromkeys(cols + ([self.color_by.value] if self.color_by.value != "count"
                                          else []) + ["ROW"]))
        self.dataset = hv.Dataset(self.frame[used], kdims=[dimension(c) for c in used])
        self.corner.object = self.link(self.corner_layout(cols))
        self._update_count()

    def corner_layout(self, cols: list[str]) -> hv.Layout:
        """Lower-triangle corner plot: rasterized Points off the diagonal, histograms on it."""
        color = self.color_by.value
        vdims = [self.dataset.get_dimension(color)] if color != "count" else []
        agg = ds.count() if color == "count" else ds.mean(color)
        cmap = "viridis" if color == "count" else "plasma"
        k = len(cols)
        panels = []
        self._taps = []
        for i, ycol in enumerate(cols):
            for j, xcol in enumerate(cols):
                common = {"frame_width": PANEL_PX, "frame_height": PANEL_PX,
                          "xaxis": "bottom" if i == k - 1 else None,
                          "yaxis": "left" if j == 0 else None,
                          "invert_xaxis": xcol in INVERTED}
                if j > i:
                    panels.append(hv.Empty())
                elif i == j:
                    hist = hv.operation.histogram(self.dataset, dimension=xcol,
                                                  num_bins=40, normed=False)
                    panels.append(hist.opts(**{**common, "yaxis": None}, color="#6b8fb5",
                                            line_color=None, tools=["box_select"],
                                            default_tools=["pan", "wheel_zoom", "reset"]))
                else:
                    dims = [self.dataset.get_dimension(c) for c in (xcol, ycol)]
                    points = hv.Points(self.dataset, kdims=dims, vdims=vdims)
                    raster = rasterize(points, aggregator=agg, width=PANEL_PX, height=PANEL_PX)
                    tap = hv.streams.Tap(source=raster, x=np.nan, y=np.nan)
                    tap.add_subscriber(self._tap_callback(xcol, ycol))
                    self._taps.append(tap)
                    panels.append(raster.opts(
                        **common, invert_yaxis=ycol in INVERTED, cmap=cmap, cnorm=self.cnorm.value,
                        tools=["box_select", "tap", "hover"], active_tools=["box_select"],
                        default_tools=["pan", "wheel_zoom", "reset", "save"]))
        layout = hv.Layout(panels).cols(k).opts(shared_axes=True, merge_tools=True)
        return layout

    def _tap_callback(self, xcol: str, ycol: str):
        def on_tap(x=None, y=None, **_):
            if x is None or y is None or not np.isfinite(x) or not np.isfinite(y):
                return
            self.open_nearest(xcol, ycol, float(x), float(y))
        return on_tap

    def open_nearest(self, xcol: str, ycol: str, x: float, y: float) -> str | None:
        """Focus the star nearest to (x, y) in the (xcol, ycol) panel; returns its APOGEE_ID."""
        f = self.frame
        span = [float(np.nanpercentile(f[c], 99) - np.nanpercentile(f[c], 1)) for c in (xcol, ycol)]
        row = data.nearest_row(f, xcol, ycol, x, y, span[0], span[1], self.selection.rows)
        if row is None:
            return None
        star = str(self.context.store.catalog["APOGEE_ID"].iloc[row])
        self.focus.star_id = star
        return star

    # -- selection ------------------------------------------------------------------------
    def _on_expr(self, event) -> None:
        expr = event.new
        if expr is None:
            self.selection.clear()
            self.table.value = self._table_frame
        else:
            mask = np.asarray(expr.apply(self.dataset), dtype=bool)
            rows = np.flatnonzero(mask)
            self.selection.select(rows, description=str(expr))
            self.table.value = self._table_frame.iloc[rows]
        self._update_count()

    def apply_expression(self, expr) -> None:
        """Set the linked selection from code (tests, URL restore); None clears it."""
        self.link.selection_expr = expr

    def clear_selection(self) -> None:
        if self.link is not None and self.link.selection_expr is not None:
            self.link.param.update(selection_expr=None)
        self.selection.clear()
        self.table.value = self._table_frame
        self._update_count()

    def _update_count(self) -> None:
        total = self.selection.total
        if self.selection.active:
            self.count.object = (f"**{self.selection.count:,}** of {total:,} stars selected "
                                 "(box-select in any panel; the table shows the selection)")
        else:
            self.count.object = (f"No selection: **{total:,}** stars. Draw a box in any panel "
                                 "to select; click a point or a table row to open that star.")

    def _on_table_select(self, event) -> None:
        if not event.new:
            return
        row = self.table.value.iloc[event.new[0]]
        self.focus.star_id = str(row["APOGEE_ID"])

    # -- layout ---------------------------------------------------------------------------
    def __panel__(self):
        if not self.available:
            return pn.Column(self.message)
        controls = pn.Row(self.axes, self.color_by, self.cnorm,
                          pn.Column(pn.Spacer(height=18), self.clear_button))
        return pn.Column(
            controls, self.count,
            pn.Row(self.corner, sizing_mode="stretch_width", scroll=True),
            pn.pane.Markdown("#### Catalog (filter with the header boxes; click a row to open "
                             "the star)", margin=(10, 10, 0, 10)),
            self.table, sizing_mode="stretch_width")
