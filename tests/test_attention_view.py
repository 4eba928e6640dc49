"""The Attention view without a browser: maps drawn from core, in place on every switch."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from fits_fixtures import write_apvisit_of

from core import models
from core.inference.transformer import TransformerPredictor
from core.models.transformer import SpectralTransformer, TransformerConfig
from core.train.synthetic import synthetic_store
from dashboard.state import AppContext, Session
from dashboard.views.attention import AttentionView


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("attview")
    store = synthetic_store(root / "store", n=30, seed=4)
    torch.manual_seed(0)
    m = SpectralTransformer(TransformerConfig(context=64, width=16, heads=2, encoder_layers=1,
                                              decoder_layers=2, ffn=32, dropout=0.0))
    m.set_scaling(1.0, 0.1, [4800.0, 2.5, -0.2], [400.0, 0.9, 0.3])
    models.save(m, root / "tf")
    return store, TransformerPredictor.load(root / "tf")


def _view(store, pred):
    ctx = AppContext(store=store, models={"transformer": pred})
    session = Session(context=ctx)
    view = AttentionView(focus=session.focus, context=ctx)
    view.active = True
    return session, view


def test_switching_star_label_layer_and_head_redraws_in_place(setup):
    store, pred = setup
    session, view = _view(store, pred)
    assert view.built and view.label == "FE_H"
    assert session.select_star(2)
    heat = view.heat_src
    first = np.array(heat.data["value"], copy=True)
    table = view.table.value.copy()
    assert len(table) == 12 and {"nearest line", "element", "Δλ (Å)"} <= set(table.columns)
    assert "Alignment" in view.score.object and "FE_H" in view.score.object
    assert np.isclose(np.nanmean(first), 1.0, atol=1e-3)            # ×uniform
    fig_id = id(view.figure.fig)
    view.label = "LOGG"
    assert view.heat_src is heat and id(view.figure.fig) == fig_id   # same models, new data
    assert not np.allclose(heat.data["value"], first, equal_nan=True)
    assert "LOGG" in view.score.object and not view.table.value.equals(table)
    # line markers are the label's informing elements (Fe for FE_H, C/H/Ti for LOGG)
    assert set(view.figure.lines_src.data["element"]) <= {"C", "H", "Ti"}
    view.label = "FE_H"
    assert set(view.figure.lines_src.data["element"]) == {"Fe"}
    view.layer = "rollout"
    roll = np.array(heat.data["value"], copy=True)
    assert "rollout" in view.strip.title.text
    view.layer = "layer 1"
    view.head = "head 2"
    assert not np.allclose(heat.data["value"], roll, equal_nan=True)
    assert "layer 1, head 2" in view.strip.title.text
    assert view.figure.fig.title.text.startswith(str(store.catalog["APOGEE_ID"].iloc[2]))
    before = np.array(heat.data["value"], copy=True)
    assert session.select_star(5)
    assert not np.allclose(heat.data["value"], before, equal_nan=True)
    assert np.isfinite(view.last_redraw_ms)
    # a table row click zooms there
    lam = float(view._top["wavelength"].iloc[0])
    view._on_row(type("E", (), {"row": 0})())
    assert view.figure.x_range.start < lam < view.figure.x_range.end
    assert view.figure.x_range.end - view.figure.x_range.start <= 31
    view.notable = True
    if view._notable is not None:
        assert len(view.figure.span_sources["notable"].data["x0"]) == 14


def test_catalog_mean_and_difference(setup):
    store, pred = setup
    session, view = _view(store, pred)
    deadline = time.time() + 300
    while view.mean is None and time.time() < deadline:
        time.sleep(0.2)
    assert view.mean is not None
    session.select_star(1)
    star = np.array(view.heat_src.data["value"], copy=True)
    assert "Catalog mean over" in view.status.object
    assert "catalog mean (all)" in view.score.object
    view.show = "catalog mean"
    mean = np.array(view.heat_src.data["value"], copy=True)
    view.show = "star − mean"
    diff = np.array(view.heat_src.data["value"], copy=True)
    ok = np.isfinite(star) & np.isfinite(mean)
    assert np.allclose(diff[ok], star[ok] - mean[ok], atol=1e-5)
    assert view.mapper.low < 0 < view.mapper.high                     # diverging colours
    view.group = "giants"
    assert "giants" in view.strip.title.text


def test_an_upload_and_no_model(setup):
    store, pred = setup
    session, view = _view(store, pred)
    spec = store.spectrum(3)
    session.show(spec.copy(meta={**spec.meta, "SOURCE": "upload.fits"}), source="upload")
    assert len(view.table.value) == 12 and "Alignment" in view.score.object
    session.show(None)
    assert "Choose a star" in view.status.object
    ctx = AppContext(store=store)
    s2 = Session(context=ctx)
    empty = AttentionView(focus=s2.focus, context=ctx)
    empty.active = True
    s2.select_star(0)
    assert "no transformer model" in empty.status.object or "transformer" in empty.status.object


# -- an uploaded apVisit read on its own pixels -------------------------------------------------

def _demo_transformer() -> TransformerPredictor:
    """The shipped demo transformer (the labels of both readings are compared on its σ)."""
    from core.paths import SHIPPED_MODELS

    demo = SHIPPED_MODELS / "transformer-demo"
    if not (demo / "config.json").is_file():
        pytest.skip(f"{demo} is absent (the shipped demo transformer)")
    return TransformerPredictor.load(demo)


def _upload(session, path):
    """The app's upload path: bytes parsed by core, then shown as an upload."""
    from dashboard.views.upload import read_upload

    spec = read_upload(path.name, path.read_bytes())
    session.show(spec, source="upload")
    return spec


