"""The dashboard as a platform: model slots per family, registered views, the one session
path (no browser).

The extensibility test defines a model family, its saved model, its predictor and a view
here, and nothing else changes: the app loads the model into its slot and shows the view.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import panel as pn
import param
import pytest
import torch
from test_dashboard_state import write_store

from core import models
from core.models.families import FAMILIES, Family, register_family
from core.paths import models_dir
from dashboard import data, persist
from dashboard.state import AppContext, Session
from dashboard.views.registry import ViewSpec, register_view, registered, tab_name, unregister_view

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("platform") / "store", n=30, seed=4)


# -- a model family that exists only in this file ---------------------------------------------


class TinyNet(torch.nn.Module):
    """One learnt number: the model predicts ``scale`` × the spectrum's mean flux."""

    model_type = "tinynet"

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)))

    def architecture(self) -> dict:
        return {}

    @classmethod
    def from_architecture(cls, arch: dict) -> TinyNet:
        return cls()


class TinyPredictor:
    """The family's predictor: ``load(dir)`` and one number per spectrum."""

    def __init__(self, net: TinyNet, where):
        self.net, self.where = net, str(where)

    @classmethod
    def load(cls, model_dir, device=None) -> TinyPredictor:
        return cls(models.load(model_dir), model_dir)

    def predict(self, spectrum) -> float:
        return float(self.net.scale.detach()) * float(np.nanmean(spectrum.flux))


class TinyView(pn.viewable.Viewer):
    """Shows the tiny model's number for the focused star; one saved setting."""

    focus = param.Parameter()
    context = param.Parameter()
    digits = param.Integer(default=3, bounds=(0, 6))
    session_params = ("digits",)

    def __init__(self, **params):
        super().__init__(**params)
        self.text = pn.pane.Markdown("", css_classes=["ss-tiny"])
        self.focus.param.watch(lambda e: self.update(), "spectrum")
        self.param.watch(lambda e: self.update(), "digits")

    def update(self) -> None:
        model, spec = self.context.slot("tiny").model, self.focus.spectrum
        self.text.object = ("" if model is None or spec is None
                            else f"tiny says {model.predict(spec):.{self.digits}f}")

    def __panel__(self):
        return self.text


@pytest.fixture
def tiny_family(tmp_path, monkeypatch):
    """The family, its model type, a saved model in the models home, and a view for it."""
    models.register_model_type("tinynet", TinyNet)
    register_family(Family(name="tiny", title="tiny model", model_types=("tinynet",),
                           demo="tiny-demo", predictor="test_dashboard_platform:TinyPredictor"))
    register_view(ViewSpec("tiny", "Tiny", lambda s: TinyView(focus=s.focus, context=s.context),
                           key="9", needs=("tiny",)))
    home = models_dir()
    yield home / "tiny-demo"
    unregister_view("tiny")
    FAMILIES.pop("tiny", None)
    models.MODEL_TYPES.pop("tinynet", None)
    shutil.rmtree(home / "tiny-demo", ignore_errors=True)


def make_app(store, **kw):
    from dashboard.app import DashboardApp

    return DashboardApp(store_path=store.path, **kw)


def test_a_family_and_view_defined_in_a_test_load_into_the_app(store, tiny_family):
    models.save(TinyNet(2.0), tiny_family)
    app = make_app(store)
    slot = app.context.slot("tiny")
    assert isinstance(slot.model, TinyPredictor) and slot.where == str(tiny_family)
    assert slot.problem == ""
    assert app.tabs._names[-1] == "Tiny" and "tiny" in app.views
    assert "tiny model" in app.template.sidebar[3].objects[-1].object  # the model card
    assert app.shortcuts.press("9") and app.tab == "tiny"
    assert app.bodies["tiny"].objects == [app.views["tiny"].text]  # the view, drawn
    star = store.catalog["APOGEE_ID"].iloc[4]
    app.session.select_star(star)
    expected = 2.0 * np.nanmean(store.spectrum(star).flux)
    assert app.views["tiny"].text.object == f"tiny says {expected:.3f}"

    # its setting goes through the one session path, refusing NaN and wrong types
    app.views["tiny"].digits = 5
    doc = json.loads(persist.dumps(persist.session_document(app)))
    assert doc["tab"] == "tiny" and doc["views"]["tiny"] == {"digits": 5}
    fresh = make_app(store)
    assert persist.apply_session(fresh, doc, "tiny.json") == []
    assert fresh.tab == "tiny" and fresh.views["tiny"].digits == 5
    assert fresh.views["tiny"].text.object == f"tiny says {expected:.5f}"
    bad = persist.read_session(persist.dumps(doc).replace(b'"digits": 5', b'"digits": NaN'))
    notes = persist.apply_session(fresh, bad, "nan.json")
    assert notes == ["tiny view: digits: holds NaN or Infinity, not restored"]
    doc["views"]["tiny"]["digits"] = "many"
    notes = persist.apply_session(fresh, doc, "typed.json")
    assert len(notes) == 1 and notes[0].startswith("tiny view: digits: 'many' refused")
    assert fresh.views["tiny"].digits == 5


