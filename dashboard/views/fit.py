"""Fit view: fit the focused star with the spectral emulator and explore the fit by hand.

* **Fit** runs :func:`core.fit.fit_spectrum` in a worker thread (progress bar) and draws the
  best-fit model, residuals, and a table of labels ± σ beside the catalog values, with χ²_ν.
* One slider per label (and RV) re-draws the emulator spectrum live from the fit; only the
  plot's data change, the figures are built once.
* Click a line marker (or pick an element) to fit that element inside its windows with the
  other labels held at the full fit.
* Drag across the spectrum to mask (or unmask) a wavelength range, then refit.
* The mask and the fit can be downloaded (CSV / JSON).

Nothing here parses files or trains models: spectra come from the focus state, fitting from
``core.fit``.
"""

from __future__ import annotations

import io
import json
import os
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
import torch

from core import paths
from core.errors import StellarscopeError
from core.fit import FitOptions, FitResult, element_label, fit_element, fit_spectrum, on_grid
from core.fit.forward import ForwardModel
from core.models.emulator import Emulator, load_emulator

from .. import data
from ..jobs import JobRunner, Throttle, on_doc, session_doc
from ..persist import restore_widgets, widget_state
from ..spectra import masked_spans, zoom_groups, zoom_span
from ..state import AppContext, FocusState, SelectionState
from .fit_plot import FitPlot

ENV_EMULATOR = "STELLARSCOPE_EMULATOR"
EMULATOR_DEMO = "emulator-demo"
MODEL_NAME = "Emulator fit"
MAX_SELECTION_FIT = 2000  # more belongs to `stellarscope fit --all` (minutes on a CPU)
CONTINUUM_CHOICES = {"off": None, "degree 0": 0, "degree 1": 1, "degree 2": 2}


# -- the emulator ------------------------------------------------------------------------------


def emulator_candidates() -> list[Path]:
    out = []
    if os.environ.get(ENV_EMULATOR):
        out.append(Path(os.environ[ENV_EMULATOR]).expanduser())
    out += [paths.home() / "models" / EMULATOR_DEMO, paths.SHIPPED_MODELS / EMULATOR_DEMO]
    return out


def find_emulator() -> tuple[Emulator | None, str, str]:
    """(emulator, its directory, problem): the first that loads (cached per server process)."""
    emu, where, problems = data.first_loadable(emulator_candidates(), "emulator", load_emulator)
    if emu is not None:
        return emu, where, ""
    if problems:
        return None, "", "the emulator could not be loaded: " + "; ".join(problems)
    return None, "", ("no emulator model: train one with `stellarscope train emulator` or set "
                      f"${ENV_EMULATOR}")


def _fmt(v, digits=3) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _digits(name: str) -> int:
    return 0 if name == "TEFF" else 3


