"""The Fit view's figures: the spectrum with its overlays and the linked residual panel.

Built once; every ``draw_*`` method swaps the data of a source in place (the figures are never
rebuilt, so the browser only receives new columns).
"""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.events import SelectionGeometry
from bokeh.layouts import column as bk_column
from bokeh.models import (
    BoxSelectTool,
    ColumnDataSource,
    HoverTool,
    Legend,
    Range1d,
    Span,
    TapTool,
)
from bokeh.plotting import figure

from ..spectra import WAVE_LABEL, masked_spans, robust_range, with_gaps

LINE_Y = 0.93  # line markers sit on their own 0–1 axis near the top
EMPTY_LINE = {"wave": [], "flux": []}
EMPTY_SPANS = {"x0": [], "x1": []}


class FitPlot:
    """Figures and sources of the Fit view.

    ``on_line_tap(attr, old, new)`` gets clicks on line markers; ``on_box(event)`` the range
    dragged across the spectrum.
    """

    def __init__(self, on_line_tap, on_box):
        self.x_range = Range1d(15100, 17000)
        box = BoxSelectTool(dimensions="width", description="Drag to mask / unmask a range")
        fig = figure(height=360, sizing_mode="stretch_width", x_range=self.x_range,
                     y_range=Range1d(0.4, 1.25), tools="xpan,xwheel_zoom,reset,save",
                     active_scroll="xwheel_zoom", x_axis_label=WAVE_LABEL,
                     y_axis_label="Normalised flux", title="No star selected")
        # the box only reports its range (SelectionGeometry): bound to an empty renderer so it
        # never selects line markers, whose selection means "fit this element"
        box.renderers = [fig.scatter(x=[], y=[], size=0, alpha=0)]
        fig.add_tools(box)
        fig.toolbar.active_drag = box
        fig.toolbar.logo = None
        fig.extra_y_ranges = {"lines": Range1d(0, 1)}
        fig.css_classes = ["ss-fit-plot"]
        self.pipeline_src = ColumnDataSource({"x0": [], "x1": []})
        self.user_src = ColumnDataSource({"x0": [], "x1": []})
        self.window_src = ColumnDataSource({"x0": [], "x1": []})
        self.data_src = ColumnDataSource({"wave": [], "flux": []})
        # an area does not break at NaN, so the ±1σ band is drawn chip by chip
        self.band_srcs = [ColumnDataSource({"wave": [], "lo": [], "hi": []}) for _ in range(3)]
        self.fit_src = ColumnDataSource({"wave": [], "flux": []})
        self.slider_src = ColumnDataSource({"wave": [], "flux": []})
        self.element_src = ColumnDataSource({"wave": [], "flux": []})
        r_pipe = fig.vstrip(x0="x0", x1="x1", source=self.pipeline_src, fill_color="#9e9e9e",
                            fill_alpha=0.3, line_alpha=0)
        r_user = fig.vstrip(x0="x0", x1="x1", source=self.user_src, fill_color="#e53935",
                            fill_alpha=0.22, line_alpha=0)
        r_win = fig.vstrip(x0="x0", x1="x1", source=self.window_src, fill_color="#ffd54f",
                           fill_alpha=0.4, line_alpha=0)
        r_band = [fig.varea(x="wave", y1="lo", y2="hi", source=src, fill_color="#7f9fbf",
                            fill_alpha=0.4) for src in self.band_srcs]
        r_data = fig.line("wave", "flux", source=self.data_src, color="#1a1a1a", line_width=1.0)
        r_fit = fig.line("wave", "flux", source=self.fit_src, color="#2ca02c", line_width=1.4)
        r_slider = fig.line("wave", "flux", source=self.slider_src, color="#ff7f0e",
                            line_width=1.3, line_dash="dashed")
        r_elem = fig.line("wave", "flux", source=self.element_src, color="#9467bd", line_width=1.6)
        fig.add_tools(HoverTool(renderers=[r_data], mode="vline",
                                tooltips=[("λ", "@wave{0.00} Å"), ("flux", "@flux{0.0000}")]))
        self.lines_src = ColumnDataSource({"x": [], "element": [], "species": [], "label": []})
        r_lines = fig.scatter("x", LINE_Y, source=self.lines_src, marker="inverted_triangle",
                              size=8, color="#5b3a8e", y_range_name="lines",
                              nonselection_alpha=0.6, selection_color="#d81b60")
        fig.add_tools(TapTool(renderers=[r_lines]),
                      HoverTool(renderers=[r_lines], tooltips=[
                          ("line", "@species @x{0.00} Å"), ("click", "fit @label")]))
        self.lines_src.selected.on_change("indices", on_line_tap)
        fig.on_event(SelectionGeometry, on_box)
        legend = Legend(items=[("flux ±1σ", [r_data, *r_band]), ("best fit", [r_fit]),
                               ("sliders", [r_slider]), ("element fit", [r_elem]),
                               ("pipeline mask", [r_pipe]), ("your mask", [r_user]),
                               ("element windows", [r_win])],
                        orientation="horizontal", click_policy="hide",
                        label_text_font_size="9pt", spacing=10, margin=2)
        fig.add_layout(legend, "above")
        self.fig = fig

        res = figure(height=170, sizing_mode="stretch_width", x_range=self.x_range,
                     y_range=Range1d(-5, 5), tools="xpan,xwheel_zoom,reset",
                     x_axis_label=WAVE_LABEL, y_axis_label="(data − model)/σ",
                     title="Residuals")
        res.toolbar.logo = None
        self.res_src = ColumnDataSource({"wave": [], "fit": [], "slider": []})
        res.vstrip(x0="x0", x1="x1", source=self.user_src, fill_color="#e53935",
                   fill_alpha=0.22, line_alpha=0)
        res.line("wave", "fit", source=self.res_src, color="#2ca02c", line_width=1)
        res.line("wave", "slider", source=self.res_src, color="#ff7f0e", line_width=1,
                 line_dash="dashed")
        res.add_layout(Span(location=0, dimension="width", line_color="#333", line_width=1))
        self.res_fig = res
        self.pane = pn.pane.Bokeh(bk_column(fig, res, sizing_mode="stretch_width"),
                                  sizing_mode="stretch_width")


    # -- drawing (in place) ---------------------------------------------------------------
    def clear_models(self) -> None:
        """Remove the fit, slider and element curves, residuals and element windows."""
        for src in (self.fit_src, self.slider_src, self.element_src):
            src.data = dict(EMPTY_LINE)
        self.res_src.data = {"wave": [], "fit": [], "slider": []}
        self.window_src.data = dict(EMPTY_SPANS)

    def clear_spectrum(self) -> None:
        self.data_src.data = dict(EMPTY_LINE)
        for src in self.band_srcs:
            src.data = {"wave": [], "lo": [], "hi": []}
        self.fig.title.text = "No star selected"

    def draw_spectrum(self, spec, chips, title: str) -> None:
        """Flux, its ±1σ band per chip, the pipeline mask; ranges fitted to the spectrum."""
        bad = spec.bad()
        flux = np.where(bad, np.nan, spec.flux)
        err = np.where(bad, np.nan, spec.error)
        self.data_src.data = with_gaps(spec.wavelength, {"flux": flux})
        for k, src in enumerate(self.band_srcs):
            sl = chips[k] if k < len(chips) else slice(0, 0)
            src.data = {"wave": spec.wavelength[sl], "lo": (flux - err)[sl],
                        "hi": (flux + err)[sl]}
        self.pipeline_src.data = masked_spans(spec.wavelength, bad)
        self.user_src.data = dict(EMPTY_SPANS)
        lo, hi = robust_range(spec.flux, ~bad)
        self.fig.y_range.update(start=min(lo, 0.5), end=max(hi, 1.08) + 0.12)
        lam = spec.wavelength
        self.x_range.update(start=float(lam[0]) - 5, end=float(lam[-1]) + 5)
        self.fig.title.text = title

    def draw_lines(self, x, elements, species, labels) -> None:
        self.lines_src.data = {"x": np.asarray(x), "element": list(elements),
                               "species": list(species), "label": list(labels)}

    def draw_fit(self, wavelength, model) -> None:
        self.fit_src.data = with_gaps(wavelength, {"flux": model})

    def draw_element(self, wavelength, model) -> None:
        self.element_src.data = with_gaps(wavelength, {"flux": model})

    def draw_windows(self, starts, ends) -> None:
        self.window_src.data = {"x0": np.asarray(starts), "x1": np.asarray(ends)}

    def draw_user_mask(self, wavelength, mask) -> None:
        self.user_src.data = masked_spans(wavelength, mask)

    def draw_sliders(self, wavelength, model, fit_pull, pull) -> None:
        """The slider model and both residual curves; χ²_ν of the sliders in the title."""
        self.slider_src.data = with_gaps(wavelength, {"flux": model})
        self.res_src.data = with_gaps(wavelength, {"fit": fit_pull, "slider": pull})
        finite = pull[np.isfinite(pull)]
        chi2 = float(np.mean(finite**2)) if finite.size else float("nan")
        self.res_fig.title.text = f"Residuals: best fit (green), sliders (orange, χ²_ν {chi2:.2f})"

    def zoom(self, start: float, end: float) -> None:
        self.x_range.update(start=start, end=end)
