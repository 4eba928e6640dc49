"""Saving and restoring a dashboard session file (no browser)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dashboard_state import write_store

from core.errors import BadFileError
from dashboard import persist

torch.set_num_threads(1)

OLD_SESSION = Path(__file__).parent / "data" / "session-v1.json"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("session") / "store", n=50, seed=5)


def make_app(store):
    """A whole DashboardApp on the test store with the shipped demo VAE and emulator."""
    from dashboard.app import DashboardApp

    return DashboardApp(store_path=store.path)


@given(st.integers(1, 3000).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), max_size=200))))
@settings(max_examples=50, deadline=None)
def test_row_bitmask_round_trip(case):
    n, rows = case
    packed = persist.pack_rows(np.array(rows, dtype=np.int64), n)
    np.testing.assert_array_equal(persist.unpack_rows(packed, n), np.unique(rows))


def test_bitmask_for_another_store_size_is_refused():
    packed = persist.pack_rows(np.array([1, 2]), 10)
    with pytest.raises(BadFileError, match="covers 10 rows but this store has 11"):
        persist.unpack_rows(packed, 11, "s.json")


def test_session_round_trip_restores_star_tab_selection_and_views(store):
    app = make_app(store)
    if app.context.vae is None or app.context.slot("emulator").model is None:
        pytest.skip("needs the shipped demo VAE and emulator in assets/models")
    star_view, latent_view = app.views["star"], app.views["latent"]
    catalog_view, fit = app.views["catalog"], app.views["fit"]
    star = store.catalog["APOGEE_ID"].iloc[7]
    assert app.session.select_star(star)
    app.session.selection.select([3, 7, 11, 40], "box on TEFF–LOGG")
    star_view.line_elements = ["Mg", "Fe"]
    star_view.zoom = "chip:1"
    catalog_view.axes = ["TEFF", "LOGG", "SNR"]
    catalog_view.color_by = "FE_H"
    latent_view.active = True
    z = np.linspace(-1.5, 1.5, len(latent_view.z_sliders))
    latent_view.set_point(z)
    fit.continuum = "degree 1"
    fit.mask_range(16000.0, 16050.0)
    fit.fit(sync=True)
    app.show_tab("fit")
    raw = persist.dumps(persist.session_document(app))
    assert len(raw) < 20_000
    assert json.loads(raw)["tab"] == "fit"

    fresh = make_app(store)
    notes = persist.apply_session(fresh, persist.read_session(raw, "mine.json"), "mine.json",
                                  sync=True)
    assert notes == []
    assert fresh.session.focus.star_id == star and fresh.tabs.active == 3 and fresh.tab == "fit"
    np.testing.assert_array_equal(fresh.session.selection.rows, [3, 7, 11, 40])
    assert fresh.session.selection.description == "box on TEFF–LOGG"
    assert fresh.views["star"].line_elements == ["Mg", "Fe"]
    assert fresh.views["star"].zoom == "chip:1"
    assert fresh.views["catalog"].axes == ["TEFF", "LOGG", "SNR"]
    assert fresh.views["catalog"].color_by == "FE_H"
    np.testing.assert_allclose(fresh.views["latent"].point[0], z, atol=0.02)  # slider steps
    assert fresh.views["fit"].continuum == "degree 1"
    assert fresh.views["fit"].mask_ranges() == fit.mask_ranges()
    assert fresh.views["fit"].result is not None  # the saved fit was redone
    assert fresh.views["fit"].result.n_pix == fit.result.n_pix
    # the latent view, shown later, keeps the restored point rather than the star's encoding
    fresh.views["latent"].active = True
    np.testing.assert_allclose(fresh.views["latent"].point[0], z, atol=0.02)


def test_a_session_file_saved_before_named_tabs_still_restores(store):
    """tests/data/session-v1.json: written by the app before views declared session_params
    (version 1, tab number 3, every view's settings, a drawn mask and a fit)."""
    saved = json.loads(OLD_SESSION.read_text())
    assert saved["version"] == 1 and saved["tab"] == 3
    app = make_app(store)
    if app.context.vae is None or app.context.slot("emulator").model is None:
        pytest.skip("needs the shipped demo VAE and emulator in assets/models")
    notes = persist.apply_session(app, persist.read_session(OLD_SESSION.read_bytes(),
                                                            OLD_SESSION.name),
                                  OLD_SESSION.name, sync=True)
    assert notes == [f"saved with store {saved['store']['path']}; restored into {store.path}"]
    assert app.session.focus.star_id == saved["star"] == store.catalog["APOGEE_ID"].iloc[7]
    assert app.tab == "fit" and app.tabs.active == 3
    np.testing.assert_array_equal(app.session.selection.rows, [3, 7, 11, 40])
    app.show_tab("catalog")  # its first visit keeps the restored selection
    np.testing.assert_array_equal(app.session.selection.rows, [3, 7, 11, 40])
    assert "**4** of 50 stars selected: box on TEFF–LOGG" in app.views["catalog"].count.object
    for name in ("star", "catalog"):
        assert persist.view_state(app.views[name]) == saved["views"][name]
    latent = persist.view_state(app.views["latent"])
    assert latent["diff_against"] == saved["views"]["latent"]["diff_against"]
    np.testing.assert_allclose(latent["z"], saved["views"]["latent"]["z"], atol=0.006)
    fit = persist.view_state(app.views["fit"])
    old_fit = saved["views"]["fit"]
    assert {k: fit[k] for k in ("continuum", "fit_rv", "element", "mask_mode", "fitted")} == \
        {k: old_fit[k] for k in ("continuum", "fit_rv", "element", "mask_mode", "fitted")}
    np.testing.assert_allclose(fit["user_mask_ranges"], old_fit["user_mask_ranges"], atol=0.5)
    # saved again, it is a version-2 file naming its tab, and restores the same way
    again = persist.read_session(persist.dumps(persist.session_document(app)), "again.json")
    assert again["version"] == persist.VERSION == 2 and again["tab"] == "catalog"
    assert again["views"]["star"] == saved["views"]["star"]


def test_non_finite_and_mistyped_view_values_are_refused_with_a_note(store):
    app = _shared_app(store)
    before = persist.view_state(app.views["star"])
    raw = (b'{"format": "stellarscope-session", "version": 2, "tab": "star", "views": {'
           b'"star": {"zoom": NaN, "line_elements": "Mg", "residual_mode": 3},'
           b'"latent": {"z": [Infinity, 0.0]}, "nowhere": {}}}')
    notes = persist.apply_session(app, persist.read_session(raw, "odd.json"), "odd.json")
    text = " | ".join(notes)
    assert "star view: zoom: holds NaN or Infinity, not restored" in text
    assert "star view: line_elements: 'Mg' refused" in text
    assert "star view: residual_mode: 3 not offered here" in text
    assert "latent view: z: holds NaN or Infinity, not restored" in text
    assert "nowhere view settings skipped (no such view here)" in text
    assert persist.view_state(app.views["star"]) == before
    with pytest.raises(BadFileError, match="'tab' should be str"):
        persist.read_session(b'{"format": "stellarscope-session", "version": 2, "tab": 3}', "t.json")
    with pytest.raises(BadFileError, match="'tab' should be int"):
        persist.read_session(b'{"format": "stellarscope-session", "version": 1, "tab": "x"}', "t.json")


def test_restore_reports_what_it_cannot_restore(store, tmp_path):
    app = make_app(store)
    doc = persist.session_document(app)
    doc.update(star="2M99999999+9999999", selection=persist.pack_rows(np.array([1]), 999))
    doc["views"]["star"] = {"line_elements": ["Mg", "Unobtainium"], "zoom": "nowhere"}
    notes = persist.apply_session(app, json.loads(persist.dumps(doc)), "old.json")
    text = " | ".join(notes)
    assert "2M99999999+9999999 is not in this store" in text
    assert "covers 999 rows" in text and "Unobtainium" in text and "nowhere" in text
    assert app.views["star"].line_elements == ["Mg"]


@pytest.mark.parametrize("raw, problem", [
    (b"\x00\xff not json", "not a JSON file"),
    (b"[1, 2]", "not a Stellarscope session"),
    (b'{"format": "something-else"}', "not a Stellarscope session"),
    (b'{"format": "stellarscope-session", "version": 99}', "newer than"),
    (b'{"format": "stellarscope-session", "version": 1, "tab": "two"}', "'tab' should be int"),
    (b'{"format": "stellarscope-session", "version": 2, "star": ["x"]}', "'star' should be str"),
])
def test_bad_session_files_are_named_and_explained(raw, problem):
    with pytest.raises(BadFileError, match=problem) as info:
        persist.read_session(raw, "upload.json")
    assert str(info.value).startswith("upload.json: ")


def test_oversized_session_file_is_refused():
    with pytest.raises(BadFileError, match="over the 16 MB limit"):
        persist.read_session(b" " * (persist.MAX_BYTES + 1), "huge.json")


def test_session_upload_widget_restores_and_notifies(store):
    app = make_app(store)
    star = store.catalog["APOGEE_ID"].iloc[2]
    app.session.select_star(star)
    raw = persist.dumps(persist.session_document(app))
    fresh = make_app(store)
    fresh.session_upload.filename = "saved.json"
    fresh.session_upload.value = raw
    assert fresh.session.focus.star_id == star
    assert "saved.json restored" in fresh.context.message
    fresh.session_upload.filename = "broken.json"
    fresh.session_upload.value = b"{broken"
    assert fresh.context.message_kind == "error" and "broken.json" in fresh.context.message
    assert fresh.session.focus.star_id == star  # nothing changed


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=20)


