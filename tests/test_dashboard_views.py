"""Dashboard views and the serve command, exercised in-process (no browser)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_dashboard_state import P, TinyVAE, write_store

from core.cli import serve as serve_cli
from core.cli.main import main as cli_main
from dashboard.figures.lines import line_label, pick_labels
from dashboard.state import AppContext, Session
from dashboard.views.catalog import CatalogView
from dashboard.views.latent import LatentView
from dashboard.views.star import StarView


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("views") / "store", n=60, seed=3)


@pytest.fixture
def session(store):
    return Session(context=AppContext(store=store, models={"vae": TinyVAE()}))


def test_star_view_swaps_data_in_place(session, store):
    view = StarView(focus=session.focus, context=session.context)
    fig, src = view.spec_fig, view.figure.spec_src
    assert view.empty.visible and view.csv_download.disabled
    session.select_star(0)
    first = np.array(src.data["flux"], copy=True)
    assert len(first) == P + 2 and not view.empty.visible
    assert view.figure.mask_src.data["x0"].size == 2  # the two masked runs of every test star
    session.select_star(1)
    assert view.spec_fig is fig and view.figure.spec_src is src
    assert not np.allclose(np.nan_to_num(src.data["flux"]), np.nan_to_num(first))
    assert store.catalog["APOGEE_ID"].iloc[1] in fig.title.text and "mock survey" in fig.title.text


def test_reconstruction_toggle_shows_the_residual_panel(session):
    view = StarView(focus=session.focus, context=session.context)
    session.select_star(2)
    assert view.param.overlays.objects == ["VAE reconstruction"] and not view.res_fig.visible
    assert list(view.overlay_buttons.options) == ["VAE reconstruction"]
    view.overlays = ["VAE reconstruction"]
    assert view.res_fig.visible and view.figure.overlays["VAE reconstruction"].visible
    assert "χ²_ν" in view.res_fig.title.text
    res_src = view.figure.residual_curves["residual"].data_source
    pull = np.array(res_src.data["y"])
    view.residual_mode_buttons.value = "data − model"  # through the widget bound to the param
    assert view.residual_mode == "data − model"
    assert view.res_fig.yaxis.axis_label == "data − model"
    assert not np.allclose(np.nan_to_num(res_src.data["y"]), np.nan_to_num(pull))
    view.overlays = []
    assert not view.res_fig.visible


def test_models_from_other_views_become_overlays(session):
    view = StarView(focus=session.focus, context=session.context)
    session.select_star(3)
    session.focus.add_model("Emulator fit", session.focus.spectrum.flux * 0 + 1,
                            {"Emulator χ²_ν": 2.0})
    assert "Emulator fit" in view.param.overlays.objects
    view.overlays = ["Emulator fit", "VAE reconstruction"]
    assert view.residual_of_select.visible and view.residual_of == "Emulator fit"
    assert "Emulator χ²_ν" in list(view.table.value["quantity"])


def test_zoom_presets_and_line_filters(session):
    view = StarView(focus=session.focus, context=session.context)
    session.select_star(0)
    view.apply_zoom("chip:1")
    assert 15850 < view.x_range.start < view.x_range.end < 16450
    if view._lines is None:
        pytest.skip(f"no line list: {view._lines_problem}")
    lines_src = view.figure.lines_src
    n_all = len(lines_src.data["x"])
    view.line_elements = ["Fe"]
    assert 0 < len(lines_src.data["x"]) < n_all
    els = [e for e in view.zoom_select.groups.get("Element windows", {}).values()]
    if els:
        view.apply_zoom(els[0])
        assert len(view.figure.window_src.data["x0"]) > 0
    name = view.goto_line.options[0]
    view.goto_line.value = name
    wl = float(name.rsplit(" ", 1)[1])
    assert view.x_range.start < wl < view.x_range.end and view.x_range.end - view.x_range.start < 30
    assert len(view.figure.labels_src.data["x"]) <= 60


def test_pick_labels_keeps_strong_lines_apart():
    x = np.array([100.0, 100.5, 105.0, 200.0])
    rank = np.array([1.0, 5.0, 2.0, 9.0])
    assert list(pick_labels(x, rank, 90, 150, sep=0.02)) == [1, 2]
    assert list(pick_labels(x, rank, 0, 300, sep=0.001, maxn=2)) == [3, 1]
    assert line_label({"kind": "hydrogen", "note": "Brackett 11-4 (Br11); x", "species": "H I"}) \
        == "Br11"


def test_latent_sliders_decode_live_and_reset(session):
    view = LatentView(focus=session.focus, context=session.context)
    assert len(view.z_sliders) == TinyVAE.n_latent and len(view.y_sliders) == 3
    session.select_star(4)
    enc = session.focus.encoding
    z, y = view.point
    np.testing.assert_allclose(z, np.clip(enc["mu"], -4, 4), atol=0.006)
    before = np.array(view.dec_src.data["flux"], copy=True)
    count = view.decode_count
    view.z_sliders[0].value = float(np.clip(z[0] + 1.0, -4, 4))
    assert view.decode_count == count + 1
    assert not np.allclose(np.nan_to_num(view.dec_src.data["flux"]), np.nan_to_num(before))
    view.zero()
    assert np.all(view.point[0] == 0)
    view.sample_prior()
    assert np.any(view.point[0] != 0)
    view.reset_to_star()
    np.testing.assert_allclose(view.point[0], np.clip(enc["mu"], -4, 4), atol=0.006)
    images = [s.data["image"] for s in view.sens_srcs]
    assert all(len(i) == 1 and i[0].shape[0] == TinyVAE.n_latent for i in images)


def test_latent_view_without_a_vae_says_so(store):
    session = Session(context=AppContext(store=store))
    view = LatentView(focus=session.focus, context=session.context)
    assert view.message.visible and "VAE" in view.message.object and not view.z_sliders


def test_catalog_box_selection_filters_table_and_opens_stars(session, store):
    view = CatalogView(focus=session.focus, selection=session.selection, context=session.context)
    view.axes = ["TEFF", "LOGG", "FE_H"]
    view.ensure_built()
    images = [p for p in view.plot.panels.values() if p["y"] is not None]
    assert len(images) == 3 and len(view.plot.panels) == 6
    assert "No selection" in view.count.object
    view.select_box("TEFF", "LOGG", (4200, 5000, 1.5, 3.0))
    cat = store.catalog
    expected = ((cat.TEFF >= 4200) & (cat.TEFF <= 5000) & (cat.LOGG >= 1.5) & (cat.LOGG <= 3)).sum()
    assert session.selection.count == expected == len(view.table.value)
    assert f"**{expected:,}** of 60" in view.count.object
    assert all(len(p["sel"].data["image"]) == 1 for p in images)
    view.mode = "new shape narrows"
    view.select_box("FE_H", None, (-0.2, 1.0))
    narrowed = ((cat.TEFF >= 4200) & (cat.TEFF <= 5000) & (cat.LOGG >= 1.5) & (cat.LOGG <= 3)
                & (cat.FE_H >= -0.2) & (cat.FE_H <= 1.0)).sum()
    assert session.selection.count == narrowed
    star = view.open_nearest("TEFF", "LOGG", 4600, 2.2)
    assert session.focus.star_id == star and store.row_of(star) in session.selection.rows
    assert len(images[0]["focus"].data["x"]) == 1
    view.table.selection = [0]
    assert session.focus.star_id == view.table.value["APOGEE_ID"].iloc[0]
    view.clear_selection()
    assert not session.selection.active and len(view.table.value) == 60


def test_catalog_colour_by_mean_and_rebuild(session):
    view = CatalogView(focus=session.focus, selection=session.selection, context=session.context)
    view.ensure_built()
    view.axes = ["TEFF", "LOGG"]
    view.color_by = "FE_H"
    panel = view.plot.panels[("TEFF", "LOGG")]
    assert view.plot.color == "FE_H" and len(panel["base"].data["image"]) == 1


def test_serve_command_line():
    cmd = serve_cli.panel_command(5010, "127.0.0.1")
    assert cmd[1:4] == ["-m", "panel", "serve"] and cmd[4].endswith("dashboard/app.py")
    assert "--allow-websocket-origin" not in cmd and cmd[cmd.index("--port") + 1] == "5010"
    assert "--allow-websocket-origin" in serve_cli.panel_command(5010, "0.0.0.0")


def test_serve_refuses_a_missing_store(tmp_path, capsys):
    assert cli_main(["serve", "--store", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_app_builds_with_every_tab(store, monkeypatch, tmp_path):
    from dashboard.app import DashboardApp

    monkeypatch.setattr("core.paths.SHIPPED_MODELS", tmp_path)  # no shipped demo models
    app = DashboardApp(store_path=store.path)
    assert [app.tabs._names[i] for i in range(5)] == ["Star", "Latent space", "Catalog", "Fit",
                                                       "Attention"]
    assert app.context.store is not None and app.context.is_mock
    assert app.context.vae is None and "VAE" in app.context.slot("vae").problem
    app.show_tab("catalog")
    assert app.tabs.active == 2 and app.views["catalog"].built
    assert app.session.random_star()


def test_hidden_latent_view_waits_until_shown(session):
    view = LatentView(focus=session.focus, context=session.context, active=False)
    count = view.decode_count
    session.select_star(7)
    assert view.decode_count == count
    view.active = True
    assert view.decode_count == count + 1
    assert view.z_sliders[0].label.startswith("z00 (σ ")
    np.testing.assert_allclose(view.point[0], np.clip(session.focus.encoding["mu"], -4, 4),
                               atol=0.006)


def test_shipped_demo_vae_drives_the_views(store):
    from core.paths import SHIPPED_MODELS
    from dashboard.data import load_model

    if not (SHIPPED_MODELS / "vae-demo" / "config.json").is_file():
        pytest.skip("no shipped demo VAE in assets/models/vae-demo yet")
    import torch

    torch.set_num_threads(1)
    vae, where, problem = load_model("vae")
    assert problem == "" and where.endswith("vae-demo")
    session = Session(context=AppContext(store=store, models={"vae": vae}))
    view = LatentView(focus=session.focus, context=session.context)
    session.select_star(0)
    assert session.focus.models["VAE reconstruction"].shape == (P,)
    assert len(view.z_sliders) == vae.n_latent and view.sens_srcs[0].data["image"]


def test_line_list_download_follows_the_filters(session):
    view = StarView(focus=session.focus, context=session.context)
    if view._lines is None:
        pytest.skip(f"no line list: {view._lines_problem}")
    view.line_elements = ["Mg"]
    shown = pd.read_csv(view._lines_csv(), comment="#")
    assert len(shown) > 0 and set(shown["element"]) == {"Mg"}


def test_app_without_a_store_explains_itself(tmp_path):
    from dashboard.app import DashboardApp

    app = DashboardApp(store_path=tmp_path / "missing-store")
    assert app.context.store is None and "stellarscope demo" in app.context.store_problem
    assert not app.views["catalog"].available and app.picker.random_button.disabled
    assert not app.session.select_star("2M00000000+0000000")
    assert "missing-store" in app.context.message


def test_axis_titles_of_fit_columns():
    from dashboard.views.catalog import axis_label

    assert axis_label("FIT_TEFF") == "fit " + axis_label("TEFF")
    assert axis_label("FIT_RV") == "FIT_RV"  # not a stellar label: its own name


# -- Star view: y-range, overlays, element windows; catalog → Star view; exports; messages --


def test_flux_range_keeps_line_cores_but_not_a_dead_pixel():
    from dashboard.spectra import flux_range, robust_range

    rng = np.random.default_rng(1)
    flux = 1 + 0.01 * rng.standard_normal(7514)
    flux[3000:3003] = [0.35, 0.2, 0.3]  # a three-pixel line core
    flux[5000] = -4.0  # a dead pixel nobody masked
    assert robust_range(flux)[0] > 0.2  # percentiles clip the core
    lo, hi = flux_range(flux)
    assert -0.1 < lo < 0.3 and 1.0 < hi < 1.2


def test_star_view_keeps_line_cores_and_draws_overlays_under_the_data(session):
    view = StarView(focus=session.focus, context=session.context)
    session.select_star(4)
    spec = session.focus.spectrum
    good = ~spec.bad()
    core = np.min(np.fmax(spec.flux[:-1], spec.flux[1:])[good[:-1] & good[1:]])
    assert view.spec_fig.y_range.start <= core < view.spec_fig.y_range.end
    view.overlays = ["VAE reconstruction"]
    renderers = list(view.spec_fig.renderers)
    overlay = view.figure.overlays["VAE reconstruction"]
    assert renderers.index(overlay) < renderers.index(view.figure.flux_renderer)
    assert overlay.glyph.line_alpha < 1 and overlay.visible


def test_element_zoom_steps_through_windows(session):
    view = StarView(focus=session.focus, context=session.context)
    session.select_star(0)
    windows = view._windows
    if windows is None or not (windows["element"] == "Mg").any():
        pytest.skip("no element windows")
    mg = windows[windows["element"] == "Mg"].sort_values("start_vac")
    view.zoom = "el:Mg"
    first = (view.x_range.start, view.x_range.end)
    assert first[0] < mg["start_vac"].iloc[0] < mg["end_vac"].iloc[0] < first[1]
    assert first[1] - first[0] < 60  # one window, not the whole span of Mg windows
    assert len(view.figure.window_src.data["x0"]) == len(mg)  # all shaded
    assert view.next_window.visible and f"window 1 of {len(mg)}" in view.window_label.object
    view.next_window.clicks += 1
    assert view.zoom_window == 1 and f"window 2 of {len(mg)}" in view.window_label.object
    assert view.x_range.start < mg["start_vac"].iloc[1] < view.x_range.end
    view.step_window(-1)
    view.step_window(-1)  # wraps to the last
    assert view.zoom_window == len(mg) - 1
    assert view.x_range.start < mg["end_vac"].iloc[-1] < view.x_range.end
    view.zoom = "el:Fe"  # another element starts at its first window
    assert view.zoom_window == 0 and "**Fe** window 1 of" in view.window_label.object
    view.zoom = "chip:1"
    assert not view.next_window.visible and not view.window_label.visible


def test_fits_export_has_units_and_records_the_models(session):
    import io

    from astropy.io import fits

    view = StarView(focus=session.focus, context=session.context)
    session.select_star(5)
    session.context.slot("vae").where = "/models/vae-demo"
    with fits.open(io.BytesIO(view._fits().read())) as hdul:
        head, table = hdul[0].header, hdul["SPECTRUM"].header
        names = [table[f"TTYPE{i}"] for i in range(1, table["TFIELDS"] + 1)]
        units = {table[f"TTYPE{i}"]: table[f"TUNIT{i}"] for i in range(1, table["TFIELDS"] + 1)}
        assert names[:3] == ["wavelength_vac", "flux", "error"]
        assert units["wavelength_vac"] == "Angstrom" and "vae_reconstruction" in units
        assert head["MODELS"] == "VAE reconstruction" and head["MODEL1"] == "VAE reconstruction"
        assert "vae-demo" in head["MODSRC1"] and head["ORIGIN"] == "Stellarscope"


def test_catalog_click_opens_the_star_in_the_star_view(store, monkeypatch, tmp_path):
    from dashboard.app import DashboardApp

    monkeypatch.setattr("core.paths.SHIPPED_MODELS", tmp_path)
    app = DashboardApp(store_path=store.path)
    app.show_tab("catalog")
    catalog = app.views["catalog"]
    star = catalog.open_nearest("TEFF", "LOGG", 4600, 2.2)
    assert app.session.focus.star_id == star and app.tab == "star" and app.tabs.active == 0
    app.show_tab("catalog")
    catalog.table.selection = [3]
    assert app.session.focus.star_id == catalog.table.value["APOGEE_ID"].iloc[3]
    assert app.tab == "star"


def test_unknown_star_is_one_message_without_server_paths(store, monkeypatch, tmp_path):
    from dashboard.app import DashboardApp, user_message

    monkeypatch.setattr("core.paths.SHIPPED_MODELS", tmp_path)
    app = DashboardApp(store_path=store.path)
    app.session.focus.star_id = "NOPE"  # as ?star=NOPE arrives from the URL
    assert not app.session.select_star("NOPE")
    errors = [text for kind, text in app.messages if kind == "error"]
    assert len(errors) == 1 and "NOPE" in errors[0], app.messages
    assert str(store.path) not in errors[0] and "test store" in errors[0]
    # an error that is not ours is named plainly; its text stays in the server's log
    text = user_message(TypeError("unsupported operand type(s) for +: 'int' and 'str'"))
    assert "operand" not in text and "TypeError" not in text and "log" in text
    assert user_message(KeyError("k")) == text


def test_a_rejected_upload_is_not_shown_as_loaded(session):
    import time

    from dashboard.views.upload import StarPicker

    picker = StarPicker(session=session)
    first = picker.upload
    first.value = {"notes.txt": b"hello"}
    deadline = time.monotonic() + 30
    while "Not loaded" not in picker.upload_status.object and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Not loaded" in picker.upload_status.object and "notes.txt" in picker.upload_status.object
    assert picker.upload is not first and picker.upload_box.objects == [picker.upload]
    assert not picker.upload.value  # a fresh dropper: nothing shown as uploaded
    assert session.context.message.startswith("Upload rejected: notes.txt")
    picker._upload_failed(TypeError("'NoneType' object is not subscriptable"))
    assert "NoneType" not in picker.upload_status.object


def test_the_search_box_follows_the_focus_and_clears_for_an_upload(session):
    from dashboard.views.upload import StarPicker

    picker = StarPicker(session=session)
    assert session.select_star(2)
    star = session.focus.star_id
    assert picker.search.value == star
    upload = session.focus.spectrum.copy(meta={"APOGEE_ID": "UPLOAD-1"})
    session.show(upload, source="upload")
    assert session.focus.star_id == "" and picker.search.value == ""
    assert session.focus.spectrum is upload      # clearing the box selected nothing
    assert session.select_star(star) and picker.search.value == star


def test_star_view_warns_when_the_vae_does_not_apply(tmp_path):
    """Percentiles from the VAE columns this model wrote in the store; a normal star shows no
    warning, an upload with lines eight times deeper (latents and χ²_ν far out) does."""
    store = write_store(tmp_path / "store", n=30, seed=5)
    vae = TinyVAE()
    vae.model_dir = str(tmp_path / "tiny-vae")  # no config.json: the store's columns are used
    session = Session(context=AppContext(store=store, models={"vae": vae}))
    view = StarView(focus=session.focus, context=session.context)
    chi2, mu = [], []
    for i in range(len(store)):
        session.select_star(i)
        assert not view.applicability.visible  # no reference yet: nothing said
        chi2.append(session.focus.outputs["VAE χ²_ν"])
        mu.append(session.focus.encoding["mu"])
    mu = np.array(mu)
    cols = {"VAE_CHI2": np.array(chi2), **{f"VAE_Z{k:02d}": mu[:, k] for k in range(4)}}
    store.add_columns(cols, note={"model": vae.model_dir})  # as `stellarscope infer vae` does

    session.select_star(3)
    assert session.focus.outputs["VAE χ²_ν"] == pytest.approx(chi2[3])
    assert not view.applicability.visible and view.applicability_reasons() == []
    normal = session.focus.spectrum
    odd = normal.copy(flux=(1.0 - 8.0 * (1.0 - normal.flux)).astype(np.float32),
                      meta={"APOGEE_ID": "UPLOAD-1"})
    session.show(odd, source="upload", **session.model_outputs(odd))
    assert view.applicability.visible
    text = view.applicability.object
    assert "outside the VAE's training distribution" in text
    assert "VAE χ²_ν" in text and "99.9th percentile" in text and "latent z0" in text
    session.select_star(4)
    assert not view.applicability.visible


def test_fit_view_warns_when_the_emulator_does_not_apply(tmp_path, monkeypatch):
    """No percentiles known: MODEL_MISMATCH (χ²_ν > 3) decides; a star the emulator made fits
    without a warning, one with a strong ripple added gets one naming its χ²_ν."""
    import torch
    from toy_emulator import spectrum_like_store

    from core.store import SpectraStore
    from dashboard import data
    from dashboard.views.fit import FitView

    torch.set_num_threads(1)
    emu, _ = spectrum_like_store(tmp_path / "store", ["2M-A", "2M-B"], [0.0, 10.0])
    monkeypatch.setattr(data, "element_windows", lambda: pd.DataFrame(
        columns=["element", "species", "start_vac", "end_vac"]))
    store = SpectraStore.open(tmp_path / "store")
    session = Session(context=AppContext(store=store, models={"emulator": emu}))
    v = FitView(focus=session.focus, context=session.context)
    page = v.__panel__()
    assert v.applicability in list(page[0])  # beside the fit's summary
    session.select_star("2M-A")
    v.fit(sync=True)
    assert v.result.chi2_nu < 3 and not v.applicability.visible
    spec = session.focus.spectrum
    ripple = 0.2 * np.sin(spec.wavelength / 3.0)
    odd = spec.copy(flux=(spec.flux + ripple).astype(np.float32), meta={"APOGEE_ID": "UPLOAD-2"})
    session.show(odd, source="upload")
    assert not v.applicability.visible  # not fitted yet
    v.fit(sync=True)
    assert v.result.chi2_nu > 3 and v.applicability.visible
    assert f"fit χ²_ν {v.result.chi2_nu:.0f}" in v.applicability.object.replace("−", "-")
    assert "MODEL_MISMATCH" in v.applicability.object
