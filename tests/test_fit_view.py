"""The Fit view's logic without a browser: fit, sliders, element fit, drawn mask, exports.

The emulator is a small random network (its own spectra are the test data), so no training
is needed; the browser test lives in tests/ui/test_fit_view.py.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.grid import APOGEE_7514
from core.store import SpectraStore

pn = pytest.importorskip("panel")

from toy_emulator import HI, NAMES, spectrum_like_store  # noqa: E402

from dashboard.state import AppContext, Session  # noqa: E402
from dashboard.views.fit import MODEL_NAME, FitView  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("view") / "store"
    emu, truth = spectrum_like_store(path, ["2M-A", "2M-B", "2M-C"], [0.0, 20.0, -35.0])
    return emu, SpectraStore.open(path), truth


def windows_for(emu):
    lam = APOGEE_7514.wavelength
    return pd.DataFrame({"element": ["Mg"] * 4 + ["Ca"] * 2, "species": "",
                         "start_vac": np.r_[lam[100:4000:1000], lam[[300, 900]]],
                         "end_vac": np.r_[lam[140:4040:1000], lam[[320, 920]]]})


@pytest.fixture()
def view(setup, monkeypatch):
    emu, store, _ = setup
    from dashboard import data

    monkeypatch.setattr(data, "element_windows", lambda: windows_for(emu))
    session = Session(context=AppContext(store=store, models={"emulator": emu}))
    v = FitView(focus=session.focus, context=session.context)
    return v, session


def test_view_fits_the_focused_star_and_fills_table_and_overlay(view, setup):
    v, session = view
    _, _, truth = setup
    assert v.fit_button.disabled  # nothing to fit yet
    session.select_star("2M-B")
    assert not v.fit_button.disabled and v.spectrum is not None
    v.fit(sync=True)
    r = v.result
    assert r is not None and abs(r.rv - 20.0) < 1.0
    assert abs(r.labels["TEFF"] - truth[1, 0]) < 5 * r.errors["TEFF"] + 10
    table = v.table.value
    assert list(table["label"]) == NAMES + ["RV"] and "truth" in table
    assert "χ²_ν" in v.summary.object
    assert MODEL_NAME in session.focus.models  # the Star view can overlay the fit
    assert len(v.figure.overlays["fit"].data_source.data["flux"]) >= APOGEE_7514.n_pix


def test_sliders_start_from_the_fit_and_redraw_in_place(view):
    v, session = view
    session.select_star("2M-A")
    v.fit(sync=True)
    assert v.sliders["TEFF"].value == pytest.approx(v.result.labels["TEFF"], abs=v.sliders["TEFF"].step)
    src = v.figure.overlays["slider"].data_source
    before = np.array(src.data["flux"], dtype=float)
    v.sliders["LOGG"].value = float(HI[1] - 0.01)
    after = np.array(src.data["flux"], dtype=float)
    assert v.figure.overlays["slider"].data_source is src and not np.allclose(before, after, equal_nan=True)
    v._sliders_to_fit()
    assert np.allclose(np.array(src.data["flux"], dtype=float), before, equal_nan=True, atol=1e-5)


def test_drawn_mask_excludes_pixels_from_the_refit(view):
    v, session = view
    session.select_star("2M-C")
    v.fit(sync=True)
    n_before = v.result.n_pix
    lam = v.spectrum.wavelength
    changed = v.mask_range(lam[2000], lam[2999], masked=True)
    assert changed == 1000 and len(v.figure.span_sources["user"].data["x0"]) == 1
    v.fit(sync=True)
    assert v.result.n_pix == n_before - 1000
    assert not v.result.used[2000:3000].any()
    v.mask_range(lam[2500], lam[2999], masked=False)
    assert v.user_mask.sum() == 500
    table = v.mask_table()
    assert table["user_masked"].sum() == 500 and len(table) == APOGEE_7514.n_pix
    v.reset_mask()
    assert v.user_mask.sum() == 0


def test_element_fit_from_a_line_click_and_exports(view):
    v, session = view
    session.select_star("2M-A")
    v.fit_element("Mg", sync=True)
    assert v.element_result is None and "Fit the star first" in v.status.object
    v.fit(sync=True)
    lines_src = v.figure.lines_src
    lines_src.data = {**{k: [""] for k in lines_src.data}, "x": [15300.0], "element": ["Mg"],
                      "species": ["Mg I"], "label": ["MG_FE"]}
    lines_src.selected.indices = [0]  # a click on the Mg line marker
    deadline = time.time() + 60
    while (v.busy or v.element_result is None) and time.time() < deadline:
        time.sleep(0.05)
    assert lines_src.selected.indices == [] and v.element == "Mg"
    res = v.element_result
    assert res.label == "MG_FE" and res.n_pix <= 4 * 41 and "MG_FE" in v.element_info.object
    assert len(v.figure.window_src.data["x0"]) == 4
    doc = json.loads(v._fit_json().getvalue())
    assert doc["element"]["label"] == "MG_FE" and doc["labels"]["TEFF"] == pytest.approx(
        v.result.labels["TEFF"])
    csv = v._fit_csv().getvalue().decode()
    assert csv.startswith("label,fit,fit_err")
    assert "Ca" not in v.param.element.objects  # the model has no CA_FE label


def test_async_fit_reports_progress_and_finishes(view):
    v, session = view
    session.select_star("2M-B")
    seen = []
    v.progress.param.watch(lambda e: seen.append(e.new), "value")
    v.fit()
    deadline = time.time() + 60
    while v.busy and time.time() < deadline:
        time.sleep(0.05)
    assert not v.busy and v.result is not None
    assert seen and max(seen) == 100
    session.select_star("2M-A")  # a new star clears the old fit
    assert v.result is None and v.table.value.empty


def test_view_without_an_emulator_explains_itself(setup):
    _, store, _ = setup
    session = Session(context=AppContext(store=store))
    session.context.slot("emulator").problem = "no emulator model: train one first"
    v = FitView(focus=session.focus, context=session.context)
    assert v.emulator is None and "no emulator model" in v.model_problem
    session.select_star("2M-A")
    assert v.fit_button.disabled and "no emulator" in v.status.object
    panel = v.__panel__()
    assert isinstance(panel, pn.pane.Alert) and "no emulator model" in panel.object
    emu, _, _ = setup
    session.context.slot("emulator").model = emu  # the app found (or trained) one later
    assert v.emulator is emu and set(v.sliders) == {*NAMES, "RV"}
    assert not v.fit_button.disabled and v.spectrum is not None
    assert v.param.element.objects and v.element == v.param.element.objects[0]
    assert not isinstance(v.__panel__(), pn.pane.Alert)


def test_view_takes_its_emulator_from_the_model_slot(setup):
    """The emulator comes from the app's slot (a predictor wrapping it, or the emulator)."""
    from types import SimpleNamespace

    emu, store, _ = setup
    predictor = SimpleNamespace(emulator=emu, model_dir="/models/emu")
    session = Session(context=AppContext(store=store, models={"emulator": predictor}))
    v = FitView(focus=session.focus, context=session.context)
    assert v.emulator is emu and v.model_dir == "/models/emu"
    assert "--model /models/emu" in (session.select_star("2M-A") and v.cli_command())