@given(st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["star", "tab", "views", "version", "selection", "store"]),
                    json_values, max_size=6).map(
        lambda d: json.dumps({"format": "stellarscope-session", "version": 1, **d}).encode()),
))
@settings(max_examples=150, deadline=None)
def test_any_session_bytes_parse_or_give_a_named_error(raw):
    try:
        doc = persist.read_session(raw, "fuzz.json")
    except BadFileError as exc:
        assert str(exc).startswith("fuzz.json: ")
    else:
        assert doc["format"] == "stellarscope-session"


SESSION_KEYS = ["star", "tab", "views", "selection", "store", "uploaded_star", "subsets"]


@given(st.dictionaries(st.sampled_from(SESSION_KEYS), json_values | st.dictionaries(
    st.sampled_from(["path", "n_rows", "bitmask", "star", "latent", "fit", "catalog", "items",
                     "shown", "table"]),
    json_values, max_size=4), max_size=6))
@settings(max_examples=150, deadline=None)
def test_restoring_odd_documents_never_crashes(store, fields):
    """Whatever a (checked) session file holds, restoring gives notes or a named error."""
    doc = {"format": "stellarscope-session", "version": 1, **fields}
    app = _shared_app(store)
    try:
        notes = persist.apply_session(app, persist.read_session(json.dumps(doc).encode(), "odd.json"),
                                      "odd.json")
    except BadFileError as exc:
        assert str(exc).startswith("odd.json: ")
    else:
        assert isinstance(notes, list)