def _wait_for_own_reading(view, timeout: float = 120) -> None:
    """The own-pixel reading the view starts in a worker thread on an apVisit upload."""
    deadline = time.time() + timeout
    while not ("own" in view.readings and view.compare.object) and time.time() < deadline:
        time.sleep(0.05)
    assert "own" in view.readings, "the own-pixel reading never arrived"


def _wait_for_catalog_mean(view, timeout: float = 300) -> None:
    """The catalog mean the view computes in a worker (once per model and store): its line
    joins the score text when it lands, so wait for it before comparing texts (no store:
    no mean)."""
    if view.context.store is None:
        return
    deadline = time.time() + timeout
    while not (view.mean is not None and "catalog mean" in view.score.object) and \
            time.time() < deadline:
        time.sleep(0.05)
    assert view.mean is not None, "the catalog mean never arrived"


def _check_own_pixels(session, view, path, background: bool = True) -> np.ndarray:
    """Upload ``path`` (an apVisit), switch to its own pixels and back; the |Δ|/σ per label.
    ``background``: the own pixels were read in the worker before the switch (the
    comparison shows at once); else the switch reads them itself."""
    from core.grid import get_grid
    from core.inference.attention import own_pixels

    spec = _upload(session, path)
    _wait_for_own_reading(view)
    _wait_for_catalog_mean(view)
    assert "own pixels" in view.compare.object             # both readings, before any switch
    if not background:
        view.readings.pop("own")
        view.compare.object = ""
    own = own_pixels(spec)
    assert own is not None and own.grid is None and spec.grid is not None
    assert view.own_row.visible and not view.own_box.disabled
    assert "rest frame" in view.own_box.name
    grid = get_grid(spec.grid).wavelength
    heat = view.heat_src
    fig_id = id(view.figure.fig)
    assert len(heat.data["value"]) == grid.size and view.reading() == "grid"
    grid_table = view.table.value.copy()
    grid_score = view.score.object

    view.own = True
    att = view.att
    assert view.reading() == "own" and att is view.readings["own"]
    # the map lives on the visit's own rest-frame wavelengths, not on the grid
    assert np.array_equal(att.wavelength, own.wavelength) and att.wavelength.size != grid.size
    assert len(heat.data["value"]) == own.n_pix and view.heat_src is heat
    assert id(view.figure.fig) == fig_id                   # redrawn in place
    left, right = np.asarray(heat.data["left"]), np.asarray(heat.data["right"])
    assert np.all((left <= own.wavelength) & (own.wavelength <= right))
    flux_wave = np.asarray(view.figure.spec_src.data["wave"])
    assert np.array_equal(flux_wave[np.isfinite(flux_wave)], own.wavelength.astype(np.float32))
    top = view.table.value["λ (Å)"].to_numpy()
    nearest_own = np.abs(own.wavelength[:, None] - top[None]).min(axis=0)
    assert np.all(nearest_own < 0.006)                      # the visit's own pixels …
    nearest_grid = np.abs(grid[:, None] - top[None]).min(axis=0)
    assert np.any(nearest_grid > 0.01)                     # … which are not the grid's
    assert not view.table.value.equals(grid_table)
    assert "own pixels" in view.score.object and view.score.object != grid_score
    assert "catalog mean" in view.status.object

    # both readings side by side; the own-pixel labels are core's own-pixel prediction
    pred = view.predictor
    direct = pred.predict_spectrum(own)
    assert np.allclose(att.labels, direct["labels"], rtol=1e-3, atol=1e-3)
    cmp = view.compare.object
    assert "resampled grid" in cmp and "own pixels" in cmp and cmp.count("<tr>") == \
        1 + len(pred.label_names)
    z = (att.labels - view.readings["grid"].labels) / np.hypot(
        att.labels_err, view.readings["grid"].labels_err)
    if np.all(np.abs(z) < 1):
        assert "agree within 1σ" in cmp

    # the label selector redraws the own-pixel reading
    view.label = "LOGG"
    assert len(heat.data["value"]) == own.n_pix and "LOGG" in view.score.object
    view.label = "FE_H"
    # and back to the grid: the same objects, the grid's pixels again
    view.own = False
    assert len(heat.data["value"]) == grid.size and view.att is view.readings["grid"]
    assert view.table.value.equals(grid_table) and view.score.object == grid_score
    assert "own pixels" in view.compare.object             # the comparison stays
    assert np.isfinite(view.last_redraw_ms)
    return z


