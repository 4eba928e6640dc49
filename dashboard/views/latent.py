"""Latent-space view: drag the VAE's latents and injected labels, watch the spectrum change.

One slider per free latent, initialised at the focused star's encoding, plus one per injected
label.  Every slider step decodes through ``VAEPredictor.decode`` and swaps the plot's data in
place; a :class:`~dashboard.jobs.Throttle` folds fast drags into at most one decode per 40 ms.
The sensitivity strip (∂flux/∂z per pixel, one row per latent) is recomputed when a slider is
released, so users see which lines each latent controls around the current point.
"""

from __future__ import annotations

import html

import numpy as np
import panel as pn
import param
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

from core.grid import Grid, get_grid
from core.labels import axis_title

from ..jobs import Debounce, Throttle
from ..spectra import WAVE_LABEL, chip_images, robust_range, with_gaps
from ..state import AppContext, FocusState

FALLBACK_RANGES = {"TEFF": (3500.0, 6500.0), "LOGG": (0.0, 5.0), "FE_H": (-2.5, 0.6),
                   "M_H": (-2.5, 0.6)}
Z_LIMIT = 4.0
DIFF_AGAINST = ("star's spectrum", "star's reconstruction")


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
        self.param.watch(lambda e: self._decode(), "diff_against")
        self.sliders_box = pn.Column(sizing_mode="stretch_width")
        self.message = pn.pane.Alert("", alert_type="warning", visible=False,
                                     sizing_mode="stretch_width")
        self._build_sliders()
        self.context.slot("vae").param.watch(lambda e: self._build_sliders(), "model")
        self._stale = False
        self.focus.param.watch(self._on_focus, ["spectrum", "encoding"])
        self.param.watch(self._on_active, "active")

    def _on_focus(self, *events) -> None:
        if self.active:
            self.reset_to_star()
        else:
            self._stale = True

    def _on_active(self, event) -> None:
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
        self.dec_src = ColumnDataSource({"wave": [], "flux": [], "diff": []})
        spec.line("wave", "flux", source=self.star_src, color="#555555", alpha=0.55,
                  line_width=1, legend_label="star (data)")
        spec.line("wave", "recon", source=self.star_src, color="#d62728", alpha=0.7,
                  line_width=1, line_dash="dashed", legend_label="star's reconstruction")
        spec.line("wave", "flux", source=self.dec_src, color="#e6550d", line_width=1.6,
                  legend_label="decoded from sliders")
        spec.legend.location = "bottom_left"
        spec.legend.click_policy = "hide"
        spec.legend.label_text_font_size = "9pt"
        spec.legend.background_fill_alpha = 0.7

        diff = figure(height=150, sizing_mode="stretch_width", x_range=self.x_range,
                      y_range=Range1d(-0.05, 0.05), tools="xpan,xwheel_zoom,reset,save",
                      active_scroll="xwheel_zoom", y_axis_label="decoded − star",
                      title="Difference")
        diff.toolbar.logo = None
        diff.line("wave", "diff", source=self.dec_src, color="#e6550d", line_width=1.1)
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
        self.z_sliders, self.y_sliders = [], []
        if vae is None:
            problem = self.context.slot("vae").problem or "No VAE model yet."
            self.message.object = (f"**{html.escape(problem)}** "
                                   "The latent sliders appear when a VAE is available.")
            self.message.visible = True
            self.sliders_box.objects = []
            return
        self.message.visible = False
        for i in range(int(vae.n_latent)):
            s = pn.widgets.FloatSlider(label=f"z{i:02d}", start=-Z_LIMIT, end=Z_LIMIT, step=0.01,
                                       value=0.0, width=190, margin=(2, 8))
            self.z_sliders.append(s)
        for name in vae.label_names:
            lo, hi = self._label_range(name)
            step = 1.0 if name == "TEFF" else 0.01
            s = pn.widgets.FloatSlider(label=axis_title(name), start=lo,
                                       end=hi, step=step, value=(lo + hi) / 2, width=190,
                                       margin=(2, 8), format="0.00" if step < 1 else "0")
            self.y_sliders.append(s)
        for s in self.z_sliders + self.y_sliders:
            s.param.watch(self._on_slider, "value")
            s.param.watch(lambda e: self._sensitivity_later(), "value_throttled")
        self.sens_fig.y_range.update(start=-0.5, end=vae.n_latent - 0.5)
        self.sens_fig.yaxis.ticker = FixedTicker(ticks=list(range(0, vae.n_latent, 3)))
        self.sliders_box.objects = [
            pn.pane.Markdown("#### Injected labels", margin=(0, 8)),
            pn.GridBox(*self.y_sliders, ncols=2),
            pn.pane.Markdown(f"#### Free latents ({vae.n_latent}, prior N(0, 1))",
                             margin=(0, 8)),
            pn.GridBox(*self.z_sliders, ncols=2),
        ]
        self.reset_to_star()

    @property
    def point(self) -> tuple[np.ndarray, np.ndarray]:
        """The sliders' current (z, labels)."""
        z = np.array([s.value for s in self.z_sliders], dtype=np.float32)
        y = np.array([s.value for s in self.y_sliders], dtype=np.float32)
        return z, y

    def set_point(self, z=None, labels=None) -> None:
        """Move the sliders without a decode per slider, then decode once."""
        self._syncing = True
        try:
            with pn.io.hold():
                if z is not None:
                    for s, v in zip(self.z_sliders, np.asarray(z, dtype=float), strict=True):
                        s.value = float(np.clip(v, s.start, s.end))
                if labels is not None:
                    for s, v in zip(self.y_sliders, np.asarray(labels, dtype=float), strict=True):
                        s.value = float(np.clip(v, s.start, s.end)) if np.isfinite(v) else s.value
        finally:
            self._syncing = False
        self._decode()
        self._update_sensitivity()

    def reset_to_star(self) -> None:
        if self.vae is None:
            return
        self._draw_star()
        enc = self.focus.encoding
        self._label_latents(enc)
        if enc is not None:
            self.set_point(enc["mu"], enc["labels"])
        else:
            self.set_point(np.zeros(len(self.z_sliders)), [(s.start + s.end) / 2
                                                           for s in self.y_sliders])

    def _label_latents(self, enc) -> None:
        """Slider titles carry the star's posterior σ: σ ≈ 1 means the data did not pin that
        latent down (it sits at the prior), small σ means it matters for this star."""
        with pn.io.hold():
            for i, s in enumerate(self.z_sliders):
                s.label = f"z{i:02d}" if enc is None else f"z{i:02d} (σ {enc['sigma'][i]:.2f})"

    def zero(self) -> None:
        self.set_point(z=np.zeros(len(self.z_sliders)))

    def sample_prior(self) -> None:
        self.set_point(z=self._rng.standard_normal(len(self.z_sliders)))

    def _on_slider(self, event) -> None:
        if not self._syncing:
            self._throttle()

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
        flux = np.asarray(vae.decode(z, y), dtype=np.float32).reshape(-1)
        self.decoded = flux
        self.decode_count += 1
        star = self._star_arrays()
        wave = self._wavelength()
        if star is not None and flux.size == star[1].size:
            ref = star[1] if self.diff_against == DIFF_AGAINST[0] else star[2]
            diff = flux - ref
        else:
            diff = np.full_like(flux, np.nan)
        lo, hi = robust_range(diff, pad=0.2)
        m = max(abs(lo), abs(hi), 0.01)
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
            self.diff_fig.y_range.update(start=-m, end=m)
            self.diff_fig.yaxis.axis_label = ("decoded − star" if self.diff_against ==
                                              DIFF_AGAINST[0] else "decoded − reconstruction")
            self.readout.object = (f"Decode #{self.decode_count}: RMS(decoded − "
                                   f"{self.diff_against}) = {rms:.4f}"
                                   if np.isfinite(rms) else f"Decode #{self.decode_count}")

    def _update_sensitivity(self) -> None:
        vae = self.vae
        if vae is None or not self.z_sliders or not hasattr(vae, "sensitivity"):
            return
        z, y = self.point
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
        left = pn.Column(buttons, self.sliders_box, width=430, scroll=True, height=820)
        right = pn.Column(
            pn.Row(pn.pane.Markdown("**Difference against**", margin=(8, 5)), self.diff_buttons),
            self.readout, self.plot, sizing_mode="stretch_width")
        return pn.Column(self.message, pn.Row(left, right, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
