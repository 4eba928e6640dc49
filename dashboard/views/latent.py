"""Latent-space view: drag the VAE's latents and injected labels, watch the spectrum change.

One slider per free latent, initialised at the focused star's encoding, plus one per injected
label.  Every slider step decodes through ``VAEPredictor.decode`` and swaps the plot's data in
place; a :class:`~dashboard.jobs.Throttle` folds fast drags into at most one decode per 40 ms,
always with the newest slider values (stale steps are dropped, never queued).
The sensitivity strip (∂flux/∂z per pixel, one row per latent) is recomputed when a slider is
released, so users see which lines each latent controls around the current point.

What each latent does (:mod:`core.evaluate.latent_directions`, computed off the session's
thread and cached per model and store): the sliders are ordered by how much their latent
changes the spectrum, each carries a one-line summary (RMS flux change over ±1σ, the lines it
moves most, the label it knows best), and the *Latent directions* table gives the detail.
*Traverse* animates one latent from −3σ to +3σ and back while the difference panel shows the
change against where the latent started.  A star whose latents (or labels) lie beyond the
sliders' range widens them to its values and is flagged as outside the training distribution.
"""

from __future__ import annotations

import contextlib
import html

import numpy as np
import pandas as pd
import panel as pn
import param
import torch
from bokeh.layouts import column as bk_column
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    FixedTicker,
    HoverTool,
    LinearColorMapper,
    PrintfTickFormatter,
    Range1d,
    Span,
)
from bokeh.palettes import RdBu11
from bokeh.plotting import figure

from core.evaluate import latent_directions as LD
from core.grid import Grid, get_grid
from core.labels import axis_title, display_name

from ..jobs import Debounce, JobRunner, Throttle, session_doc
from ..spectra import WAVE_LABEL, chip_images, robust_range, with_gaps
from ..state import AppContext, FocusState

FALLBACK_RANGES = {"TEFF": (3500.0, 6500.0), "LOGG": (0.0, 5.0), "FE_H": (-2.5, 0.6),
                   "M_H": (-2.5, 0.6)}
Z_LIMIT = 4.0
DIFF_AGAINST = ("star's spectrum", "star's reconstruction")
#: Traverse: from −TRAVERSE_SIGMA to +TRAVERSE_SIGMA and back, one step per tick.
TRAVERSE_SIGMA = 3.0
TRAVERSE_STEP = 0.2
TRAVERSE_PERIOD_MS = 120
#: A per-latent R² below this is "knows nothing" in the summaries.
R2_SHOWN = 0.05


def nice_ceil(x: float) -> float:
    """The smallest 1, 2 or 5 × 10ⁿ at or above ``x`` (> 0)."""
    exp = np.floor(np.log10(x))
    for f in (1.0, 2.0, 5.0, 10.0):
        if f * 10**exp >= x * (1 - 1e-9):
            return float(f * 10**exp)
    return float(10 ** (exp + 1))


