"""The Fit view's widgets and layout (its behaviour is in :mod:`dashboard.views.fit`)."""

from __future__ import annotations

import pandas as pd
import panel as pn

from core.fit.interactive import fittable_elements, slider_specs
from core.labels import axis_title

from ..figures.spectrum import SpectrumFigure
from ..spectra import zoom_groups

CURVES = {"fit": ("best fit", "#2ca02c", "solid"), "slider": ("sliders", "#ff7f0e", "dashed"),
          "element": ("element fit", "#9467bd", "solid")}
MAX_SELECTION_FIT = 2000  # more belongs to `stellarscope fit --all` (minutes on a CPU)


def build_figure(view) -> SpectrumFigure:
    """The shared spectrum figure with the fit's curves, the drawn mask, line clicks and
    range drags."""
    fig = SpectrumFigure(height=360, css_class="ss-fit-plot")
    for key, (name, color, dash) in CURVES.items():
        fig.overlay(key, color, dash, width=1.5, legend=name)
        if key != "element":
            fig.residual_curve(key, color, dash)
    fig.span_layer("user", "#e53935", 0.22, "your mask", on_residuals=True)
    fig.on_line_click(view._on_line_click)
    fig.on_range_drag(lambda x0, x1: view.mask_range(x0, x1, view.mask_mode == "mask"),
                      "Drag to mask / unmask a range")
    return fig


def build_widgets(view) -> None:
    """The view's widgets, bound to its params and methods (attributes of ``view``)."""
    W = pn.widgets
    view.fit_button = W.Button(label="Fit", color="primary", width=110,
                               css_classes=["ss-fit-button"])
    view.fit_button.on_click(lambda e: view.fit())
    view.continuum_select = W.Select.from_param(view.param.continuum,
                                                label="Continuum correction", width=170)
    view.fit_rv_box = W.Checkbox.from_param(view.param.fit_rv, label="fit RV", width=80)
    view.progress = pn.indicators.Progress(value=0, max=100, width=220, visible=False,
                                           bar_color="primary")
    view.status = pn.pane.Markdown("", css_classes=["ss-fit-status"], margin=(0, 10),
                                   sizing_mode="stretch_width")
    view.mask_mode_buttons = W.RadioButtonGroup.from_param(view.param.mask_mode,
                                                           color="default", width=140)
    view.clear_mask = W.Button(label="Clear my mask", width=120)
    view.clear_mask.on_click(lambda e: view.reset_mask())
    view.element_select = W.Select.from_param(view.param.element, label="Element", width=120,
                                              css_classes=["ss-fit-element-select"])
    view.element_button = W.Button(label="Fit element", width=110, disabled=True,
                                   css_classes=["ss-fit-element"])
    view.element_button.on_click(lambda e: view.fit_element(view.element))
    view.element_info = pn.pane.Markdown("", margin=(0, 10), css_classes=["ss-element-info"])
    view.selection_button = W.Button(
        label="Fit selection", width=140, css_classes=["ss-fit-selection"],
        description=f"fit the stars brushed in the Catalog tab (up to {MAX_SELECTION_FIT:,}) "
        "and write FIT_* columns to the catalog", disabled=True)
    view.selection_button.on_click(lambda e: view.fit_selection())
    if view.selection is not None:
        def label_selection_button(*events):
            sel = view.selection
            view.selection_button.label = (f"Fit {sel.count:,} selected" if sel.active
                                           else "Fit selection")

        view.selection.param.watch(label_selection_button, ["count", "rows"])
        label_selection_button()
    view.zoom = W.Select(label="Zoom to", value="whole", width=170, css_classes=["ss-fit-zoom"],
                         groups={"Spectrum": {"Whole spectrum": "whole"}})
    view.zoom.param.watch(lambda e: view.apply_zoom(e.new), "value")
    view.table = W.Tabulator(pd.DataFrame(), show_index=False, disabled=True,
                             sizing_mode="stretch_width", height=420,
                             layout="fit_data_stretch", theme="simple",
                             css_classes=["ss-fit-table"])
    view.summary = pn.pane.Markdown("", css_classes=["ss-fit-summary"], margin=(0, 10))
    view.command = pn.pane.Markdown("", css_classes=["ss-fit-command"], margin=(0, 10),
                                    sizing_mode="stretch_width")
    view.reset_sliders = W.Button(label="Sliders to the fit", width=150, disabled=True)
    view.reset_sliders.on_click(lambda e: view._sliders_to_fit())
    view.mask_download, view.json_download, view.csv_download = (
        W.FileDownload(label=text, callback=cb, filename=name, color="light", width=110,
                       disabled=True)
        for text, cb, name in (("Mask CSV", view._mask_csv, "mask.csv"),
                               ("Fit JSON", view._fit_json, "fit.json"),
                               ("Fit CSV", view._fit_csv, "fit.csv")))
    view.empty = pn.pane.Alert("**No star selected.** Pick a star in the sidebar, then press "
                               "*Fit*.", alert_type="info", sizing_mode="stretch_width")
    model_widgets(view)