def test_a_view_whose_model_is_missing_says_why(store, tiny_family):
    app = make_app(store)  # no tiny model saved
    slot = app.context.slot("tiny")
    assert slot.model is None and "no tiny model found" in slot.problem
    app.tab = "tiny"  # a tab's body is filled when it is first opened
    alert = app.bodies["tiny"].objects[0]
    assert isinstance(alert, pn.pane.Alert) and "The Tiny view needs a tiny model" in alert.object
    assert "stellarscope train tiny" in alert.object

    # trained later: the next poll fills the slot and the view replaces the note
    models.save(TinyNet(3.0), tiny_family)
    app._poll_models()
    assert isinstance(slot.model, TinyPredictor)
    assert app.bodies["tiny"].objects == [app.views["tiny"].text]
    assert app.context.message == "A tiny model is now available"


def test_models_reload_when_their_weights_change_and_sessions_share_them(store, tiny_family):
    models.save(TinyNet(1.0), tiny_family)
    a = AppContext(store=store)
    a.model_dirs = {}
    data.refresh_models(a)
    b = AppContext(store=store)
    data.refresh_models(b)
    assert a.slot("tiny").model is b.slot("tiny").model  # cached per process
    time.sleep(0.02)
    models.save(TinyNet(4.0), tiny_family)
    os.utime(tiny_family / "model.safetensors", (time.time() + 5, time.time() + 5))
    assert "tiny" in data.refresh_models(a)
    assert float(a.slot("tiny").model.net.scale.detach()) == 4.0
    cached = [k for k in pn.state.cache if str(k[0]).startswith("stellarscope-model:tiny:")]
    assert len(cached) == 1  # the old weights are not kept for the process's lifetime
    assert data.refresh_models(a) == []  # nothing new: nothing changes


def test_command_line_models_take_precedence_and_bad_ones_are_named(store, tiny_family, tmp_path):
    models.save(TinyNet(1.0), tiny_family)
    mine = models.save(TinyNet(7.0), tmp_path / "my-tiny")
    found, notes = data.explicit_models(os.pathsep.join(
        [str(mine), str(tmp_path / "nowhere"), str(tmp_path / "my-tiny")]))
    assert found == {"tiny": mine}
    assert "nowhere" in notes[0] and "no such model config" in notes[0]
    assert "a second tiny model" in notes[1]
    ctx = data.make_context(store.path, str(mine))
    assert float(ctx.slot("tiny").model.net.scale.detach()) == 7.0 and ctx.slot("tiny").where == str(mine)


def test_training_note_for_any_family(store, tiny_family):
    from core.train.trainer import LOG_FILE, RUNNING_FILE

    tiny_family.mkdir(parents=True, exist_ok=True)
    (tiny_family / RUNNING_FILE).write_text("")
    (tiny_family / LOG_FILE).write_text("epoch,val_chi2_nu\n1,3.5\n2,1.25\n")
    ctx = AppContext(store=store)
    data.refresh_models(ctx)
    slot = ctx.slot("tiny")
    assert slot.model is None
    assert slot.training == "training in progress: epoch 2 done, validation χ²_ν 1.25"
    from dashboard.app import describe_slot

    assert "⏳ training in progress: epoch 2" in describe_slot(slot)


# -- the registry ------------------------------------------------------------------------------


def test_shipped_views_and_their_keys():
    specs = registered()
    assert [s.name for s in specs][:5] == ["star", "latent", "catalog", "fit", "attention"]
    assert [s.key for s in specs][:5] == ["1", "2", "3", "4", "5"]
    assert next(s for s in specs if s.name == "fit").needs == ("emulator",)


def test_tab_values_old_and_new():
    names = ["star", "latent", "catalog", "fit", "attention"]
    assert tab_name("fit", names) == "fit" and tab_name(3, names) == "fit"
    assert tab_name("2", names) == "catalog"
    assert tab_name("nowhere", names) is None and tab_name(17, names) is None
    assert tab_name(True, names) is None and tab_name(-1, names) is None


def test_registry_refuses_a_clashing_key_and_odd_names():
    with pytest.raises(ValueError, match="taken by 'star'"):
        register_view(ViewSpec("other", "Other", lambda s: None, key="1"))
    with pytest.raises(ValueError, match="plain identifier"):
        register_view(ViewSpec("a b", "A b", lambda s: None))


def test_app_tabs_by_name_and_old_numbers(store, tiny_family):
    app = make_app(store)
    assert app.tab == "star" and app.tabs.active == 0
    app.tab = "catalog"  # what ?tab=catalog does
    assert app.tabs.active == 2 and app.views["catalog"].built
    app.tab = "3"  # an old ?tab=3 link
    assert app.tab == "fit" and app.tabs.active == 3
    app.tab = "no-such-tab"
    assert app.tab == "fit"
    app.tabs.active = 1  # a click on the tab
    assert app.tab == "latent"


