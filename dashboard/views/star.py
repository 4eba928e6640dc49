"""Star view: the focused spectrum with errors, masks, model overlays, residuals and lines.

The Bokeh figures are built once per session; a new star or a toggled overlay only swaps
``ColumnDataSource`` data (the anchors doc measured ~100 ms per update that way against
~250 ms for rebuilding the plot).  Line labels are thinned in the browser on every zoom by a
small JavaScript callback, so zooming costs no server round trip.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.layouts import column as bk_column
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    HoverTool,
    LabelSet,
    Legend,
    LegendItem,
    Range1d,
    Span,
)
from bokeh.plotting import figure

from core.grid import get_grid

from .. import data
from ..persist import restore_widgets, widget_state
from ..spectra import (
    WAVE_LABEL,
    band_patch,
    csv_bytes,
    error_band,
    fits_bytes,
    label_table,
    masked_spans,
    residuals,
    robust_range,
    with_gaps,
    zoom_groups,
    zoom_span,
)
from ..state import AppContext, FocusState

MODEL_COLORS = {
    "VAE reconstruction": "#d62728",
    "Emulator fit": "#2ca02c",
    "ASPCAP model": "#1f77b4",
}
EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf")
KIND_COLORS = {"atomic": "#5b3a8e", "molecular": "#a0522d", "bandhead": "#e07b00",
               "hydrogen": "#1764ab"}
RESIDUAL_MODES = {"data − model": "diff", "(data − model)/σ": "pull"}
#: The line markers live on their own 0–1 axis: ticks at TICK_Y, labels above them.
TICK_Y = (0.80, 0.85)
LABEL_Y = 0.865
DATA_TOP = 0.76  # the data use the plot's lower 76 %, the line labels the rest
MAX_LABELS = 60
LABEL_SEP = 0.012  # minimum label separation, as a fraction of the visible range

_LABEL_JS = """
const d = all.data, xs = d.x, n = xs.length;
const a = xr.start, b = xr.end, minsep = (b - a) * sep;
const idx = [];
for (let i = 0; i < n; i++) { if (xs[i] >= a && xs[i] <= b) idx.push(i); }
idx.sort((i, j) => d.rank[j] - d.rank[i]);
const kept = [];
for (const i of idx) {
  if (kept.length >= maxn) break;
  let ok = true;
  for (const k of kept) { if (Math.abs(xs[k] - xs[i]) < minsep) { ok = false; break; } }
  if (ok) kept.push(i);
}
const out = {x: [], text: [], color: []};
for (const i of kept) { out.x.push(xs[i]); out.text.push(d.text[i]); out.color.push(d.color[i]); }
shown.data = out;
"""


def pick_labels(x: np.ndarray, rank: np.ndarray, start: float, end: float,
                sep: float = LABEL_SEP, maxn: int = MAX_LABELS) -> np.ndarray:
    """Indices of the labels to draw: strongest first, none closer than ``sep`` of the range.

    The same rule as the browser-side callback, used for the first drawing.
    """
    x = np.asarray(x, dtype=np.float64)
    inside = np.flatnonzero((x >= start) & (x <= end))
    order = inside[np.argsort(-np.asarray(rank)[inside], kind="stable")]
    minsep = (end - start) * sep
    kept: list[int] = []
    for i in order:
        if len(kept) >= maxn:
            break
        if all(abs(x[k] - x[i]) >= minsep for k in kept):
            kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def line_rank(lines: pd.DataFrame) -> np.ndarray:
    """How much a line deserves a label: hydrogen and band heads first, then strong atomic lines.

    Atomic strength ~ log gf − θ·χ with θ = 5040/T at a typical giant's T ≈ 4500 K.
    """
    kind = lines["kind"].to_numpy()
    loggf = lines["log_gf"].to_numpy(dtype=np.float64)
    chi = lines["excitation_potential"].to_numpy(dtype=np.float64)
    atomic = np.where(np.isfinite(loggf), loggf - (5040.0 / 4500.0) * chi, -6.0) + 6.0
    rank = np.where(kind == "hydrogen", 20.0, np.where(kind == "bandhead", 15.0, atomic))
    return np.where(kind == "molecular", np.minimum(rank, 0.5), rank)


def line_label(row) -> str:
    """Short marker label: the species, or the Brackett line's name (Br11)."""
    if row["kind"] == "hydrogen":
        found = re.search(r"\((Br\s*\d+)\)", str(row["note"]))
        if found:
            return found.group(1).replace(" ", "")
    return str(row["species"])


