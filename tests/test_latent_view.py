"""The Latent view's directions, slider order, traverse and out-of-range sliders, in-process."""

from __future__ import annotations

import numpy as np
import pytest
from test_dashboard_state import TinyVAE, write_store

from dashboard.state import AppContext, Session
from dashboard.views.latent import TRAVERSE_SIGMA, TRAVERSE_STEP, Z_LIMIT, LatentView


class ScaledVAE(TinyVAE):
    """TinyVAE whose latents change the spectrum by very different amounts: latent 2 most,
    then 1, 3, 0 — so the slider order is not the index order."""

    SCALES = np.array([0.2, 1.0, 3.0, 0.5], np.float32)

    def __init__(self):
        super().__init__()
        self.templates = self.templates * self.SCALES[:, None]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("latent-view") / "store", n=60, seed=5)


@pytest.fixture
def view(store):
    session = Session(context=AppContext(store=store, models={"vae": ScaledVAE()}))
    v = LatentView(focus=session.focus, context=session.context)
    session.select_star(2)
    return session, v


def slider_rows(view):
    """The latent indices in the order the free-latent sliders are laid out."""
    return [view.z_sliders.index(obj.objects[0]) for obj in view.sliders_box.objects[3:]]


def test_sliders_are_ordered_by_how_much_they_change_the_spectrum(view):
    _, v = view
    assert v.directions is not None
    assert v.order == [2, 1, 3, 0] == slider_rows(v)
    assert list(v.traverse_select.options.values()) == [2, 1, 3, 0]
    assert v.traverse_select.value == 2  # the one that changes the spectrum most
    table = v.directions_table.value
    assert list(table["latent"]) == ["z02", "z01", "z03", "z00"] and len(table) == 4
    assert table["RMS Δflux (±1σ)"].is_monotonic_decreasing
    # every latent carries its summary: its RMS change and the lines it moves most
    for k in range(4):
        note = v.z_notes[k].object
        assert f"Δ {v.directions['directions'][k]['rms']:.4f}" in note
        assert v.directions["directions"][k]["lines"][0]["species"] in note
    assert "knows" in v.z_notes[0].object  # the store's labels were probed
    assert "R²" in v.directions_note.object and "k-NN" in v.directions_note.object


def test_out_of_range_latents_widen_the_slider_and_warn(view):
    session, v = view
    enc = dict(session.focus.encoding)
    assert not v.range_alert.visible
    mu = np.array(enc["mu"], np.float32)
    mu[1] = 11.3
    session.focus.encoding = {**enc, "mu": mu}
    s = v.z_sliders[1]
    assert s.end >= 11.3 and s.value == pytest.approx(11.3) and s.start == -Z_LIMIT
    assert v.point[0][1] == pytest.approx(11.3)  # shown as it is, not clipped to ±4
    assert v.range_alert.visible
    text = v.range_alert.object
    assert "outside the model's training distribution" in text and "z01 = +11.30" in text
    # the decoded spectrum is the one at z01 = 11.3
    z = np.array([sl.value for sl in v.z_sliders], np.float32)
    np.testing.assert_allclose(v.decoded, ScaledVAE().decode(z, enc["labels"]), atol=1e-6)
    # a label far outside the store's range too
    session.focus.encoding = {**enc, "labels": np.array([9000.0, 2.0, -0.1], np.float32)}
    assert v.y_sliders[0].end >= 9000 and "Teff = 9000" in v.range_alert.object
    # back to a star inside: the ranges shrink back and the warning goes
    session.focus.encoding = enc
    assert not v.range_alert.visible and s.end == Z_LIMIT
    assert v.y_sliders[0].end == v._y_default[0][1]


def test_traverse_animates_one_latent_and_shows_the_change(view):
    _, v = view
    k = 2
    origin = v.z_sliders[k].value
    before = v.decode_count
    v.traverse_select.value = k
    v.toggle_traverse()
    assert v.traversing and "Stop" in v.traverse_button.label
    assert v.z_sliders[k].value == pytest.approx(-TRAVERSE_SIGMA)
    assert v.diff_fig.yaxis.axis_label == "decoded − start"
    assert f"decoded at z{k:02d} = {origin:+.2f}" in v.diff_fig.title.text
    seen, diffs = [], []
    for _ in range(int(2 * TRAVERSE_SIGMA / TRAVERSE_STEP) + 5):
        v.traverse_step()
        seen.append(v.z_sliders[k].value)
        diffs.append(np.nanmax(np.abs(v.dec_src.data["diff"])))
    assert max(seen) == pytest.approx(TRAVERSE_SIGMA) and seen[-1] < TRAVERSE_SIGMA  # and back
    assert v.decode_count > before + 30
    # the difference is the change from the start: largest at the ends, ~0 at the origin
    i0 = int(np.argmin(np.abs(np.array(seen) - origin)))
    assert diffs[i0] < 0.3 * max(diffs)
    assert "traversing z02" in v.readout.object
    v.toggle_traverse()
    assert not v.traversing and "Traverse" in v.traverse_button.label
    assert v.z_sliders[k].value == pytest.approx(origin)
    assert v.diff_fig.yaxis.axis_label == "decoded − star" and v.diff_fig.title.text == "Difference"


