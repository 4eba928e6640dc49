"""The one spectrum figure: flux ± σ, masked pixels, line markers, model overlays, residuals.

Used by the Star and the Fit views.  Every Bokeh model is made once; a new star, a model or a
filter only swaps the data of its ``ColumnDataSource`` (a round trip measured ~100 ms in place
against ~250 ms for a rebuilt plot), and a source whose wavelengths did not change gets only its
changed columns.  The residual panel is made the first time something is drawn on it (a new
page with no model overlay on shows none, so it does not carry the panel's ~50 models).  Extra
linked panels (an attention strip …) come from :meth:`add_strip`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
from bokeh.events import SelectionGeometry
from bokeh.layouts import column as bk_column
from bokeh.models import (
    BoxSelectTool,
    ColumnDataSource,
    CustomJS,
    HoverTool,
    LabelSet,
    Legend,
    LegendItem,
    Range1d,
    Span,
    TapTool,
)
from bokeh.plotting import figure

from ..spectra import (
    WAVE_LABEL,
    band_patch,
    error_band,
    gap_breaks,
    masked_spans,
    robust_range,
    zoom_span,
)
from .lines import LABEL_JS, LABEL_SEP, MAX_LABELS, label_columns, marker_columns, pick_labels

#: The line markers live on their own 0–1 axis: ticks at TICK_Y, labels above them.
TICK_Y = (0.80, 0.85)
LABEL_Y = 0.865
DATA_TOP = 0.76  # the data use the plot's lower 76 %, the line labels the rest
EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf")
EMPTY_SPANS = {"x0": [], "x1": []}
LINE_COLUMNS = ("x", "color", "species", "element", "chi", "loggf", "informs", "note", "kind",
                "label")


def swap(src: ColumnDataSource, cols: dict) -> None:
    """Replace ``src``'s data; when its wavelengths are unchanged only the other columns go."""
    old = src.data
    wave = cols.get("wave")
    if (wave is not None and set(old) == set(cols) and len(old["wave"]) == len(wave)
            and (old["wave"] is wave
                 or np.array_equal(np.asarray(old["wave"]), wave, equal_nan=True))):
        src.data.update({k: v for k, v in cols.items() if k != "wave"})
    else:
        src.data = cols


