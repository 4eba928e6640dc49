"""Star view: the focused spectrum with errors, masks, model overlays, residuals and lines.

The plot is one :class:`~dashboard.figures.spectrum.SpectrumFigure`, built once per session;
a new star or a toggled overlay only swaps its sources' data.  Model overlays are drawn under
the data, half transparent; the flux axis keeps the deepest line cores
(:func:`~dashboard.spectra.flux_range`); an element's windows are visited one at a time
(previous/next).  A star the VAE was not trained for (χ²_ν or latents outside the training
distribution, :mod:`core.models.applicability`) gets an amber warning above the plot.
The view's settings are
``param`` parameters (saved in session files under the same names); the widgets are bound
to them.
"""

from __future__ import annotations

import html
import io

import numpy as np
import pandas as pd
import panel as pn
import param

from core.errors import StellarscopeError
from core.grid import get_grid
from core.labels import display_name
from core.models import applicability as AP
from core.models import get_family

from .. import data, deferred
from ..figures.lines import filter_lines
from ..figures.spectrum import DATA_TOP, SpectrumFigure
from ..spectra import (
    csv_bytes,
    element_window,
    fit_statistics,
    fits_bytes,
    flux_range,
    label_table,
    residuals,
    robust_range,
    zoom_groups,
)
from ..state import AppContext, FocusState

MODEL_COLORS = {
    "VAE reconstruction": "#d62728",
    "Emulator fit": "#2ca02c",
    "ASPCAP model": "#1f77b4",
}
RESIDUAL_MODES = {"data − model": "diff", "(data − model)/σ": "pull"}
#: Overlays are drawn under the flux and this transparent, so the data stay readable.
OVERLAY_ALPHA = 0.6


TABLE_CSS = """
table.ss-star-table { border-collapse: collapse; width: 100%; font-size: 13px; }
.ss-star-table th { text-align: left; font-weight: 600; padding: 4px 8px;
               border-bottom: 2px solid #1f4e79; }
.ss-star-table td { padding: 3px 8px; vertical-align: top; }
.ss-star-table tbody tr:nth-child(even) { background: #f0f0f0; }
"""


def html_table(frame: pd.DataFrame) -> str:
    """``frame`` as an HTML table; every header and cell escaped (values can come from an
    uploaded file's header)."""
    cell = lambda v, tag: f"<{tag}>{html.escape(str(v), quote=True)}</{tag}>"  # noqa: E731
    head = "".join(cell(c, "th") for c in frame.columns)
    rows = "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>"
                   for row in frame.itertuples(index=False, name=None))
    return f'<table class="ss-star-table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


class HTMLTable(pn.pane.HTML):
    """A read-only table drawn as escaped HTML; ``value`` is its DataFrame."""

    value = param.DataFrame(default=None, doc="the table shown")
    _rename = {**pn.pane.HTML._rename, "value": None}

    def __init__(self, value: pd.DataFrame, **params):
        super().__init__(html_table(value), value=value, **params)

    @param.depends("value", watch=True)
    def _redraw(self) -> None:
        self.object = html_table(self.value if self.value is not None else pd.DataFrame())


