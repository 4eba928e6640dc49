"""The shared inference runner: any predictor family over a store, one process or several,
and one χ² from the catalog column to the app's single-spectrum number."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_vae_infer import make_model_dir
from toy_emulator import spectrum_like_store

from core import chi2 as C
from core import models
from core.cli.main import main as cli
from core.inference.predictor import Column, Prediction, Predictor, SpectraBatch
from core.inference.prepare import good_pixels
from core.inference.runner import run_store
from core.inference.vae import VAEPredictor, infer_store
from core.models.emulator import save_emulator
from core.models.families import FAMILIES, Family, register_family
from core.store import SpectraStore
from core.train.synthetic import synthetic_arrays, synthetic_store
from dashboard.spectra import fit_statistics

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    base = tmp_path_factory.mktemp("runner")
    store = synthetic_store(base / "train", n=80, seed=5)
    return make_model_dir(store, base / "vae")


def _snr_store(path, snrs: list[float], seed: int = 7) -> SpectraStore:
    """Synthetic stars re-observed at the given S/N (noise drawn at that σ)."""
    a = synthetic_arrays(len(snrs), seed=seed)
    rng = np.random.default_rng(seed)
    err = (1.0 / np.asarray(snrs, np.float32))[:, None] * np.ones_like(a["clean"])
    flux = a["clean"] + rng.normal(0.0, 1.0, err.shape).astype(np.float32) * err
    cat = a["catalog"].assign(SNR=snrs)
    with SpectraStore.create(path, kind="generic") as w:
        w.append(flux, err, a["pixmask"], cat)
    return SpectraStore.open(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- (a) two gloo processes under torchrun write what one process writes -----------------------


def test_torchrun_two_processes_write_the_same_columns_as_one(vae, tmp_path):
    a = synthetic_arrays(37, seed=9)
    a["flux"][8] = np.nan  # an unusable row travels through the merge too
    with SpectraStore.create(tmp_path / "one", kind="generic") as w:
        w.append(a["flux"], a["error"], a["pixmask"], a["catalog"])
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    assert cli(["infer", "vae", "--store", str(tmp_path / "one"), "--model", vae,
                "--batch-size", "8", "--no-progress"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         "-m", "core.cli.main", "infer", "vae", "--store", str(tmp_path / "two"),
         "--model", vae, "--batch-size", "8", "--json", "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    figures = json.loads(lines[0])
    assert figures["world_size"] == 2 and figures["n_spectra"] == 37
    assert figures["columns_written"] == 28 * 2 + 3
    one = SpectraStore.open(tmp_path / "one")
    two = SpectraStore.open(tmp_path / "two")
    cols = [c for c in one.catalog.columns if c.startswith("VAE_")]
    assert len(cols) == 59 and cols == [c for c in two.catalog.columns if c.startswith("VAE_")]
    assert np.array_equal(one.catalog["VAE_FLAG"], two.catalog["VAE_FLAG"])
    assert one.catalog.loc[8, "VAE_FLAG"] & 2 and np.isnan(two.catalog.loc[8, "VAE_CHI2"])
    # float32 sums over other batch shapes: ~1e-6 apart on some CPUs (seen: 1.1e-6 on one value)
    np.testing.assert_allclose(two.catalog[cols].to_numpy(float), one.catalog[cols].to_numpy(float),
                               rtol=1e-5, atol=1e-5)
    assert two.manifest["columns"]["VAE_CHI2"]["model"] == vae
    assert not list((tmp_path / "two").glob(".infer-*"))  # the shards' files are gone


# -- (b) the app's χ²_ν is the catalog's, below and above S/N 200 ------------------------------


def test_single_spectrum_chi2_equals_the_catalog_column(vae, tmp_path):
    store = _snr_store(tmp_path / "s", [50.0, 400.0, 50.0, 400.0])
    infer_store(store, vae, batch_size=3, progress=False)
    cat = SpectraStore.open(tmp_path / "s").catalog
    p = VAEPredictor.load(vae)
    for row in range(4):
        spec = store.spectrum(row)
        out = p.predict_spectrum(spec)
        catalog_chi2 = float(cat.loc[row, "VAE_CHI2"])
        assert np.isfinite(catalog_chi2)
        assert out["chi2_nu"] == pytest.approx(catalog_chi2, rel=1e-5)
        assert out["columns"]["VAE_CHI2"] == pytest.approx(catalog_chi2, rel=1e-5)
        assert np.allclose(out["latents"], cat.loc[row, [f"VAE_Z{k:02d}" for k in range(28)]]
                           .to_numpy(float), atol=1e-5)
        # the sidebar's number from the reconstruction is the same χ²
        assert fit_statistics(spec, out["model"])["chi2_nu"] == pytest.approx(catalog_chi2, rel=1e-4)
        # written out: floor in quadrature over good pixels, χ²/n_good
        good = good_pixels(spec.flux, spec.error, spec.pixmask)
        r = (spec.flux - out["model"])[good]
        by_hand = np.mean(r**2 / (spec.error[good] ** 2 + C.ERROR_FLOOR**2))
        assert catalog_chi2 == pytest.approx(by_hand, rel=1e-4)
        if spec.meta["SNR"] == 400.0:  # where a floorless χ² (the old sidebar) disagreed
            assert np.mean(r**2 / spec.error[good] ** 2) > 2 * catalog_chi2


# -- (c) a family defined only here runs through the runner and `infer` ------------------------


class ToyLevel(torch.nn.Module):
    """A model of one number: every spectrum is a flat continuum at ``level``."""

    model_type = "toy-level"

    def __init__(self, level: float = 1.0):
        super().__init__()
        self.level = torch.nn.Parameter(torch.tensor(float(level)))

    def architecture(self) -> dict:
        return {"level": float(self.level.detach())}

    @classmethod
    def from_architecture(cls, arch: dict) -> ToyLevel:
        return cls(arch.get("level", 1.0))


class ToyPredictor(Predictor):
    family = "toy"
    column_prefix = "TOY"

    def __init__(self, model: ToyLevel, model_dir: str):
        self.model, self.model_dir, self.config = model, model_dir, {"model_type": "toy-level"}

    @classmethod
    def load(cls, model_dir, device=None, **_):
        return cls(models.load(model_dir), str(model_dir))

    @property
    def grid(self):
        from core.grid import get_grid

        return get_grid("apogee7514")

    def columns(self):
        return [Column("TOY_CHI2"), Column("TOY_DEPTH"), Column("TOY_FLAG", "int16", 0)]

    def predict_batch(self, batch: SpectraBatch) -> Prediction:
        good = good_pixels(batch.flux, batch.error, batch.pixmask)
        model = np.full(batch.flux.shape, float(self.model.level.detach()), np.float32)
        w = C.pixel_weights(batch.error, good)
        chi2, n = C.chi2_sum(np.where(good, batch.flux, 0), model, w)
        chi2_nu = C.reduced(chi2, n, 0).astype(np.float32)
        depth = (model - np.where(good, batch.flux, np.nan)).astype(np.float32)
        columns = {"TOY_CHI2": chi2_nu, "TOY_DEPTH": np.nanmean(depth, axis=1),
                   "TOY_FLAG": (n == 0).astype(np.int16)}
        return Prediction(columns, {"model": model, "chi2_nu": chi2_nu})


@pytest.fixture
def toy_family(tmp_path):
    models.register_model_type("toy-level", ToyLevel)
    register_family(Family(name="toy", title="toy level model", model_types=("toy-level",),
                           predictor=f"{__name__}:ToyPredictor", column_prefix="TOY"))
    yield models.save(ToyLevel(0.97), tmp_path / "toy")
    FAMILIES.pop("toy", None)
    models.MODEL_TYPES.pop("toy-level", None)


def test_a_family_defined_in_a_test_runs_through_runner_and_cli(toy_family, tmp_path, capsys):
    store = synthetic_store(tmp_path / "s", n=21, seed=2)
    p = models.get_family("toy").part("predictor").load(models.find("toy", toy_family))
    figures = run_store(p, store, batch_size=5, progress=False)
    assert figures["family"] == "toy" and figures["columns_written"] == 3
    cat = SpectraStore.open(tmp_path / "s").catalog
    assert np.isfinite(cat["TOY_CHI2"]).all() and (cat["TOY_FLAG"] == 0).all()
    one = p.predict_spectrum(store.spectrum(13))
    assert one["columns"]["TOY_CHI2"] == pytest.approx(float(cat.loc[13, "TOY_CHI2"]), rel=1e-6)
    store.add_columns({"TOY_CHI2": np.zeros(21)})
    capsys.readouterr()
    assert cli(["infer", "toy", "--store", str(tmp_path / "s"), "--model", str(toy_family),
                "--json", "--batch-size", "4"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_spectra"] == 21 and out["columns_written"] == 3
    again = SpectraStore.open(tmp_path / "s")
    assert np.allclose(again.catalog["TOY_CHI2"], cat["TOY_CHI2"])
    assert again.manifest["columns"]["TOY_DEPTH"]["family"] == "toy"


# -- (d) `infer emulator` is `fit --all` -------------------------------------------------------


def test_infer_emulator_writes_the_fit_all_columns(tmp_path, capsys):
    ids = [f"2M-T{i:03d}" for i in range(6)]
    emu, _ = spectrum_like_store(tmp_path / "a", ids, [-20.0, -5.0, 0.0, 3.0, 12.0, 30.0])
    save_emulator(emu, tmp_path / "emu")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert cli(["fit", "--all", "--store", str(tmp_path / "a"), "--model", str(tmp_path / "emu"),
                "--json"]) == 0
    assert cli(["infer", "emulator", "--store", str(tmp_path / "b"), "--model",
                str(tmp_path / "emu"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["family"] == "emulator" and figures["n_spectra"] == 6
    a = SpectraStore.open(tmp_path / "a").catalog
    b = SpectraStore.open(tmp_path / "b").catalog
    cols = [c for c in a.columns if c.startswith("FIT_")]
    assert {"FIT_TEFF", "FIT_TEFF_ERR", "FIT_RV", "FIT_CHI2", "FIT_FLAG"} <= set(cols)
    assert cols == [c for c in b.columns if c.startswith("FIT_")]
    for c in cols:
        assert a[c].dtype == b[c].dtype, c
        if pd.api.types.is_numeric_dtype(a[c]):
            np.testing.assert_allclose(b[c].to_numpy(float), a[c].to_numpy(float), rtol=1e-6,
                                       err_msg=c)
        else:
            assert list(a[c]) == list(b[c]), c
    # the single-spectrum prediction (the app's Fit numbers) matches its catalog row
    p = models.get_family("emulator").part("predictor").load(tmp_path / "emu")
    store = SpectraStore.open(tmp_path / "b")
    out = p.predict_spectrum(store.spectrum(2))
    assert out["chi2_nu"] == pytest.approx(float(b.loc[2, "FIT_CHI2"]), rel=1e-3)
    assert out["model"].shape == (store.grid.n_pix,)
    assert out["labels"] == pytest.approx(b.loc[2, [f"FIT_{n}" for n in p.label_names]]
                                          .to_numpy(float), rel=1e-3)