class SpectrumFigure:
    """A spectrum plot with a linked residual panel; see the module docstring."""

    def __init__(self, *, height: int = 380, residual_height: int = 170,
                 css_class: str = "ss-spectrum-plot",
                 residual_css_class: str = "ss-residual-plot"):
        self.x_range = Range1d(15100, 17000)
        self._extent: tuple[float, float] | None = None
        self._wave = self._breaks = self._gapped_wave = None
        self.overlays: dict[str, object] = {}
        self.residual_curves: dict[str, object] = {}
        self.span_sources: dict[str, ColumnDataSource] = {}
        self.strips: dict[str, object] = {}
        self._res_fig = None
        self._res_args = (residual_height, residual_css_class)
        self._res_spans: list[tuple[ColumnDataSource, str, float]] = []
        self.fig = self._main_figure(height, css_class)
        self.layout = bk_column(self.fig, sizing_mode="stretch_width")
        self.pane = pn.pane.Bokeh(self.layout, sizing_mode="stretch_width")

    @property
    def res_fig(self):
        """The residual panel (hidden until framed), made on first use under the spectrum."""
        if self._res_fig is None:
            self._res_fig = self._residual_figure(*self._res_args)
            self.layout.children.insert(1, self._res_fig)
        return self._res_fig

    def gapped(self, wavelength, columns: dict) -> dict:
        """:func:`~dashboard.spectra.with_gaps`, with the last wavelength array's chip gaps
        remembered (a slider step redraws three curves on the same pixels)."""
        if wavelength is not self._wave:
            self._wave, self._breaks = wavelength, gap_breaks(wavelength)
            self._gapped_wave = np.insert(np.asarray(wavelength, np.float32), self._breaks,
                                          np.nan)
        out = {"wave": self._gapped_wave}
        for name, values in columns.items():
            out[name] = np.insert(np.asarray(values, np.float32), self._breaks, np.nan)
        return out

    # -- construction -------------------------------------------------------------------------
    def _main_figure(self, height: int, css_class: str):
        fig = figure(height=height, sizing_mode="stretch_width",
                     tools="xpan,xwheel_zoom,xbox_zoom,reset,save", active_scroll="xwheel_zoom",
                     active_drag="xbox_zoom", x_range=self.x_range, y_range=Range1d(0.4, 1.3),
                     x_axis_label=WAVE_LABEL, y_axis_label="Normalised flux",
                     title="No star selected", output_backend="canvas")
        fig.extra_y_ranges = {"lines": Range1d(0, 1)}
        fig.title.text_font_size = "13pt"
        fig.xaxis.axis_label_text_font_size = fig.yaxis.axis_label_text_font_size = "11pt"
        fig.toolbar.logo = None
        fig.xgrid.grid_line_alpha = fig.ygrid.grid_line_alpha = 0.35
        fig.css_classes = [css_class]
        self.fig = fig
        self.legend = Legend(items=[], orientation="horizontal", click_policy="hide",
                             label_text_font_size="9pt", spacing=12, margin=2)
        fig.add_layout(self.legend, "above")
        self.mask_src = self.span_layer("masked", "#9e9e9e", 0.28, "masked pixels")
        self.window_src = self.span_layer("windows", "#ffd54f", 0.38, "element windows",
                                          edge="#f9a825")
        self.spec_src = ColumnDataSource({k: [] for k in ("wave", "flux", "err", "mask")})
        self.band_src = ColumnDataSource({"x": [], "y": []})
        r_band = fig.patch(x="x", y="y", source=self.band_src, fill_color="#7f9fbf",
                           fill_alpha=0.45, line_alpha=0)
        self.flux_renderer = fig.line("wave", "flux", source=self.spec_src, color="#1a1a1a",
                                      line_width=1.1)
        fig.add_tools(HoverTool(renderers=[self.flux_renderer], mode="vline", tooltips=[
            ("λ", "@wave{0.00} Å"), ("flux", "@flux{0.0000} ± @err{0.0000}"),
            ("PIXMASK", "@mask{0}")]))
        self.legend.items[:0] = [LegendItem(label="±1σ", renderers=[r_band]),
                                 LegendItem(label="flux", renderers=[self.flux_renderer])]
        self._build_lines(fig)
        return fig

    def _build_lines(self, fig) -> None:
        """Line markers (ticks, hover triangles) and labels thinned in the browser per zoom."""
        self.lines_src = ColumnDataSource({k: [] for k in LINE_COLUMNS})
        fig.segment(x0="x", x1="x", y0=TICK_Y[0], y1=TICK_Y[1], source=self.lines_src,
                    color="color", line_width=1.4, y_range_name="lines")
        self.marker_renderer = fig.scatter(
            "x", TICK_Y[0], source=self.lines_src, marker="inverted_triangle", size=8,
            color="color", y_range_name="lines", nonselection_alpha=0.6,
            selection_color="#d81b60")
        self.line_hover = HoverTool(renderers=[self.marker_renderer], tooltips=[
            ("line", "@species @x{0.000} Å (vacuum)"), ("kind", "@kind"), ("χ_exc", "@chi eV"),
            ("log gf", "@loggf"), ("informs", "@informs"), ("note", "@note")])
        fig.add_tools(self.line_hover)
        self.labels_all = ColumnDataSource({"x": [], "text": [], "color": [], "rank": []})
        self.labels_src = ColumnDataSource({"x": [], "text": [], "color": []})
        fig.add_layout(LabelSet(x="x", y=LABEL_Y, text="text", source=self.labels_src,
                                y_range_name="lines", angle=90, angle_units="deg",
                                text_font_size="8pt", text_color="color",
                                text_baseline="middle", text_align="left"))
        relabel = CustomJS(args={"all": self.labels_all, "shown": self.labels_src,
                                 "xr": self.x_range, "sep": LABEL_SEP, "maxn": MAX_LABELS},
                           code=LABEL_JS)
        self.x_range.js_on_change("start", relabel)
        self.x_range.js_on_change("end", relabel)

    def _residual_figure(self, height: int, css_class: str):
        res = figure(height=height, sizing_mode="stretch_width",
                     tools="xpan,xwheel_zoom,reset,save", active_scroll="xwheel_zoom",
                     x_range=self.x_range, y_range=Range1d(-5, 5), x_axis_label=WAVE_LABEL,
                     y_axis_label="(data − model)/σ", title="Residuals", visible=False,
                     output_backend="canvas")
        res.toolbar.logo = None
        res.title.text_font_size = "11pt"
        res.css_classes = [css_class]
        res.vstrip(x0="x0", x1="x1", source=self.mask_src, fill_color="#9e9e9e",
                   fill_alpha=0.28, line_alpha=0)
        for src, color, alpha in self._res_spans:
            res.vstrip(x0="x0", x1="x1", source=src, fill_color=color, fill_alpha=alpha,
                       line_alpha=0)
        self.res_band = ColumnDataSource({"x": [], "y": []})
        res.patch(x="x", y="y", source=self.res_band, fill_color="#7f9fbf", fill_alpha=0.4,
                  line_alpha=0)
        res.add_layout(Span(location=0, dimension="width", line_color="#333", line_width=1))
        return res

    # -- layers -------------------------------------------------------------------------------
    def span_layer(self, name: str, color: str, alpha: float, legend: str | None = None,
                   on_residuals: bool = False, edge: str | None = None) -> ColumnDataSource:
        """A named set of shaded wavelength spans (x0, x1), made once; returns its source.
        ``edge`` outlines each span (narrow windows stay visible on the whole spectrum)."""
        if name not in self.span_sources:
            src = ColumnDataSource(dict(EMPTY_SPANS))
            r = self.fig.vstrip(x0="x0", x1="x1", source=src, fill_color=color,
                                fill_alpha=alpha, line_color=edge or color,
                                line_alpha=0.9 if edge else 0)
            if on_residuals:
                self._res_spans.append((src, color, alpha))
                if self._res_fig is not None:
                    self._res_fig.vstrip(x0="x0", x1="x1", source=src, fill_color=color,
                                         fill_alpha=alpha, line_alpha=0)
            if legend:
                self.legend.items.append(LegendItem(label=legend, renderers=[r]))
            self.span_sources[name] = src
        return self.span_sources[name]

    def set_spans(self, name: str, x0, x1) -> None:
        self.span_sources[name].data = {"x0": np.asarray(x0, dtype=np.float64),
                                        "x1": np.asarray(x1, dtype=np.float64)}

    def overlay(self, name: str, color: str | None = None, dash: str = "solid",
                width: float = 1.3, legend: str | None = None):
        """The renderer of model overlay ``name`` (made, hidden, the first time it is asked)."""
        if name not in self.overlays:
            color = color or EXTRA_COLORS[len(self.overlays) % len(EXTRA_COLORS)]
            src = ColumnDataSource({"wave": [], "flux": []})
            r = self.fig.line("wave", "flux", source=src, color=color, line_width=width,
                              line_dash=dash, alpha=0.9, visible=False)
            self.legend.items.append(LegendItem(label=legend or name, renderers=[r]))
            self.overlays[name] = r
        return self.overlays[name]

    def set_overlay(self, name: str, wavelength, flux, visible: bool = True) -> None:
        r = self.overlay(name)
        swap(r.data_source, self.gapped(wavelength, {"flux": flux}))
        r.visible = visible

    def clear_overlay(self, name: str) -> None:
        if name in self.overlays:
            self.overlays[name].data_source.data = {"wave": [], "flux": []}
            self.overlays[name].visible = False

    def show_overlays(self, names) -> None:
        """Show exactly the overlays in ``names`` (the others stay, hidden)."""
        for name, r in self.overlays.items():
            r.visible = name in names

    # -- spectrum -----------------------------------------------------------------------------
    def set_spectrum(self, spec, title: str, hide_bad: bool = False) -> None:
        """Flux, its ±1σ band, the masked-pixel spans; y fitted to the flux, x to its extent
        (bounds change only when the extent does, so a zoom survives a new star)."""
        bad = spec.bad()
        flux = np.where(bad, np.nan, spec.flux) if hide_bad else spec.flux
        swap(self.spec_src, self.gapped(spec.wavelength, {
            "flux": flux, "err": spec.error, "mask": spec.pixmask.astype(np.float32)}))
        self.band_src.data = error_band(spec)
        self.mask_src.data = masked_spans(spec.wavelength, bad)
        lo, hi = robust_range(spec.flux, ~bad)
        if spec.normalized:
            lo, hi = min(lo, 0.55), max(hi, 1.08)
        self.fig.y_range.update(start=lo, end=lo + (hi - lo) / DATA_TOP)
        self.fig.yaxis.axis_label = ("Normalised flux" if spec.normalized
                                     else "Flux (not continuum-normalised)")
        extent = (float(spec.wavelength[0]) - 5, float(spec.wavelength[-1]) + 5)
        if extent != self._extent:
            self._extent = extent
            self.x_range.update(start=extent[0], end=extent[1], bounds=extent)
            self.relabel()
        self.fig.title.text = title

    def clear(self, title: str = "No star selected") -> None:
        """No spectrum: every layer empty, the residual panel hidden."""
        self.spec_src.data = {k: [] for k in self.spec_src.data}
        self.band_src.data = {"x": [], "y": []}
        for src in self.span_sources.values():
            src.data = dict(EMPTY_SPANS)
        for name in self.overlays:
            self.clear_overlay(name)
        self.clear_residuals()
        self.fig.title.text = title

    # -- residual panel -----------------------------------------------------------------------
    def residual_curve(self, name: str, color: str = "#d62728", dash: str = "solid"):
        """The residual panel's curve ``name`` (made the first time)."""
        if name not in self.residual_curves:
            src = ColumnDataSource({"wave": [], "y": []})
            self.residual_curves[name] = self.res_fig.line("wave", "y", source=src, color=color,
                                                           line_width=1, line_dash=dash)
        return self.residual_curves[name]

    def set_residual(self, name: str, wavelength, y) -> None:
        r = self.residual_curve(name)
        swap(r.data_source, self.gapped(wavelength, {"y": y}))
        r.visible = True

    def set_residual_band(self, wavelength, half_width) -> None:
        """A ±``half_width`` band around zero (NaN-free: pixels without one get 0)."""
        half = np.asarray(half_width, dtype=np.float32)
        self.res_fig  # noqa: B018  (made now: the band lives on it)
        self.res_band.data = band_patch(wavelength, -half, half)

    def frame_residuals(self, lo: float, hi: float, title: str | None = None,
                        axis_label: str | None = None) -> None:
        self.res_fig.y_range.update(start=float(lo), end=float(hi))
        if title is not None:
            self.res_fig.title.text = title
        if axis_label is not None:
            self.res_fig.yaxis.axis_label = axis_label
        self.res_fig.visible = True

    def clear_residuals(self) -> None:
        if self._res_fig is None:  # never drawn: nothing to clear
            return
        for r in self.residual_curves.values():
            r.data_source.data = {"wave": [], "y": []}
        self.res_band.data = {"x": [], "y": []}
        self.res_fig.visible = False

    # -- line markers -------------------------------------------------------------------------
    def set_lines(self, lines: pd.DataFrame | None, fit_labels=None,
                  columns: tuple[dict, dict] | None = None) -> None:
        """Markers and labels for ``lines`` (a line-list frame; None or empty: none);
        ``columns``: their (marker, label) columns when already made
        (:func:`dashboard.data.line_columns`)."""
        if lines is None or not len(lines):
            self.lines_src.data = {k: [] for k in LINE_COLUMNS}
            self.labels_all.data = {"x": [], "text": [], "color": [], "rank": []}
        else:
            markers, labels = columns or (marker_columns(lines, fit_labels), label_columns(lines))
            self.lines_src.data = dict(markers)
            self.labels_all.data = dict(labels)
        self.relabel()

    def relabel(self) -> None:
        """Pick the labels for the current x-range (the browser does this on every zoom)."""
        d = self.labels_all.data
        keep = pick_labels(np.asarray(d["x"]), np.asarray(d["rank"]), self.x_range.start,
                           self.x_range.end)
        self.labels_src.data = {k: [d[k][i] for i in keep] for k in ("x", "text", "color")}

    def on_line_click(self, callback, hint: str = "click: fit @label") -> None:
        """``callback(index)`` when a line marker is clicked (the selection is cleared again, so
        a second click on the same marker counts)."""
        def tapped(attr, old, new):
            if new:
                self.lines_src.selected.indices = []
                callback(new[0])

        self.fig.add_tools(TapTool(renderers=[self.marker_renderer]))
        self.line_hover.tooltips = [*self.line_hover.tooltips, ("", hint)]
        self.lines_src.selected.on_change("indices", tapped)

    # -- range selection ----------------------------------------------------------------------
    def on_range_drag(self, callback, description: str) -> None:
        """Make dragging report a wavelength range: ``callback(x0, x1)`` when the drag ends."""
        box = BoxSelectTool(dimensions="width", description=description)
        # bound to an empty renderer: the box never selects line markers (a click's meaning)
        box.renderers = [self.fig.scatter(x=[], y=[], size=0, alpha=0)]
        self.fig.add_tools(box)
        self.fig.toolbar.active_drag = box

        def geometry(event):
            g = event.geometry
            if event.final and g.get("type") == "rect":
                callback(g["x0"], g["x1"])

        self.fig.on_event(SelectionGeometry, geometry)

    # -- zoom ---------------------------------------------------------------------------------
    def set_xrange(self, start: float, end: float) -> None:
        self.x_range.update(start=float(start), end=float(end))
        self.relabel()

    def zoom_to(self, key: str | None, grid, windows: pd.DataFrame | None) -> bool:
        """Zoom preset ``whole``, ``chip:i`` or ``el:ELEMENT`` (shading that element's
        windows); False when the key means nothing here."""
        span = zoom_span(key, grid, windows) if key else None
        if span is None:
            return False
        start, end, x0, x1 = span
        self.set_spans("windows", x0, x1)
        self.set_xrange(start, end)
        return True

    def zoom_to_line(self, wavelength: float, half_width: float = 12.0) -> None:
        self.set_spans("windows", [wavelength - 0.6], [wavelength + 0.6])
        self.set_xrange(wavelength - half_width, wavelength + half_width)

    # -- extra panels -------------------------------------------------------------------------
    def add_strip(self, name: str, height: int = 120, y_axis_label: str = "",
                  title: str | None = None):
        """A panel under the others sharing their x-range (zooms and pans with them)."""
        if name in self.strips:
            return self.strips[name]
        self.res_fig  # noqa: B018  (the residual panel stays next to the spectrum)
        strip = figure(height=height, sizing_mode="stretch_width", x_range=self.x_range,
                       tools="xpan,xwheel_zoom,reset,save", active_scroll="xwheel_zoom",
                       x_axis_label=WAVE_LABEL, y_axis_label=y_axis_label, title=title,
                       output_backend="canvas")
        strip.toolbar.logo = None
        strip.css_classes = [f"ss-strip-{name}"]
        self.layout.children.append(strip)
        self.strips[name] = strip
        return strip
