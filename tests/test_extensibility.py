"""The platform's extensibility test, end to end: a model family that exists only in this file
trains with the shared loop (`stellarscope train`), resumes, runs through `stellarscope infer`,
loads into the app's model slot and appears in a view registered from here, without an edit
to any other module.

The family ("ext") learns Teff from one number per spectrum (the mean depth of its good
pixels): trivial physics, but every part of the platform is exercised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import panel as pn
import param
import pytest
import torch
from test_dashboard_state import write_store

from core import models
from core.chi2 import good_pixels
from core.cli.main import main as cli
from core.grid import bad_pixels, get_grid
from core.inference.predictor import Column, Prediction, Predictor
from core.models.families import FAMILIES, Family, register_family
from core.store import SpectraStore
from core.train import data as D
from core.train import trainer as T
from dashboard.views.registry import ViewSpec, register_view, unregister_view

torch.set_num_threads(1)


def _depth(flux, error, pixmask) -> np.ndarray:
    good = good_pixels(flux, error, bad_pixels(pixmask, "astronn"))
    return np.nanmean(np.where(good, 1.0 - flux, np.nan), axis=1).astype(np.float32)


class ExtNet(torch.nn.Module):
    model_type = "ext-depth"

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def architecture(self) -> dict:
        return {}

    @classmethod
    def from_architecture(cls, arch: dict) -> ExtNet:
        return cls()

    def forward(self, depth):  # Teff in kK
        return self.lin(depth[:, None])[:, 0]


@dataclass
class ExtSettings(T.TrainSettings):
    warmup_steps: int = 0


class ExtTask(T.TrainTask):
    settings_class = ExtSettings
    title = "ext"
    terms = ("total",)

    def prepare(self, info):
        store = SpectraStore.open(self.settings.store)
        b = next(store.iter_batches(len(store)))
        x = _depth(b.flux, b.error, b.pixmask)
        y = (store.catalog["TEFF"].to_numpy(np.float32) / 1000.0)
        self.train_rows = {"x": x[6:], "y": y[6:]}
        self.val_rows = {"x": x[:6], "y": y[:6]}

    def new_model(self, info):
        return ExtNet()

    def sources(self, info):
        s = self.settings
        return tuple(D.MemorySource(a, info.device, s.batch_size, s.seed, info.world, info.rank)
                     for a in (self.train_rows, self.val_rows))

    def loss(self, model, batch):
        return {"total": (model(batch["x"]) - batch["y"]).square().mean()}


class ExtPredictor(Predictor):
    family = "ext"
    column_prefix = "EXT"

    def __init__(self, net, model_dir):
        self.net, self.model_dir, self.config = net, str(model_dir), {"model_type": "ext-depth"}

    @classmethod
    def load(cls, model_dir, device=None, **_):
        return cls(models.load(model_dir), model_dir)

    @property
    def grid(self):
        return get_grid("apogee7514")

    def columns(self):
        return [Column("EXT_TEFF")]

    @torch.no_grad()
    def predict_batch(self, batch):
        x = torch.from_numpy(_depth(batch.flux, batch.error, batch.pixmask))
        teff = (1000.0 * self.net(x)).numpy().astype(np.float32)
        return Prediction({"EXT_TEFF": teff}, {"teff": teff})


class ExtView(pn.viewable.Viewer):
    focus = param.Parameter()
    context = param.Parameter()

    def __init__(self, **params):
        super().__init__(**params)
        self.text = pn.pane.Markdown("")
        self.focus.param.watch(lambda e: self.update(), "spectrum")
        self.update()  # built on first opening its tab: show the star already in focus

    def update(self):
        pred, spec = self.context.slot("ext").model, self.focus.spectrum
        if pred is not None and spec is not None:
            self.text.object = f"{float(pred.predict_spectrum(spec)['teff']):.1f}"

    def __panel__(self):
        return self.text


@pytest.fixture
def ext_family():
    models.register_model_type(ExtNet.model_type, ExtNet)
    register_family(Family(name="ext", title="depth-to-Teff model", model_types=("ext-depth",),
                           task=f"{__name__}:ExtTask", predictor=f"{__name__}:ExtPredictor",
                           column_prefix="EXT"))
    register_view(ViewSpec("ext", "Ext", lambda s: ExtView(focus=s.focus, context=s.context),
                           key="8", needs=("ext",)))
    yield
    unregister_view("ext")
    FAMILIES.pop("ext", None)
    models.MODEL_TYPES.pop(ExtNet.model_type, None)


def test_a_family_defined_here_trains_resumes_infers_and_shows_in_the_app(
        ext_family, tmp_path, monkeypatch, capsys):
    store = write_store(tmp_path / "store", n=40, seed=3)
    run = tmp_path / "ext-model"
    common = ["--store", str(store.path), "--out", str(run), "--batch-size", "8", "--lr", "0.05",
              "--no-progress", "--seed", "1"]
    assert cli(["train", "ext", *common, "--epochs", "2"]) == 0
    assert cli(["train", "ext", *common, "--epochs", "4", "--resume"]) == 0
    log = pd.read_csv(run / T.LOG_FILE)
    assert list(log["epoch"]) == [1, 2, 3, 4]
    assert isinstance(models.load(run), ExtNet)

    capsys.readouterr()
    assert cli(["infer", "ext", "--store", str(store.path), "--model", str(run), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["n_spectra"] == 40
    cat = SpectraStore.open(store.path).catalog
    assert np.isfinite(cat["EXT_TEFF"]).all()

    monkeypatch.setenv("STELLARSCOPE_MODELS", str(run))
    from dashboard.app import DashboardApp

    app = DashboardApp(store_path=store.path)
    slot = app.context.slot("ext")
    assert isinstance(slot.model, ExtPredictor) and slot.problem == ""
    assert "ext" in app.views
    star = cat["APOGEE_ID"].iloc[7]
    app.session.select_star(star)
    assert app.views["ext"].text.object == f"{float(cat.loc[7, 'EXT_TEFF']):.1f}"
