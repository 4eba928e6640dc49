"""Attention view: where the spectral transformer looks to read each label.

The focused star (store star or uploaded file) in the shared
:class:`~dashboard.figures.spectrum.SpectrumFigure`, with the attention map of the chosen
label as a heat strip below it (and a line on the strip); selectors for the label, the
decoder layer (or the rollout through all blocks) and the head; the line list of the
label's informing elements with element labels, and a toggle for the fourteen notable lines
of the SpectraFM paper; a table of the most attended wavelengths with the nearest line
(clicking a row zooms there); this star, the catalog mean or their difference; the
alignment score.  Every number comes from :mod:`core.inference.attention` and
:mod:`core.evaluate.transformer`; the view only draws.

An uploaded apVisit can be read on its own pixels (their wavelengths shifted to the rest
frame, no resampling: the upload keeps them, :func:`core.inference.attention.own_pixels`).
That reading runs in a worker thread as soon as the upload is shown, so the labels of both
readings appear side by side at once and the switch only redraws map, labels and table at
the visit's own wavelengths.

A star's maps are computed once per star (every label, layer and head in one pass), so
switching label, layer or head only swaps the plot's data.  The catalog mean is computed
in a worker thread on the first visit (and cached by core for later sessions).
"""

from __future__ import annotations

import html
import time

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, LinearColorMapper, Range1d

from core.errors import StellarscopeError
from core.evaluate import transformer as ev
from core.inference.attention import (
    OWN_PIXELS_PROBLEM,
    ROLLOUT,
    catalog_mean,
    compare_readings,
    own_pixels,
    star_attention,
    top_attended,
)
from core.labels import display_name

from .. import data
from ..figures.lines import filter_lines
from ..figures.spectrum import SpectrumFigure, swap
from ..jobs import JobRunner
from ..state import AppContext, FocusState

SHOW = {"this star": "star", "catalog mean": "mean", "star − mean": "diff"}
HEAT = ("#000004", "#1b0c41", "#4a0c6b", "#781c6d", "#a52c60", "#cf4446", "#ed6925",
        "#fb9b06", "#f7d13d", "#fcffa4")
DIVERGING = ("#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582",
             "#d6604d", "#b2182b")
TOP_N = 12
OWN_TEXT = "read the upload on its own pixels (rest frame, no resampling)"