class StarView(pn.viewable.Viewer):
    """The focused star's spectrum, its models and residuals, the line list and its labels."""

    focus = param.ClassSelector(class_=FocusState)
    context = param.ClassSelector(class_=AppContext)

    def __init__(self, **params):
        super().__init__(**params)
        self._lines, self._lines_problem = data.linelist()
        self._windows = data.element_windows()
        self._model_renderers: dict[str, object] = {}
        self._grid_extent: tuple[float, float] | None = None
        self._build_figures()
        self._build_widgets()
        self._update_lines()
        self.focus.param.watch(self._on_focus, ["spectrum", "models", "outputs"])
        self._on_spectrum()

    # -- figures ------------------------------------------------------------------------------
    def _build_figures(self) -> None:
        self.x_range = Range1d(15100, 17000)
        tools = "xpan,xwheel_zoom,xbox_zoom,reset,save"
        fig = figure(height=380, sizing_mode="stretch_width", tools=tools,
                     active_scroll="xwheel_zoom", active_drag="xbox_zoom",
                     x_range=self.x_range, y_range=Range1d(0.4, 1.3),
                     x_axis_label=WAVE_LABEL, y_axis_label="Normalised flux",
                     title="No star selected", output_backend="canvas")
        fig.extra_y_ranges = {"lines": Range1d(0, 1)}
        fig.title.text_font_size = "13pt"
        fig.xaxis.axis_label_text_font_size = fig.yaxis.axis_label_text_font_size = "11pt"
        fig.toolbar.logo = None
        fig.xgrid.grid_line_alpha = fig.ygrid.grid_line_alpha = 0.35
        fig.css_classes = ["ss-spectrum-plot"]

        self.mask_src = ColumnDataSource({"x0": [], "x1": []})
        self.window_src = ColumnDataSource({"x0": [], "x1": []})
        self.spec_src = ColumnDataSource({k: [] for k in ("wave", "flux", "err", "mask")})
        self.band_src = ColumnDataSource({"x": [], "y": []})
        r_mask = fig.vstrip(x0="x0", x1="x1", source=self.mask_src, fill_color="#9e9e9e",
                            fill_alpha=0.28, line_alpha=0)
        r_win = fig.vstrip(x0="x0", x1="x1", source=self.window_src, fill_color="#ffd54f",
                           fill_alpha=0.35, line_alpha=0)
        r_band = fig.patch(x="x", y="y", source=self.band_src, fill_color="#7f9fbf",
                           fill_alpha=0.45, line_alpha=0)
        r_flux = fig.line("wave", "flux", source=self.spec_src, color="#1a1a1a", line_width=1.1)
        fig.add_tools(HoverTool(renderers=[r_flux], mode="vline", tooltips=[
            ("λ", "@wave{0.00} Å"), ("flux", "@flux{0.0000} ± @err{0.0000}"),
            ("PIXMASK", "@mask{0}")]))

        # line list: ticks, hover triangles, and labels thinned in the browser
        self.lines_src = ColumnDataSource({k: [] for k in (
            "x", "color", "species", "chi", "loggf", "informs", "note", "kind")})
        fig.segment(x0="x", x1="x", y0=TICK_Y[0], y1=TICK_Y[1], source=self.lines_src,
                    color="color", line_width=1.4, y_range_name="lines")
        r_tri = fig.scatter("x", TICK_Y[0], source=self.lines_src, marker="inverted_triangle",
                            size=7, color="color", y_range_name="lines")
        fig.add_tools(HoverTool(renderers=[r_tri], tooltips=[
            ("line", "@species @x{0.000} Å (vacuum)"), ("kind", "@kind"),
            ("χ_exc", "@chi eV"), ("log gf", "@loggf"), ("informs", "@informs"),
            ("note", "@note")]))
        self.labels_all = ColumnDataSource({"x": [], "text": [], "color": [], "rank": []})
        self.labels_src = ColumnDataSource({"x": [], "text": [], "color": []})
        fig.add_layout(LabelSet(x="x", y=LABEL_Y, text="text", source=self.labels_src,
                                y_range_name="lines", angle=90, angle_units="deg",
                                text_font_size="8pt", text_color="color",
                                text_baseline="middle", text_align="left"))
        relabel = CustomJS(args={"all": self.labels_all, "shown": self.labels_src,
                                 "xr": self.x_range, "sep": LABEL_SEP, "maxn": MAX_LABELS},
                           code=_LABEL_JS)
        self.x_range.js_on_change("start", relabel)
        self.x_range.js_on_change("end", relabel)

        self.spec_fig = fig
        self.legend = Legend(items=[("±1σ", [r_band]), ("flux", [r_flux]),
                                    ("masked pixels", [r_mask]), ("element windows", [r_win])],
                             orientation="horizontal", click_policy="hide",
                             label_text_font_size="9pt", spacing=12, margin=2)
        fig.add_layout(self.legend, "above")

        res = figure(height=170, sizing_mode="stretch_width", tools="xpan,xwheel_zoom,reset,save",
                     active_scroll="xwheel_zoom", x_range=self.x_range,
                     y_range=Range1d(-5, 5), x_axis_label=WAVE_LABEL,
                     y_axis_label="(data − model)/σ", title="Residuals", visible=False)
        res.toolbar.logo = None
        res.title.text_font_size = "11pt"
        res.css_classes = ["ss-residual-plot"]
        self.res_src = ColumnDataSource({"wave": [], "y": []})
        self.res_band = ColumnDataSource({"x": [], "y": []})
        res.vstrip(x0="x0", x1="x1", source=self.mask_src, fill_color="#9e9e9e", fill_alpha=0.28,
                   line_alpha=0)
        res.patch(x="x", y="y", source=self.res_band, fill_color="#7f9fbf", fill_alpha=0.4,
                  line_alpha=0)
        self.res_line = res.line("wave", "y", source=self.res_src, color="#d62728", line_width=1)
        res.add_layout(Span(location=0, dimension="width", line_color="#333", line_width=1))
        self.res_fig = res
        self.plot = pn.pane.Bokeh(bk_column(fig, res, sizing_mode="stretch_width"),
                                  sizing_mode="stretch_width")

    def _model_renderer(self, name: str):
        if name not in self._model_renderers:
            n = len(self._model_renderers)
            color = MODEL_COLORS.get(name, EXTRA_COLORS[n % len(EXTRA_COLORS)])
            src = ColumnDataSource({"wave": [], "flux": []})
            r = self.spec_fig.line("wave", "flux", source=src, color=color, line_width=1.3,
                                   alpha=0.9, visible=False)
            self.legend.items.append(LegendItem(label=name, renderers=[r]))
            self._model_renderers[name] = r
        return self._model_renderers[name]

    # -- widgets ------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.overlays = pn.widgets.CheckButtonGroup(label="Overlays", options=[], value=[],
                                                    color="primary", variant="outline")
        self.residual_mode = pn.widgets.RadioButtonGroup(
            label="Residual", options=list(RESIDUAL_MODES), value="(data − model)/σ",
            color="default")
        self.residual_of = pn.widgets.Select(label="Residual of", options=[], width=200,
                                             visible=False)
        groups = zoom_groups(get_grid("apogee7514"), self._windows)
        self.zoom = pn.widgets.Select(label="Zoom to", groups=groups, value="whole", width=190)
        self.goto_line = pn.widgets.AutocompleteInput(
            label="Go to line", options=self._line_names(), placeholder="e.g. Fe I 15207",
            search_strategy="includes", case_sensitive=False, min_characters=1, width=210,
            restrict=True)
        kinds = sorted(self._lines["kind"].unique()) if self._lines is not None else []
        # 760 molecular lines would bury the atomic ones: off until asked for
        self.line_kinds = pn.widgets.CheckButtonGroup(
            label="Line list", options=kinds, value=[k for k in kinds if k != "molecular"],
            color="default", variant="outline")
        elements = sorted(self._lines["element"].unique()) if self._lines is not None else []
        self.line_elements = pn.widgets.MultiChoice(label="Only elements", options=elements,
                                                    value=[], placeholder="all elements",
                                                    width=260)
        self.csv_download = pn.widgets.FileDownload(label="CSV", callback=self._csv,
                                                    filename="spectrum.csv", color="light",
                                                    width=90, disabled=True)
        self.fits_download = pn.widgets.FileDownload(label="FITS", callback=self._fits,
                                                     filename="spectrum.fits", width=90,
                                                     color="light", disabled=True)
        self.lines_download = pn.widgets.FileDownload(
            label="Lines CSV", callback=self._lines_csv, filename="apogee_lines_shown.csv",
            color="light", width=110, disabled=self._lines is None,
            description="the line list as filtered here (vacuum wavelengths)")
        unsorted = {"columnDefaults": {"headerSort": False}}
        self.table = pn.widgets.Tabulator(label_table(None), show_index=False, disabled=True,
                                          sizing_mode="stretch_width", height=400,
                                          layout="fit_columns", theme="simple",
                                          configuration=unsorted, css_classes=["ss-labels"],
                                          widths={"quantity": 105, "true": 62},
                                          formatters={"value": {"type": "textarea"}})
        self.latent_table = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True,
                                                 sizing_mode="stretch_width", height=240,
                                                 theme="simple", layout="fit_columns",
                                                 configuration=unsorted)
        self.empty = pn.pane.Alert(
            "**No star selected.** Search an APOGEE_ID in the sidebar, press *Random star*, "
            "upload a FITS file, or click a star in the Catalog tab.", alert_type="info",
            sizing_mode="stretch_width")
        self.res_info = pn.pane.Markdown("", css_classes=["ss-residual-info"], margin=(0, 10))

        self.overlays.param.watch(lambda e: self._update_models(), "value")
        self.residual_mode.param.watch(lambda e: self._update_residual(), "value")
        self.residual_of.param.watch(lambda e: self._update_residual(), "value")
        self.zoom.param.watch(lambda e: self.apply_zoom(e.new), "value")
        self.goto_line.param.watch(lambda e: self.zoom_to_line(e.new), "value")
        self.line_kinds.param.watch(lambda e: self._update_lines(), "value")
        self.line_elements.param.watch(lambda e: self._update_lines(), "value")

    def _line_names(self) -> list[str]:
        if self._lines is None:
            return []
        named = self._lines[self._lines["kind"] != "molecular"]
        return [f"{line_label(r)} {r['wavelength_vac']:.2f}" for _, r in named.iterrows()]

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
                self.spec_src.data = {k: [] for k in self.spec_src.data}
                self.band_src.data = {"x": [], "y": []}
                self.mask_src.data = {"x0": [], "x1": []}
                self.spec_fig.title.text = "No star selected"
                self.table.value = label_table(None)
                self._on_models()
                return
            flux, err = spec.flux, spec.error
            self.spec_src.data = with_gaps(spec.wavelength, {
                "flux": flux, "err": err, "mask": spec.pixmask.astype(np.float32)})
            self.band_src.data = error_band(spec)
            self.mask_src.data = masked_spans(spec.wavelength, spec.bad())
            lo, hi = robust_range(flux, spec.good())
            if spec.normalized:
                lo, hi = min(lo, 0.55), max(hi, 1.08)
            self.spec_fig.y_range.update(start=lo, end=lo + (hi - lo) / DATA_TOP)
            self.spec_fig.yaxis.axis_label = ("Normalised flux" if spec.normalized
                                              else "Flux (not continuum-normalised)")
            extent = (float(spec.wavelength[0]) - 5, float(spec.wavelength[-1]) + 5)
            if extent != self._grid_extent:
                self._grid_extent = extent
                self.x_range.update(start=extent[0], end=extent[1], bounds=extent)
                self._relabel()
            self.spec_fig.title.text = self._title(spec)
            stem = "".join(c if c.isalnum() or c in "+-_." else "_" for c in spec.label)
            self.csv_download.filename = f"{stem}_spectrum.csv"
            self.fits_download.filename = f"{stem}_spectrum.fits"
            self._on_models()

    def _title(self, spec) -> str:
        m = spec.meta
        parts = [self.focus.label]
        for key, fmt in (("TEFF", "Teff {:.0f} K"), ("LOGG", "log g {:.2f}"),
                         ("FE_H", "[Fe/H] {:+.2f}"), ("SNR", "S/N {:.0f}")):
            v = m.get(key)
            if isinstance(v, (int, float)) and np.isfinite(v):
                parts.append(fmt.format(v))
        if self.context is not None and self.context.is_mock and self.focus.source == "store":
            parts.append("mock survey")
        return " · ".join(parts)

    def _on_models(self) -> None:
        names = list(self.focus.models)
        keep = [n for n in self.overlays.value if n in names]
        with pn.io.hold():
            self.overlays.param.update(options=names, value=keep)
            self.overlays.visible = bool(names)
            self._update_models()
            self._update_tables()

    def _update_models(self) -> None:
        spec = self.focus.spectrum
        active = [n for n in self.overlays.value if n in self.focus.models]
        with pn.io.hold():
            for name, flux in self.focus.models.items():
                r = self._model_renderer(name)
                if spec is not None and name in active:
                    r.data_source.data = with_gaps(spec.wavelength, {"flux": flux})
                r.visible = spec is not None and name in active
            for name, r in self._model_renderers.items():
                if name not in self.focus.models:
                    r.visible = False
            self.residual_of.param.update(options=active,
                                          value=self.residual_of.value if
                                          self.residual_of.value in active else
                                          (active[0] if active else None))
            self.residual_of.visible = len(active) > 1
            self._update_residual()

    def _update_residual(self) -> None:
        spec, name = self.focus.spectrum, self.residual_of.value
        if spec is None or not name or name not in self.focus.models:
            self.res_fig.visible = False
            self.res_info.object = ""
            return
        mode = RESIDUAL_MODES[self.residual_mode.value]
        diff, pull = residuals(spec, self.focus.models[name])
        if mode == "diff":
            y, band = diff, np.where(np.isfinite(diff), np.minimum(spec.error, 0.5), 0.0)
            lo, hi = robust_range(diff, pad=0.15)
            m = max(abs(lo), abs(hi))
            lo, hi = -m, m
        else:
            y, band = pull, np.where(np.isfinite(pull), 1.0, 0.0)
            lo, hi = robust_range(pull, pad=0.15)
            m = min(max(abs(lo), abs(hi), 3.5), 12.0)
            lo, hi = -m, m
        good = np.isfinite(pull)
        chi2 = float(np.mean(pull[good] ** 2)) if good.any() else float("nan")
        with pn.io.hold():
            self.res_src.data = with_gaps(spec.wavelength, {"y": y})
            self.res_band.data = band_patch(spec.wavelength, -band, band)
            self.res_fig.y_range.update(start=lo, end=hi)
            self.res_fig.yaxis.axis_label = self.residual_mode.value
            self.res_fig.title.text = (f"Residuals of the {name}: χ²_ν = {chi2:.2f} over "
                                       f"{int(good.sum())} good pixels (band: ±1σ)")
            self.res_line.glyph.line_color = self._model_renderer(name).glyph.line_color
            self.res_fig.visible = True
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
        lines = self._lines
        if lines is None:
            return
        sel = lines["kind"].isin(self.line_kinds.value)
        if self.line_elements.value:
            sel &= lines["element"].isin(self.line_elements.value)
        sub = self._shown_lines = lines[sel]
        colors = [KIND_COLORS.get(k, "#555") for k in sub["kind"]]
        with pn.io.hold():
            self.lines_src.data = {
                "x": sub["wavelength_vac"].to_numpy(), "color": colors,
                "species": sub["species"].to_list(),
                "chi": [f"{v:.2f}" for v in sub["excitation_potential"]],
                "loggf": ["—" if not np.isfinite(v) else f"{v:.2f}" for v in sub["log_gf"]],
                "informs": sub["informs"].to_list(), "note": sub["note"].to_list(),
                "kind": sub["kind"].to_list(),
            }
            self.labels_all.data = {"x": sub["wavelength_vac"].to_numpy(),
                                    "text": [line_label(r) for _, r in sub.iterrows()],
                                    "color": colors, "rank": line_rank(sub)}
            self._relabel()

    def _relabel(self) -> None:
        d = self.labels_all.data
        keep = pick_labels(np.asarray(d["x"]), np.asarray(d["rank"]), self.x_range.start,
                           self.x_range.end)
        self.labels_src.data = {k: [d[k][i] for i in keep] for k in ("x", "text", "color")}

    # -- zoom ---------------------------------------------------------------------------------
    def set_xrange(self, start: float, end: float) -> None:
        with pn.io.hold():
            self.x_range.update(start=float(start), end=float(end))
            self._relabel()

    def apply_zoom(self, key: str | None) -> None:
        """Zoom presets: ``whole``, ``chip:i`` or ``el:ELEMENT`` (highlights its windows)."""
        if not key:
            return
        spec = self.focus.spectrum
        grid = spec.grid_obj if spec is not None and spec.grid_obj else get_grid("apogee7514")
        span = zoom_span(key, grid, self._windows)
        if span is None:
            return
        start, end, x0, x1 = span
        self.window_src.data = {"x0": x0, "x1": x1}
        self.set_xrange(start, end)

    def zoom_to_line(self, name: str, half_width: float = 12.0) -> None:
        if not name:
            return
        try:
            wl = float(name.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            return
        self.window_src.data = {"x0": [wl - 0.6], "x1": [wl + 0.6]}
        self.set_xrange(wl - half_width, wl + half_width)

    # -- downloads ----------------------------------------------------------------------------
    def _csv(self):
        spec = self.focus.spectrum
        return None if spec is None else csv_bytes(spec, self.focus.models)

    def _fits(self):
        spec = self.focus.spectrum
        return None if spec is None else fits_bytes(spec, self.focus.models)

    def _lines_csv(self):
        lines = getattr(self, "_shown_lines", None)
        if lines is None:
            return None
        buf = io.StringIO()
        buf.write("# APOGEE H-band lines shown in Stellarscope; medium: vacuum (Angstrom)\n")
        lines.to_csv(buf, index=False)
        return io.BytesIO(buf.getvalue().encode())

    # -- layout -------------------------------------------------------------------------------
    # -- session file ---------------------------------------------------------------------------
    def _persisted(self) -> dict:
        return {"overlays": self.overlays, "residual_mode": self.residual_mode,
                "residual_of": self.residual_of, "zoom": self.zoom, "line_kinds": self.line_kinds,
                "line_elements": self.line_elements}

    def state_dict(self) -> dict:
        return widget_state(self._persisted())

    def load_state(self, state: dict, sync: bool = False) -> list[str]:
        return restore_widgets(self._persisted(), state)

    def __panel__(self):
        lines_note = (pn.pane.Alert(f"Line list unavailable: {self._lines_problem}",
                                    alert_type="warning") if self._lines is None else None)

        def labelled(title, *widgets):
            return pn.Column(pn.pane.Markdown(f"**{title}**", margin=(0, 10, -8, 10)), *widgets)

        controls = pn.FlexBox(
            labelled("Overlays", self.overlays), labelled("Residual", self.residual_mode),
            self.residual_of, self.zoom, self.goto_line,
            labelled("Download spectrum + models", pn.Row(self.csv_download,
                                                          self.fits_download)),
            labelled("Line list", pn.Row(self.line_kinds, self.line_elements,
                                         self.lines_download)),
            gap="0px 12px", sizing_mode="stretch_width")
        side = pn.Column(
            pn.pane.Markdown("#### Labels and model outputs", margin=(0, 10)), self.table,
            pn.pane.Markdown("#### VAE latents (μ, σ)", margin=(0, 10)), self.latent_table,
            width=340)
        main = pn.Column(controls, self.empty, self.plot, self.res_info,
                         sizing_mode="stretch_width")
        items = [lines_note] if lines_note is not None else []
        return pn.Column(*items, pn.Row(main, side, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
