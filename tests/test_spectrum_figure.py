"""The one spectrum figure of the Star and Fit views, on its own (no view, no browser)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.grid import APOGEE_7514
from core.spectrum import Spectrum
from dashboard.figures.lines import filter_lines
from dashboard.figures.spectrum import SpectrumFigure
from dashboard.spectra import zoom_groups

LAM = APOGEE_7514.wavelength


def star(seed: int, bad=slice(100, 110)) -> Spectrum:
    rng = np.random.default_rng(seed)
    flux = (1 - 0.3 * np.exp(-0.5 * ((LAM - 15300.0 - seed) / 0.5) ** 2)
            + 0.01 * rng.standard_normal(LAM.size))
    mask = np.zeros(LAM.size, np.uint16)
    mask[bad] = 1 << 12  # a sky line: bad
    return Spectrum(LAM, flux, np.full(LAM.size, 0.01), mask, meta={"APOGEE_ID": f"2M-{seed}"},
                    grid="apogee7514", normalized=True)


def lines() -> pd.DataFrame:
    return pd.DataFrame({
        "wavelength_vac": [15300.0, 15600.0, 16000.0, 16200.0, 16700.0],
        "kind": ["atomic", "atomic", "atomic", "molecular", "hydrogen"],
        "species": ["Mg I", "Fe I", "Fe I", "CO", "H I"],
        "element": ["Mg", "Fe", "Fe", "C", "H"],
        "log_gf": [-0.5, -1.0, -0.2, np.nan, 0.3],
        "excitation_potential": [5.1, 4.0, 5.5, 0.0, 10.2],
        "informs": ["MG_FE", "FE_H", "FE_H", "", ""],
        "note": ["", "", "", "", "Brackett 11-4 (Br11)"],
    })


def model_ids(fig: SpectrumFigure) -> set[str]:
    return {m.id for m in fig.layout.references()}


def test_a_new_star_or_model_updates_the_sources_in_place():
    fig = SpectrumFigure()
    fig.overlay("model", "#d62728")
    fig.residual_curve("residual")
    a, b = star(1), star(2, bad=slice(300, 320))
    fig.set_spectrum(a, "star 1")
    fig.set_overlay("model", a.wavelength, a.flux * 0 + 1)
    fig.set_residual("residual", a.wavelength, a.flux - 1)
    fig.frame_residuals(-1, 1)
    ids, src = model_ids(fig), fig.spec_src
    first = np.array(src.data["flux"], dtype=float)
    assert len(first) == LAM.size + 2  # a NaN row at each chip gap
    fig.set_spectrum(b, "star 2")
    fig.set_overlay("model", b.wavelength, b.flux * 0 + 0.9)
    fig.set_residual("residual", b.wavelength, b.flux - 0.9)
    assert model_ids(fig) == ids and fig.spec_src is src  # nothing rebuilt
    assert not np.allclose(np.array(src.data["flux"], float), first, equal_nan=True)
    np.testing.assert_allclose(np.nanmax(fig.overlays["model"].data_source.data["flux"]), 0.9,
                               rtol=1e-6)
    x0 = fig.mask_src.data["x0"]
    assert len(x0) == 1 and LAM[299] < x0[0] < LAM[300]  # star 2's masked run
    assert fig.fig.title.text == "star 2"


def test_overlays_toggle_and_the_residual_panel_shares_the_x_range():
    fig = SpectrumFigure()
    s = star(3)
    fig.set_spectrum(s, "s")
    fig.set_overlay("A", s.wavelength, s.flux)
    fig.set_overlay("B", s.wavelength, s.flux + 0.1)
    fig.show_overlays(["B"])
    assert not fig.overlays["A"].visible and fig.overlays["B"].visible
    assert fig.res_fig.x_range is fig.fig.x_range is fig.x_range
    assert not fig.res_fig.visible
    fig.set_residual("r", s.wavelength, s.flux - 1)
    fig.frame_residuals(-2, 2, title="res", axis_label="data − model")
    assert fig.res_fig.visible and fig.res_fig.yaxis.axis_label == "data − model"
    fig.set_xrange(15500, 15600)
    assert (fig.res_fig.x_range.start, fig.res_fig.x_range.end) == (15500, 15600)
    fig.clear()
    assert not fig.res_fig.visible and len(fig.spec_src.data["flux"]) == 0
    assert not fig.overlays["B"].visible


def test_line_markers_filter_by_element_and_kind():
    fig = SpectrumFigure()
    fig.set_spectrum(star(4), "s")
    all_lines = lines()
    fig.set_lines(filter_lines(all_lines))
    assert len(fig.lines_src.data["x"]) == 5 and len(fig.labels_src.data["x"]) == 5
    fig.set_lines(filter_lines(all_lines, elements=["Fe"]))
    assert fig.lines_src.data["element"] == ["Fe", "Fe"]
    assert set(fig.labels_src.data["text"]) == {"Fe I"}
    fig.set_lines(filter_lines(all_lines, kinds=["hydrogen", "atomic"], elements=["H", "Mg"]))
    assert sorted(fig.labels_src.data["text"]) == ["Br11", "Mg I"]
    fig.set_lines(None)
    assert len(fig.lines_src.data["x"]) == 0 and len(fig.labels_src.data["x"]) == 0


def test_zoom_presets_chips_and_element_windows():
    fig = SpectrumFigure()
    fig.set_spectrum(star(5), "s")
    windows = pd.DataFrame({"element": ["Mg", "Mg", "Fe"], "start_vac": [15700.0, 15740.0, 16000.0],
                            "end_vac": [15705.0, 15745.0, 16004.0]})
    assert set(zoom_groups(APOGEE_7514, windows)["Element windows"].values()) == {"el:Fe", "el:Mg"}
    assert fig.zoom_to("chip:1", APOGEE_7514, windows)
    green = LAM[APOGEE_7514.chip_slices()[1]]
    assert fig.x_range.start == pytest.approx(green[0] - 2)
    assert fig.x_range.end == pytest.approx(green[-1] + 2)
    assert fig.zoom_to("el:Mg", APOGEE_7514, windows)
    assert list(fig.window_src.data["x0"]) == [15700.0, 15740.0]
    assert fig.x_range.start < 15700 and fig.x_range.end > 15745
    assert fig.zoom_to("whole", APOGEE_7514, windows)
    assert len(fig.window_src.data["x0"]) == 0 and fig.x_range.start < LAM[0]
    assert not fig.zoom_to("el:Unobtainium", APOGEE_7514, windows)
    fig.zoom_to_line(16000.0, half_width=5)
    assert (fig.x_range.start, fig.x_range.end) == (15995.0, 16005.0)


def test_a_new_star_keeps_the_zoom():
    fig = SpectrumFigure()
    fig.set_spectrum(star(6), "s")
    fig.set_xrange(15500, 15600)
    fig.set_spectrum(star(7), "t")
    assert (fig.x_range.start, fig.x_range.end) == (15500, 15600)


def test_add_strip_shares_the_x_range_and_joins_the_layout():
    fig = SpectrumFigure()
    strip = fig.add_strip("attention", height=90, y_axis_label="head")
    assert strip.x_range is fig.x_range and strip.height == 90
    assert fig.layout.children[-1] is strip and len(fig.layout.children) == 3
    assert fig.add_strip("attention") is strip  # asked again: the same strip
    fig.set_xrange(16000, 16100)
    assert (strip.x_range.start, strip.x_range.end) == (16000, 16100)


def test_span_layers_and_line_clicks():
    fig = SpectrumFigure()
    user = fig.span_layer("user", "#e53935", 0.2, "your mask", on_residuals=True)
    assert fig.span_layer("user", "#000", 0.5) is user
    fig.set_spans("user", [15300.0], [15310.0])
    assert list(user.data["x1"]) == [15310.0]
    clicked = []
    fig.on_line_click(clicked.append)
    fig.set_spectrum(star(8), "s")
    fig.set_lines(lines())
    fig.lines_src.selected.indices = [1]
    assert clicked == [1] and fig.lines_src.selected.indices == []
