"""Cheap sessions (no browser): a page builds only the tab it shows, and what is not per user
(catalog frame, IDs, axis columns, table frame, corner aggregates) is built once per process
and shared by every session, until the store is rewritten."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from test_dashboard_state import write_store

from dashboard import corner, data


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("sessions") / "store", n=40, seed=5)


def make_app(store, **kw):
    from dashboard.app import DashboardApp

    return DashboardApp(store_path=store.path, **kw)


def test_a_new_page_builds_only_its_first_tab(store):
    app = make_app(store)
    assert app.tab == "star" and list(app.views.built) == ["star"]
    assert all(app.bodies[n].objects == [] for n in app.specs if n != "star")
    assert list(app.views) == list(app.specs) and "catalog" in app.views  # names, unbuilt
    assert list(app.views.built) == ["star"]


def test_a_page_asked_for_a_tab_builds_that_tab_not_the_star_tab(store):
    app = make_app(store, tab="catalog")
    assert app.tab == "catalog" and app.tabs.active == list(app.specs).index("catalog")
    assert list(app.views.built) == ["catalog"] and app.views["catalog"].built
    assert app.bodies["star"].objects == []
    app.tab = "star"  # opened later, as a click does
    assert set(app.views.built) == {"catalog", "star"}
    assert len(app.bodies["star"].objects) == 1  # the Star view, filled


def test_the_urls_tab_is_read_before_any_view_is_built(store, monkeypatch):
    from dashboard import app as app_module

    monkeypatch.setattr(app_module, "url_argument", lambda name: {"tab": "catalog"}.get(name, ""))
    app = make_app(store)
    assert app.tab == "catalog" and list(app.views.built) == ["catalog"]
    assert app.bodies["star"].objects == []
    # an old numbered link (?tab=3) and an unknown name
    monkeypatch.setattr(app_module, "url_argument", lambda name: {"tab": "2"}.get(name, ""))
    assert make_app(store).tab == "catalog"
    monkeypatch.setattr(app_module, "url_argument", lambda name: {"tab": "nope"}.get(name, ""))
    app = make_app(store)
    assert app.tab == "star" and list(app.views.built) == ["star"]


def test_url_argument_outside_a_server_is_empty():
    from dashboard.app import url_argument

    assert url_argument("tab") == ""


def test_views_built_after_a_star_was_focused_show_that_star(store):
    app = make_app(store, tab="catalog")
    star = store.catalog["APOGEE_ID"].iloc[7]
    assert app.session.select_star(star)
    app.tab = "star"
    n_pix = store.spectrum(star).n_pix
    assert len(app.views["star"].figure.spec_src.data["flux"]) >= n_pix  # + chip-gap breaks
    if app.context.vae is None:
        pytest.skip("no VAE found for the latent view")
    app.tab = "latent"  # built now, with the star already focused
    latent = app.views["latent"]
    assert len(latent.star_src.data["flux"]) > 0 and latent.decoded is not None


def test_the_f_key_is_known_without_building_the_fit_view(store):
    app = make_app(store)
    assert ("f" in app.shortcuts.actions) == ("fit" in app.specs)
    assert "fit" not in app.views.built


def test_sessions_share_what_is_not_per_user(store):
    a, b = make_app(store, tab="catalog"), make_app(store, tab="catalog")
    ca, cb = a.views["catalog"], b.views["catalog"]
    assert ca.frame is cb.frame and ca.ids is cb.ids
    assert ca._table_frame is cb._table_frame
    assert a.picker._ids is b.picker._ids
    assert ca.param.axes.objects == cb.param.axes.objects
    # per user: each session keeps its own selection and focus
    assert a.session.selection is not b.session.selection
    ca.select_box("TEFF", "LOGG", (4000, 4800, 1, 2.5))
    assert a.session.selection.active and not b.session.selection.active


def test_a_rewritten_store_is_not_served_stale(tmp_path):
    store = write_store(tmp_path / "store", n=20, seed=6)
    frame, ids = data.catalog_frame(store), data.id_index(store)
    assert data.catalog_frame(store) is frame and data.id_index(store) is ids
    store.add_columns({"NEW_COL": np.arange(20, dtype=np.float64)})
    fresh = data.catalog_frame(store)
    assert fresh is not frame and "NEW_COL" in fresh.columns
    assert "NEW_COL" in data.store_axis_columns(store)
    assert data.id_index(store) is not ids
    # the old copies are dropped from the process cache
    import panel as pn

    frames = [k for k in pn.state.cache if isinstance(k, tuple)
              and str(k[0]).startswith(f"stellarscope-frame:{store.path}:")]
    assert len(frames) == 1


def test_corner_aggregates_of_a_shared_frame_are_cached_and_private():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({c: rng.random(500, dtype=np.float32) for c in "xyc"})
    plain = corner.aggregate(frame, "x", "y", (0, 1), (0, 1))
    corner.share(frame)
    first = corner.aggregate(frame, "x", "y", (0, 1), (0, 1))
    n = corner.cache_info()["aggregates"]
    again = corner.aggregate(frame, "x", "y", (0, 1), (0, 1))
    assert corner.cache_info()["aggregates"] == n  # a hit: nothing new cached
    np.testing.assert_array_equal(first.image, plain.image)
    np.testing.assert_array_equal(again.image, plain.image)
    again.image[:] = -1  # a caller's copy: the cache is untouched
    np.testing.assert_array_equal(corner.aggregate(frame, "x", "y", (0, 1), (0, 1)).image,
                                  plain.image)
    mean = corner.aggregate(frame, "x", "y", (0, 1), (0, 1), color="c")
    assert corner.cache_info()["aggregates"] == n + 1
    np.testing.assert_array_equal(
        np.isnan(mean.image),
        np.isnan(corner.aggregate(frame.copy(), "x", "y", (0, 1), (0, 1), color="c").image))
    # a subset (another frame) is not cached; a collected frame's entries go with it
    corner.aggregate(frame.take(np.arange(0, 500, 2)), "x", "y", (0, 1), (0, 1))
    assert corner.cache_info()["aggregates"] == n + 1
    key = id(frame)
    assert len([k for k in corner._CACHE if k[0] == key]) == 2
    del frame, first, again, mean
    import gc

    gc.collect()
    assert not [k for k in corner._CACHE if k[0] == key]


def test_a_dropped_session_is_collected_not_held_by_shared_state(store):
    """Nothing the process shares (stores, models, frames, caches) keeps a session alive:
    once dropped (Panel drops a closed session), the tidy-up collects it."""
    import weakref

    app = make_app(store)
    app.session.select_star(store.catalog["APOGEE_ID"].iloc[3])
    # every view built, as a user who opened every tab; not Attention, whose catalog-mean job
    # (minutes on a loaded machine) holds its session until the job ends
    for name in app.specs:
        if name != "attention":
            app.tab = name
    assert app in data.LIVE_SESSIONS
    gone = weakref.ref(app)
    del app
    # this session itself, not a count: other tests' sessions may be freed meanwhile as their
    # background jobs end; a job of this one may hold it until it ends, shared state for good
    deadline = time.monotonic() + 120
    while gone() is not None and time.monotonic() < deadline:
        data.tidy()
        time.sleep(0.2)
    assert gone() is None


def test_session_closed_tidies_once_after_a_burst(monkeypatch):
    calls = []
    monkeypatch.setattr(data, "tidy", lambda: calls.append(1) or 0)
    for _ in range(5):
        data.session_closed(delay=0.2)
    import time

    time.sleep(0.6)
    assert calls == [1]


def test_no_view_needs_the_script_bundles_the_page_leaves_out(store):
    """The page omits BokehJS's WebGL and MathJax bundles (dashboard.page_resources): every
    tab, once opened, draws on canvas and holds no TeX."""
    from bokeh.document import Document
    from bokeh.embed.bundle import _use_gl, _use_mathjax
    from bokeh.models import Plot

    app = make_app(store)
    for name in app.specs:
        app.tab = name
    models = app.tabs.get_root(Document()).references()
    assert sum(isinstance(m, Plot) for m in models) >= 2  # the tabs' figures are in there
    assert not _use_gl(models) and not _use_mathjax(models)


class _Served:
    """Stands in for the session context of a document that panel serve is serving."""

    id = "fake-session"

    class request:  # noqa: N801  (the request that opened it: no arguments)
        arguments: dict = {}
        headers: dict = {}
        cookies: dict = {}


def test_a_served_page_shows_its_spectrum_first_and_the_rest_once_shown(store):
    """In a served session the first document holds the spectrum and the controls above it;
    the Star view's tables and line-list row and the sidebar's picker, session and keys are
    filled in once the browser has drawn the page (pn.state.onload)."""
    import weakref

    import panel as pn
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    served = _Served()
    doc = Document()
    doc._session_context = weakref.ref(served)
    star = str(store.catalog["APOGEE_ID"].iloc[3])
    with set_curdoc(doc):
        app = make_app(store)
        app.session.select_star(star)
        view = app.views["star"]
        root = view.__panel__()
        below = [o for o in root.objects if "ss-star-below" in o.css_classes]
        assert len(below) == 1 and below[0].objects == []  # not yet
        assert view.figure.pane in root.objects and len(view.figure.spec_src.data["flux"]) > 0
        assert view.figure._res_fig is None  # no overlay on: no residual panel built
        sidebar_below = [o for o in app.template.sidebar if "ss-sidebar-below" in
                         getattr(o, "css_classes", [])]
        assert len(sidebar_below) == 1 and sidebar_below[0].objects == []
        # the keys work from the first moment: their listener is not deferred
        assert any(o is app.shortcuts.listener for o in app.template.sidebar)
        pn.state._on_load(doc)  # the browser reports the page drawn
        assert len(below[0].objects) == 2
        shown = sidebar_below[0].select()
        assert app.picker.search in shown and app.picker.upload in shown
        assert app.session_upload in shown
    pn.state._loaded.pop(doc, None)


def test_outside_a_served_session_nothing_waits(store):
    app = make_app(store)
    below = [o for o in app.template.sidebar if "ss-sidebar-below" in
             getattr(o, "css_classes", [])]
    assert app.picker.search in below[0].select() and app.session_upload in below[0].select()


def test_the_star_views_tables_are_escaped_html_that_follow_the_star(store):
    """The labels and latents tables are plain HTML (cheap for a new page and a new star);
    text from a file's header cannot become markup."""
    import pandas as pd

    from dashboard.views.star import html_table

    out = html_table(pd.DataFrame({"quantity": ["<b>x</b>"], "value": ['1 & "2"']}))
    assert "<b>x</b>" not in out and "&lt;b&gt;x&lt;/b&gt;" in out and "&amp;" in out
    assert out.count("<tr>") == 2 and "<th>quantity</th>" in out
    app = make_app(store)
    view = app.views["star"]
    a, b = (str(store.catalog["APOGEE_ID"].iloc[i]) for i in (2, 9))
    app.session.select_star(a)
    first = view.table.object
    assert "Teff" in first and "ss-star-table" in first
    app.session.select_star(b)
    assert view.table.object != first and "Teff" in view.table.object