class FitView(pn.viewable.Viewer):
    """Fit the focused star with the emulator; sliders, element fits and a drawn mask."""

    focus = param.ClassSelector(class_=FocusState)
    context = param.ClassSelector(class_=AppContext)
    selection = param.ClassSelector(class_=SelectionState, default=None, allow_None=True,
                                    doc="the Catalog's brushed rows, fitted by 'Fit selection'")
    emulator = param.Parameter(default=None, doc="the Emulator; found on disk when None")
    result = param.Parameter(default=None, doc="FitResult of the focused star")
    element_result = param.Parameter(default=None, doc="the last ElementFit")
    busy = param.Boolean(default=False)

    def __init__(self, **params):
        super().__init__(**params)
        self.model_dir, self.model_problem = "", ""
        if self.emulator is None:
            self.emulator, self.model_dir, self.model_problem = find_emulator()
        self._jobs = JobRunner()
        self._doc = None
        self.spectrum = None        # the focused spectrum on the emulator's grid
        self.user_mask = None       # True = masked by the user (drag), on the emulator's grid
        self._windows = data.element_windows()
        self._lines, _ = data.linelist()
        self._forward = None
        self.figures = FitPlot(on_line_tap=self._on_line_tap, on_box=self._on_box)
        self._build_widgets()
        self._throttled_draw = Throttle(self._draw_slider_model, interval=0.05)
        self.focus.param.watch(self._on_spectrum, ["spectrum"])
        self._on_spectrum()

    # -- widgets ------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.fit_button = pn.widgets.Button(label="Fit", color="primary", width=110,
                                            css_classes=["ss-fit-button"])
        self.fit_button.on_click(lambda e: self.fit())
        self.continuum = pn.widgets.Select(label="Continuum correction",
                                           options=list(CONTINUUM_CHOICES), value="off",
                                           width=170)
        self.fit_rv = pn.widgets.Checkbox(label="fit RV", value=True, width=80)
        self.progress = pn.indicators.Progress(value=0, max=100, width=220,
                                               visible=False, bar_color="primary")
        self.status = pn.pane.Markdown("", css_classes=["ss-fit-status"], margin=(0, 10),
                                       sizing_mode="stretch_width")
        self.mask_mode = pn.widgets.RadioButtonGroup(options=["mask", "unmask"], value="mask",
                                                     color="default", width=140)
        self.clear_mask = pn.widgets.Button(label="Clear my mask", width=120)
        self.clear_mask.on_click(lambda e: self.reset_mask())
        elements = self._fittable_elements()
        self.element = pn.widgets.Select(label="Element", options=elements,
                                         value=elements[0] if elements else None, width=120,
                                         css_classes=["ss-fit-element-select"])
        self.element_button = pn.widgets.Button(label="Fit element", width=110, disabled=True,
                                                css_classes=["ss-fit-element"])
        self.element_button.on_click(lambda e: self.fit_element(self.element.value))
        self.element_info = pn.pane.Markdown("", margin=(0, 10), css_classes=["ss-element-info"])
        self.selection_button = pn.widgets.Button(
            label="Fit selection", width=140, css_classes=["ss-fit-selection"],
            description=f"fit the stars brushed in the Catalog tab (up to {MAX_SELECTION_FIT:,}) "
            "and write FIT_* columns to the catalog", disabled=self.emulator is None)
        self.selection_button.on_click(lambda e: self.fit_selection())
        if self.selection is not None:
            self.selection.param.watch(self._label_selection_button, ["count", "rows"])
            self._label_selection_button()
        grid = self.emulator.grid if self.emulator is not None else None
        self.zoom = pn.widgets.Select(
            label="Zoom to", value="whole", width=170, css_classes=["ss-fit-zoom"],
            groups=zoom_groups(grid, self._windows, elements) if grid is not None else
            {"Spectrum": {"Whole spectrum": "whole"}})
        self.zoom.param.watch(lambda e: self.apply_zoom(e.new), "value")
        self.table = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True,
                                          sizing_mode="stretch_width", height=420,
                                          layout="fit_data_stretch", theme="simple",
                                          css_classes=["ss-fit-table"])
        self.summary = pn.pane.Markdown("", css_classes=["ss-fit-summary"], margin=(0, 10))
        self.command = pn.pane.Markdown("", css_classes=["ss-fit-command"], margin=(0, 10),
                                        sizing_mode="stretch_width")
        self.sliders = self._make_sliders()
        self.reset_sliders = pn.widgets.Button(label="Sliders to the fit", width=150,
                                               disabled=True)
        self.reset_sliders.on_click(lambda e: self._sliders_to_fit())
        self.mask_download = pn.widgets.FileDownload(label="Mask CSV", callback=self._mask_csv,
                                                     filename="mask.csv", color="light",
                                                     width=110, disabled=True)
        self.json_download = pn.widgets.FileDownload(label="Fit JSON", callback=self._fit_json,
                                                     filename="fit.json", color="light",
                                                     width=110, disabled=True)
        self.csv_download = pn.widgets.FileDownload(label="Fit CSV", callback=self._fit_csv,
                                                    filename="fit.csv", color="light",
                                                    width=110, disabled=True)
        self.empty = pn.pane.Alert("**No star selected.** Pick a star in the sidebar, then press "
                                   "*Fit*.", alert_type="info", sizing_mode="stretch_width")

    def _make_sliders(self) -> dict[str, pn.widgets.FloatSlider]:
        emu = self.emulator
        if emu is None:
            return {}
        out = {}
        lo, hi = emu.bounds
        for name, a, b in zip(emu.label_names, lo, hi, strict=True):
            step = (b - a) / 200
            out[name] = pn.widgets.FloatSlider(label=name, start=float(a), end=float(b),
                                               value=float((a + b) / 2), step=step, width=260,
                                               format=f"0.{'0' * max(0, _digits(name))}")
        out["RV"] = pn.widgets.FloatSlider(label="RV [km/s]", start=-300.0, end=300.0, value=0.0,
                                           step=0.5, width=260)
        for s in out.values():
            s.param.watch(lambda e: self._throttled_draw(), "value")
        return out

    def _fittable_elements(self) -> list[str]:
        if self.emulator is None or self._windows is None:
            return []
        out = []
        for el in sorted(self._windows["element"].astype(str).unique()):
            try:
                element_label(self.emulator, el)
            except KeyError:
                continue
            out.append(el)
        return out

    # -- focus --------------------------------------------------------------------------------
    def _on_spectrum(self, *events) -> None:
        spec = self.focus.spectrum
        self._jobs.cancel("fit")
        self._jobs.cancel("element")
        self.param.update(result=None, element_result=None, busy=False)
        self.spectrum, self._forward = None, None
        with pn.io.hold():
            self.empty.visible = spec is None or self.emulator is None
            self.figures.clear_models()
            self.table.value = pd.DataFrame()
            self.summary.object = self.element_info.object = self.command.object = ""
            self.progress.visible = False
            for w in (self.json_download, self.csv_download, self.reset_sliders,
                      self.element_button):
                w.disabled = True
            if self.emulator is None:
                self.status.object = f"⚠ {self.model_problem}"
                self.fit_button.disabled = True
                return
            if spec is None:
                self.figures.clear_spectrum()
                self.fit_button.disabled = self.mask_download.disabled = True
                self.status.object = ""
                return
            try:
                self.spectrum = on_grid(spec, self.emulator.grid)
            except StellarscopeError as exc:
                self.status.object = f"⚠ cannot fit this spectrum: {exc}"
                self.fit_button.disabled = True
                return
            self.user_mask = np.zeros(self.emulator.n_pix, bool)
            self.fit_button.disabled = self.mask_download.disabled = False
            self._draw_data()
            self._sliders_from(self._catalog_start())
            stem = "".join(c if c.isalnum() or c in "+-_." else "_" for c in self.spectrum.label)
            self.mask_download.filename = f"{stem}_fit_mask.csv"
            self.json_download.filename = f"{stem}_fit.json"
            self.csv_download.filename = f"{stem}_fit.csv"
            self.status.object = ("Press **Fit** to fit all labels and the RV. Drag across the "
                                  "spectrum to mask a range; click a ▼ line marker to fit "
                                  "that element.")

    def _draw_data(self) -> None:
        spec = self.spectrum
        self.figures.draw_spectrum(spec, self.emulator.grid.chip_slices(),
                                   f"{spec.label} on the {self.emulator.grid.name} grid")
        self._draw_lines()

    def _draw_lines(self) -> None:
        lines = self._lines
        elements = set(self.element.options)
        if lines is None or not elements:
            self.figures.draw_lines([], [], [], [])
            return
        sub = lines[(lines["kind"] == "atomic") & lines["element"].isin(elements)]
        labels = [element_label(self.emulator, e) for e in sub["element"]]
        self.figures.draw_lines(sub["wavelength_vac"].to_numpy(), sub["element"],
                                sub["species"], labels)

    def _catalog_start(self) -> dict[str, float]:
        meta = self.spectrum.meta
        out = {}
        for name in self.emulator.label_names:
            v = meta.get(name)
            if isinstance(v, (int, float, np.number)) and np.isfinite(v) and v > -9000:
                out[name] = float(v)
        return out

    # -- fitting ------------------------------------------------------------------------------
    def options(self) -> FitOptions:
        return FitOptions(continuum_degree=CONTINUUM_CHOICES[self.continuum.value],
                          fit_rv=self.fit_rv.value, rv=None if self.fit_rv.value else 0.0)

    def fit(self, sync: bool = False) -> None:
        """Fit the focused star (in a worker thread unless ``sync``)."""
        if self.spectrum is None or self.emulator is None:
            return
        spec, emu, mask, opts = self.spectrum, self.emulator, self.user_mask.copy(), self.options()
        self._start_progress("fitting …")
        progress = self._page_progress()
        self._run("fit", lambda: fit_spectrum(spec, emu, opts, mask=mask, progress=progress),
                  self._show_result, sync)

    def _run(self, key: str, work, on_done, sync: bool) -> None:
        """``work()`` in a worker thread (or here when ``sync``), then ``on_done(result)`` or
        ``_failed(error)``."""
        if not sync:
            self._jobs.submit(work, key=key, on_done=on_done, on_error=self._failed)
            return
        try:
            result = work()
        except (StellarscopeError, KeyError) as exc:
            self._failed(exc)
            return
        on_done(result)

    def _page_progress(self):
        """A ``progress(fraction, message)`` that worker threads may call."""
        doc = session_doc()
        return lambda fraction, message: on_doc(doc, self._set_progress, fraction, message)

    def _label_selection_button(self, *events) -> None:
        sel = self.selection
        self.selection_button.label = (f"Fit {sel.count:,} selected" if sel.active
                                       else "Fit selection")

    def fit_selection(self, sync: bool = False) -> None:
        """Fit every brushed star (in a worker thread unless ``sync``) and write FIT_* columns."""
        store = self.context.store
        rows = self.selection.rows if self.selection is not None else None
        if self.emulator is None or store is None:
            return
        if rows is None or len(rows) == 0:
            self.status.object = ("Brush stars in the **Catalog** tab first; *Fit selection* "
                                  "fits them all and adds FIT_* columns to the catalog.")
            return
        if len(rows) > MAX_SELECTION_FIT:
            self.status.object = (f"{len(rows):,} stars are selected; the app fits up to "
                                  f"{MAX_SELECTION_FIT:,}. Narrow the selection, or run "
                                  f"`stellarscope fit --all --store {store.path}`.")
            return
        from core.fit.store import fit_store

        rows, emu, opts = np.sort(rows), self.emulator, self.options()
        self._start_progress(f"fitting {len(rows):,} selected stars …")
        progress = self._page_progress()

        def stars_done(done, total):
            progress(done / max(total, 1), f"fitted {done:,} of {total:,} selected stars")

        self._run("selection", lambda: fit_store(store, emu, opts, rows=rows, progress=False,
                                                 model_path=self.model_dir,
                                                 on_progress=stars_done),
                  self._selection_done, sync)

    def _selection_done(self, summary: dict) -> None:
        with pn.io.hold():
            self._idle()
            flags = ", ".join(f"{n} {c}" for n, c in summary["flag_counts"].items() if c) or "none"
            self.status.object = (
                f"Fitted {summary['stars']:,} selected stars in {summary['seconds']} s; wrote "
                f"FIT_* columns (median χ²_ν {summary['median_chi2_nu']:.3g}; flags: {flags}). "
                "Plot them in the **Catalog** tab.")
        self.busy = False
        self.context.catalog_version += 1

    def _start_progress(self, message: str) -> None:
        """Busy: one fit at a time, so every fit button waits."""
        self.busy = True
        with pn.io.hold():
            for button in (self.fit_button, self.element_button, self.selection_button):
                button.disabled = True
            self.progress.param.update(value=0, visible=True)
            self.status.object = message

    def _idle(self) -> None:
        """Not busy: the progress bar goes, each button is enabled when it can act."""
        self.progress.visible = False
        self.fit_button.disabled = self.spectrum is None
        self.element_button.disabled = self.result is None or not self.element.options
        self.selection_button.disabled = self.emulator is None

    def _set_progress(self, fraction: float, message: str) -> None:
        if self.busy:
            self.progress.value = int(round(100 * fraction))
            self.status.object = message

    def _failed(self, exc: BaseException) -> None:
        self.busy = False
        with pn.io.hold():
            self._idle()
            self.status.object = f"⚠ fit failed: {exc}"
        if self.context is not None:
            self.context.fail(exc)

    def _show_result(self, result: FitResult) -> None:
        self.result = result
        spec = self.spectrum
        with pn.io.hold():
            self._idle()
            for w in (self.json_download, self.csv_download, self.reset_sliders):
                w.disabled = False
            self.figures.draw_fit(spec.wavelength, np.where(result.used, result.model, np.nan))
            self.table.value = self.result_table(result)
            flags = ", ".join(result.flag_names) or "none"
            self.summary.object = (
                f"**χ²_ν = {result.chi2_nu:.3f}** on {result.n_pix} pixels · RV = "
                f"{result.rv:.2f} ± {result.rv_err:.2f} km/s in the spectrum's frame (cross-correlation "
                f"{result.rv_start:.1f}) · flags: {flags} · {result.n_iter} iterations"
                + (" · σ include the emulator's calibrated systematic floor"
                   if self.emulator.config.error_floor else ""))
            self.status.object = f"Fitted {spec.label}."
            self._show_command()
            self._forward = ForwardModel(self.emulator, CONTINUUM_CHOICES[self.continuum.value])
            self._sliders_to_fit()
        focus_spec = self.focus.spectrum
        if focus_spec is not None and focus_spec.grid == self.emulator.grid.name:
            self.focus.add_model(MODEL_NAME, result.model, {
                f"fit {k}": f"{_fmt(v, _digits(k))} ± {_fmt(result.errors[k], _digits(k))}"
                for k, v in result.labels.items()})
        self.busy = False  # last: whoever waits on ``busy`` sees the finished view

    def result_table(self, result: FitResult) -> pd.DataFrame:
        t = result.table()
        out = pd.DataFrame({
            "label": t["label"],
            "fit": [_fmt(v, _digits(n)) for n, v in zip(t["label"], t["fit"], strict=True)],
            "± σ": [_fmt(v, _digits(n)) for n, v in zip(t["label"], t["fit_err"], strict=True)],
            "catalog": [_fmt(v, _digits(n)) for n, v in zip(t["label"], t["catalog"], strict=True)],
            "cat. ±": [_fmt(v, _digits(n)) for n, v in zip(t["label"], t["catalog_err"], strict=True)],
        })
        if np.isfinite(t["truth"].to_numpy(dtype=float)).any():
            out["truth"] = [_fmt(v, _digits(n)) for n, v in zip(t["label"], t["truth"], strict=True)]
        out["bound"] = np.where(t["at_bound"], "at bound", "")
        return out

    # -- element mode -------------------------------------------------------------------------
    def _on_line_tap(self, attr, old, new) -> None:
        if not new:
            return
        lines = self.figures.lines_src
        element = lines.data["element"][new[0]]
        lines.selected.indices = []  # so a second click on the same line fits again
        self.element.value = element
        self.fit_element(element)

    def fit_element(self, element: str | None, sync: bool = False) -> None:
        """Fit one element inside its windows, the other labels held at the full fit."""
        if not element or self.spectrum is None:
            return
        if self.result is None:
            self.status.object = f"Fit the star first, then {element} can be fitted in its windows."
            return
        w = self._windows[self._windows["element"] == element]
        self.figures.draw_windows(w["start_vac"].to_numpy(), w["end_vac"].to_numpy())
        spec, emu, base, mask = self.spectrum, self.emulator, self.result, self.user_mask.copy()
        opts, windows = self.options(), self._windows
        self._start_progress(f"fitting {element} in {len(w)} windows …")
        self._run("element", lambda: fit_element(spec, emu, element, base, windows=windows,
                                                 options=opts, mask=mask),
                  self._show_element, sync)

    def _show_element(self, res) -> None:
        self.element_result = res
        full = self.result.labels[res.label]
        d = _digits(res.label)
        with pn.io.hold():
            self._idle()
            self.figures.draw_element(self.spectrum.wavelength,
                                      np.where(res.used, res.model, np.nan))
            bound = " (at the training-range bound)" if res.at_bound else ""
            self.element_info.object = (
                f"**{res.element}** in {len(res.windows)} windows ({res.n_pix} px): {res.label} = "
                f"{_fmt(res.value, d)} ± {_fmt(res.error, d)}{bound}, χ²_ν {res.chi2_nu:.2f} · "
                f"full fit {_fmt(full, d)}")
            self.status.object = f"Fitted {res.element} in its windows."
            self._show_command()
            pad = 0.1 * max(max(b for _, b in res.windows) - min(a for a, _ in res.windows), 10.0)
            self.figures.zoom(min(a for a, _ in res.windows) - pad,
                              max(b for _, b in res.windows) + pad)
        self.busy = False

    def apply_zoom(self, key: str | None) -> None:
        """Zoom to the whole spectrum, a chip, or an element's windows (and pick that element)."""
        if not key or self.emulator is None:
            return
        span = zoom_span(key, self.emulator.grid, self._windows)
        if span is None:
            return
        start, end, x0, x1 = span
        with pn.io.hold():
            self.figures.draw_windows(x0, x1)
            self.figures.zoom(float(start), float(end))
            if key.startswith("el:") and key[3:] in self.element.options:
                self.element.value = key[3:]

    # -- masking ------------------------------------------------------------------------------
    def _on_box(self, event) -> None:
        geom = event.geometry
        if not event.final or geom.get("type") != "rect":
            return
        self.mask_range(geom["x0"], geom["x1"], self.mask_mode.value == "mask")

    def mask_range(self, x0: float, x1: float, masked: bool = True) -> int:
        """Mask (or unmask) the user mask between two wavelengths; returns pixels changed."""
        if self.spectrum is None:
            return 0
        lo, hi = sorted((float(x0), float(x1)))
        lam = self.spectrum.wavelength
        sel = (lam >= lo) & (lam <= hi)
        changed = int((self.user_mask[sel] != masked).sum())
        self.user_mask[sel] = masked
        self._draw_user_mask()
        verb = "masked" if masked else "unmasked"
        self.status.object = (f"{verb} {changed} pixels in {lo:.1f}–{hi:.1f} Å "
                              f"({int(self.user_mask.sum())} masked by you); press **Fit** to refit.")
        return changed

    def reset_mask(self) -> None:
        if self.user_mask is not None:
            self.user_mask[:] = False
            self._draw_user_mask()
            self.status.object = "Your mask is cleared; press **Fit** to refit."

    def _draw_user_mask(self) -> None:
        self.figures.draw_user_mask(self.spectrum.wavelength, self.user_mask)

    # -- sliders ------------------------------------------------------------------------------
    def _sliders_from(self, labels: dict[str, float], rv: float | None = None) -> None:
        lo, hi = self.emulator.bounds
        with pn.io.hold():
            for name, a, b in zip(self.emulator.label_names, lo, hi, strict=True):
                v = labels.get(name, (a + b) / 2)
                self.sliders[name].value = float(np.clip(v, a, b))
            if rv is not None:
                self.sliders["RV"].value = float(np.clip(rv, -300, 300))
        self._draw_slider_model()

    def _sliders_to_fit(self) -> None:
        if self.result is not None:
            self._sliders_from(self.result.labels, self.result.rv)

    def slider_model(self) -> np.ndarray:
        """The emulator spectrum at the sliders' labels and RV (observed frame)."""
        emu = self.emulator
        fwd = self._forward or ForwardModel(emu)
        p = torch.zeros(1, fwd.n_params)
        labels = np.array([self.sliders[n].value for n in emu.label_names])
        p[0, :emu.n_labels] = torch.tensor(emu.scale(labels), dtype=torch.float32)
        p[0, fwd.rv_index] = float(self.sliders["RV"].value)
        if fwd.n_cont and self.result is not None:
            p[0, emu.n_labels + 1:] = torch.tensor(self.result.continuum, dtype=torch.float32)
        with torch.no_grad():
            return fwd.evaluate(p.to(emu.device), jacobian=False)[0][0].cpu().numpy()

    def _draw_slider_model(self) -> None:
        if self.spectrum is None or self.emulator is None:
            return
        model = self.slider_model()
        spec = self.spectrum
        good = spec.good() & ~self.user_mask
        with np.errstate(divide="ignore", invalid="ignore"):
            pull = np.where(good, (spec.flux - model) / spec.error, np.nan)
            fit_pull = (np.where(good & self.result.used, (spec.flux - self.result.model)
                                 / spec.error, np.nan) if self.result is not None
                        else np.full(spec.n_pix, np.nan))
        with pn.io.hold():
            self.figures.draw_sliders(spec.wavelength, model, fit_pull, pull)

    # -- downloads ----------------------------------------------------------------------------
    def mask_table(self) -> pd.DataFrame:
        spec = self.spectrum
        used = self.result.used if self.result is not None else np.zeros(spec.n_pix, bool)
        return pd.DataFrame({"wavelength_vac": spec.wavelength,
                             "pipeline_bad": spec.bad().astype(int),
                             "user_masked": self.user_mask.astype(int),
                             "used_in_fit": used.astype(int)})

    def fit_document(self) -> dict:
        out = self.result.to_dict()
        out["model_dir"] = self.model_dir
        out["options"] = {"continuum": self.continuum.value, "fit_rv": self.fit_rv.value}
        out["user_mask_ranges"] = self.mask_ranges()
        if self.element_result is not None:
            out["element"] = self.element_result.to_dict()
        return out

    def _mask_csv(self):
        if self.spectrum is None:
            return None
        return io.BytesIO(self.mask_table().to_csv(index=False).encode())

    def _fit_json(self):
        if self.result is None:
            return None
        return io.BytesIO(json.dumps(self.fit_document(), indent=2).encode())

    def _fit_csv(self):
        if self.result is None:
            return None
        return io.BytesIO(self.result.table().to_csv(index=False).encode())

    # -- layout -------------------------------------------------------------------------------
    # -- session file ---------------------------------------------------------------------------
    def _persisted(self) -> dict:
        return {"continuum": self.continuum, "fit_rv": self.fit_rv, "element": self.element,
                "mask_mode": self.mask_mode}

    def _show_command(self) -> None:
        self.command.object = ("The same fit from the command line (with the *Mask CSV* "
                               "download if you drew a mask):\n\n```bash\n"
                               f"{self.cli_command()}\n```")

    def cli_command(self) -> str:
        """The ``stellarscope fit`` command that repeats the current fit."""
        parts = ["stellarscope", "fit"]
        if self.model_dir:
            parts += ["--model", self.model_dir]
        store = self.context.store if self.context is not None else None
        if self.focus.source == "store" and self.focus.star_id and store is not None:
            parts += ["--store", str(store.path), "--star", self.focus.star_id]
        else:
            name = Path(str(self.spectrum.meta.get("SOURCE") or "FILE.fits")).name
            parts += ["--file", str(name)]
        degree = CONTINUUM_CHOICES[self.continuum.value]
        if degree is not None:
            parts += ["--continuum", str(degree)]
        if not self.fit_rv.value:
            parts += ["--rv", "0"]
        if self.element_result is not None:
            parts += ["--element", self.element_result.element]
        if self.user_mask is not None and self.user_mask.any():
            parts += ["--mask", self.mask_download.filename]
        return " ".join(shlex.quote(p) for p in parts)

    def mask_ranges(self) -> list[list[float]]:
        """The user's drawn mask as [start, end] wavelength ranges."""
        if self.spectrum is None:
            return []
        spans = masked_spans(self.spectrum.wavelength, self.user_mask)
        return [[float(a), float(b)] for a, b in zip(spans["x0"], spans["x1"], strict=True)]

    def state_dict(self) -> dict:
        return {**widget_state(self._persisted()), "user_mask_ranges": self.mask_ranges(),
                "fitted": self.result is not None}

    def load_state(self, state: dict, sync: bool = False) -> list[str]:
        """Options, then the drawn mask; refits when the saved session had a fit."""
        if self.emulator is None:
            return ["Fit view: no emulator here"]
        notes = restore_widgets(self._persisted(), state)
        if self.spectrum is None:
            return notes
        self.user_mask[:] = False
        for a, b in state.get("user_mask_ranges", []):
            self.mask_range(float(a), float(b), True)
        if state.get("fitted"):
            self.fit(sync=sync)
        return notes

    def __panel__(self):
        if self.emulator is None:
            return pn.pane.Alert(f"### No emulator\n\n{self.model_problem}", alert_type="warning",
                                 sizing_mode="stretch_width")
        fit_row = pn.Row(
            self.fit_button, self.selection_button, self.continuum, self.fit_rv, pn.Spacer(width=30),
            self.element, self.element_button, pn.Spacer(width=30), self.zoom, align="end", sizing_mode="stretch_width",
            styles={"flex-wrap": "wrap"})
        mask_row = pn.Row(
            pn.pane.Markdown("Drag across the spectrum to", margin=(8, 5, 0, 10)),
            self.mask_mode, self.clear_mask, pn.Spacer(width=30),
            pn.pane.Markdown("**Export**", margin=(8, 5, 0, 10)),
            self.mask_download, self.json_download, self.csv_download,
            sizing_mode="stretch_width", styles={"flex-wrap": "wrap"})
        status_row = pn.Row(self.progress, self.status, sizing_mode="stretch_width")
        sliders = pn.Column(pn.pane.Markdown("#### Labels (live emulator)", margin=(0, 10)),
                            self.reset_sliders, *self.sliders.values(), height=420,
                            scroll=True, width=300)
        side = pn.Column(pn.pane.Markdown("#### Fit vs catalog", margin=(0, 10)), self.table,
                         width=420)
        main = pn.Column(fit_row, mask_row, status_row, self.summary, self.command, self.element_info, self.empty,
                         self.figures.pane, sizing_mode="stretch_width")
        return pn.Column(pn.Row(main, sizing_mode="stretch_width"),
                         pn.Row(side, sliders, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