def test_slider_steps_update_the_same_sources_in_place(view):
    _, v = view
    fig, src, plot = v.spec_fig, v.dec_src, v.plot.object
    wave = src.data["wave"]
    for x in (0.5, 1.0, 1.5):
        v.z_sliders[0].value = x
        assert v.decoded is not None
    assert v.spec_fig is fig and v.dec_src is src and v.plot.object is plot
    assert src.data["wave"] is wave  # only flux and diff are sent again


def test_a_new_star_stops_the_traverse(view):
    session, v = view
    v.start_traverse(1)
    session.select_star(7)
    assert not v.traversing


def test_leaving_the_tab_stops_the_traverse(view):
    _, v = view
    v.start_traverse(3)
    v.active = False
    assert not v.traversing


def test_reordering_the_sliders_keeps_their_rendered_models(view):
    """The directions arrive after the page is drawn and re-order the sliders: each slider
    must keep its browser model (a rebuilt one would drop the handle being dragged, and
    the old one's events would no longer reach the server)."""
    from bokeh.document import Document

    _, v = view
    doc = Document()
    root = v.__panel__().get_root(doc)
    ref = root.ref["id"]
    before = {id(s): s._models[ref][0] for s in v.z_sliders}
    res = dict(v.directions, order=list(reversed(v.order)))
    v._show_directions(res)
    assert slider_rows(v) == list(reversed([2, 1, 3, 0]))
    for s in v.z_sliders:
        assert ref in s._models, "a slider lost its rendered model"
        assert s._models[ref][0] is before[id(s)]
    # the browser's layout holds the very same slider models, in the new order
    box = v.sliders_box._models[ref][0]
    shown = [row.children[0] for row in box.children[3:]]
    assert shown == [v.z_sliders[k]._models[ref][0] for k in v.order]


def test_a_burst_of_slider_steps_decodes_the_first_and_the_latest_only(view, monkeypatch):
    """In a served session a drag sends a slider value per mouse move: the first decodes at
    once, the rest of the burst folds into one later decode of the newest value, so the
    browser is never sent stale spectra."""
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    _, v = view
    doc = Document()
    doc._session_context = lambda: object()  # as if served: the throttle schedules
    timers = []
    monkeypatch.setattr(doc, "add_timeout_callback",
                        lambda cb, ms: timers.append((cb, ms)) or len(timers))
    monkeypatch.setattr(doc, "remove_timeout_callback", lambda handle: None)
    seen = []
    decode = v.vae.decode
    monkeypatch.setattr(v.vae, "decode", lambda z, y: seen.append(round(float(z[0]), 4)) or decode(z, y))
    v._throttle._last = 0.0
    values = [round(0.1 * i, 2) for i in range(1, 11)]
    with set_curdoc(doc):
        for x in values:
            v.z_sliders[0].value = x
    assert seen == [values[0]]  # the first step at once; the rest wait for the interval
    throttled = [(cb, ms) for cb, ms in timers if cb.__name__ == "later"
                 and cb.__qualname__.startswith("Throttle")]
    assert len(throttled) == 1 and throttled[0][1] <= 1000 * v.throttle_s + 1
    throttled[0][0]()
    assert seen == [values[0], values[-1]]  # one decode for the other nine: the newest value
    z = np.array([s.value for s in v.z_sliders], np.float32)
    np.testing.assert_allclose(v.decoded, decode(z, v.point[1]), atol=1e-6)


def test_a_step_repaints_only_the_decoded_curves_and_not_the_busy_indicator(view):
    """What a slider step costs the browser: the curves drawn from the decoded source are on
    the plots' overlay layer (repainted alone), everything else on the primary layer; the
    difference axis labels keep one width at every scale; and a slider value from the
    browser does not toggle the page's busy indicator."""
    import panel as pn
    from bokeh.models import GlyphRenderer

    _, v = view
    for fig in (v.spec_fig, v.diff_fig):
        for r in fig.renderers:
            if isinstance(r, GlyphRenderer):
                assert (r.level == "overlay") == (r.data_source is v.dec_src), r
    labels = {v.diff_fig.yaxis[0].formatter.format % t for t in (-0.05, 0.0, 0.05, 0.1, -0.2)}
    assert len({len(s) for s in labels}) == 1, labels
    changes = []
    pn.state.param.watch(lambda e: changes.append(e.new), "busy")
    before = v.decode_count
    v.z_sliders[0]._process_events({"value": 0.37})
    assert v.z_sliders[0].value == pytest.approx(0.37) and v.decode_count == before + 1
    assert changes == []
