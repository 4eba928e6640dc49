"""The Attention view without a browser: maps drawn from core, in place on every switch."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

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