def model_widgets(view) -> None:
    """What depends on the emulator: the elements it can fit, their zoom presets, the label
    sliders (none without an emulator)."""
    emu = view.emulator
    elements = fittable_elements(emu, view._windows) if emu is not None else []
    view.param.element.objects = elements
    view.element = elements[0] if elements else None
    groups = (zoom_groups(emu.grid, view._windows, elements) if emu is not None
              else {"Spectrum": {"Whole spectrum": "whole"}})
    view.zoom.param.update(groups=groups, value="whole")
    view.sliders = make_sliders(view)
    view.selection_button.disabled = emu is None


def make_sliders(view) -> dict[str, pn.widgets.FloatSlider]:
    """One slider per label over the emulator's range, then the RV; each redraws the model."""
    if view.emulator is None:
        return {}
    out = {}
    for s in slider_specs(view.emulator):
        mid = 0.0 if s.name == "RV" else (s.start + s.end) / 2
        out[s.name] = pn.widgets.FloatSlider(
            label="RV [km/s]" if s.name == "RV" else axis_title(s.name), start=s.start,
            end=s.end, value=mid, step=s.step, width=260,
            format=f"0.{'0' * s.digits}" if s.name != "RV" else None)
    for s in out.values():
        s.param.watch(lambda e: view._throttled_draw(), "value")
    return out


def layout(view):
    """Controls over the spectrum; the fit table and the label sliders under it."""
    if view.emulator is None:
        return pn.pane.Alert(f"### No emulator\n\n{view.model_problem}", alert_type="warning",
                             sizing_mode="stretch_width", css_classes=["ss-no-emulator"])
    wrap = {"flex-wrap": "wrap"}
    fit_row = pn.Row(view.fit_button, view.selection_button, view.continuum_select,
                     view.fit_rv_box, pn.Spacer(width=30), view.element_select,
                     view.element_button, pn.Spacer(width=30), view.zoom, align="end",
                     sizing_mode="stretch_width", styles=wrap)
    mask_row = pn.Row(
        pn.pane.Markdown("Drag across the spectrum to", margin=(8, 5, 0, 10)),
        view.mask_mode_buttons, view.clear_mask, pn.Spacer(width=30),
        pn.pane.Markdown("**Export**", margin=(8, 5, 0, 10)),
        view.mask_download, view.json_download, view.csv_download,
        sizing_mode="stretch_width", styles=wrap)
    sliders = pn.Column(pn.pane.Markdown("#### Labels (live emulator)", margin=(0, 10)),
                        view.reset_sliders, *view.sliders.values(), height=420,
                        scroll=True, width=300)
    side = pn.Column(pn.pane.Markdown("#### Fit vs catalog", margin=(0, 10)), view.table,
                     width=480)
    main = pn.Column(fit_row, mask_row, pn.Row(view.progress, view.status,
                                               sizing_mode="stretch_width"),
                     view.summary, view.command, view.element_info, view.empty,
                     view.figure.pane, sizing_mode="stretch_width")
    return pn.Column(main, pn.Row(side, sliders, sizing_mode="stretch_width"),
                     sizing_mode="stretch_width")