def test_uploaded_apvisit_on_its_own_pixels_agrees_with_the_grid_reading(tmp_path):
    """A mock star written as an apVisit (fresh clone: no ../shared needed): the switch reads
    the visit's own pixels, and its labels agree with the resampled upload's within σ."""
    from core.mock import generate_mock_survey
    from core.store import SpectraStore

    pred = _demo_transformer()
    store = SpectraStore.open(generate_mock_survey(tmp_path / "mock", n_stars=3, seed=5,
                                                   progress=False))
    session, view = _view(store, pred)
    zs = [_check_own_pixels(session, view, write_apvisit_of(tmp_path / f"apVisit-mock-{row}.fits",
                                                         store.spectrum(row)), background=row > 0)
          for row in range(len(store))]
    assert np.all(np.abs(zs) < 1.0), zs
    # the switch state carries over to the next upload, and a store star hides it
    view.own = True
    _upload(session, tmp_path / "apVisit-mock-0.fits")
    assert view.reading() == "own" and view.att.wavelength.size == 12288
    assert "agree within 1σ" in view.compare.object
    session.select_star(1)
    assert not view.own_row.visible and view.reading() == "grid"
    assert len(view.heat_src.data["value"]) == store.grid.n_pix


def test_real_apvisit_upload_on_its_own_pixels():
    from reference import shared_path

    path = shared_path("data", "apogee_real", "apVisit-r13-5095-55844-128.fits")
    pred = _demo_transformer()
    ctx = AppContext(models={"transformer": pred})
    session = Session(context=ctx)
    view = AttentionView(focus=session.focus, context=ctx)
    view.active = True
    z = _check_own_pixels(session, view, path)
    assert np.all(np.abs(z) < 1.0), z
    assert "agree within 1σ" in view.compare.object


def test_an_apstar_upload_has_no_own_pixels(setup, tmp_path):
    """An apStar is on the grid already: the switch is shown, disabled, and says why."""
    from fits_fixtures import write_apstar

    store, pred = setup
    session, view = _view(store, pred)
    spec = _upload(session, write_apstar(tmp_path / "apStar-test.fits"))
    assert view.own_row.visible and view.own_box.disabled
    assert "already on the APOGEE grid" in view.own_note.object
    view.own = True
    assert view.reading() == "grid" and len(view.heat_src.data["value"]) == spec.n_pix
    assert view.compare.object == ""


def test_cli_own_pixels_prints_both_readings(tmp_path, capsys):
    """`stellarscope attention --file apVisit --own-pixels` gives the resampled reading's
    labels beside the own-pixel ones (the numbers the view shows), agreeing within σ."""
    import json

    from core.cli.main import main as cli
    from core.inference.attention import apvisit_rest_pixels
    from core.mock import generate_mock_survey
    from core.paths import SHIPPED_MODELS
    from core.preprocess.policy import prepare_file_spectrum
    from core.store import SpectraStore

    pred = _demo_transformer()
    store = SpectraStore.open(generate_mock_survey(tmp_path / "mock", n_stars=1, seed=8,
                                                   progress=False))
    visit = write_apvisit_of(tmp_path / "apVisit-cli.fits", store.spectrum(0))
    model = str(SHIPPED_MODELS / "transformer-demo")
    assert cli(["attention", "--model", model, "--file", str(visit), "--own-pixels",
                "--label", "MG_FE", "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    both = out["resampled"]
    assert list(both) == list(pred.label_names)
    grid = pred.predict_spectrum(prepare_file_spectrum(visit))
    own = pred.predict_spectrum(apvisit_rest_pixels(visit))
    for j, name in enumerate(pred.label_names):
        assert both[name]["value"] == pytest.approx(grid["labels"][j], rel=1e-6)
        assert both[name]["own_pixels"] == pytest.approx(own["labels"][j], rel=1e-3, abs=1e-3)
        assert abs(both[name]["z"]) < 1.0
    assert out["value"] == pytest.approx(both["MG_FE"]["own_pixels"])
    assert cli(["attention", "--model", model, "--file", str(visit), "--own-pixels",
                "--label", "MG_FE", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "resampled grid" in text and "agree within 1σ for every label" in text