_APPS = {}


def _shared_app(store):
    if store.path not in _APPS:  # one app for all examples: building one takes a second
        _APPS[store.path] = make_app(store)
    return _APPS[store.path]


def test_a_session_file_with_nan_or_infinity_is_refused_whole(store):
    app = _shared_app(store)
    star = store.catalog["APOGEE_ID"].iloc[4]
    app.session.select_star(store.catalog["APOGEE_ID"].iloc[1])
    app.tab = "star"  # the shared app may be on any tab after earlier tests
    before = persist.view_state(app.views["star"])
    for bad, where in ((b'"latent": {"z": [0.5, NaN]}', "views.latent.z[1]"),
                       (b'"star": {"zoom_window": Infinity}', "views.star.zoom_window"),
                       (b'"star": {"zoom": "whole", "x": -Infinity}', "views.star.x")):
        raw = (b'{"format": "stellarscope-session", "version": 2, "tab": "latent", "star": "'
               + star.encode() + b'", "views": {' + bad + b'}}')
        app.session_upload.filename = "odd.json"
        app.session_upload.value = raw
        assert app.context.message_kind == "error"
        assert app.context.message == (f"odd.json: holds NaN or Infinity (in {where}); a session "
                                       "file holds only finite numbers, so nothing was restored")
        assert app.session.focus.star_id != star and app.tab != "latent"  # nothing restored
        assert persist.view_state(app.views["star"]) == before
        app.session_upload.value = b""  # the widget sends the next file as a new value
    with pytest.raises(BadFileError, match="holds NaN"):
        persist.refuse_non_finite({"selection": {"n_rows": float("nan")}}, "s.json")
    persist.refuse_non_finite({"views": {"latent": {"z": [0.0, 1e300]}}}, "s.json")  # finite


def test_an_element_window_zoom_is_saved_and_restored(store):
    app = _shared_app(store)
    star_view = app.views["star"]
    if star_view._windows is None or not (star_view._windows["element"] == "Mg").any():
        pytest.skip("no element windows")
    star_view.zoom = "el:Mg"
    star_view.step_window(1)
    star_view.step_window(1)
    doc = json.loads(persist.dumps(persist.session_document(app)))
    assert doc["views"]["star"]["zoom"] == "el:Mg" and doc["views"]["star"]["zoom_window"] == 2
    star_view.zoom = "whole"
    notes = persist.apply_session(app, doc, "w.json")
    assert not [n for n in notes if "star view" in n], notes
    assert star_view.zoom == "el:Mg" and star_view.zoom_window == 2
    assert "window 3 of" in star_view.window_label.object
    doc["views"]["star"]["zoom_window"] = "three"
    notes = persist.apply_session(app, doc, "w.json")
    assert "star view: zoom_window: 'three' is not a window number" in notes


# -- named subsets ----------------------------------------------------------------------------


