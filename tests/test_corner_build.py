"""The Catalog's corner plot in a served session: built off the session's thread (the page's
other tabs stay usable), shown on it with what changed meanwhile; a newer build wins; and the
light model set the browser has to build."""

from __future__ import annotations

import time

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import BoxAnnotation, GlyphRenderer, LinearAxis, SaveTool
from test_dashboard_state import write_store

import dashboard.jobs as jobs
import dashboard.views.catalog as catalog
from dashboard import corner
from dashboard.state import AppContext, Session
from dashboard.views.catalog import CatalogView


class FakeDoc:
    """Stands for a served session's document: next-tick callbacks wait until run."""

    def __init__(self):
        self.callbacks = []
        self.session_context = object()

    def add_next_tick_callback(self, fn):
        self.callbacks.append(fn)

    def run(self, timeout: float = 120.0, until=lambda: True):
        """Run the callbacks that arrive until ``until()`` holds (the worker's results)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self.callbacks:
                self.callbacks.pop(0)()
            if until():
                return
            time.sleep(0.02)
        raise AssertionError("the corner plot was never delivered")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("corner-build") / "store", n=60, seed=3)


@pytest.fixture
def served(monkeypatch):
    doc = FakeDoc()
    monkeypatch.setattr(catalog, "session_doc", lambda: doc)
    monkeypatch.setattr(catalog, "BUILD_OFF_THREAD", True)
    monkeypatch.setattr(jobs, "session_doc", lambda: doc)
    monkeypatch.setattr(jobs, "on_doc", lambda d, fn, *a, loop=None: doc.add_next_tick_callback(
        lambda: fn(*a)))
    return doc


def new_view(store) -> CatalogView:
    session = Session(context=AppContext(store=store))
    return CatalogView(focus=session.focus, selection=session.selection,
                       context=session.context)


def test_a_served_build_runs_off_the_session_thread_and_keeps_what_changed(store, served):
    view = new_view(store)
    view.axes = ["TEFF", "LOGG", "FE_H"]
    view.ensure_built()
    # the session's thread is free at once: the plot comes later, the count says so
    assert view.plot is None and "Building" in view.count.object
    cool = view.add_subset("TEFF < 4500", "cool")  # the user goes on meanwhile
    assert cool is not None
    served.run(until=lambda: view.plot is not None)
    assert view.corner_pane.object is view.plot.layout
    assert "No selection" in view.count.object
    assert [n for n, _, _ in view.plot.subset_items] == ["cool"]  # drawn though made later
    panel = view.plot.panels[("TEFF", "LOGG")]
    assert (np.asarray(panel["subsets"].data["image"][0]) >> 24).any()
    view.select_box("TEFF", "LOGG", (4000, 5200, 1.0, 3.5))
    assert view.selection.active and len(panel["sel"].data["image"]) == 1


def test_a_newer_build_wins_over_one_still_running(store, served):
    view = new_view(store)
    view.axes = ["TEFF", "LOGG", "FE_H"]
    view.ensure_built()
    view.axes = ["LOGG", "FE_H"]  # before the first build was shown
    served.run(until=lambda: view.plot is not None and not served.callbacks)
    time.sleep(0.3)  # a stale result would arrive now
    served.run(until=lambda: True)
    assert view.plot.cols == ["LOGG", "FE_H"]
    assert view.corner_pane.object is view.plot.layout


def test_the_corner_is_a_light_set_of_models(store):
    """What made the first corner slow to appear: figure()'s hidden axes and grids, a dummy
    renderer per panel, a save tool per panel and annotations never shown."""
    view = new_view(store)
    view.axes = ["TEFF", "LOGG", "FE_H", "SNR"]
    view.ensure_built()
    doc = Document()
    doc.add_root(view.plot.layout)
    models = list(doc.models)
    k = 4
    panels = k * (k + 1) // 2
    renderers = [m for m in models if isinstance(m, GlyphRenderer)]
    # image panels: counts, subsets, selection, outline, focused star; histograms: bars,
    # selection, subsets, outline
    assert len(renderers) == 5 * (panels - k) + 4 * k
    assert len([m for m in models if isinstance(m, LinearAxis)]) == 2 * k  # the edges only
    assert not [m for m in models if isinstance(m, SaveTool)]
    assert len([m for m in models if isinstance(m, BoxAnnotation)]) == panels  # box tools'
    assert len(models) < 50 * panels  # figure() and annotations for all: ~78 a panel


def test_counts_and_means_match_datashader():
    """numpy's bincount gives what datashader's Canvas.points gave: ranges inclusive at both
    ends, the upper edge in the last pixel, NaN and outside values dropped, NaN colours not
    counted in a mean."""
    ds = pytest.importorskip("datashader")
    import pandas as pd

    rng = np.random.default_rng(1)
    n = 40_000
    x = rng.uniform(-0.1, 1.1, n).astype(np.float32)
    x[:50] = 1.0  # the upper edge
    x[50:60] = np.nan
    y = rng.normal(0.5, 0.3, n)
    y[60:70] = 0.0
    c = rng.random(n)
    c[::97] = np.nan
    frame = pd.DataFrame({"x": x, "y": y, "c": c})
    cvs = ds.Canvas(plot_width=37, plot_height=23, x_range=(0, 1), y_range=(0, 1))
    want = cvs.points(frame, "x", "y", agg=ds.count()).values.astype(np.float32)
    got = corner.aggregate(frame, "x", "y", (0, 1), (0, 1), 37, 23).image
    np.testing.assert_array_equal(np.nan_to_num(got), want)  # NaN: no stars
    want = cvs.points(frame, "x", "y", agg=ds.mean("c")).values
    got = corner.aggregate(frame, "x", "y", (0, 1), (0, 1), 37, 23, color="c").image
    np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True)
    # a selection counted from the rows (the shared frame's cached pixels)
    rows = np.flatnonzero(c > 0.5)
    want = cvs.points(frame.iloc[rows], "x", "y", agg=ds.count()).values
    corner.share(frame)
    corner.aggregate(frame, "x", "y", (0, 1), (0, 1), 37, 23)  # caches the pixel indices
    got, _ = corner._counts(frame, "x", "y", 0.0, 1.0, 0.0, 1.0, 37, 23, rows)
    np.testing.assert_array_equal(got.reshape(23, 37), want)
    # under 30,000 stars each occupied pixel also lights its 8 neighbours (sparse panels)
    image = corner.aggregate(frame, "x", "y", (0, 1), (0, 1), 37, 23, rows=rows).image
    np.testing.assert_array_equal(np.nan_to_num(image), corner.spread(want.astype(np.float32)))


def test_panels_are_coloured_on_the_server_and_keep_their_numbers_for_hover(store):
    from bokeh.models import HoverTool

    view = new_view(store)
    view.axes = ["TEFF", "LOGG"]
    view.ensure_built()
    p = view.plot.panels[("TEFF", "LOGG")]
    data = p["base"].data
    value, image = np.asarray(data["value"][0]), np.asarray(data["image"][0], dtype=np.uint32)
    assert image.shape == value.shape
    np.testing.assert_array_equal((image >> 24) > 0, value > 0)  # empty: clear
    hover = next(t for t in p["fig"].tools if isinstance(t, HoverTool))
    assert "@value" in hover.tooltips[-1][1]  # the counts, not the packed colours
    view.select_box("TEFF", "LOGG", (4000, 5200, 1.0, 3.5))
    grey = np.asarray(p["base"].data["image"][0], dtype=np.uint32)
    shown = grey[(grey >> 24) > 0]
    assert ((shown & 0xFF) == ((shown >> 16) & 0xFF)).all()
    view.clear_selection()
    again = np.asarray(p["base"].data["image"][0], dtype=np.uint32)
    np.testing.assert_array_equal(again, image)  # back to the colours of before


def test_colorize_equalises_scales_and_clears_empty_pixels():
    from bokeh.palettes import Viridis256

    rng = np.random.default_rng(2)
    counts = np.floor(rng.lognormal(1, 1.2, (60, 60))).astype(np.float32) + 1
    counts[:5] = np.nan
    rgba = corner.colorize(counts, Viridis256, "eq_hist")
    assert not (rgba[:5] >> 24).any() and ((rgba[5:] >> 24) == 255).all()
    lut = corner._lut(Viridis256)
    assert np.isin(rgba[5:], lut).all()
    # histogram-equalised: the lower and the upper half of the palette hold similar shares
    pos = {c: i for i, c in enumerate(lut.tolist())}
    where = np.array([pos[c] for c in rgba[5:].ravel().tolist()])
    assert 0.3 < (where < 128).mean() < 0.7
    linear = corner.colorize(np.array([[0.0, 5.0, 10.0, 20.0]]), Viridis256, "linear", (0, 10))
    assert linear[0, 0] == lut[0] and linear[0, 2] == lut[-1] == linear[0, 3]  # clipped
    assert corner.colorize(np.full((2, 2), np.nan), Viridis256).sum() == 0


def test_hovering_an_empty_pixel_shows_no_stars_not_nan(store):
    """An empty pixel's hover said "stars: NaN": it holds 0 stars; with a mean colour it says
    "no stars" (a mean of nothing), its number staying NaN so it is drawn clear."""
    from bokeh.models import CustomJSHover, HoverTool

    view = new_view(store)
    view.axes = ["TEFF", "LOGG"]
    view.ensure_built()
    p = view.plot.panels[("TEFF", "LOGG")]
    value = np.asarray(p["base"].data["value"][0])
    image = np.asarray(p["base"].data["image"][0], dtype=np.uint32)
    empty = (image >> 24) == 0
    assert empty.any() and not np.isnan(value).any()
    assert (value[empty] == 0).all() and (value[~empty] >= 1).all()
    assert value.sum() >= len(view.frame.dropna(subset=["TEFF", "LOGG"])) * 0.5  # counts
    hover = next(t for t in p["fig"].tools if isinstance(t, HoverTool))
    assert hover.tooltips[-1] == ("stars", "@value{0,0}")
    view.clear_selection()
    np.testing.assert_array_equal(np.asarray(p["base"].data["value"][0]), value)

    view.color_by = "FE_H"
    p = view.plot.panels[("TEFF", "LOGG")]
    value = np.asarray(p["base"].data["value"][0])
    image = np.asarray(p["base"].data["image"][0], dtype=np.uint32)
    np.testing.assert_array_equal((image >> 24) == 0, np.isnan(value))
    hover = next(t for t in p["fig"].tools if isinstance(t, HoverTool))
    formatter = hover.formatters["@value"]
    assert isinstance(formatter, CustomJSHover) and "no stars" in formatter.code
    assert hover.tooltips[-1][1] == "@value{custom}"


def test_the_mean_hover_words_an_empty_pixel(tmp_path):
    """The mean's hover formatter (run by BokehJS as a function of ``value``, ``format``,
    ``special_vars``), run here by node: NaN reads "no stars", a number two decimals."""
    import json
    import shutil
    import subprocess

    from dashboard.figures.corner_plot import MEAN_HOVER_JS

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is absent: the hover's JavaScript cannot be run here")
    script = (f"const f = new Function('value', 'format', 'special_vars', {json.dumps(MEAN_HOVER_JS)});"
              "console.log(JSON.stringify([f(NaN, '', {}), f(4.256, '', {}), f(-0.5, '', {})]));")
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == ["no stars", "4.26", "-0.50"]
