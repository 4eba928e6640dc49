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