def test_subsets_are_saved_by_expression_and_re_evaluated_on_restore(store):
    app = make_app(store)
    catalog = app.views["catalog"]
    cool = catalog.add_subset("TEFF < 4600", "cool")
    catalog.add_subset("LOGG < 2", "giants")
    catalog.add_subset("cool & ~giants", "cool_dwarfs")
    catalog.show_choice.value = ["cool", "cool_dwarfs"]
    catalog.table_choice.value = "cool_dwarfs"
    catalog.range_inputs["SNR"].value = ">100"
    doc = json.loads(persist.dumps(persist.session_document(app)))
    assert doc["subsets"] == {
        "items": [{"name": "cool", "expression": "TEFF < 4600"},
                  {"name": "giants", "expression": "LOGG < 2"},
                  {"name": "cool_dwarfs", "expression": "cool & ~giants"}],
        "shown": ["cool", "cool_dwarfs"], "table": "cool_dwarfs"}

    fresh = make_app(store)
    notes = persist.apply_session(fresh, persist.read_session(json.dumps(doc).encode()), "s.json")
    assert notes == []
    state = fresh.session.subsets
    assert [s.name for s in state.subsets] == ["cool", "giants", "cool_dwarfs"]
    assert state.shown == ["cool", "cool_dwarfs"] and state.table == "cool_dwarfs"
    np.testing.assert_array_equal(state.get("cool").mask, cool.mask)
    cat = store.catalog
    np.testing.assert_array_equal(state.get("cool_dwarfs").mask,
                                  (cat.TEFF < 4600) & ~(cat.LOGG < 2))
    view = fresh.views["catalog"]  # the view shows what was restored
    assert "<b>cool_dwarfs</b>" in view.subset_legend.object
    assert len(view.table.value) == state.get("cool_dwarfs").count
    assert view.range_inputs["SNR"].value == ">100" and view.range_filters["SNR"] == ">100"
    shown = ((cat.TEFF < 4600) & ~(cat.LOGG < 2) & (cat.SNR > 100)).sum()
    assert len(view.table.current_view) == shown and f"**{shown:,}**" in view.table_title.object
    # a session saved without subsets clears them
    bare = persist.session_document(make_app(store))
    assert bare["subsets"] is None
    persist.apply_session(fresh, bare, "bare.json")
    assert fresh.session.subsets.subsets == [] and view.subset_legend.object == ""


def test_bad_saved_subsets_are_refused_with_a_plain_note(store):
    app = _shared_app(store)
    saved = {"items": [
        {"name": "ok", "expression": "TEFF > 4000"},
        {"name": "gone", "expression": "VAE_Z99 > 1"},          # a column this store lacks
        {"name": "on_gone", "expression": "gone & ok"},          # built on a refused one
        {"name": "evil", "expression": "__import__('os').system('true') == 0"},
        {"name": "TEFF", "expression": "LOGG < 2"},              # a column's name
        {"name": "ok", "expression": "LOGG < 2"},                # taken
        {"expression": "LOGG < 2"}, "not an object",
    ], "shown": ["ok", "gone", 7], "table": "gone"}
    notes = persist.restore_subsets(app.session.subsets, saved, store.catalog)
    text = " | ".join(notes)
    assert "subset 'gone' (VAE_Z99 > 1) not restored: unknown column or subset 'VAE_Z99'" in text
    assert "'on_gone' (gone & ok) not restored: unknown column or subset 'gone'" in text
    assert "'evil'" in text and "'TEFF'" in text and "already a subset named 'ok'" in text
    assert "subset 7: not restored (needs a name and an expression)" in text
    assert "subset 8: not restored" in text and len(notes) == 7
    state = app.session.subsets
    assert [s.name for s in state.subsets] == ["ok"] and state.shown == ["ok"]
    assert state.table == ""
    assert persist.restore_subsets(state, ["not", "a", "dict"], store.catalog) == [
        "subsets: not restored (the saved list is unreadable)"]
    with pytest.raises(BadFileError, match="'subsets' should be dict or null"):
        persist.read_session(b'{"format": "stellarscope-session", "version": 2, '
                             b'"subsets": [1]}', "s.json")
    persist.restore_subsets(state, {"items": []}, store.catalog)
    catalog = app.views["catalog"]
    notes = persist.restore_view(catalog, {"range_filters": {"TEFF": ">4000", "NOPE": "1",
                                                             "LOGG": 5}})
    assert notes == ["range filter on 'NOPE' not restored", "range filter on 'LOGG' not restored"]
    assert catalog.range_filters == {"TEFF": ">4000"} and catalog.range_inputs["TEFF"].value == ">4000"
    assert persist.restore_view(catalog, {"range_filters": "x"}) == [
        "range_filters: not restored (not a JSON object)"]
    persist.restore_view(catalog, {})  # saved without range filters: none
    assert catalog.range_filters == {} and catalog.range_inputs["TEFF"].value == ""