def test_tabs_are_built_when_first_opened_and_then_kept(store, tiny_family):
    """A new page fills only its first tab; a tab once opened keeps its view in the page, so
    switching back is the browser's work alone (the Tabs are not dynamic)."""
    models.save(TinyNet(2.0), tiny_family)
    app = make_app(store)
    assert not app.tabs.dynamic
    star_body = list(app.bodies["star"].objects)
    assert len(star_body) == 1
    assert all(app.bodies[n].objects == [] for n in app.specs if n != "star")
    app.tab = "tiny"
    view = app.bodies["tiny"].objects
    assert view == [app.views["tiny"].text]
    app.tab = "star"
    app.tab = "tiny"
    assert app.bodies["tiny"].objects is view or app.bodies["tiny"].objects == view
    assert app.bodies["star"].objects == star_body  # still there while hidden
    assert app.bodies["latent"].objects == []  # never opened


# -- the VAE's numbers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_vae(store, tmp_path_factory):
    from test_vae_infer import make_model_dir

    from core.inference.vae import VAEPredictor, infer_store

    model_dir = make_model_dir(store, tmp_path_factory.mktemp("vae") / "vae")
    infer_store(store, model_dir, progress=False)
    store.reload_catalog()
    return VAEPredictor.load(model_dir)


def test_sidebar_chi2_equals_the_catalogs_vae_chi2(store, real_vae):
    session = Session(context=AppContext(store=store, models={"vae": real_vae}))
    for row in (0, 11, 29):
        star = store.catalog["APOGEE_ID"].iloc[row]
        assert session.select_star(star)
        shown = session.focus.outputs["VAE χ²_ν"]
        assert shown == pytest.approx(float(store.catalog["VAE_CHI2"].iloc[row]), rel=1e-4)
        assert f"VAE χ²_ν {shown:.2f}" in session.context.status
        assert session.focus.models["VAE reconstruction"].shape == (store.grid.n_pix,)


def test_vae_outputs_reject_a_grid_mismatch(real_vae):
    from core.errors import BadDataError
    from core.spectrum import Spectrum

    spec = Spectrum(np.linspace(15000, 17000, 100), np.ones(100), np.ones(100), np.zeros(100),
                    meta={"TEFF": 4500, "LOGG": 2, "FE_H": 0})
    with pytest.raises(BadDataError, match="apogee7514 grid"):
        real_vae.on_focus(spec)


# -- a store that breaks under a running server ------------------------------------------------------


def test_a_store_broken_after_opening_is_named_not_raised(tmp_path):
    path = tmp_path / "store"
    shutil.copytree(write_store(tmp_path / "orig", n=10, seed=1).path, path)
    from core.store import SpectraStore

    store = SpectraStore.open(path)
    session = Session(context=AppContext(store=store))
    parts = sorted(p for p in path.iterdir() if p.suffix in (".h5", ".hdf5"))
    assert parts, "the test store should have spectra part files"
    for p in parts:
        p.write_bytes(p.read_bytes()[:500])  # truncated under the running server
    store.close()
    assert not session.select_star(store.catalog["APOGEE_ID"].iloc[3])
    assert session.context.message_kind == "error"
    assert str(path) in session.context.message or parts[0].name in session.context.message
    # the next session's page says what broke instead of opening it
    ctx = data.make_context(path)
    assert ctx.store is None and parts[0].name in ctx.store_problem


def test_a_store_without_a_catalog_is_explained_on_the_page(tmp_path):
    from dashboard.app import DashboardApp

    path = write_store(tmp_path / "store", n=10, seed=1).path
    catalogs = list(path.glob("catalog*.parquet"))
    for c in catalogs:
        c.unlink()
    app = DashboardApp(store_path=path)
    assert app.context.store is None and "catalog" in app.context.store_problem
    card = app.template.sidebar[1]
    assert isinstance(card, pn.pane.Alert) and "catalog" in card.object
    assert not app.session.select_star("2M00000001+0000007")
    assert "catalog" in app.context.message


def test_a_page_that_cannot_be_built_says_so_and_logs_why(monkeypatch, caplog):
    """An unexpected error is not shown as raw Python text (issue 13): the page says it could
    not start, in words, and the server log has the traceback."""
    from dashboard import app as app_module

    def broken(*args, **kwargs):
        raise RuntimeError("part <b>7</b> vanished")

    monkeypatch.setattr(app_module.data, "make_context", broken)
    with caplog.at_level("ERROR"):
        page = app_module.page()
    alert = page.main[0]
    assert isinstance(alert, pn.pane.Alert)
    assert "could not start this page" in alert.object and "log" in alert.object
    assert "<b>7</b>" not in alert.object and "RuntimeError" not in alert.object
    assert any("part <b>7</b> vanished" in (r.exc_text or str(r.exc_info)) for r in caplog.records)
