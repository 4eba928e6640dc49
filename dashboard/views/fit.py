"""Fit view: fit the focused star with the spectral emulator and explore the fit by hand.

* **Fit** runs :func:`core.fit.fit_spectrum` in a worker thread (progress bar) and draws the
  best-fit model, residuals, and a table of labels ± σ beside the catalog values, with χ²_ν.
* One slider per label (and RV) re-draws the emulator spectrum live
  (:class:`core.fit.interactive.LabelExplorer`); only the plot's data change.
* Click a line marker (or pick an element) to fit that element inside its windows with the
  other labels held at the full fit.
* Drag across the spectrum to mask (or unmask) a wavelength range, then refit.
* The mask and the fit can be downloaded (CSV / JSON).
* A fit whose χ²_ν lies outside the emulator's training distribution
  (:mod:`core.models.applicability`; MODEL_MISMATCH, χ²_ν > 3, when the model and the store
  know none) gets an amber warning beside the result.

The emulator is the app's ``emulator`` model slot; the plot is the shared
:class:`~dashboard.figures.spectrum.SpectrumFigure` with the fit's curves on top.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import panel as pn
import param

from core.errors import StellarscopeError
from core.fit import FitOptions, FitResult, fit_element, fit_spectrum, on_grid
from core.fit.interactive import (
    CONTINUUM_CHOICES,
    LabelExplorer,
    catalog_start,
    clip_labels,
    element_lines,
    emulator_of,
    fit_command,
    pulls,
    set_range,
    window_span,
)
from core.models import applicability as AP

from .. import data, fit_report
from ..fit_jobs import FitJobs
from ..jobs import Throttle
from ..spectra import masked_spans
from ..state import AppContext, FocusState, SelectionState
from .fit_controls import (
    CURVES,
    MAX_SELECTION_FIT,
    build_figure,
    build_widgets,
    layout,
    model_widgets,
)

MODEL_NAME = "Emulator fit"


class FitView(pn.viewable.Viewer):
    """Fit the focused star with the emulator; sliders, element fits and a drawn mask."""

    focus = param.ClassSelector(class_=FocusState)
    context = param.ClassSelector(class_=AppContext)
    selection = param.ClassSelector(class_=SelectionState, default=None, allow_None=True,
                                    doc="the Catalog's brushed rows, fitted by 'Fit selection'")
    result = param.Parameter(default=None, doc="FitResult of the focused star")
    element_result = param.Parameter(default=None, doc="the last ElementFit")
    busy = param.Boolean(default=False)

    continuum = param.Selector(default="off", objects=list(CONTINUUM_CHOICES),
                               doc="continuum correction of the fit")
    fit_rv = param.Boolean(default=True, doc="fit the radial velocity (else 0 km/s)")
    element = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                             doc="the element a line click or 'Fit element' fits")
    mask_mode = param.Selector(default="mask", objects=["mask", "unmask"],
                               doc="what dragging across the spectrum does")

    #: saved in session files; the drawn mask and 'fitted' go through extra_state
    session_params = ("continuum", "fit_rv", "element", "mask_mode")

    def __init__(self, **params):
        super().__init__(**params)
        self._read_slot()
        self.spectrum = None        # the focused spectrum on the emulator's grid
        self.user_mask = None       # True = masked by the user (drag), on the emulator's grid
        self._windows = data.element_windows()
        self._lines, _ = data.linelist()
        self._explorer = None
        self.figure = build_figure(self)
        build_widgets(self)
        self.applicability = pn.pane.Alert("", alert_type="warning", visible=False,
                                           sizing_mode="stretch_width", margin=(0, 5),
                                           css_classes=["ss-fit-applicability"])
        self.jobs = FitJobs(self.progress, self.status, lambda b: setattr(self, "busy", b),
                            self._idle, self.context.fail)
        self._throttled_draw = Throttle(self._draw_slider_model, interval=0.05)
        self.focus.param.watch(self._on_spectrum, ["spectrum"])
        self.context.slot("emulator").param.watch(self._on_model, ["model"])
        self._on_spectrum()

    def _read_slot(self) -> None:
        slot = self.context.slot("emulator")
        self.emulator = emulator_of(slot.model)
        self.model_dir = slot.where or getattr(slot.model, "model_dir", "")
        self.model_problem = "" if self.emulator is not None else (
            slot.problem or "no emulator model: train one with `stellarscope train emulator`")

    def _on_model(self, *events) -> None:
        """A new (or no) emulator in the app's slot: new sliders and elements, the star anew."""
        self._read_slot()
        with pn.io.hold():
            model_widgets(self)
            self._on_spectrum()

    # -- focus --------------------------------------------------------------------------------
    def _on_spectrum(self, *events) -> None:
        spec = self.focus.spectrum
        self.jobs.cancel("fit", "element")
        self.param.update(result=None, element_result=None, busy=False)
        self.spectrum, self._explorer = None, None
        with pn.io.hold():
            self.empty.visible = spec is None or self.emulator is None
            for key in CURVES:
                self.figure.clear_overlay(key)
            self.figure.clear_residuals()
            self.figure.set_spans("windows", [], [])
            self.table.value = pd.DataFrame()
            self.summary.object = self.element_info.object = self.command.object = ""
            self.applicability.visible = False
            self.progress.visible = False
            for w in (self.json_download, self.csv_download, self.reset_sliders,
                      self.element_button):
                w.disabled = True
            if self.emulator is None:
                self.status.object = f"⚠ {html.escape(self.model_problem)}"
                self.fit_button.disabled = True
                return
            if spec is None:
                self.figure.clear()
                self.fit_button.disabled = self.mask_download.disabled = True
                self.status.object = ""
                return
            try:
                self.spectrum = on_grid(spec, self.emulator.grid)
            except StellarscopeError as exc:
                self.status.object = f"⚠ cannot fit this spectrum: {html.escape(str(exc))}"
                self.fit_button.disabled = True
                return
            self.user_mask = np.zeros(self.emulator.n_pix, bool)
            self.fit_button.disabled = self.mask_download.disabled = False
            self._draw_data()
            self._sliders_from(catalog_start(self.spectrum.meta, self.emulator.label_names))
            stem = "".join(c if c.isalnum() or c in "+-_." else "_" for c in self.spectrum.label)
            self.mask_download.filename = f"{stem}_fit_mask.csv"
            self.json_download.filename = f"{stem}_fit.json"
            self.csv_download.filename = f"{stem}_fit.csv"
            self.status.object = ("Press **Fit** to fit all labels and the RV. Drag across the "
                                  "spectrum to mask a range; click a ▼ line marker to fit "
                                  "that element.")

    def _draw_data(self) -> None:
        spec, grid = self.spectrum, self.emulator.grid
        self.figure.set_spectrum(spec, f"{spec.label} on the {grid.name} grid", hide_bad=True)
        self.figure.set_spans("user", [], [])
        lines, labels = element_lines(self._lines, self.emulator, self.param.element.objects)
        self.figure.set_lines(lines, labels)

    # -- fitting ------------------------------------------------------------------------------
    def options(self) -> FitOptions:
        return FitOptions(continuum_degree=CONTINUUM_CHOICES[self.continuum],
                          fit_rv=self.fit_rv, rv=None if self.fit_rv else 0.0)

    def fit(self, sync: bool = False) -> None:
        """Fit the focused star (in a worker thread unless ``sync``)."""
        if self.spectrum is None or self.emulator is None:
            return
        spec, emu, mask, opts = self.spectrum, self.emulator, self.user_mask.copy(), self.options()
        self._start("fitting …")
        progress = self.jobs.page_progress()
        self.jobs.run("fit", lambda: fit_spectrum(spec, emu, opts, mask=mask, progress=progress),
                  self._show_result, sync)

    def fit_selection(self, sync: bool = False) -> None:
        """Fit every brushed star (in a worker thread unless ``sync``) and write FIT_* columns."""
        store = self.context.store
        rows = self.selection.rows if self.selection is not None else None
        if self.emulator is None or store is None:
            return
        refusal = fit_report.selection_refusal(rows, MAX_SELECTION_FIT, store.path)
        if refusal:
            self.status.object = refusal
            return
        from core.fit.store import fit_store

        rows, emu, opts = np.sort(rows), self.emulator, self.options()
        self._start(f"fitting {len(rows):,} selected stars …")
        progress = self.jobs.page_progress()

        def stars_done(done, total):
            progress(done / max(total, 1), f"fitted {done:,} of {total:,} selected stars")

        self.jobs.run("selection", lambda: fit_store(store, emu, opts, rows=rows, progress=False,
                                                 model_path=self.model_dir,
                                                 on_progress=stars_done),
                  self._selection_done, sync)

    def _selection_done(self, summary: dict) -> None:
        with pn.io.hold():
            self.jobs.done()
            self.status.object = fit_report.selection_summary(summary)
        self.busy = False
        self.context.catalog_version += 1

    def _idle(self) -> None:
        """Each fit button enabled when it can act."""
        self.fit_button.disabled = self.spectrum is None
        self.element_button.disabled = self.result is None or not self.param.element.objects
        self.selection_button.disabled = self.emulator is None

    def _start(self, message: str) -> None:
        self.jobs.start(message, (self.fit_button, self.element_button, self.selection_button))

    def _show_result(self, result: FitResult) -> None:
        self.result = result
        spec = self.spectrum
        with pn.io.hold():
            self.jobs.done()
            for w in (self.json_download, self.csv_download, self.reset_sliders):
                w.disabled = False
            self.figure.set_overlay("fit", spec.wavelength,
                                    np.where(result.used, result.model, np.nan))
            self.table.value = fit_report.result_table(result)
            self.summary.object = fit_report.summary_text(
                result, bool(self.emulator.config.error_floor))
            self._show_applicability(result)
            self.status.object = f"Fitted {html.escape(spec.label)}."  # an upload's own name
            self._show_command()
            self._explorer = LabelExplorer(self.emulator, CONTINUUM_CHOICES[self.continuum],
                                           result.continuum)
            self._sliders_to_fit()
        focus_spec = self.focus.spectrum
        if focus_spec is not None and focus_spec.grid == self.emulator.grid.name:
            self.focus.add_model(MODEL_NAME, result.model, fit_report.model_outputs(result))
        self.busy = False  # last: whoever waits on ``busy`` sees the finished view

    def applicability_reasons(self, result: FitResult | None = None) -> list[str]:
        """Why the emulator does not apply to the fitted star ([] when it does)."""
        result = self.result if result is None else result
        if result is None:
            return []
        ref = AP.reference(self.model_dir or None, self.context.store)
        return AP.judge(ref, fit_chi2=float(result.chi2_nu))

    def _show_applicability(self, result: FitResult) -> None:
        try:
            reasons = self.applicability_reasons(result)
        except (StellarscopeError, OSError, ValueError) as exc:  # the fit still shows
            self.context.fail(exc)
            reasons = []
        self.applicability.visible = bool(reasons)
        if reasons:
            self.applicability.object = (
                "**This star lies outside the emulator's training distribution**: "
                + html.escape(AP.summary(reasons), quote=False) + ".")

    # -- element mode -------------------------------------------------------------------------
    def _on_line_click(self, index: int) -> None:
        element = self.figure.lines_src.data["element"][index]
        self.element = element
        self.fit_element(element)

    def fit_element(self, element: str | None, sync: bool = False) -> None:
        """Fit one element inside its windows, the other labels held at the full fit."""
        if not element or self.spectrum is None:
            return
        if self.result is None:
            self.status.object = f"Fit the star first, then {element} can be fitted in its windows."
            return
        w = self._windows[self._windows["element"] == element]
        self.figure.set_spans("windows", w["start_vac"].to_numpy(), w["end_vac"].to_numpy())
        spec, emu, base, mask = self.spectrum, self.emulator, self.result, self.user_mask.copy()
        opts, windows = self.options(), self._windows
        self._start(f"fitting {element} in {len(w)} windows …")
        self.jobs.run("element", lambda: fit_element(spec, emu, element, base, windows=windows,
                                                 options=opts, mask=mask),
                  self._show_element, sync)

    def _show_element(self, res) -> None:
        self.element_result = res
        with pn.io.hold():
            self.jobs.done()
            self.figure.set_overlay("element", self.spectrum.wavelength,
                                    np.where(res.used, res.model, np.nan))
            self.element_info.object = fit_report.element_text(res, self.result.labels[res.label])
            self.status.object = f"Fitted {res.element} in its windows."
            self._show_command()
            self.figure.set_xrange(*window_span(res.windows))
        self.busy = False

    def apply_zoom(self, key: str | None) -> None:
        """Zoom to the whole spectrum, a chip, or an element's windows (and pick that element)."""
        if self.emulator is None:
            return
        with pn.io.hold():
            if self.figure.zoom_to(key, self.emulator.grid, self._windows) and \
                    key.startswith("el:") and key[3:] in self.param.element.objects:
                self.element = key[3:]

    # -- masking ------------------------------------------------------------------------------
    def mask_range(self, x0: float, x1: float, masked: bool = True) -> int:
        """Mask (or unmask) the user mask between two wavelengths; returns pixels changed."""
        if self.spectrum is None:
            return 0
        changed = set_range(self.user_mask, self.spectrum.wavelength, x0, x1, masked)
        self._draw_user_mask()
        lo, hi = sorted((float(x0), float(x1)))
        self.status.object = (f"{'masked' if masked else 'unmasked'} {changed} pixels in "
                              f"{lo:.1f}–{hi:.1f} Å ({int(self.user_mask.sum())} masked by you); "
                              "press **Fit** to refit.")
        return changed

    def reset_mask(self) -> None:
        if self.user_mask is not None:
            self.user_mask[:] = False
            self._draw_user_mask()
            self.status.object = "Your mask is cleared; press **Fit** to refit."

    def _draw_user_mask(self) -> None:
        spans = masked_spans(self.spectrum.wavelength, self.user_mask)
        self.figure.set_spans("user", spans["x0"], spans["x1"])

    def mask_ranges(self) -> list[list[float]]:
        """The user's drawn mask as [start, end] wavelength ranges."""
        if self.spectrum is None:
            return []
        spans = masked_spans(self.spectrum.wavelength, self.user_mask)
        return [[float(a), float(b)] for a, b in zip(spans["x0"], spans["x1"], strict=True)]

    # -- sliders ------------------------------------------------------------------------------
    def _sliders_from(self, labels: dict[str, float], rv: float | None = None) -> None:
        with pn.io.hold():
            for name, v in clip_labels(self.emulator, labels).items():
                self.sliders[name].value = v
            if rv is not None:
                s = self.sliders["RV"]
                s.value = float(np.clip(rv, s.start, s.end))
        self._draw_slider_model()

    def _sliders_to_fit(self) -> None:
        if self.result is not None:
            self._sliders_from(self.result.labels, self.result.frame_rv)  # RV may be NaN

    def slider_model(self) -> np.ndarray:
        """The emulator spectrum at the sliders' labels and RV (observed frame)."""
        if self._explorer is None:
            self._explorer = LabelExplorer(self.emulator)
        labels = {n: self.sliders[n].value for n in self.emulator.label_names}
        return self._explorer.spectrum(labels, self.sliders["RV"].value)

    def _draw_slider_model(self) -> None:
        if self.spectrum is None or self.emulator is None:
            return
        spec, result = self.spectrum, self.result
        model = self.slider_model()
        good = spec.good() & ~self.user_mask
        pull = pulls(spec, model, good)
        fit_pull = (pulls(spec, result.model, good & result.used) if result is not None
                    else np.full(spec.n_pix, np.nan))
        chi2 = self._explorer.chi2_nu(spec, model, good & np.isfinite(pull))
        with pn.io.hold():
            self.figure.set_overlay("slider", spec.wavelength, model)
            self.figure.set_residual("fit", spec.wavelength, fit_pull)
            self.figure.set_residual("slider", spec.wavelength, pull)
            self.figure.frame_residuals(
                -5, 5, axis_label="(data − model)/σ",
                title=f"Residuals: best fit (green), sliders (orange, χ²_ν {chi2:.2f})")

    # -- downloads and the command line -------------------------------------------------------
    def mask_table(self) -> pd.DataFrame:
        used = self.result.used if self.result is not None else None
        return fit_report.mask_table(self.spectrum, self.user_mask, used)

    def fit_document(self) -> dict:
        return fit_report.fit_document(self.result, self.model_dir, self.continuum, self.fit_rv,
                                       self.mask_ranges(), self.element_result)

    def _mask_csv(self):
        return None if self.spectrum is None else fit_report.csv_bytes(self.mask_table())

    def _fit_json(self):
        return None if self.result is None else fit_report.json_bytes(self.fit_document())

    def _fit_csv(self):
        return None if self.result is None else fit_report.csv_bytes(self.result.table())

    def _show_command(self) -> None:
        self.command.object = ("The same fit from the command line (with the *Mask CSV* "
                               "download if you drew a mask):\n\n```bash\n"
                               f"{self.cli_command()}\n```")

    def cli_command(self) -> str:
        """The ``stellarscope fit`` command that repeats the current fit."""
        store = self.context.store if self.context is not None else None
        from_store = self.focus.source == "store" and self.focus.star_id and store is not None
        drawn = self.user_mask is not None and self.user_mask.any()
        return fit_command(
            model_dir=self.model_dir, store=str(store.path) if from_store else None,
            star=self.focus.star_id if from_store else "",
            file=str(self.spectrum.meta.get("SOURCE") or "FILE.fits"),
            continuum=self.continuum, fit_rv=self.fit_rv,
            element=self.element_result.element if self.element_result is not None else "",
            mask_file=self.mask_download.filename if drawn else "")

    # -- session file -------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"user_mask_ranges": self.mask_ranges(), "fitted": self.result is not None}

    def restore_extra(self, state: dict, sync: bool = False) -> list[str]:
        """The drawn mask; refits when the saved session had a fit."""
        if self.emulator is None:
            return ["Fit view: no emulator here"]
        if self.spectrum is None:
            return []
        self.user_mask[:] = False
        for a, b in state.get("user_mask_ranges", []):
            self.mask_range(float(a), float(b), True)
        if state.get("fitted"):
            self.fit(sync=sync)
        return []

    def __panel__(self):
        page = layout(self)
        if self.emulator is not None:  # the warning goes right under the fit's summary
            main = page[0]
            main.insert(list(main).index(self.summary) + 1, self.applicability)
        return page