class AttentionView(pn.viewable.Viewer):
    """The transformer's attention over the focused star's pixels."""

    focus = param.ClassSelector(class_=FocusState)
    context = param.ClassSelector(class_=AppContext)
    active = param.Boolean(default=False, doc="True while the tab is shown")
    built = param.Boolean(default=False)

    label = param.Selector(default=None, objects=[], allow_None=True, check_on_set=False)
    layer = param.Selector(default="last layer", objects=["last layer"], check_on_set=False)
    head = param.Selector(default="mean of heads", objects=["mean of heads"], check_on_set=False)
    show = param.Selector(default="this star", objects=list(SHOW))
    group = param.Selector(default="all", objects=list(("all", "dwarfs", "giants")))
    notable = param.Boolean(default=False, doc="mark the fourteen notable lines")
    all_lines = param.Boolean(default=False, doc="every line of the line list, not only the "
                                                  "label's informing elements")
    own = param.Boolean(default=False, doc="an uploaded apVisit read on its own rest-frame "
                                           "pixels instead of resampled onto the grid")

    session_params = ("label", "layer", "head", "show", "group", "notable", "all_lines", "own")

    def __init__(self, **params):
        super().__init__(**params)
        self.att = None          # StarAttention of the focused star (the reading shown)
        self.readings = {}       # "grid" / "own" → StarAttention of the focused spectrum
        self.own_spectrum = None  # the focused upload's own-pixel Spectrum, if it has one
        self.mean = None         # MeanAttention of the store (when computed)
        self.predictor = None
        self.problem = ""
        self.last_redraw_ms = float("nan")
        self.jobs = JobRunner()
        self._layout = pn.Column(sizing_mode="stretch_width")
        self.focus.param.watch(self._on_spectrum, ["spectrum"])
        self.context.slot("transformer").param.watch(self._on_model, ["model"])
        self.param.watch(self._redraw, ["label", "layer", "head", "show", "group", "notable",
                                        "all_lines"])
        self.param.watch(self._on_own, ["own"])
        self.param.watch(self._on_active, ["active"])

    # -- building -----------------------------------------------------------------------------
    def ensure_built(self) -> None:
        if self.built:
            return
        self._lines, _ = data.linelist()
        self._notable = ev.load_notable_lines()
        self._build()
        self.built = True
        self._on_model()

    def _on_active(self, *events) -> None:
        if self.active:
            self.ensure_built()

    def _build(self) -> None:
        W = pn.widgets
        fig = self.figure = SpectrumFigure(height=330, css_class="ss-attention-plot")
        self.align_src = fig.span_layer("align", "#80cbc4", 0.25, "alignment windows (±2 Å)")
        self.notable_src = fig.span_layer("notable", "#00897b", 0.55, "notable lines",
                                          edge="#00695c")
        strip = self.strip = fig.add_strip("attention", height=190,
                                           y_axis_label="attention ×uniform",
                                           title="Attention")
        strip.y_range = Range1d(0, 5)
        strip.css_classes = ["ss-attention-strip"]
        self.mapper = LinearColorMapper(palette=list(HEAT), low=0, high=5,
                                        nan_color=(0, 0, 0, 0))
        self.heat_src = ColumnDataSource({"left": [], "right": [], "value": [], "top_value": []},
                                         name="ss-attention-heat")
        strip.quad(left="left", right="right", bottom=0, top="top_value",
                   source=self.heat_src, fill_color={"field": "value", "transform": self.mapper},
                   line_alpha=0, fill_alpha=0.9)
        self.line_src = ColumnDataSource({"wave": [], "star": [], "mean": []})
        strip.line("wave", "star", source=self.line_src, color="#00bcd4", line_width=1.3)
        strip.line("wave", "mean", source=self.line_src, color="#9e9e9e", line_width=1.1,
                   line_dash="dashed")
        self.label_select = W.Select.from_param(self.param.label, name="Label", width=120,
                                                css_classes=["ss-att-label"])
        self.layer_select = W.Select.from_param(self.param.layer, name="Layer", width=140,
                                                css_classes=["ss-att-layer"])
        self.head_select = W.Select.from_param(self.param.head, name="Head", width=140,
                                               css_classes=["ss-att-head"])
        self.show_buttons = W.RadioButtonGroup.from_param(self.param.show, width=330,
                                                          css_classes=["ss-att-show"],
                                                          margin=(24, 10, 5, 10))
        self.group_select = W.Select.from_param(self.param.group, name="Catalog mean of",
                                                width=130)
        self.notable_box = W.Checkbox.from_param(
            self.param.notable, name="14 notable lines (SpectraFM)", disabled=self._notable is None,
            css_classes=["ss-att-notable"])
        self.lines_box = W.Checkbox.from_param(self.param.all_lines, name="all lines")
        self.own_box = W.Checkbox.from_param(self.param.own, name=OWN_TEXT,
                                             css_classes=["ss-att-own"])
        self.own_note = pn.pane.Markdown("", css_classes=["ss-att-own-note"], margin=(0, 10),
                                         styles={"font-size": "85%", "color": "#555"},
                                         sizing_mode="stretch_width")
        self.own_row = pn.Row(self.own_box, self.own_note, visible=False,
                              sizing_mode="stretch_width")
        self.compare = pn.pane.HTML("", css_classes=["ss-att-compare"], margin=(0, 10),
                                    sizing_mode="stretch_width")
        self.status = pn.pane.Markdown("", css_classes=["ss-att-status"], margin=(0, 10),
                                       sizing_mode="stretch_width")
        self.score = pn.pane.Markdown("", css_classes=["ss-att-score"], margin=(0, 10),
                                      sizing_mode="stretch_width")
        self.table = W.Tabulator(pd.DataFrame(), show_index=False, disabled=True,
                                 selectable=1, height=340, sizing_mode="stretch_width",
                                 theme="simple",
                                 layout="fit_data_stretch", css_classes=["ss-att-table"])
        self.table.on_click(self._on_row)
        note = ("" if self._notable is not None else
                f"<br><i>{html.escape(str(ev.NOTABLE_LINES))} is absent: no notable lines.</i>")
        self.help = pn.pane.Markdown(
            "Heat strip: attention of the label's query over the pixels read, ×uniform "
            "(1 = every pixel alike), summed over the star's context-sized patches. "
            "Rollout: the decoder layers averaged, carried back through the encoder's "
            "self-attention when it has any (the demo model's encoder reads each pixel alone, "
            "so its maps are the pixels the labels read). Click a table row to zoom "
            "there." + note,
            styles={"font-size": "85%", "color": "#555"}, sizing_mode="stretch_width")
        controls = pn.Row(self.label_select, self.layer_select, self.head_select,
                          self.show_buttons,
                          self.group_select, pn.Column(self.notable_box, self.lines_box),
                          sizing_mode="stretch_width")
        below = pn.Row(pn.Column(self.score, self.compare, self.help, width=440), self.table,
                       sizing_mode="stretch_width")
        self._layout.objects = [controls, self.own_row, self.status, self.figure.pane, below]

    # -- model and star -----------------------------------------------------------------------
    def _on_model(self, *events) -> None:
        if not self.built:
            return
        slot = self.context.slot("transformer")
        self.predictor = slot.model
        self.mean = None
        self.problem = "" if slot.model is not None else (
            slot.problem or "no spectral transformer: train one with "
            "`stellarscope train transformer`")
        if self.predictor is not None:
            names = list(self.predictor.label_names)
            c = self.predictor.model.config
            layers = [f"layer {i + 1}" for i in range(c.decoder_layers)]
            layers[-1] = "last layer"
            with pn.io.hold():
                self.param.label.objects = names
                self.param.layer.objects = [*layers, ROLLOUT]
                self.param.head.objects = ["mean of heads",
                                           *(f"head {h + 1}" for h in range(c.heads))]
                if self.label not in names:
                    self.label = "FE_H" if "FE_H" in names else names[0]
            self._start_mean()
        self._on_spectrum()

    def _start_mean(self) -> None:
        store = self.context.store
        if store is None or self.predictor is None:
            return
        pred = self.predictor

        def done(mean):
            self.mean = mean
            self._redraw()

        self.jobs.submit(lambda: catalog_mean(pred, store), key="mean", on_done=done,
                         on_error=lambda exc: self._set_status(
                             f"⚠ catalog mean not available: {exc}"))

    def _on_spectrum(self, *events) -> None:
        if not self.built:
            return
        t0 = time.perf_counter()
        self.att = None
        self.readings = {}
        spec = self.focus.spectrum
        upload = spec is not None and self.focus.source == "upload"
        self.own_spectrum = own_pixels(spec) if upload else None
        self._show_own_control(spec, upload)
        if self.predictor is None:
            self._clear(f"⚠ {self.problem}")
            return
        if spec is None:
            self._clear("Choose a star (sidebar) or upload a FITS file.")
            return
        try:
            self.readings["grid"] = star_attention(self.predictor, spec)
        except (StellarscopeError, ValueError) as exc:
            self._clear(f"⚠ no attention for this spectrum: {html.escape(str(exc))}")
            return
        self._show_reading(t0)
        self._read_own_pixels_later()

    def _read_own_pixels_later(self) -> None:
        """An apVisit upload's own-pixel reading in a worker thread, so the labels of both
        readings show at once and the switch only draws (a switch before it is done reads
        there and then; this result is then dropped)."""
        spec, own, pred = self.focus.spectrum, self.own_spectrum, self.predictor
        if own is None or pred is None or "own" in self.readings:
            return

        def done(att):
            if (self.focus.spectrum is spec and self.predictor is pred
                    and "own" not in self.readings):
                self.readings["own"] = att
                self._draw_compare()

        # a failure is reported when the switch reads the pixels itself
        self.jobs.submit(lambda: star_attention(pred, own), key="own", on_done=done,
                         on_error=lambda exc: None)

    def _show_own_control(self, spec, upload: bool) -> None:
        """The own-pixel switch: shown for uploads, usable for those with pixels of their own
        (an apVisit); an apStar or aspcapStar is on the grid already."""
        self.own_row.visible = upload
        self.own_box.disabled = self.own_spectrum is None
        if not upload:
            self.own_note.object = ""
        elif self.own_spectrum is not None:
            own = self.own_spectrum
            self.own_note.object = (
                f"apVisit: {own.n_pix:,} pixels at their own wavelengths, shifted to the rest "
                f"frame by RV {float(own.meta.get('RV_USED', np.nan)):+.1f} km/s "
                f"({html.escape(str(own.meta.get('RV_SOURCE') or '?'))}); off: the same visit "
                f"resampled onto the {html.escape(str(spec.grid))} grid.")
        elif spec.meta.get(OWN_PIXELS_PROBLEM):
            self.own_note.object = ("⚠ its own pixels could not be read: "
                                    f"{html.escape(str(spec.meta[OWN_PIXELS_PROBLEM]))}")
        else:
            self.own_note.object = (f"This upload is already on the APOGEE grid "
                                    f"({html.escape(str(spec.meta.get('READER') or 'apStar'))}, "
                                    f"{spec.n_pix:,} pixels): it has no pixels of its own to "
                                    f"read; only an apVisit has.")

    def _on_own(self, *events) -> None:
        if self.built and self.readings:
            self._show_reading(time.perf_counter())

    def reading(self) -> str:
        """'own' when the focused upload is read on its own pixels, else 'grid'."""
        return "own" if self.own and self.own_spectrum is not None else "grid"

    def _show_reading(self, t0: float) -> None:
        """Draw the reading the switch asks for (computed once per spectrum, then kept)."""
        mode = self.reading()
        if mode == "own" and "own" not in self.readings:
            try:
                self.readings["own"] = star_attention(self.predictor, self.own_spectrum)
            except (StellarscopeError, ValueError) as exc:
                self.own_note.object = ("⚠ no attention on its own pixels: "
                                        f"{html.escape(str(exc))}")
                mode = "grid"
        self.att = self.readings[mode]
        spec = self.own_spectrum if mode == "own" else self.focus.spectrum
        where = ("own pixels, rest frame, not resampled" if mode == "own"
                 else "on the grid" if self.focus.source == "upload" else "")
        with pn.io.hold():
            self.figure.set_spectrum(spec, f"{self.focus.label}: attention"
                                     + (f" ({where})" if where else ""))
            self._draw_compare()
            self._redraw(t0=t0)

    def _draw_compare(self) -> None:
        """The labels of both readings side by side, once both exist."""
        grid, own = self.readings.get("grid"), self.readings.get("own")
        if grid is None or own is None:
            self.compare.object = ""
            return
        cmp = compare_readings(grid.label_names, grid.labels, grid.labels_err, own.labels,
                               own.labels_err)
        rows = "".join(
            f"<tr><td>{html.escape(display_name(r.label))}</td>"
            f"<td>{_pm(r.a, r.a_err)}</td><td>{_pm(r.b, r.b_err)}</td>"
            f"<td style='text-align:right'>{r.z:+.2f}</td></tr>"
            for r in cmp.itertuples())
        z = np.abs(cmp["z"].to_numpy())
        off = cmp["label"][~(z < 1)].tolist()
        verdict = (f"All {len(cmp)} labels agree within 1σ (largest |Δ|/σ {np.nanmax(z):.2f})."
                   if not off else
                   f"⚠ {', '.join(map(display_name, off))} differ by more than 1σ.")
        self.compare.object = (
            "<table class='ss-att-compare-table' style='font-size:85%;border-collapse:"
            "collapse'><thead><tr><th style='text-align:left'>label</th>"
            f"<th>resampled grid ({grid.n_read:,} px read)</th>"
            f"<th>own pixels ({own.n_read:,} px read)</th><th>Δ/σ</th></tr></thead>"
            f"<tbody>{rows}</tbody></table><div class='ss-att-verdict'>{html.escape(verdict)}"
            "</div>")

    def _clear(self, text: str) -> None:
        with pn.io.hold():
            self.figure.clear()
            self.heat_src.data = {"left": [], "right": [], "value": [], "top_value": []}
            self.line_src.data = {"wave": [], "star": [], "mean": []}
            self.table.value = pd.DataFrame()
            self.score.object = ""
            self._set_status(text)

    def _set_status(self, text: str) -> None:
        self.status.object = text

    # -- drawing ------------------------------------------------------------------------------
    def _choice(self) -> tuple[int | str, int | None]:
        layer = ROLLOUT if self.layer == ROLLOUT else (
            -1 if self.layer == "last layer" else int(str(self.layer).split()[-1]) - 1)
        head = None if (layer == ROLLOUT or not str(self.head).startswith("head")) else \
            int(str(self.head).split()[-1]) - 1
        return layer, head

    def current_maps(self) -> dict:
        """The maps on screen: star, mean (on the star's pixels, or None) and the drawn one."""
        att = self.att
        layer, head = self._choice()
        star = att.map(self.label, layer, head)
        mean = None
        if self.mean is not None and len(self.mean.wavelength) == len(att.wavelength) and \
                np.allclose(self.mean.wavelength, att.wavelength):
            mean = self.mean.map(self.label, layer, head, self.group)
        mode = SHOW[self.show]
        shown = star if mode == "star" or mean is None else (mean if mode == "mean"
                                                             else star - mean)
        return {"star": star, "mean": mean, "shown": shown, "layer": layer, "head": head,
                "mode": mode if mean is not None else "star"}

    def _redraw(self, *events, t0: float | None = None) -> None:
        if not self.built or self.att is None or self.label is None:
            return
        t0 = time.perf_counter() if t0 is None else t0
        att, fig = self.att, self.figure
        maps = self.current_maps()
        wave = att.wavelength
        left, right = _cells(wave)
        shown = maps["shown"]
        with pn.io.hold():
            finite = shown[np.isfinite(shown)]
            if maps["mode"] == "diff":
                hi = float(np.quantile(np.abs(finite), 0.995)) if finite.size else 1.0
                self.mapper.update(palette=list(DIVERGING), low=-hi, high=hi)
            else:
                hi = float(np.quantile(finite, 0.995)) if finite.size else 1.0
                self.mapper.update(palette=list(HEAT), low=0.0, high=max(hi, 1e-6))
            top_line = np.nanmax(np.r_[maps["star"], [1.0]])
            if maps["mean"] is not None:
                top_line = max(top_line, float(np.nanmax(maps["mean"])))
            ymax = 1.08 * top_line
            swap(self.heat_src, {"left": left, "right": right,
                                 "value": shown.astype(np.float32),
                                 "top_value": np.full(wave.size, ymax, np.float32)})
            mean_line = maps["mean"] if maps["mean"] is not None else np.full(wave.size, np.nan)
            swap(self.line_src, fig.gapped(wave, {"star": maps["star"], "mean": mean_line}))
            self.strip.y_range.update(start=0, end=ymax)
            what = {"star": "this star", "mean": f"catalog mean ({self.group})",
                    "diff": f"this star − catalog mean ({self.group})"}[maps["mode"]]
            head = "rollout" if maps["layer"] == ROLLOUT else (
                f"{self.layer}, {self.head}")
            lines = ("lines: this star (cyan), catalog mean (grey, dashed)"
                     if maps["mean"] is not None else "line: this star")
            self.strip.title.text = (f"Attention of the {self.label} query: heat = {what}; "
                                     f"{head}; {lines}")
            self._draw_lines()
            self._draw_table(maps["star"])
            self._draw_score(maps)
            self._set_status(self._status_text())
        self.last_redraw_ms = 1000 * (time.perf_counter() - t0)

    def _draw_lines(self) -> None:
        """Markers, alignment windows and notable lines: redrawn only when they change (a new
        star keeps them)."""
        key = (self.label, self.all_lines, self.notable)
        if key == getattr(self, "_lines_key", None):
            return
        self._lines_key = key
        fig = self.figure
        elements = ev.informing_elements(self.label)
        lines = self._lines if self.all_lines else filter_lines(self._lines, elements=elements)
        fig.set_lines(lines)
        centres = ev.label_line_wavelengths(self.label)
        fig.set_spans("align", centres - ev.HALF_WIDTH, centres + ev.HALF_WIDTH)
        if self.notable and self._notable is not None:
            lam = self._notable["wavelength"].to_numpy(np.float64)
            fig.set_spans("notable", lam - 1.0, lam + 1.0)
        else:
            fig.set_spans("notable", [], [])

    def _draw_table(self, star_map: np.ndarray) -> None:
        top = top_attended(self.att.wavelength, star_map, TOP_N, lines=self._lines)
        self._top = top
        self.table.value = pd.DataFrame({
            "λ (Å)": top["wavelength"].round(2), "×uniform": top["attention"].round(2),
            "nearest line": top["line"], "element": top["element"],
            "line λ (Å)": top["line_wavelength"].round(2), "Δλ (Å)": top["distance"].round(2)})

    def _draw_score(self, maps: dict) -> None:
        att = self.att
        window = ev.near(att.wavelength, ev.label_line_wavelengths(self.label))
        star = ev.score(maps["star"], att.good, window)
        els = ", ".join(ev.informing_elements(self.label)) or "none"
        frac = (window & att.good).sum() / max(att.n_read, 1)
        j = att.label_index(self.label)
        what = ("own pixels (rest frame, not resampled)" if self.att is self.readings.get("own")
                else "pixels")
        text = (f"**{html.escape(self.label)} = {att.labels[j]:.4g} ± {att.labels_err[j]:.2g}** "
                f"from {att.n_read:,} {what}<br>**Alignment: {star:.2f}× chance** "
                f"(attention within ±{ev.HALF_WIDTH:g} Å of the lines of {html.escape(els)}, "
                f"{100 * frac:.1f} % of the pixels read)")
        if maps["mean"] is not None:
            m = ev.score(np.nan_to_num(maps["mean"]), att.good, window)
            text += f"<br>catalog mean ({self.group}): {m:.2f}× chance"
        if self._notable is not None:
            n = ev.score(maps["star"], att.good,
                         ev.near(att.wavelength, self._notable["wavelength"].to_numpy()))
            text += f"<br>14 notable lines: {n:.2f}× chance"
        self.score.object = text

    def _status_text(self) -> str:
        if self.att is not None and self.att is self.readings.get("own"):
            return ("Read on the upload's own pixels: the catalog mean lies on the model's grid "
                    "and is not drawn here.")
        if self.mean is None and self.context.store is not None:
            return "Computing the catalog mean (once per model and store) …"
        if self.mean is not None:
            n = self.mean.n_stars.get(self.group, 0)
            return f"Catalog mean over {n} stars ({self.group})."
        return ""

    def _on_row(self, event) -> None:
        top = getattr(self, "_top", None)
        if top is None or event.row is None or event.row >= len(top):
            return
        lam = float(top["wavelength"].iloc[event.row])
        self.zoom_to(lam)

    def zoom_to(self, wavelength: float, half_width: float = 15.0) -> None:
        self.figure.set_xrange(wavelength - half_width, wavelength + half_width)

    def __panel__(self):
        return self._layout


def _pm(value: float, sigma: float) -> str:
    """'4.12 ± 0.27': the value to the σ's second significant digit."""
    if not (np.isfinite(value) and np.isfinite(sigma) and sigma > 0):
        return f"{value:.4g} ± {sigma:.2g}"
    d = int(max(0, 1 - np.floor(np.log10(sigma))))
    return f"{value:.{d}f} ± {sigma:.{d}f}"


def _cells(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) edges of one heat cell per pixel, halfway to its neighbours; a cell
    never bridges a chip gap (at most 1.5 typical pixel widths to either side)."""
    w = np.asarray(wave, np.float64)
    if w.size == 1:
        return w - 0.1, w + 0.1
    step = np.diff(w)
    half = np.minimum(step, 3 * np.median(step)) / 2
    return np.r_[w[0] - half[0], w[1:] - half], np.r_[w[:-1] + half, w[-1] + half[-1]]