@contextlib.contextmanager
def one_thread():
    """One torch intra-op thread for the one-row decodes of a slider step: on this 2-core
    machine under load, waking a second thread costs 30–50 ms, more than the whole decode
    (2–8 ms on one thread).  The setting is the calling thread's, restored afterwards."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


class LatentSlider(pn.widgets.FloatSlider):
    """A slider whose drag does not flash the page's busy indicator: each of its steps is
    a millisecond decode, and toggling the indicator twice per step made the browser
    re-style the page on every step."""

    _busy__ignore = ["value"]


class LatentView(pn.viewable.Viewer):
    """Sliders over the VAE's latent space with a live decoded spectrum."""

    focus = param.ClassSelector(class_=FocusState)
    context = param.ClassSelector(class_=AppContext)
    throttle_s = param.Number(default=0.04, bounds=(0, 1))
    active = param.Boolean(default=True, doc="on screen: when not, a new star is only noted "
                                             "and decoded once the view is shown")
    diff_against = param.Selector(default=DIFF_AGAINST[0], objects=list(DIFF_AGAINST),
                                  doc="what the decoded spectrum is compared with")

    #: saved in session files; the slider point goes through extra_state
    session_params = ("diff_against",)

    def __init__(self, **params):
        super().__init__(**params)
        self._syncing = False
        self.decoded: np.ndarray | None = None
        self.decode_count = 0
        self._rng = np.random.default_rng()
        self._throttle = Throttle(self._decode, self.throttle_s)
        # the Jacobian strip costs ~60 ms and ~1 MB to send: once the slider has come to rest
        self._sensitivity_later = Debounce(self._update_sensitivity, 0.3)
        # a changed text re-lays out the page in the browser (~100 ms on a busy 2-core
        # machine): while a slider is dragged, the readout follows once the decodes pause
        self._readout_later = Debounce(self._set_readout, 0.15)
        self._jobs = JobRunner()
        #: core.evaluate.latent_directions result for the current model and store, or None
        self.directions: dict | None = None
        self.order: list[int] = []
        self._traverse: dict | None = None
        self._traverse_cb = None
        self.traverse_frames = 0
        self._build_figures()
        self.reset_button = pn.widgets.Button(label="Reset to star", color="primary",
                                              width=125)
        self.zero_button = pn.widgets.Button(label="Zero latents", width=115)
        self.sample_button = pn.widgets.Button(label="Sample prior", width=115)
        self.diff_buttons = pn.widgets.RadioButtonGroup.from_param(self.param.diff_against)
        self.readout = pn.pane.Markdown("", css_classes=["ss-decode-readout"], margin=(0, 10))
        self.reset_button.on_click(lambda e: self.reset_to_star())
        self.zero_button.on_click(lambda e: self.zero())
        self.sample_button.on_click(lambda e: self.sample_prior())
        self.traverse_select = pn.widgets.Select(options={}, width=120, margin=(5, 5),
                                                 css_classes=["ss-traverse-latent"])
        self.traverse_button = pn.widgets.Button(label="▶ Traverse −3σ…+3σ", width=165,
                                                 css_classes=["ss-traverse-button"])
        self.traverse_button.on_click(lambda e: self.toggle_traverse())
        self._traverse_picked = self._setting_select = False
        self.traverse_select.param.watch(self._on_pick, "value")
        self.param.watch(lambda e: self._decode(), "diff_against")
        self.sliders_box = pn.Column(sizing_mode="stretch_width")
        self._labels_title = pn.pane.Markdown("#### Injected labels", margin=(0, 8))
        self.message = pn.pane.Alert("", alert_type="warning", visible=False,
                                     sizing_mode="stretch_width")
        self.range_alert = pn.pane.Alert("", alert_type="warning", visible=False,
                                         sizing_mode="stretch_width", margin=(0, 5),
                                         css_classes=["ss-latent-range"])
        self.directions_note = pn.pane.Markdown("", margin=(0, 10),
                                                css_classes=["ss-directions-note"])
        self.directions_table = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, height=330,
            sizing_mode="stretch_width", css_classes=["ss-directions-table"])
        self.directions_table.on_click(self._on_table_click)
        self._build_sliders()
        self.context.slot("vae").param.watch(lambda e: self._build_sliders(), "model")
        self._stale = self.focus.spectrum is not None  # built after a star was focused
        self.focus.param.watch(self._on_focus, ["spectrum", "encoding"])
        self.param.watch(self._on_active, "active")

    def _on_focus(self, *events) -> None:
        if self.active:
            self.reset_to_star()
        else:
            self._stale = True

    def _on_active(self, event) -> None:
        if not event.new:
            self.stop_traverse()
        if event.new and self._stale:
            self._stale = False
            self.reset_to_star()

    @property
    def vae(self):
        return self.context.vae

    # -- figures --------------------------------------------------------------------------
    def _build_figures(self) -> None:
        self.x_range = Range1d(15100, 17000)
        spec = figure(height=300, sizing_mode="stretch_width", x_range=self.x_range,
                      y_range=Range1d(0.4, 1.2), tools="xpan,xwheel_zoom,xbox_zoom,reset,save",
                      active_scroll="xwheel_zoom", x_axis_label=WAVE_LABEL,
                      y_axis_label="Normalised flux", title="Decoded spectrum")
        spec.toolbar.logo = None
        spec.title.text_font_size = "12pt"
        spec.css_classes = ["ss-decoded-plot"]
        self.star_src = ColumnDataSource({"wave": [], "flux": [], "recon": []})
        # named so a browser bench can find it and time its updates
        self.dec_src = ColumnDataSource({"wave": [], "flux": [], "diff": []},
                                        name="ss-decoded-source")
        spec.line("wave", "flux", source=self.star_src, color="#555555", alpha=0.55,
                  line_width=1, legend_label="star (data)")
        spec.line("wave", "recon", source=self.star_src, color="#d62728", alpha=0.7,
                  line_width=1, line_dash="dashed", legend_label="star's reconstruction")
        # the decoded curves sit on the plots' overlay layer: a slider step then repaints
        # that layer alone (one line), not the star's two 7,500-point lines, axes and legend
        spec.line("wave", "flux", source=self.dec_src, color="#e6550d", line_width=1.6,
                  legend_label="decoded from sliders", level="overlay")
        spec.legend.location = "bottom_left"
        spec.legend.click_policy = "hide"
        spec.legend.label_text_font_size = "9pt"
        spec.legend.background_fill_alpha = 0.7

        diff = figure(height=150, sizing_mode="stretch_width", x_range=self.x_range,
                      y_range=Range1d(-0.05, 0.05), tools="xpan,xwheel_zoom,reset,save",
                      active_scroll="xwheel_zoom", y_axis_label="decoded − star",
                      title="Difference")
        diff.toolbar.logo = None
        # tick labels of one width at every scale: a narrower label would re-lay out the
        # column (the three plots align their frames), ~45 ms of browser time per change
        diff.yaxis.formatter = PrintfTickFormatter(format="%+.3f")
        diff.line("wave", "diff", source=self.dec_src, color="#e6550d", line_width=1.1,
                  level="overlay")
        diff.add_layout(Span(location=0, dimension="width", line_color="#333"))
        self.spec_fig, self.diff_fig = spec, diff

        self.sens_mapper = LinearColorMapper(palette=list(reversed(RdBu11)), low=-0.01, high=0.01)
        sens = figure(height=260, sizing_mode="stretch_width", x_range=self.x_range,
                      y_range=Range1d(-0.5, 27.5), tools="xpan,xwheel_zoom,reset,save",
                      active_scroll="xwheel_zoom", x_axis_label=WAVE_LABEL,
                      y_axis_label="latent", title="Sensitivity ∂flux/∂z per pixel")
        sens.toolbar.logo = None
        self.sens_srcs = []
        for _ in range(3):  # one image per chip, each on an even wavelength step
            src = ColumnDataSource({"image": [], "x": [], "dw": [], "y": [], "dh": []})
            sens.image(image="image", x="x", y="y", dw="dw", dh="dh", source=src,
                       color_mapper=self.sens_mapper)
            self.sens_srcs.append(src)
        sens.add_tools(HoverTool(tooltips=[("λ", "$x{0.0} Å"), ("latent", "$y{0}"),
                                           ("∂flux/∂z", "@image{0.0000}")]))
        sens.add_layout(ColorBar(color_mapper=self.sens_mapper, width=10, title="∂f/∂z",
                                 formatter=PrintfTickFormatter(format="%.1e")), "right")
        sens.css_classes = ["ss-sensitivity-plot"]
        self.sens_fig = sens
        self.plot = pn.pane.Bokeh(bk_column(spec, diff, sens, sizing_mode="stretch_width"),
                                  sizing_mode="stretch_width")

    # -- sliders --------------------------------------------------------------------------
    def _label_range(self, name: str) -> tuple[float, float]:
        store = self.context.store
        if store is not None and name in store.catalog.columns:
            v = store.catalog[name].to_numpy(dtype=np.float64, na_value=np.nan)
            v = v[np.isfinite(v)]
            if v.size:
                lo, hi = np.percentile(v, [0.5, 99.5])
                pad = 0.05 * (hi - lo)
                return float(lo - pad), float(hi + pad)
        return FALLBACK_RANGES.get(name, (-3.0, 3.0))

    def _build_sliders(self) -> None:
        vae = self.vae
        self.stop_traverse()
        self.z_sliders, self.y_sliders, self.z_notes = [], [], []
        self.directions, self.order = None, []
        self.directions_table.value = pd.DataFrame()
        if vae is None:
            problem = self.context.slot("vae").problem or "No VAE model yet."
            self.message.object = (f"**{html.escape(problem)}** "
                                   "The latent sliders appear when a VAE is available.")
            self.message.visible = True
            self.sliders_box.objects = []
            self.directions_note.object = ""
            return
        self.message.visible = False
        for i in range(int(vae.n_latent)):
            s = LatentSlider(label=f"z{i:02d}", start=-Z_LIMIT, end=Z_LIMIT, step=0.01,
                                       value=0.0, width=175, margin=(2, 4))
            self.z_sliders.append(s)
            self.z_notes.append(pn.pane.HTML("", width=215, margin=(0, 0),
                                             styles={"font-size": "11px", "line-height": "1.25",
                                                     "color": "#444"},
                                             css_classes=["ss-latent-note"]))
        self._y_default = []
        for name in vae.label_names:
            lo, hi = self._label_range(name)
            step = 1.0 if name == "TEFF" else 0.01
            s = LatentSlider(label=axis_title(name), start=lo,
                                       end=hi, step=step, value=(lo + hi) / 2, width=190,
                                       margin=(2, 8), format="0.00" if step < 1 else "0")
            self.y_sliders.append(s)
            self._y_default.append((lo, hi))
        # the layout's pieces are made once per model: re-ordering the sliders then only moves
        # them (Panel cleans up the models of a child that leaves a layout, so a fresh Row
        # around an old slider would rebuild it and drop a handle the user may be dragging)
        self.z_rows = [pn.Row(s, note, margin=(0, 0))
                       for s, note in zip(self.z_sliders, self.z_notes, strict=True)]
        self._y_grid = pn.GridBox(*self.y_sliders, ncols=2)
        self._z_title = pn.pane.Markdown("", margin=(0, 8))
        for s in self.z_sliders + self.y_sliders:
            s.param.watch(self._on_slider, "value")
            s.param.watch(lambda e: self._sensitivity_later(), "value_throttled")
        self.sens_fig.y_range.update(start=-0.5, end=vae.n_latent - 0.5)
        self.sens_fig.yaxis.ticker = FixedTicker(ticks=list(range(0, vae.n_latent, 3)))
        self.order = list(range(int(vae.n_latent)))
        self._layout_sliders()
        self.reset_to_star()
        self.load_directions()

    def _layout_sliders(self) -> None:
        ordered = self.directions is not None
        title = (f"#### Free latents ({len(self.z_sliders)}, prior N(0, 1))"
                 + (" — the one that changes the spectrum most first" if ordered else ""))
        self._z_title.object = title
        objects = [self._labels_title, self._y_grid, self._z_title,
                   *(self.z_rows[k] for k in self.order)]
        old = self.sliders_box.objects
        if len(old) != len(objects) or any(a is not b for a, b in zip(old, objects, strict=True)):
            self.sliders_box.objects = objects
        keep = self.traverse_select.value
        self.traverse_select.options = {f"z{k:02d}": k for k in self.order}
        # until the user picks one, traverse the latent that changes the spectrum most
        if not self._traverse_picked or keep not in self.order:
            keep = self.order[0] if self.order else None
        self._setting_select = True
        try:
            self.traverse_select.value = keep
        finally:
            self._setting_select = False

    @property
    def point(self) -> tuple[np.ndarray, np.ndarray]:
        """The sliders' current (z, labels)."""
        z = np.array([s.value for s in self.z_sliders], dtype=np.float32)
        y = np.array([s.value for s in self.y_sliders], dtype=np.float32)
        return z, y

    @staticmethod
    def _fit(slider, v: float, default: tuple[float, float], pad: float) -> None:
        """Set ``v``, widening the slider's range beyond ``default`` only as far as it needs."""
        lo, hi = default
        start = min(lo, float(np.floor((v - pad) / pad) * pad)) if v < lo else lo
        end = max(hi, float(np.ceil((v + pad) / pad) * pad)) if v > hi else hi
        slider.param.update(start=start, end=end, value=float(v))

    def set_point(self, z=None, labels=None, who: str = "") -> None:
        """Move the sliders without a decode per slider, then decode once.

        A value beyond a slider's range widens it to include the value (a real star can sit
        at z = +11): the point is shown as it is, with a warning (:meth:`_check_range`).
        """
        self._syncing = True
        try:
            with pn.io.hold():
                if z is not None:
                    for s, v in zip(self.z_sliders, np.asarray(z, dtype=float), strict=True):
                        if np.isfinite(v):
                            self._fit(s, v, (-Z_LIMIT, Z_LIMIT), 0.5)
                if labels is not None:
                    for s, v, d in zip(self.y_sliders, np.asarray(labels, dtype=float),
                                       self._y_default, strict=True):
                        if np.isfinite(v):
                            self._fit(s, v, d, (d[1] - d[0]) * 0.05)
        finally:
            self._syncing = False
        self._check_range(who)
        self._decode()
        self._update_sensitivity()

    def _latent_limits(self) -> tuple[np.ndarray, np.ndarray, str]:
        """Where a latent counts as inside the training distribution: the 0.1–99.9 %
        range of the store's stars (widened by a quarter) when known, at most the prior's
        ±4σ."""
        n = len(self.z_sliders)
        corr = (self.directions or {}).get("correlations") or {}
        lo, hi = corr.get("latent_p001"), corr.get("latent_p999")
        if lo is not None and len(lo) == n:
            # a margin of a quarter of that range: with 28 latents, a star merely in the tails
            # of a few of them should not be flagged
            lo, hi = np.asarray(lo, float), np.asarray(hi, float)
            w = 0.25 * (hi - lo)
            return (np.maximum(lo - w, -Z_LIMIT), np.minimum(hi + w, Z_LIMIT),
                    f"the range of 99.8 % of the {corr.get('n_stars', '')} stars' latents "
                    "with a 25 % margin, or the prior's ±4σ")
        return np.full(n, -Z_LIMIT), np.full(n, Z_LIMIT), "the prior's ±4σ"

    def out_of_range(self) -> list[str]:
        """The slider values outside the model's training distribution, as 'z03 = +11.2'."""
        z, y = self.point
        lo, hi, _ = self._latent_limits()
        out = [f"z{k:02d} = {v:+.2f}" for k, v in enumerate(z) if v < lo[k] or v > hi[k]]
        names = self.vae.label_names if self.vae is not None else ()
        for v, (a, b), name in zip(y, self._y_default, names, strict=False):
            if v < a or v > b:
                out.append(f"{display_name(name)} = {v:.4g}")
        return out

    def _check_range(self, who: str = "") -> None:
        out = self.out_of_range() if self.z_sliders else []
        if not out:
            self.range_alert.visible = False
            return
        _, _, where = self._latent_limits()
        shown = ", ".join(out[:8]) + (f" and {len(out) - 8} more" if len(out) > 8 else "")
        self.range_alert.object = (
            f"**{html.escape(who or 'This point')} lies outside the model's training "
            f"distribution**: {html.escape(shown)} (beyond {html.escape(where)}, or the "
            "store's label range). The sliders widen to show these values; spectra decoded "
            "here are extrapolations and the model may not apply to this star.")
        self.range_alert.visible = True

    def reset_to_star(self) -> None:
        if self.vae is None:
            return
        self.stop_traverse()
        self._draw_star()
        enc = self.focus.encoding
        self._label_latents(enc)
        if enc is not None:
            self.set_point(enc["mu"], enc["labels"], who=f"{self.focus.label}")
        else:
            self.set_point(np.zeros(len(self.z_sliders)), [(a + b) / 2
                                                           for a, b in self._y_default])

    def _label_latents(self, enc) -> None:
        """Slider titles carry the star's posterior σ: σ ≈ 1 means the data did not pin that
        latent down (it sits at the prior), small σ means it matters for this star."""
        with pn.io.hold():
            for i, s in enumerate(self.z_sliders):
                s.label = f"z{i:02d}" if enc is None else f"z{i:02d} (σ {enc['sigma'][i]:.2f})"

    def zero(self) -> None:
        self.stop_traverse()
        self.set_point(z=np.zeros(len(self.z_sliders)))

    def sample_prior(self) -> None:
        self.stop_traverse()
        self.set_point(z=self._rng.standard_normal(len(self.z_sliders)))

    def _on_slider(self, event) -> None:
        if not self._syncing:
            self._throttle()

    # -- what each latent does ---------------------------------------------------------------
    def load_directions(self) -> None:
        """Compute (or read from the cache) what each latent does: in the served app on a
        worker thread, so the sliders work meanwhile; at once outside a server."""
        vae = self.vae
        if vae is None:
            return
        self.directions_note.object = "*Working out what each latent does …*"
        if session_doc() is None:
            try:
                self._show_directions(LD.directions_for(vae, self.context.store))
            except Exception as exc:  # noqa: BLE001 — shown to the user, never a traceback
                self._directions_failed(exc)
            return
        self._jobs.submit(LD.directions_for, vae, self.context.store, key="directions",
                          on_done=self._show_directions, on_error=self._directions_failed)

    def _directions_failed(self, exc: BaseException) -> None:
        self.directions_note.object = (f"Could not work out the latent directions: "
                                       f"{html.escape(str(exc))}")

    def _show_directions(self, res: dict) -> None:
        n = len(self.z_sliders)
        if not n or len(res.get("directions", ())) != n:
            return  # a result for a model that has been replaced meanwhile
        self.directions = res
        self.order = [k for k in res["order"] if 0 <= k < n]
        self.order += [k for k in range(n) if k not in self.order]
        with pn.io.hold():
            for k in range(n):
                self.z_notes[k].object = self.summary(k)
            self._layout_sliders()
            self.directions_table.value = self.directions_frame()
            corr, problem = res.get("correlations"), res.get("correlations_problem")
            where = (f"R² of each label from one latent alone (k-NN, cross-fitted on "
                     f"{corr['n_stars']} stars; latents from {corr.get('latents_from', '')})"
                     if corr else f"no label R² ({problem})")
            self.directions_note.object = (
                "Flux change over ±1σ of each latent at z = 0 and the catalog's mean labels; "
                f"lines from the H-band line list; {html.escape(where)}.")
        self._check_range(self.focus.label if self.focus.encoding is not None else "")

    def _r2_parts(self, k: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """(other labels, injected labels) latent k knows with R² ≥ R2_SHOWN, best first."""
        corr = (self.directions or {}).get("correlations") or {}
        if not corr.get("columns"):
            return [], []
        r2 = np.asarray(corr["r2"], dtype=float)[k]
        inj = set(corr.get("injected", ()))
        other, injected = [], []
        for j in np.argsort(-r2):
            if r2[j] < R2_SHOWN:
                break
            item = (corr["names"][j], float(r2[j]))
            (injected if corr["columns"][j] in inj else other).append(item)
        return other, injected

    def summary(self, k: int) -> str:
        """One latent in two short lines (HTML): what it moves, what it knows."""
        d = (self.directions or {}).get("directions", [])[k]
        lines = ", ".join(f"{html.escape(ln['species'])} {ln['wavelength']:.0f}"
                          for ln in d["lines"][:2])
        other, injected = self._r2_parts(k)
        knows = (", ".join(f"{html.escape(n)} {v:.2f}" for n, v in other[:2])
                 or "no other label")
        leak = (" · <span style='color:#b35806'>" + ", ".join(
            f"{html.escape(n)} {v:.2f}" for n, v in injected[:1]) + "</span>") if injected else ""
        return (f"<b>Δ {d['rms']:.4f}</b> {lines}<br>knows {knows}{leak}"
                if self.directions.get("correlations") else f"<b>Δ {d['rms']:.4f}</b> {lines}")

    def directions_frame(self) -> pd.DataFrame:
        """The 'Latent directions' table: one row per latent, in slider order."""
        rows = []
        for k in self.order:
            d = self.directions["directions"][k]
            other, injected = self._r2_parts(k)
            rows.append({
                "latent": f"z{k:02d}",
                "RMS Δflux (±1σ)": round(d["rms"], 5), "max |Δflux|": round(d["max_abs"], 4),
                "lines it moves most (Δflux per +1σ)": "; ".join(
                    f"{ln['species']} {ln['wavelength']:.1f} ({ln['delta']:+.3f})"
                    for ln in d["lines"]),
                "elements (share of Δ² at their lines)": ", ".join(
                    f"{e} {v:.0%}" for e, v in d["elements"].items()),
                "other labels it knows (R²)": ", ".join(f"{n} {v:.2f}" for n, v in other[:4])
                or "—",
                "injected labels it knows (R²)": ", ".join(f"{n} {v:.2f}" for n, v in injected)
                or "—",
            })
        return pd.DataFrame(rows)

    def _on_pick(self, event) -> None:
        if not self._setting_select:
            self._traverse_picked = True

    def _on_table_click(self, event) -> None:
        if 0 <= event.row < len(self.order):
            self.traverse_select.value = self.order[event.row]

    # -- traverse -------------------------------------------------------------------------------
    @property
    def traversing(self) -> bool:
        return self._traverse is not None

    def toggle_traverse(self) -> None:
        if self.traversing:
            self.stop_traverse()
        else:
            self.start_traverse()

    def start_traverse(self, k: int | None = None) -> None:
        """Animate latent ``k`` (the chosen one) from −3σ to +3σ and back until stopped; the
        difference panel shows decoded − decoded at the latent's starting value."""
        vae = self.vae
        if vae is None or not self.z_sliders:
            return
        self.stop_traverse()
        k = int(self.traverse_select.value if k is None else k)
        z, y = self.point
        with one_thread():
            ref = np.asarray(vae.decode(z, y), dtype=np.float32).reshape(-1)
        self._traverse = {"k": k, "origin": float(z[k]), "ref": ref, "t": -TRAVERSE_SIGMA,
                          "dir": 1.0}
        self.traverse_button.param.update(label="■ Stop traverse", button_type="warning")
        if session_doc() is not None:
            self._traverse_cb = pn.state.add_periodic_callback(self.traverse_step,
                                                               period=TRAVERSE_PERIOD_MS)
        self.traverse_step()

    def traverse_step(self) -> None:
        """One frame: the latent to its next value, decoded and drawn in place."""
        tr = self._traverse
        if tr is None:
            return
        s = self.z_sliders[tr["k"]]
        self._syncing = True
        try:
            s.value = float(np.clip(round(tr["t"], 2), s.start, s.end))
        finally:
            self._syncing = False
        self._decode()
        self.traverse_frames += 1
        t = tr["t"] + tr["dir"] * TRAVERSE_STEP
        if t > TRAVERSE_SIGMA + 1e-6 or t < -TRAVERSE_SIGMA - 1e-6:
            tr["dir"] = -tr["dir"]
            t = tr["t"] + tr["dir"] * TRAVERSE_STEP
        tr["t"] = t

    def stop_traverse(self) -> None:
        """Stop the animation and put the latent back where it started."""
        cb, self._traverse_cb = self._traverse_cb, None
        if cb is not None:
            cb.stop()
        tr, self._traverse = self._traverse, None
        if tr is None:
            return
        self.traverse_button.param.update(label="▶ Traverse −3σ…+3σ", button_type="default")
        if tr["k"] < len(self.z_sliders):
            self._syncing = True
            try:
                self.z_sliders[tr["k"]].value = tr["origin"]
            finally:
                self._syncing = False
            self._decode()

    # -- drawing --------------------------------------------------------------------------
    def _star_arrays(self):
        """(wavelength, flux with bad pixels NaN, reconstruction) of the focused star, or None."""
        spec = self.focus.spectrum
        if spec is None or self.vae is None:
            return None
        recon = self.focus.models.get("VAE reconstruction")
        if recon is None:
            return None
        flux = np.where(spec.bad(), np.nan, spec.flux).astype(np.float32)
        return spec.wavelength, flux, recon

    def _wavelength(self) -> np.ndarray:
        star = self._star_arrays()
        if star is not None:
            return star[0]
        grid = getattr(self.vae, "grid", None) or "apogee7514"
        return (grid if isinstance(grid, Grid) else get_grid(grid)).wavelength

    def _draw_star(self) -> None:
        star = self._star_arrays()
        with pn.io.hold():
            if star is None:
                self.star_src.data = {"wave": [], "flux": [], "recon": []}
                self.spec_fig.title.text = "Decoded spectrum (no star encoded: sliders start at 0)"
            else:
                wave, flux, recon = star
                self.star_src.data = with_gaps(wave, {"flux": flux, "recon": recon})
                lo, hi = robust_range(flux)
                self.spec_fig.y_range.update(start=min(lo, 0.5), end=max(hi, 1.1))
                self.spec_fig.title.text = f"Decoded spectrum vs {self.focus.label}"
            wave = self._wavelength()
            extent = (float(wave[0]) - 5, float(wave[-1]) + 5)
            if (self.x_range.bounds or None) != extent:
                self.x_range.update(start=extent[0], end=extent[1], bounds=extent)

    def _decode(self) -> None:
        vae = self.vae
        if vae is None or not self.z_sliders:
            return
        z, y = self.point
        with one_thread():
            flux = np.asarray(vae.decode(z, y), dtype=np.float32).reshape(-1)
        self.decoded = flux
        self.decode_count += 1
        star = self._star_arrays()
        wave = self._wavelength()
        tr = self._traverse
        if tr is not None and flux.size == tr["ref"].size:
            diff = flux - tr["ref"]
            diff_label = "decoded − start"
        elif star is not None and flux.size == star[1].size:
            ref = star[1] if self.diff_against == DIFF_AGAINST[0] else star[2]
            diff = flux - ref
            diff_label = ("decoded − star" if self.diff_against == DIFF_AGAINST[0]
                          else "decoded − reconstruction")
        else:
            diff = np.full_like(flux, np.nan)
            diff_label = "decoded − star"
        lo, hi = robust_range(diff, pad=0.2)
        m = max(abs(lo), abs(hi), 0.01) if np.isfinite([lo, hi]).all() else 0.05
        finite = np.isfinite(diff)
        rms = float(np.sqrt(np.mean(diff[finite] ** 2))) if finite.any() else float("nan")
        cols = with_gaps(wave, {"flux": flux, "diff": diff})
        with pn.io.hold():
            if len(self.dec_src.data["wave"]) == len(cols["wave"]):
                # same pixels: send only the two changed columns, not the wavelengths again
                self.dec_src.data["flux"] = cols["flux"]
                self.dec_src.data["diff"] = cols["diff"]
            else:
                self.dec_src.data = cols
            if tr is not None:
                # a fixed scale while traversing, so the change grows and shrinks visibly
                m = tr.setdefault("scale", max(m, 0.01))
                m = tr["scale"] = max(tr["scale"], m)
            m = nice_ceil(m)  # steps of 1-2-5: the axis (and the page layout) rarely change
            if (self.diff_fig.y_range.start, self.diff_fig.y_range.end) != (-m, m):
                self.diff_fig.y_range.update(start=-m, end=m)
            if self.diff_fig.yaxis.axis_label != diff_label:
                self.diff_fig.yaxis.axis_label = diff_label
            title = ("Difference" if tr is None else f"Difference: decoded − decoded at "
                     f"z{tr['k']:02d} = {tr['origin']:+.2f}, where the traverse started")
            if self.diff_fig.title.text != title:
                self.diff_fig.title.text = title
            if tr is not None:
                value = self.z_sliders[tr["k"]].value
                text = (f"Decode #{self.decode_count}: traversing z{tr['k']:02d} = {value:+.2f}"
                        f" (started at {tr['origin']:+.2f}); RMS change = {rms:.4f}")
            elif np.isfinite(rms):
                text = (f"Decode #{self.decode_count}: RMS(decoded − {self.diff_against}) = "
                        f"{rms:.4f}")
            else:
                text = f"Decode #{self.decode_count}"
            if tr is not None:  # a traverse step comes every 120 ms: a debounce never fires
                self._set_readout(text)
            else:
                self._readout_later(text)

    def _set_readout(self, text: str) -> None:
        self.readout.object = text

    def _update_sensitivity(self) -> None:
        vae = self.vae
        if vae is None or not self.z_sliders or not hasattr(vae, "sensitivity"):
            return
        z, y = self.point
        with one_thread():
            sens = np.asarray(vae.sensitivity(z, y), dtype=np.float32)
        lim = float(np.nanpercentile(np.abs(sens), 99.5)) or 1e-3
        chips = chip_images(self._wavelength(), sens)
        with pn.io.hold():
            self.sens_mapper.update(low=-lim, high=lim)
            for src, chip in zip(self.sens_srcs, chips + [None] * 3, strict=False):
                if chip is None:
                    src.data = {"image": [], "x": [], "dw": [], "y": [], "dh": []}
                else:
                    src.data = {"image": [chip["image"]], "x": [chip["x"]], "dw": [chip["dw"]],
                                "y": [-0.5], "dh": [float(sens.shape[0])]}

    # -- layout ---------------------------------------------------------------------------
    # -- session file ---------------------------------------------------------------------------
    def extra_state(self) -> dict:
        z, y = self.point
        return {"z": [round(float(v), 5) for v in z], "labels": [float(v) for v in y]}

    def restore_extra(self, state: dict, sync: bool = False) -> list[str]:
        """The saved slider point (z and injected labels), when this VAE has as many."""
        z, y = state.get("z"), state.get("labels")
        if self.vae is None or z is None:
            return []
        if not isinstance(z, list) or (y is not None and not isinstance(y, list)):
            return ["latent sliders: the saved point is not a list of numbers"]
        if len(z) != len(self.z_sliders) or (y is not None and len(y) != len(self.y_sliders)):
            return [f"latent sliders: saved {len(z)} latents, this VAE has "
                    f"{len(self.z_sliders)}"]
        self._stale = False  # the saved point replaces the star's encoding
        self._draw_star()
        self._label_latents(self.focus.encoding)
        self.set_point(np.asarray(z, dtype=float), None if y is None else np.asarray(y, float))
        return []

    def __panel__(self):
        buttons = pn.Row(self.reset_button, self.zero_button, self.sample_button)
        traverse = pn.Row(self.traverse_select, self.traverse_button)
        left = pn.Column(buttons, traverse, self.range_alert, self.sliders_box, width=430,
                         scroll=True, height=820)
        right = pn.Column(
            pn.Row(pn.pane.Markdown("**Difference against**", margin=(8, 5)), self.diff_buttons),
            self.readout, self.plot,
            pn.pane.Markdown("#### Latent directions: what each latent changes and knows",
                             margin=(10, 10, 0, 10)),
            self.directions_note, self.directions_table, sizing_mode="stretch_width")
        return pn.Column(self.message, pn.Row(left, right, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