def test_command_line_and_mask_export_repeat_the_view_fit(view, setup, tmp_path, capsys):
    """The view shows the CLI command of its fit; with the downloaded mask it gives the same."""
    import json

    from core.cli.main import main
    from core.models.emulator import save_emulator

    emu, store, _ = setup
    v, session = view
    v.model_dir = str(tmp_path / "emu")
    save_emulator(emu, v.model_dir)
    session.select_star("2M-C")
    lam = v.spectrum.wavelength
    v.mask_range(lam[1200], lam[1799])
    v.continuum = "degree 1"
    v.fit(sync=True)
    command = v.cli_command()
    assert f"--store {store.path} --star 2M-C" in command and "--continuum 1" in command
    assert command.endswith(f"--mask {v.mask_download.filename}") and command in v.command.object
    mask_file = tmp_path / v.mask_download.filename
    mask_file.write_bytes(v._mask_csv().getvalue())
    args = command.split()[1:]
    args[args.index("--mask") + 1] = str(mask_file)
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pix"] == v.result.n_pix
    assert out["labels"]["TEFF"] == pytest.approx(v.result.labels["TEFF"], abs=1.0)
    v.fit_element("Mg", sync=True)
    assert "--element Mg" in v.cli_command() and "--element Mg" in v.command.object


