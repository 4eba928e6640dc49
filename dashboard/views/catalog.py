"""Catalog view: a datashaded corner plot of the whole catalog with linked selection, and
the catalog table filtered by that selection.

Each off-diagonal panel is an aggregate of every star (counts, or the mean of a chosen column,
per pixel as datashader makes them) coloured on the server and drawn as a Bokeh image; no star
is sent to the browser.  The plot is built off the session's thread (:meth:`rebuild`).  Panels share one Range1d per column, so zooming a column anywhere zooms it
everywhere and re-aggregates the affected panels on the server.  A box or a lasso drawn in any
panel (or a span on a histogram) selects stars in :class:`~dashboard.state.SelectionState`, the
stars inside being found on the server (:mod:`dashboard.corner`); every panel then shows the selected stars in colour over the rest in grey, the table lists them and
the count says how many.  Clicking a panel opens the nearest star; clicking a row opens that
row's star; the focused star is marked in every panel.

Named subsets (TOPCAT's "row subsets") are made from an expression (``TEFF < 4500 &
LOGG < 2``, checked and evaluated by :mod:`core.subsets`, never run as Python), may name
earlier subsets, can be combined (union, intersection, difference of the ticked ones), are
drawn in every panel in their own colours (datashaded, like the rest) and can limit the
table.  They live in :class:`~dashboard.state.SubsetState`, apart from the brushed selection
and the focused star, and are saved in session files (:mod:`dashboard.persist`).  Numeric
table columns are filtered by ranges typed in boxes above the table (``4000..4500``,
``>4500``, ``<2``; :func:`core.subsets.range_mask`, on the server), text columns by the
header boxes ('contains').  Tabulator's own header filters cannot do ranges: the browser
filters each page again with the same function, and a custom one cannot be sent back.

Why not ``hv.link_selections``: on this 2-core machine one selection event over a 4-column
corner of 20k stars took 25-43 s through HoloViews (every stream refreshed every panel), and
rendering a 6-column corner took ~30 s.  Direct aggregation into Bokeh sources keeps
each brush to one aggregation per panel (see bench/dashboard.py).
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import NumberFormatter

from core.subsets import SubsetError, make_subset, range_expression, range_mask, references

from .. import corner, data
from ..figures.corner_plot import CornerPlot, axis_label, short_label
from ..jobs import JobRunner, session_doc
from ..state import AppContext, FocusState, SelectionState, Session, SubsetState

__all__ = ["CatalogView", "axis_label"]

MAX_AXES = 6
TABLE_FIRST = ("APOGEE_ID", "TELESCOPE", "FIELD", "SNR", "TEFF", "LOGG", "M_H", "FE_H",
               "MG_FE", "POPULATION", "VAE_CHI2")
#: How a new box or lasso combines with the current selection.
SELECT_MODES = {"new shape replaces": "replace", "new shape narrows": "intersect"}
#: Subset colours, apart from the selection's orange and the focused star's red.
SUBSET_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2",
                  "#bcbd22", "#7f7f7f")
ALL_ROWS = "all stars"
COMBINE = {"union": " | ", "intersection": " & ", "difference": " & ~"}
RANGE_HINT = "e.g. 4000..4500"


def is_number_column(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)



#: Build the corner plot in a worker thread in served sessions.  It was off for a while: four
#: sessions opening the Catalog at once sometimes left a page without its corner, because the
#: worker's refresh held ``pn.state.curdoc``, which off the session's thread is whichever
#: session the server is serving at that instant, and could leave that document held for good
#: (:meth:`CornerPlot._hold <dashboard.figures.corner_plot.CornerPlot._hold>`,
#: :mod:`dashboard.jobs`; tests/test_job_documents.py).
BUILD_OFF_THREAD = True

class CatalogView(pn.viewable.Viewer):
    """Corner plot + linked selection + filtered table over the whole catalog."""

    focus = param.ClassSelector(class_=FocusState)
    selection = param.ClassSelector(class_=SelectionState)
    context = param.ClassSelector(class_=AppContext)
    session = param.ClassSelector(class_=Session, default=None)
    subsets = param.ClassSelector(class_=SubsetState, default=None,
                                  doc="the session's subsets (its own when built alone)")

    axes = param.ListSelector(default=[], objects=[], check_on_set=True,
                              doc="the corner plot's columns (2 to 6)")
    color_by = param.Selector(default="count", objects=["count"], check_on_set=True)
    cnorm = param.Selector(default="eq_hist", objects=["eq_hist", "log", "linear"])
    mode = param.Selector(default=next(iter(SELECT_MODES)), objects=list(SELECT_MODES))
    range_filters = param.Dict(default={}, doc="numeric table column → range text "
                                               "('4000..4500', '>4500', '<2')")

    #: saved in session files (the keys of the old per-widget state)
    session_params = ("axes", "color_by", "cnorm", "mode")

    def __init__(self, **params):
        super().__init__(**params)
        if self.subsets is None:
            self.subsets = self.session.subsets if self.session is not None else SubsetState()
        store = self.context.store
        self.available = store is not None
        self.message = pn.pane.Alert(self.context.store_problem or "", alert_type="warning",
                                     visible=not self.available)
        self.count = pn.pane.Markdown("", css_classes=["ss-selection-count"], margin=(5, 10))
        self.plot = None
        self.jobs = JobRunner()
        #: called with the APOGEE_ID of a star opened here (a click in a panel or a row): the
        #: app shows it in the Star view
        self.on_open: list = []
        if not self.available:
            return
        # the frame, IDs, axis columns and table frame are shared by every session
        self.frame = data.catalog_frame(store)
        self.ids = data.catalog_ids(store)
        columns = data.store_axis_columns(store)
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
        #: the selection as subset expressions, one per shape (None for a lasso)
        self.constraint_exprs: list[str | None] = []
        cat = store.catalog
        self.table_columns = [c for c in TABLE_FIRST if c in cat.columns]
        self._table_frame = data.table_frame(store, self.table_columns)
        self.number_columns = [c for c in self.table_columns if is_number_column(cat[c])]
        self.table = pn.widgets.Tabulator(
            self._table_frame, pagination="remote", page_size=12, show_index=False,
            header_filters={c: {"type": "input", "func": "like", "placeholder": "contains"}
                            for c in self.table_columns if c not in self.number_columns},
            disabled=True, selectable=1, sizing_mode="stretch_width",
            height=430, theme="simple", layout="fit_data_stretch", css_classes=["ss-table"],
            formatters={c: NumberFormatter(format="0" if c in ("TEFF", "SNR") else "0.000")
                        for c in self.table_columns if pd.api.types.is_float_dtype(cat[c])},
        )
        self.table.param.watch(self._on_table_select, "selection")
        self.table.add_filter(pn.bind(self._range_mask, texts=self.param.range_filters))
        self.range_inputs = {}
        for c in self.number_columns:
            box = pn.widgets.TextInput(label=short_label(c), placeholder=RANGE_HINT, width=118,
                                       css_classes=["ss-range-filter", f"ss-range-{c}"])
            box.param.watch(lambda e, c=c: self._on_range_input(c, e.new), "value")
            self.range_inputs[c] = box
        self.param.watch(lambda e: (self._show_range_filters(), self._on_table_filters()),
                         "range_filters")
        self.table.param.watch(lambda e: self._update_table_title(), "filters")
        self.table_title = pn.pane.Markdown("", css_classes=["ss-table-title"],
                                            margin=(10, 10, 0, 10))
        self.filter_message = pn.pane.Alert("", alert_type="warning", visible=False,
                                            css_classes=["ss-filter-problem"])
        self._build_subset_widgets()
        self.param.watch(lambda e: self.built and self.rebuild(), ["axes", "color_by", "cnorm"])
        self.focus.param.watch(lambda e: self._mark_focus(), "spectrum")
        self.context.param.watch(lambda e: self.reload_columns(), "catalog_version")
        self._own_selection = False
        self.selection.param.watch(self._on_selection, "rows")
        self.subsets.param.watch(lambda *e: self._on_subsets(), ["subsets", "shown", "table"])
        self.built = False
        self._on_subsets()

    def reload_columns(self) -> None:
        """Offer columns added to the store (e.g. FIT_* from a fit of the selection); the plot
        and the selection stay as they are until the user picks new columns."""
        self.frame = data.catalog_frame(self.context.store)
        with pn.io.hold():
            self._offer_columns(data.store_axis_columns(self.context.store))

    def _offer_columns(self, columns: list[str]) -> None:
        self.param.axes.objects = columns
        self.param.color_by.objects = ["count"] + columns

    def ensure_built(self) -> None:
        """Build the corner plot the first time it is needed (off the session's thread in a
        served page: the other tabs stay usable meanwhile).

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
        """(Re)build the corner plot for the chosen columns; the selection starts afresh.

        In a served session the Bokeh models are made in a worker thread (they belong to no
        document until shown) and shown on the session's thread, so building never blocks the
        page's other tabs; a newer rebuild drops an older one still running."""
        cols = list(self.axes)
        self._reset_selection()
        if len(cols) < 2:
            self.jobs.cancel("corner")
            self.plot = None
            self.corner_pane.object = None
            self.count.object = "Choose at least two columns for the corner plot."
            return
        color = None if self.color_by == "count" else self.color_by
        self.cnorm_select.visible = color is None  # a mean has its own scale and colour bar
        args = (self.frame, cols, color, self.cnorm, self.select_box, self.open_nearest,
                self.select_lasso)
        items = self._shown_items()
        if not BUILD_OFF_THREAD or session_doc() is None:
            self._show_plot(CornerPlot(*args, subsets=items))
            return
        self.count.object = "Building the corner plot …"
        self.jobs.submit(lambda: CornerPlot(*args, subsets=items), key="corner",
                         on_done=self._show_plot, on_error=self._build_failed)

    def _show_plot(self, plot: CornerPlot) -> None:
        """Show a newly built corner plot, with what changed while it was being built."""
        self.plot = plot
        items = self._shown_items()
        if [(n, m) for n, m, _ in items] != [(n, m) for n, m, _ in plot.subset_items]:
            plot.set_subsets(items)
        if self.selection.active:
            plot.set_selection(self.selection.rows)
        self.corner_pane.object = plot.layout
        self._mark_focus()
        self._update_count()

    def _build_failed(self, exc: BaseException) -> None:
        self.count.object = f"The corner plot could not be drawn: {html.escape(str(exc))}"

    def select_box(self, xcol: str, ycol: str | None, box) -> None:
        """Select the stars in a box of panel (xcol, ycol), or an x span of a histogram."""
        mask = corner.box_mask(self.frame, xcol, box[:2], ycol, box[2:] if ycol else None)
        text = self._describe(xcol, box[:2])
        expr = self._between(xcol, box[:2])
        if ycol:
            text += " and " + self._describe(ycol, box[2:])
            expr += " & " + self._between(ycol, box[2:])
        self._select(mask, text, (xcol, ycol or xcol), box=box, expr=expr)

    def select_lasso(self, xcol: str, ycol: str, xs, ys) -> None:
        """Select the stars inside a lasso polygon (vertices xs, ys) of panel (xcol, ycol)."""
        mask = corner.polygon_mask(self.frame, xcol, ycol, xs, ys)
        text = f"lasso on {short_label(xcol)}–{short_label(ycol)} ({len(xs)} vertices)"
        self._select(mask, text, (xcol, ycol), lasso=(xs, ys))

    @staticmethod
    def _between(col: str, span) -> str:
        lo, hi = sorted(map(float, span))
        return f"{col} >= {lo:.9g} & {col} <= {hi:.9g}"

    def _select(self, mask: np.ndarray, text: str, panel, box=None, lasso=None,
                expr: str | None = None) -> None:
        """Make the rows in ``mask`` the selection, or narrow the current one to them, as the
        select mode says; ``text`` describes the new shape."""
        narrow = SELECT_MODES[self.mode] == "intersect" and self.selection.active
        if narrow:
            keep = np.zeros(len(self.frame), dtype=bool)
            keep[self.selection.rows] = True
            mask &= keep
            self.constraints.append(text)
            self.constraint_exprs.append(expr)
        else:
            self.constraints = [text]
            self.constraint_exprs = [expr]
        rows = np.flatnonzero(mask)
        self._own_selection = True
        try:
            self.selection.select(rows, description="; ".join(self.constraints))
        finally:
            self._own_selection = False
        self._update_table()
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
        self.constraint_exprs = [] if rows is None else [None]  # rows only, no shapes
        self._update_table()
        if self.plot is not None:
            self.plot.set_selection(rows)
        self._update_count()

    def _reset_selection(self) -> None:
        self.constraints = []
        self.constraint_exprs = []
        self._own_selection = True
        try:
            self.selection.clear()
        finally:
            self._own_selection = False
        self._update_table()

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

    # -- subsets --------------------------------------------------------------------------
    def _build_subset_widgets(self) -> None:
        W = pn.widgets
        self.expr_input = W.TextInput(label="Subset expression", width=420,
                                      placeholder="TEFF < 4500 & LOGG < 2",
                                      css_classes=["ss-subset-expr"])
        self.name_input = W.TextInput(label="Subset name", placeholder="(automatic: s1, s2 …)",
                                      width=170, css_classes=["ss-subset-name"])
        self.add_button = W.Button(label="Add subset", color="primary", width=110,
                                   css_classes=["ss-subset-add"])
        self.add_button.on_click(lambda e: self.add_subset())
        self.expr_input.param.watch(lambda e: self.add_subset(), "enter_pressed")
        self.from_filters_button = W.Button(label="From table filters", width=150,
                                            css_classes=["ss-subset-from-filters"])
        self.from_filters_button.on_click(lambda e: self.expression_from_filters())
        self.from_selection_button = W.Button(label="From box selection", width=150,
                                              css_classes=["ss-subset-from-selection"])
        self.from_selection_button.on_click(lambda e: self.expression_from_selection())
        self.subset_message = pn.pane.Alert("", alert_type="danger", visible=False,
                                            css_classes=["ss-subset-problem"])
        self.subset_legend = pn.pane.HTML("", css_classes=["ss-subset-legend"], margin=(0, 10))
        self.show_choice = W.CheckButtonGroup(options=[], value=[],
                                              css_classes=["ss-subset-show"])
        self.show_choice.param.watch(self._on_show_choice, "value")
        self.table_choice = W.Select(label="Table shows", options=[ALL_ROWS], value=ALL_ROWS,
                                     width=170, css_classes=["ss-subset-table"])
        self.table_choice.param.watch(self._on_table_choice, "value")
        self.combine_buttons = []
        for kind in COMBINE:
            button = W.Button(label=kind, width=100, css_classes=[f"ss-subset-{kind}"])
            button.on_click(lambda e, k=kind: self.combine(k))
            self.combine_buttons.append(button)
        self.delete_choice = W.Select(label="Delete subset", options=[], width=150,
                                      css_classes=["ss-subset-delete-choice"])
        self.delete_button = W.Button(label="Delete", width=80, css_classes=["ss-subset-delete"])
        self.delete_button.on_click(lambda e: self.delete_subset(self.delete_choice.value))
        self._colours: dict[str, str] = {}
        self._syncing = False
        label = pn.pane.Markdown
        self.subset_tools = pn.FlexBox(
            pn.Column(label("Drawn in the plot (click to hide / show)", margin=(0, 10, -8, 10)),
                      self.show_choice),
            self.table_choice,
            pn.Column(label("Combine the drawn subsets", margin=(0, 10, -8, 10)),
                      pn.Row(*self.combine_buttons)),
            self.delete_choice, pn.Column(pn.Spacer(height=20), self.delete_button),
            gap="0px 10px", sizing_mode="stretch_width", visible=False)

    def _colour_of(self, name: str) -> str:
        if name not in self._colours:
            used = set(self._colours.values())
            free = [c for c in SUBSET_COLOURS if c not in used]
            self._colours[name] = free[0] if free else SUBSET_COLOURS[len(used) % len(
                SUBSET_COLOURS)]
        return self._colours[name]

    def _shown_items(self) -> list[tuple[str, np.ndarray, str]]:
        return [(s.name, s.mask, self._colour_of(s.name)) for s in self.subsets.subsets
                if s.name in self.subsets.shown]

    def _free_name(self) -> str:
        taken = {s.name for s in self.subsets.subsets} | {str(c).lower() for c in
                                                           self.context.store.catalog.columns}
        k = 1
        while f"s{k}" in taken:
            k += 1
        return f"s{k}"

    def _subset_problem(self, problem) -> None:
        self.subset_message.object = "" if problem is None else (
            "**Subset not made:** " + html.escape(str(problem)))  # the user's own text
        self.subset_message.visible = problem is not None

    def add_subset(self, expression: str | None = None, name: str | None = None):
        """Make a subset of ``expression`` (default: the expression box) named ``name``
        (default: the name box, else s1, s2 …); None, with a message shown, when the
        expression or the name is refused."""
        if expression is None:
            expression = self.expr_input.value_input
            if expression is None:
                expression = self.expr_input.value
        if name is None:
            name = self.name_input.value_input
            if name is None:
                name = self.name_input.value
        name = (name or "").strip() or self._free_name()
        try:
            subset = make_subset(name, expression or "", self.context.store.catalog,
                                 self.subsets.masks())
        except SubsetError as exc:
            self._subset_problem(exc)
            return None
        self._subset_problem(None)
        self.subsets.add(subset)
        self.name_input.param.update(value="", value_input="")
        return subset

    def combine(self, kind: str):
        """A new subset: the union, intersection or difference (the first minus the others)
        of the subsets drawn in the plot."""
        names = [s.name for s in self.subsets.subsets if s.name in self.subsets.shown]
        if len(names) < 2:
            self._subset_problem(f"the {kind} needs two or more subsets drawn in the plot "
                                 "(click their names to show them)")
            return None
        expression = names[0] + COMBINE[kind] + COMBINE[kind].join(names[1:])
        word = {"union": "or", "intersection": "and", "difference": "not"}[kind]
        name = f"_{word}_".join(names)
        if len(name) > 40 or self.subsets.get(name) is not None:
            name = self._free_name()
        return self.add_subset(expression, name)

    def delete_subset(self, name: str | None) -> bool:
        """Delete a subset, unless a later one is made from it (that is named instead)."""
        if not name or self.subsets.get(name) is None:
            return False
        users = [s.name for s in self.subsets.subsets
                 if s.name != name and references(s.expression, [name])]
        if users:
            self._subset_problem(f"'{name}' is used by {', '.join(users)}: delete "
                                 f"{'that' if len(users) == 1 else 'those'} first")
            return False
        self._subset_problem(None)
        self.subsets.remove(name)
        return True

    def expression_from_filters(self) -> str:
        """Put the table's range filters in the expression box, as a subset
        expression (``TEFF >= 4000 & TEFF <= 4500 & LOGG < 2``) to name and add."""
        parts = []
        for col, text in self._range_texts():
            try:
                parts.append(range_expression(col, text))
            except SubsetError:
                continue
        if not parts:
            self._subset_problem("no range filter to turn into a subset: type a range such as "
                                 "4000..4500 in a box above the table")
            return ""
        self._subset_problem(None)
        text = " & ".join(parts)
        self.expr_input.param.update(value=text, value_input=text)
        return text

    def expression_from_selection(self) -> str:
        """Put the box selection in the expression box (``TEFF >= 4040 & TEFF <= 4620 &
        LOGG >= 1.1 & LOGG <= 2.4``), to name and add; a lasso cannot be written so."""
        if not self.selection.active or not self.constraint_exprs:
            self._subset_problem("nothing is selected: drag a box in a panel first")
            return ""
        if any(e is None for e in self.constraint_exprs):
            self._subset_problem("this selection holds a lasso (or came from a session), which "
                                 "an expression cannot describe: select with boxes")
            return ""
        self._subset_problem(None)
        text = " & ".join(self.constraint_exprs)
        self.expr_input.param.update(value=text, value_input=text)
        return text

    def _range_texts(self) -> list[tuple[str, str]]:
        return [(c, str(t)) for c, t in self.range_filters.items()
                if c in self.number_columns and str(t).strip()]

    def _range_mask(self, df: pd.DataFrame, texts: dict) -> np.ndarray:
        """The table's range filters as a row mask (Tabulator's function filter); text that
        is not a range matches nothing (the view says why)."""
        mask = np.ones(len(df), dtype=bool)
        for col, text in texts.items():
            if col in df.columns and str(text).strip():
                try:
                    mask &= range_mask(df[col].to_numpy(), str(text))
                except SubsetError:
                    mask[:] = False
        return mask

    def _on_range_input(self, col: str, text: str) -> None:
        if str(self.range_filters.get(col, "")) != (text or ""):
            self.range_filters = {**self.range_filters, col: text or ""}

    def extra_state(self) -> dict:
        """The table's range filters, when any (so older session files compare equal)."""
        texts = dict(self._range_texts()) if self.available else {}
        return {"range_filters": texts} if texts else {}

    def restore_extra(self, state: dict, sync: bool = False) -> list[str]:
        if not self.available:
            return []
        saved = state.get("range_filters", {})
        if not isinstance(saved, dict):
            return ["range_filters: not restored (not a JSON object)"]
        keep, notes = {}, []
        for col, text in saved.items():
            if col in self.number_columns and isinstance(text, str) and len(text) <= 100:
                keep[col] = text
            else:
                notes.append(f"range filter on {str(col)[:40]!r} not restored")
        self.range_filters = keep
        return notes

    def _show_range_filters(self) -> None:
        """Range filters set elsewhere (a restored session) appear in their boxes."""
        for col, box in self.range_inputs.items():
            text = str(self.range_filters.get(col, ""))
            if box.value != text:
                box.value = text

    def _on_subsets(self) -> None:
        """The subsets changed (made, deleted, shown, restored): legend, widgets, plot, table."""
        subsets = self.subsets.subsets
        names = [s.name for s in subsets]
        self._colours = {n: c for n, c in self._colours.items() if n in names}
        self._syncing = True
        try:
            self.show_choice.param.update(options=names,
                                          value=[n for n in names if n in self.subsets.shown])
            self.table_choice.param.update(options=[ALL_ROWS, *names],
                                           value=self.subsets.table if self.subsets.table in
                                           names else ALL_ROWS)
            self.delete_choice.options = names
        finally:
            self._syncing = False
        items = []
        for s in subsets:
            shown = s.name in self.subsets.shown
            colour = self._colour_of(s.name)
            items.append(
                f'<div class="ss-subset-item" style="opacity:{1 if shown else 0.55}">'
                f'<span style="display:inline-block;width:12px;height:12px;margin-right:6px;'
                f'border-radius:2px;background:{colour}"></span><b>{html.escape(s.name)}</b>: '
                f'<span class="ss-subset-count">{s.count:,}</span> stars '
                f'<code>{html.escape(s.expression)}</code>{"" if shown else " (hidden)"}</div>')
        self.subset_legend.object = "".join(items)
        self.subset_tools.visible = bool(names)
        if self.plot is not None:
            self.plot.set_subsets(self._shown_items())
        self._update_table()

    def _on_show_choice(self, event) -> None:
        if not self._syncing:
            self.subsets.shown = list(event.new)

    def _on_table_choice(self, event) -> None:
        if not self._syncing:
            self.subsets.table = "" if event.new == ALL_ROWS else event.new

    # -- table ----------------------------------------------------------------------------
    def table_rows(self) -> np.ndarray | None:
        """Catalog rows the table lists before its own filters: the brushed selection,
        narrowed to the table's subset; None for every row."""
        rows = self.selection.rows if self.selection.active else None
        subset = self.subsets.get(self.subsets.table)
        if subset is None:
            return rows
        return subset.rows if rows is None else rows[subset.mask[rows]]

    def _update_table(self) -> None:
        rows = self.table_rows()
        self.table.value = self._table_frame if rows is None else self._table_frame.iloc[rows]
        self._update_table_title()

    def _on_table_filters(self) -> None:
        problems = []
        for col, text in self._range_texts():
            try:
                range_expression(col, text)
            except SubsetError as exc:
                problems.append(f"{col}: {exc}")
        self.filter_message.object = html.escape("; ".join(problems))
        self.filter_message.visible = bool(problems)
        self._update_table_title()

    def _update_table_title(self) -> None:
        limits = []
        if self.subsets.get(self.subsets.table) is not None:
            limits.append(f"subset {self.subsets.table}")
        if self.selection.active:
            limits.append("the selection")
        n = len(self.table.value)
        if self._range_texts() or any(str(f.get("value") or "").strip()
                                      for f in self.table.filters or []):
            limits.append("table filters")
            n = len(self.table.current_view)
        total = len(self._table_frame)
        what = f"**{n:,}** of {total:,} stars" if limits else f"all **{total:,}** stars"
        self.table_title.object = (
            f"#### Catalog table: {what}" + (f" ({' ∩ '.join(limits)})" if limits else "")
            + "\n\nFilter numbers by range in the boxes below (`4000..4500`, `>4500`, `<2`, "
              "then Enter), text in the header boxes ('contains'). Click a row to open the star.")

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
        W = 20
        subsets = pn.Column(
            pn.FlexBox(self.expr_input, self.name_input,
                       pn.Column(pn.Spacer(height=W), self.add_button),
                       pn.Column(pn.Spacer(height=W), self.from_filters_button),
                       pn.Column(pn.Spacer(height=W), self.from_selection_button),
                       gap="0px 10px", sizing_mode="stretch_width"),
            self.subset_message, self.subset_legend, self.subset_tools,
            sizing_mode="stretch_width", css_classes=["ss-subsets"])
        return pn.Column(
            controls, subsets, self.count, self.corner_pane, self.table_title,
            pn.FlexBox(*self.range_inputs.values(), gap="0px 8px", sizing_mode="stretch_width"),
            self.filter_message, self.table, sizing_mode="stretch_width")
