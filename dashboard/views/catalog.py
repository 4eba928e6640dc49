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

import html

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import NumberFormatter

from .. import corner, data
from ..figures.corner_plot import CornerPlot, axis_label, short_label
from ..state import AppContext, FocusState, SelectionState

__all__ = ["CatalogView", "axis_label"]

MAX_AXES = 6
TABLE_FIRST = ("APOGEE_ID", "TELESCOPE", "FIELD", "SNR", "TEFF", "LOGG", "M_H", "FE_H",
               "MG_FE", "POPULATION", "VAE_CHI2")
#: How a new box or lasso combines with the current selection.
SELECT_MODES = {"new shape replaces": "replace", "new shape narrows": "intersect"}


class CatalogView(pn.viewable.Viewer):
    """Corner plot + linked selection + filtered table over the whole catalog."""

    focus = param.ClassSelector(class_=FocusState)
    selection = param.ClassSelector(class_=SelectionState)
    context = param.ClassSelector(class_=AppContext)

    axes = param.ListSelector(default=[], objects=[], check_on_set=True,
                              doc="the corner plot's columns (2 to 6)")
    color_by = param.Selector(default="count", objects=["count"], check_on_set=True)
    cnorm = param.Selector(default="eq_hist", objects=["eq_hist", "log", "linear"])
    mode = param.Selector(default=next(iter(SELECT_MODES)), objects=list(SELECT_MODES))

    #: saved in session files (the keys of the old per-widget state)
    session_params = ("axes", "color_by", "cnorm", "mode")

    def __init__(self, **params):
        super().__init__(**params)
        store = self.context.store
        self.available = store is not None
        self.message = pn.pane.Alert(self.context.store_problem or "", alert_type="warning",
                                     visible=not self.available)
        self.count = pn.pane.Markdown("", css_classes=["ss-selection-count"], margin=(5, 10))
        self.plot = None
        #: called with the APOGEE_ID of a star opened here (a click in a panel or a row): the
        #: app shows it in the Star view
        self.on_open: list = []
        if not self.available:
            return
        self.frame = data.catalog_frame(store)
        self.ids = store.catalog["APOGEE_ID"].astype(str)
        columns = data.axis_columns(self.frame)
        default = [c for c in data.PREFERRED_AXES if c in columns][:MAX_AXES] or columns[:4]
        self._offer_columns(columns)
        self.axes = default
        W = pn.widgets
        self.axes_choice = W.MultiChoice.from_param(self.param.axes, label="Corner-plot columns "
                                                    "(2 to 6)", max_items=MAX_AXES, width=460)
        self.color_select = W.Select.from_param(self.param.color_by, label="Colour by", width=170)
        self.cnorm_select = W.Select.from_param(self.param.cnorm, label="Count scale", width=110)
        self.mode_buttons = W.RadioButtonGroup.from_param(self.param.mode)
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
        self.param.watch(lambda e: self.built and self.rebuild(), ["axes", "color_by", "cnorm"])
        self.focus.param.watch(lambda e: self._mark_focus(), "spectrum")
        self.context.param.watch(lambda e: self.reload_columns(), "catalog_version")
        self._own_selection = False
        self.selection.param.watch(self._on_selection, "rows")
        self.built = False

    def reload_columns(self) -> None:
        """Offer columns added to the store (e.g. FIT_* from a fit of the selection); the plot
        and the selection stay as they are until the user picks new columns."""
        self.frame = data.catalog_frame(self.context.store)
        with pn.io.hold():
            self._offer_columns(data.axis_columns(self.frame))

    def _offer_columns(self, columns: list[str]) -> None:
        self.param.axes.objects = columns
        self.param.color_by.objects = ["count"] + columns

    def ensure_built(self) -> None:
        """Build the corner plot the first time it is needed (it costs a second or two).

        No ``loading`` toggle on the Bokeh pane here: under concurrent sessions that toggle
        (Panel restyling the pane through its css classes) raised "List parameter
        'Bokeh.stylesheets' items must be instances of str".  The app greys the whole tab
        while a view builds (``DashboardApp._on_shown``) and the count line says so."""
        if self.available and not self.built:
            self.built = True
            self.count.object = "Building the corner plot …"
            self.rebuild()

    # -- corner plot ----------------------------------------------------------------------
    def rebuild(self) -> None:
        """(Re)build the corner plot for the chosen columns; the selection starts afresh."""
        cols = list(self.axes)
        self._reset_selection()
        if len(cols) < 2:
            self.plot = None
            self.corner_pane.object = None
            self.count.object = "Choose at least two columns for the corner plot."
            return
        color = None if self.color_by == "count" else self.color_by
        self.cnorm_select.visible = color is None  # a mean has its own scale and colour bar
        self.plot = CornerPlot(self.frame, cols, color, self.cnorm, self.select_box,
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
        narrow = SELECT_MODES[self.mode] == "intersect" and self.selection.active
        if narrow:
            keep = np.zeros(len(self.frame), dtype=bool)
            keep[self.selection.rows] = True
            mask &= keep
            self.constraints.append(text)
        else:
            self.constraints = [text]
        rows = np.flatnonzero(mask)
        self._own_selection = True
        try:
            self.selection.select(rows, description="; ".join(self.constraints))
        finally:
            self._own_selection = False
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
        self._opened(star)
        return star

    def _opened(self, star: str) -> None:
        if self.focus.star_id == star and self.focus.spectrum is not None:
            for callback in list(self.on_open):
                callback(star)

    def _mark_focus(self) -> None:
        if self.plot is None:
            return
        spec, store = self.focus.spectrum, self.context.store
        row = None
        if spec is not None and self.focus.source == "store" and store.has_star(spec.apogee_id):
            row = store.row_of(spec.apogee_id)
        self.plot.mark_star(row)

    # -- selection ------------------------------------------------------------------------
    def _on_selection(self, event) -> None:
        """A selection made elsewhere (a restored session) is shown here too."""
        if self._own_selection or not self.built:
            return
        rows = event.new
        self.constraints = [] if rows is None else [self.selection.description]
        self.table.value = self._table_frame if rows is None else self._table_frame.iloc[rows]
        if self.plot is not None:
            self.plot.set_selection(rows)
        self._update_count()

    def _reset_selection(self) -> None:
        self.constraints = []
        self._own_selection = True
        try:
            self.selection.clear()
        finally:
            self._own_selection = False
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
                                 f"{html.escape(self.selection.description)}")  # may be a file's
        else:
            self.count.object = (f"No selection: **{total:,}** stars. Drag a box in any panel "
                                 "(or a lasso: pick it in the plot's toolbar) to select; click a "
                                 "panel or a table row to open a star.")

    def _on_table_select(self, event) -> None:
        if not event.new:
            return
        star = str(self.table.value.iloc[event.new[0]]["APOGEE_ID"])
        self.focus.star_id = star
        self._opened(star)

    # -- layout ---------------------------------------------------------------------------
    def __panel__(self):
        if not self.available:
            return pn.Column(self.message)
        controls = pn.FlexBox(
            self.axes_choice, self.color_select, self.cnorm_select,
            pn.Column(pn.pane.Markdown("**Box / lasso select**", margin=(0, 10, -8, 10)),
                      self.mode_buttons),
            pn.Column(pn.Spacer(height=20), self.clear_button), gap="0px 10px",
            sizing_mode="stretch_width")
        return pn.Column(
            controls, self.count, self.corner_pane,
            pn.pane.Markdown("#### Catalog: filter with the header boxes; click a row to open "
                             "the star", margin=(10, 10, 0, 10)),
            self.table, sizing_mode="stretch_width")