def test_mask_files_in_both_layouts_and_bad_ones(tmp_path):
    from core.errors import BadFileError
    from core.fit.usermask import read_user_mask

    lam = APOGEE_7514.wavelength
    flags = np.zeros(lam.size, int)
    flags[[10, 11, 12, 500]] = 1
    per_pixel = tmp_path / "view.csv"
    pd.DataFrame({"wavelength_vac": lam, "user_masked": flags}).to_csv(per_pixel, index=False)
    np.testing.assert_array_equal(read_user_mask(per_pixel, lam), flags.astype(bool))
    ranges = tmp_path / "ranges.csv"
    ranges.write_text(f"# telluric band\nstart,end\n{lam[100]},{lam[109]}\n")
    assert np.flatnonzero(read_user_mask(ranges, lam)).tolist() == list(range(100, 110))
    for text, problem in [("a,b\n1,2\n", "needs columns"), ("start,end\nx,2\n", "numbers"),
                          ("wavelength_vac,user_masked\n1,1\n", "fewer than two")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(BadFileError, match=problem) as info:
            read_user_mask(bad, lam)
        assert str(bad) in str(info.value)
    with pytest.raises(BadFileError, match="no such file"):
        read_user_mask(tmp_path / "missing.csv", lam)


@given(st.binary(max_size=400) | st.lists(
    st.tuples(st.sampled_from(["start", "end", "wavelength_vac", "user_masked", "x"]),
              st.lists(st.one_of(st.floats(allow_nan=True), st.text(max_size=4)), max_size=5)),
    max_size=3).map(lambda cols: "\n".join(
        [",".join(c for c, _ in cols)]
        + [",".join(str(v[i]) if i < len(v) else "" for _, v in cols)
           for i in range(max((len(v) for _, v in cols), default=0))]).encode()))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_mask_file_gives_a_mask_or_a_named_error(tmp_path, raw):
    from core.errors import BadFileError
    from core.fit.usermask import read_user_mask

    path = tmp_path / "fuzz.csv"
    path.write_bytes(raw)
    lam = APOGEE_7514.wavelength
    try:
        mask = read_user_mask(path, lam)
    except BadFileError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert mask.shape == lam.shape and mask.dtype == bool


def test_zoom_presets_frame_chips_and_element_windows(view):
    v, session = view
    session.select_star("2M-A")
    assert set(v.zoom.values) == {"whole", "chip:0", "chip:1", "chip:2", "el:Mg"}  # fittable
    v.zoom.value = "chip:1"
    green = APOGEE_7514.wavelength[APOGEE_7514.chip_slices()[1]]
    assert v.figure.x_range.start == pytest.approx(green[0] - 2)
    v.element = None
    v.zoom.value = "el:Mg"
    assert v.element == "Mg" and len(v.figure.window_src.data["x0"]) == 4
    assert v.figure.x_range.start < v.figure.window_src.data["x0"].min()
    v.zoom.value = "whole"
    assert len(v.figure.window_src.data["x0"]) == 0


def test_an_uploaded_spectrum_is_fitted_and_its_command_names_the_file(view, setup):
    v, session = view
    emu, store, truth = setup
    spec = store.spectrum("2M-B")
    spec.meta.update(SOURCE="/tmp/upload/apStar-dr17-2M-B.fits", APOGEE_ID="2M-B")
    session.show(spec, source="upload")
    assert not v.fit_button.disabled
    v.fit(sync=True)
    assert abs(v.result.rv - 20.0) < 1.0
    assert "--file apStar-dr17-2M-B.fits" in v.cli_command() and "--star" not in v.cli_command()


def test_fit_selection_writes_fit_columns_and_the_catalog_picks_them_up(setup, monkeypatch,
                                                                        tmp_path):
    import shutil

    from core.store import SpectraStore
    from dashboard.state import SelectionState
    from dashboard.views.catalog import CatalogView

    emu, store, truth = setup
    copy = tmp_path / "store"
    shutil.copytree(store.path, copy)
    session = Session(context=AppContext(store=SpectraStore.open(copy),
                                         models={"emulator": emu}))
    assert isinstance(session.selection, SelectionState)
    v = FitView(focus=session.focus, context=session.context, selection=session.selection)
    catalog = CatalogView(focus=session.focus, selection=session.selection,
                          context=session.context)
    v.fit_selection(sync=True)
    assert "Brush stars" in v.status.object
    session.selection.select([0, 2], "box")
    assert v.selection_button.label == "Fit 2 selected"
    version = session.context.catalog_version
    v.fit_selection(sync=True)
    assert "Fitted 2 selected stars" in v.status.object
    assert session.context.catalog_version == version + 1
    cat = SpectraStore.open(copy).catalog
    assert np.isfinite(cat["FIT_TEFF"].iloc[[0, 2]]).all() and np.isnan(cat["FIT_TEFF"].iloc[1])
    assert abs(cat["FIT_RV"].iloc[2] - (-35.0)) < 1.0
    assert "FIT_TEFF" in catalog.param.axes.objects and "FIT_CHI2" in catalog.param.color_by.objects
    monkeypatch.setattr("dashboard.views.fit.MAX_SELECTION_FIT", 1)
    v.fit_selection(sync=True)
    assert "the app fits up to 1" in v.status.object


def test_fit_summary_words_an_unknown_rv_instead_of_printing_nan():
    """A NO_RV_SIGNAL fit has RV NaN: the Fit view says so in words (seen as 'RV = nan ± nan')."""
    from types import SimpleNamespace

    from core.fit.result import FitResult
    from dashboard import fit_report

    def result(rv, err, start):
        r = SimpleNamespace(chi2_nu=1.2, n_pix=7000, rv=rv, rv_err=err, rv_start=start,
                            flag_descriptions=[], n_iter=9)
        r.rv_text = lambda: FitResult.rv_text(r)
        return r

    unknown = fit_report.summary_text(result(float("nan"), float("nan"), float("nan")), False)
    assert "RV unknown" in unknown and "nan" not in unknown.lower()
    known = fit_report.summary_text(result(-1.79, 0.12, -2.0), True)
    assert "RV = -1.79 ± 0.12 km/s" in known and "calibrated" in known