class StarView(pn.viewable.Viewer):
    """The focused star's spectrum, its models and residuals, the line list and its labels."""

    focus = param.ClassSelector(class_=FocusState)
    context = param.ClassSelector(class_=AppContext)

    overlays = param.ListSelector(default=[], objects=[], check_on_set=True,
                                  doc="model overlays, drawn under the spectrum")
    residual_mode = param.Selector(default="(data − model)/σ", objects=list(RESIDUAL_MODES))
    residual_of = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                                 doc="whose residuals the lower panel shows")
    zoom = param.Selector(default="whole", objects=["whole"], check_on_set=True,
                          doc="zoom preset: whole, chip:i or el:ELEMENT")
    zoom_window = param.Integer(default=0, bounds=(0, None),
                                doc="which of the element's windows an el:ELEMENT zoom shows")
    line_kinds = param.ListSelector(default=[], objects=[], check_on_set=True)
    line_elements = param.ListSelector(default=[], objects=[], check_on_set=True)

    #: saved in session files (the keys of the old per-widget state)
    session_params = ("overlays", "residual_mode", "residual_of", "zoom", "line_kinds",
                      "line_elements")

    def extra_state(self) -> dict:
        """Saved beside ``session_params``: which element window an ``el:`` zoom shows."""
        return {"zoom_window": self.zoom_window} if self.zoom.startswith("el:") else {}

    def restore_extra(self, state: dict, sync: bool = False) -> list[str]:
        notes = []
        for key, value in state.items():
            if key != "zoom_window":
                notes.append(f"{key}: not a setting of this view")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                notes.append(f"zoom_window: {value!r} is not a window number")
            else:
                self.zoom_window = value
        return notes

    def __init__(self, **params):
        super().__init__(**params)
        self._lines, self._lines_problem = data.linelist()
        self._windows = data.element_windows()
        self._shown_lines = None
        self.figure = SpectrumFigure()
        if self._lines is not None:
            kinds = sorted(self._lines["kind"].unique())
            self.param.line_kinds.objects = kinds
            self.param.line_elements.objects = sorted(self._lines["element"].unique())
            # 760 molecular lines would bury the atomic ones: off until asked for
            self.line_kinds = [k for k in kinds if k != "molecular"]
        self._build_widgets()
        self._update_lines()
        self.focus.param.watch(self._on_focus, ["spectrum", "models", "outputs"])
        self.param.watch(lambda e: self._update_models(), "overlays")
        self.param.watch(lambda e: self._update_residual(), ["residual_mode", "residual_of"])
        self.param.watch(self._on_zoom, ["zoom", "zoom_window"])
        self.param.watch(lambda e: self._update_lines(), ["line_kinds", "line_elements"])
        self._on_spectrum()

    # the figure's parts, under the names the tests and the bench know
    @property
    def spec_fig(self):
        return self.figure.fig

    @property
    def res_fig(self):
        return self.figure.res_fig

    @property
    def x_range(self):
        return self.figure.x_range

    # -- widgets ------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        W = pn.widgets
        self.overlay_buttons = W.CheckButtonGroup.from_param(
            self.param.overlays, label="Overlays", color="primary", variant="outline")
        self.residual_mode_buttons = W.RadioButtonGroup.from_param(
            self.param.residual_mode, label="Residual", color="default")
        self.residual_of_select = W.Select.from_param(self.param.residual_of, label="Residual of",
                                                      width=200, visible=False)
        groups = zoom_groups(get_grid("apogee7514"), self._windows)
        self.param.zoom.objects = [v for g in groups.values() for v in g.values()]
        self.zoom_select = W.Select(label="Zoom to", groups=groups, value=self.zoom, width=190,
                                    css_classes=["ss-zoom"])
        self.zoom_select.param.watch(lambda e: setattr(self, "zoom", e.new), "value")
        self.param.watch(lambda e: setattr(self.zoom_select, "value", e.new), "zoom")
        self.prev_window = W.Button(label="◀", width=40, margin=(24, 2, 5, 5),
                                    description="previous window of this element",
                                    css_classes=["ss-prev-window"], visible=False)
        self.next_window = W.Button(label="▶", width=40, margin=(24, 5, 5, 2),
                                    description="next window of this element",
                                    css_classes=["ss-next-window"], visible=False)
        self.prev_window.on_click(lambda e: self.step_window(-1))
        self.next_window.on_click(lambda e: self.step_window(1))
        self.window_label = pn.pane.Markdown("", css_classes=["ss-window-label"],
                                             margin=(28, 5, 0, 5), visible=False)
        self.goto_line = W.AutocompleteInput(
            label="Go to line", options=self._line_names(), placeholder="e.g. Fe I 15207",
            search_strategy="includes", case_sensitive=False, min_characters=1, width=210,
            restrict=True)
        self.goto_line.param.watch(lambda e: self.zoom_to_line(e.new), "value")
        self.line_kind_buttons = W.CheckButtonGroup.from_param(
            self.param.line_kinds, label="Line list", color="default", variant="outline")
        self.line_element_choice = W.MultiChoice.from_param(
            self.param.line_elements, label="Only elements", placeholder="all elements", width=260)
        self.csv_download = W.FileDownload(label="CSV", callback=self._csv,
                                           filename="spectrum.csv", color="light", width=90,
                                           disabled=True)
        self.fits_download = W.FileDownload(label="FITS", callback=self._fits,
                                            filename="spectrum.fits", width=90, color="light",
                                            disabled=True)
        self.lines_download = W.FileDownload(
            label="Lines CSV", callback=self._lines_csv, filename="apogee_lines_shown.csv",
            color="light", width=110, disabled=self._lines is None,
            description="the line list as filtered here (vacuum wavelengths)")
        # read-only tables as plain HTML: a new star replaces one string (a Tabulator costs
        # the browser far more to build and to update, for nothing a reader uses here)
        self.table = HTMLTable(label_table(None), sizing_mode="stretch_width",
                               css_classes=["ss-labels"], stylesheets=[TABLE_CSS],
                               styles={"max-height": "400px", "overflow-y": "auto"})
        self.latent_table = HTMLTable(pd.DataFrame(), stylesheets=[TABLE_CSS],
                                      sizing_mode="stretch_width", css_classes=["ss-latents"],
                                      styles={"max-height": "240px", "overflow-y": "auto"})
        self.empty = pn.pane.Alert(
            "**No star selected.** Search an APOGEE_ID in the sidebar, press *Random star*, "
            "upload a FITS file, or click a star in the Catalog tab.", alert_type="info",
            sizing_mode="stretch_width")
        self.res_info = pn.pane.Markdown("", css_classes=["ss-residual-info"], margin=(0, 10))
        self.applicability = pn.pane.Alert("", alert_type="warning", visible=False,
                                           sizing_mode="stretch_width", margin=(0, 5),
                                           css_classes=["ss-applicability"])

    def _line_names(self) -> list[str]:
        return data.line_names() if self._lines is not None else []

    # -- updates ------------------------------------------------------------------------------
    def _on_focus(self, *events) -> None:
        """One redraw per batch of focus changes (a new star changes all three at once)."""
        if any(e.name == "spectrum" for e in events):
            self._on_spectrum()
        else:
            self._on_models()

    def _on_spectrum(self) -> None:
        spec = self.focus.spectrum
        with pn.io.hold():
            self.empty.visible = spec is None
            self.csv_download.disabled = self.fits_download.disabled = spec is None
            if spec is None:
                self.figure.clear()
            else:
                self.figure.set_spectrum(spec, self._title(spec))
                self._frame_flux(spec)
                stem = "".join(c if c.isalnum() or c in "+-_." else "_" for c in spec.label)
                self.csv_download.filename = f"{stem}_spectrum.csv"
                self.fits_download.filename = f"{stem}_spectrum.fits"
            self._on_models()

    def _frame_flux(self, spec) -> None:
        """The flux axis from :func:`flux_range`: line cores stay in view (the line markers
        keep the top of the plot)."""
        lo, hi = flux_range(spec.flux, ~spec.bad())
        if spec.normalized:
            lo, hi = min(lo, 0.55), max(hi, 1.08)
        self.figure.fig.y_range.update(start=lo, end=lo + (hi - lo) / DATA_TOP)

    def _beneath(self, renderer) -> None:
        """Draw ``renderer`` (a model overlay) under the flux, half transparent."""
        fig, flux = self.figure.fig, self.figure.flux_renderer
        renderer.glyph.line_alpha = OVERLAY_ALPHA
        rs = list(fig.renderers)
        if rs.index(renderer) > rs.index(flux):
            rs.remove(renderer)
            rs.insert(rs.index(flux), renderer)
            fig.renderers = rs

    def _title(self, spec) -> str:
        m = spec.meta
        parts = [self.focus.label]
        for key, fmt in (("TEFF", "{:.0f} K"), ("LOGG", "{:.2f}"), ("FE_H", "{:+.2f}"),
                         ("SNR", "{:.0f}")):
            v = m.get(key)
            if isinstance(v, (int, float)) and np.isfinite(v):
                name = "S/N" if key == "SNR" else display_name(key)
                parts.append(f"{name} {fmt.format(v)}")
        if self.context is not None and self.context.is_mock and self.focus.source == "store":
            parts.append("mock survey")
        return " · ".join(parts)

    def _on_models(self) -> None:
        names = list(self.focus.models)
        keep = [n for n in self.overlays if n in names]
        with pn.io.hold():
            self.param.overlays.objects = names
            self.overlays = keep
            self.overlay_buttons.visible = bool(names)
            self._update_models()
            self._update_tables()
            self._update_applicability()

    def applicability_reasons(self) -> list[str]:
        """Why the VAE does not apply to the focused star ([] when it does, or unknown)."""
        if self.focus.spectrum is None:
            return []
        chi2 = self.focus.outputs.get("VAE χ²_ν")
        mu = (self.focus.encoding or {}).get("mu")
        if not isinstance(chi2, (int, float)) and mu is None:
            return []
        ref = AP.reference(self.context.slot("vae").model, self.context.store)
        return AP.judge(ref, vae_chi2=chi2 if isinstance(chi2, (int, float)) else None,
                        latents=mu)

    def _update_applicability(self) -> None:
        try:
            reasons = self.applicability_reasons()
        except (StellarscopeError, OSError, ValueError) as exc:  # the spectrum still shows
            self.context.fail(exc)
            reasons = []
        self.applicability.visible = bool(reasons)
        if reasons:
            self.applicability.object = (
                "**This star lies outside the VAE's training distribution**: "
                + html.escape(AP.summary(reasons), quote=False) + ".")

    def _update_models(self) -> None:
        spec = self.focus.spectrum
        active = [n for n in self.overlays if n in self.focus.models]
        with pn.io.hold():
            for name, flux in self.focus.models.items():
                self._beneath(self.figure.overlay(name, MODEL_COLORS.get(name), width=1.6))
                if spec is not None and name in active:
                    self.figure.set_overlay(name, spec.wavelength, flux)
            self.figure.show_overlays(active if spec is not None else [])
            self.param.residual_of.objects = active
            if self.residual_of not in active:
                self.residual_of = active[0] if active else None
            self.residual_of_select.visible = len(active) > 1
            self._update_residual()

    def _update_residual(self) -> None:
        spec, name = self.focus.spectrum, self.residual_of
        if spec is None or not name or name not in self.focus.models:
            self.figure.clear_residuals()
            self.res_info.object = ""
            return
        diff, pull = residuals(spec, self.focus.models[name])
        if RESIDUAL_MODES[self.residual_mode] == "diff":
            y, band = diff, np.where(np.isfinite(diff), np.minimum(spec.error, 0.5), 0.0)
            lo, hi = robust_range(diff, pad=0.15)
            m = max(abs(lo), abs(hi))
        else:
            y, band = pull, np.where(np.isfinite(pull), 1.0, 0.0)
            lo, hi = robust_range(pull, pad=0.15)
            m = min(max(abs(lo), abs(hi), 3.5), 12.0)
        stats = fit_statistics(spec, self.focus.models[name])  # the catalog's χ²: floor included
        chi2, n_good = stats["chi2_nu"], stats["n_good"]
        with pn.io.hold():
            curve = self.figure.residual_curve("residual")
            curve.glyph.line_color = self.figure.overlay(name).glyph.line_color
            self.figure.set_residual("residual", spec.wavelength, y)
            self.figure.set_residual_band(spec.wavelength, band)
            self.figure.frame_residuals(
                -m, m, axis_label=self.residual_mode,
                title=f"Residuals of the {name}: χ²_ν = {chi2:.2f} over {n_good} good "
                      "pixels (band: ±1σ)")
            self.res_info.object = f"Residual panel: **{name}**, χ²_ν = {chi2:.2f}"

    def _update_tables(self) -> None:
        spec = self.focus.spectrum
        self.table.value = label_table(spec, self.focus.outputs)
        enc = self.focus.encoding
        if enc is None:
            meta = spec.meta if spec is not None else {}
            zs = sorted(k for k in meta if k.startswith("VAE_Z"))
            df = pd.DataFrame({"latent": [k[4:].lower() for k in zs],
                               "μ (catalog)": [round(float(meta[k]), 3) for k in zs]})
        else:
            df = pd.DataFrame({"latent": [f"z{i:02d}" for i in range(len(enc["mu"]))],
                               "μ": [f"{v:+.3f}" for v in enc["mu"]],
                               "σ": [f"{v:.3f}" for v in enc["sigma"]]})
        self.latent_table.value = df

    def _update_lines(self) -> None:
        shared = data.line_columns(self.line_kinds, self.line_elements)
        if shared is None:
            self._shown_lines = filter_lines(self._lines, self.line_kinds, self.line_elements)
            if self._shown_lines is not None:
                with pn.io.hold():
                    self.figure.set_lines(self._shown_lines)
            return
        self._shown_lines, markers, labels = shared
        with pn.io.hold():
            self.figure.set_lines(self._shown_lines, columns=(markers, labels))

    # -- zoom ---------------------------------------------------------------------------------
    def _on_zoom(self, event) -> None:
        if event.name == "zoom" and event.old != event.new and self.zoom_window:
            self.zoom_window = 0  # a new element starts at its first window (redraws once)
            return
        self.apply_zoom(self.zoom)

    def apply_zoom(self, key: str | None) -> None:
        """Zoom presets: ``whole``, ``chip:i``, or ``el:ELEMENT``: one of that element's
        windows (``zoom_window``) with all of them shaded; previous/next step through them."""
        spec = self.focus.spectrum
        grid = spec.grid_obj if spec is not None and spec.grid_obj else get_grid("apogee7514")
        window = (element_window(self._windows, key[3:], self.zoom_window)
                  if key and key.startswith("el:") else None)
        with pn.io.hold():
            if window is None:
                self.figure.zoom_to(key, grid, self._windows)
            else:
                start, end, x0, x1, i, n = window
                self.figure.set_spans("windows", x0, x1)
                self.figure.set_xrange(start, end)
                self.window_label.object = (f"**{key[3:]}** window {i + 1} of {n}: "
                                            f"{x0[i]:.1f}–{x1[i]:.1f} Å")
            for w in (self.prev_window, self.next_window, self.window_label):
                w.visible = window is not None and (w is self.window_label or window[5] > 1)

    def step_window(self, step: int) -> None:
        """Show the element's next (1) or previous (−1) window, wrapping around."""
        window = (element_window(self._windows, self.zoom[3:], self.zoom_window)
                  if self.zoom.startswith("el:") else None)
        if window is not None:
            self.zoom_window = (window[4] + step) % window[5]

    def zoom_to_line(self, name: str, half_width: float = 12.0) -> None:
        try:
            wl = float(name.rsplit(" ", 1)[1])
        except (AttributeError, IndexError, ValueError):
            return
        with pn.io.hold():
            self.figure.zoom_to_line(wl, half_width)

    # -- downloads ----------------------------------------------------------------------------
    def _csv(self):
        spec = self.focus.spectrum
        return None if spec is None else csv_bytes(spec, self.focus.models)

    def _fits(self):
        spec = self.focus.spectrum
        return None if spec is None else fits_bytes(spec, self.focus.models, self.provenance())

    def provenance(self) -> dict[str, str]:
        """Where each model overlay came from: its family's model directory, or the file."""
        out = {}
        slots = self.context.slots if self.context is not None else {}
        for name in self.focus.models:
            if name == "ASPCAP model":
                out[name] = "ASPCAP best-fit model from the star's file"
                continue
            word = name.split()[0].lower()
            for family, slot in slots.items():
                if slot.model is not None and word in (family.lower(),
                                                       get_family(family).title.lower()):
                    where = str(slot.where).rstrip("/").rsplit("/", 1)[-1] or family
                    out[name] = f"{get_family(family).title} model {where}"
                    break
        return out

    def _lines_csv(self):
        if self._shown_lines is None:
            return None
        buf = io.StringIO()
        buf.write("# APOGEE H-band lines shown in Stellarscope; medium: vacuum (Angstrom)\n")
        self._shown_lines.to_csv(buf, index=False)
        return io.BytesIO(buf.getvalue().encode())

    # -- layout -------------------------------------------------------------------------------
    def __panel__(self):
        lines_note = (pn.pane.Alert(f"Line list unavailable: {self._lines_problem}",
                                    alert_type="warning") if self._lines is None else None)

        def labelled(title, *widgets):
            return pn.Column(pn.pane.Markdown(f"**{title}**", margin=(0, 10, -8, 10)), *widgets)

        controls = pn.FlexBox(
            labelled("Overlays", self.overlay_buttons),
            labelled("Residual", self.residual_mode_buttons),
            self.residual_of_select, self.zoom_select, self.prev_window, self.window_label,
            self.next_window, self.goto_line, gap="0px 12px", sizing_mode="stretch_width")
        more = pn.FlexBox(
            labelled("Line list", pn.Row(self.line_kind_buttons, self.line_element_choice,
                                         self.lines_download)),
            labelled("Download spectrum + models", pn.Row(self.csv_download,
                                                          self.fits_download)),
            gap="0px 12px", sizing_mode="stretch_width")
        # the tables go under the plot, so the spectrum has the page's whole width
        tables = pn.FlexBox(
            pn.Column(pn.pane.Markdown("#### Labels and model outputs", margin=(0, 10)),
                      self.table, width=420),
            pn.Column(pn.pane.Markdown("#### VAE latents (μ, σ)", margin=(0, 10)),
                      self.latent_table, width=360),
            gap="0px 16px", sizing_mode="stretch_width")
        items = [lines_note] if lines_note is not None else []
        # below the plot: filled once the page is shown (a new page draws its spectrum first)
        below = deferred.slot(lambda: [more, tables], css_classes=["ss-star-below"])
        return pn.Column(*items, controls, self.empty, self.applicability, self.figure.pane,
                         self.res_info, below, sizing_mode="stretch_width")
