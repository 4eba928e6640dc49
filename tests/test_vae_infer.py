"""Using a VAE: the predictor API, whole-store inference, evaluation and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from core import models
from core.cli.main import main as cli
from core.errors import BadDataError
from core.grid import APOGEE_7214
from core.inference.vae import FLAG_NONFINITE, FLAG_UNUSABLE, VAEPredictor, infer_store
from core.models.vae import SpectrumVAE, VAEConfig
from core.spectrum import Spectrum
from core.store import SpectraStore
from core.train import data as D
from core.train.synthetic import synthetic_arrays, synthetic_store
from core.train.vae import VAETrainSettings, model_extra_config

torch.set_num_threads(1)


def make_model_dir(store: SpectraStore, out) -> str:
    """A small untrained VAE with real scalings and the config a training run writes."""
    torch.manual_seed(0)
    model = SpectrumVAE(VAEConfig(encoder_widths=(16, 8)))
    labels, _ = D.label_arrays(store.catalog)
    rows = D.labelled_rows(labels)
    split = D.split_rows(store.catalog, rows, 0.25, 0)
    model.set_scaling(*D.flux_statistics(store, split.train, max_rows=200),
                      *D.label_statistics(labels[split.train]))
    torch.nn.init.normal_(model.decoder[-2].weight, std=0.3)
    s = VAETrainSettings(store=str(store.path), out=str(out), val_fraction=0.25)
    models.save(model, out, model_extra_config(model, s, store, split, {"epoch": 0}))
    return str(out)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("vae-infer")
    store = synthetic_store(base / "syn", n=120, seed=5)
    return store, make_model_dir(store, base / "model")


def test_predictor_api_shapes(setup):
    store, model_dir = setup
    p = VAEPredictor.load(model_dir)
    assert p.n_latent == 28 and p.label_names == ("TEFF", "LOGG", "FE_H")
    assert p.grid.name == "apogee7514" and p.config["model_type"] == "vae"
    assert p.label_mean.shape == p.label_std.shape == (3,) and (p.label_std > 0).all()
    spec = store.spectrum(7)
    enc = p.encode(spec)
    assert enc["mu"].shape == enc["sigma"].shape == (28,) and (enc["sigma"] > 0).all()
    assert np.allclose(enc["labels"], store.catalog.loc[7, ["TEFF", "LOGG", "FE_H"]].to_numpy(float))
    one = p.decode(enc["mu"], enc["labels"])
    assert one.shape == (7514,) and one.dtype == np.float32
    many = p.decode(np.zeros((4, 28)), np.tile(enc["labels"], (4, 1)))
    assert many.shape == (4, 7514) and many.dtype == np.float32
    assert np.array_equal(p.reconstruct(spec), one)
    sens = p.sensitivity(enc["mu"], enc["labels"])
    assert sens.shape == (28, 7514) and sens.dtype == np.float32
    step = np.zeros(28, np.float32)
    step[4] = 1e-2
    fd = (p.decode(enc["mu"] + step, enc["labels"]) - p.decode(enc["mu"] - step, enc["labels"])) / 2e-2
    assert np.allclose(fd, sens[4], atol=1e-3 * np.abs(sens[4]).max() + 1e-6)
    # other labels change the encoding
    other = p.encode(spec, labels=enc["labels"] + np.float32([300, 0.5, 0.2]))
    assert not np.allclose(other["mu"], enc["mu"])


def test_predictor_rejects_bad_input_clearly(setup):
    store, model_dir = setup
    p = VAEPredictor.load(model_dir)
    spec = store.spectrum(3)
    spec.meta["LOGG"] = float("nan")
    with pytest.raises(BadDataError, match="LOGG"):
        p.encode(spec)
    del spec.meta["TEFF"]
    with pytest.raises(BadDataError, match="TEFF"):
        p.encode(spec)
    wrong = Spectrum(APOGEE_7214.wavelength, np.ones(7214), np.ones(7214) * 0.01, np.zeros(7214),
                     meta={"APOGEE_ID": "x"}, grid="apogee7214")
    with pytest.raises(BadDataError, match="apogee7514"):
        p.encode(wrong, labels=[4500, 2.0, 0.0])
    dead = store.spectrum(4).copy(flux=np.full(7514, np.nan, np.float32))
    with pytest.raises(BadDataError, match="every pixel"):
        p.encode(dead)
    with pytest.raises(BadDataError, match="28"):
        p.decode(np.zeros(5), [4500, 2.0, 0.0])


def test_infer_store_partial_last_batch_and_nan_spectra(tmp_path, setup):
    _, model_dir = setup
    a = synthetic_arrays(37, seed=9)
    a["flux"][5, 100:120] = np.nan          # a few non-finite pixels
    a["error"][6, 7000] = np.inf
    a["flux"][8] = np.nan                   # nothing usable
    cat = a["catalog"]
    cat.loc[11, "FE_H"] = np.nan             # no label to condition on
    with SpectraStore.create(tmp_path / "s", kind="generic") as w:
        w.append(a["flux"], a["error"], a["pixmask"], cat)
    figures = infer_store(tmp_path / "s", model_dir, batch_size=16, progress=False)
    assert figures["n_spectra"] == 37 and figures["spectra_per_s"] > 0
    out = SpectraStore.open(tmp_path / "s").catalog
    flags = out["VAE_FLAG"].to_numpy()
    assert flags[5] == FLAG_NONFINITE and flags[6] == FLAG_NONFINITE
    assert flags[8] == FLAG_NONFINITE | FLAG_UNUSABLE and flags[11] == FLAG_UNUSABLE
    assert figures["n_flag_nonfinite"] == 3 and figures["n_flag_unusable"] == 2
    ok = flags & FLAG_UNUSABLE == 0
    z_cols = [f"VAE_Z{k:02d}" for k in range(28)]
    assert list(out.filter(like="VAE_Z").columns) == z_cols
    assert np.isfinite(out.loc[ok, z_cols + ["VAE_CHI2", "VAE_RESID_RMS"]].to_numpy()).all()
    assert out.loc[~ok, z_cols + ["VAE_S00", "VAE_CHI2"]].isna().all().all()
    # the batched columns agree with one-spectrum encoding, the partial last batch included
    p = VAEPredictor.load(model_dir)
    store = SpectraStore.open(tmp_path / "s")
    for row in (0, 5, 36):
        enc = p.encode(store.spectrum(row))
        assert np.allclose(out.loc[row, z_cols].to_numpy(float), enc["mu"], atol=1e-5)
        s = store.spectrum(row)
        good = D.good_pixels(s.flux, s.error, s.pixmask)
        err = np.sqrt(s.error[good] ** 2 + 0.005**2)  # the one χ²: error floor in quadrature
        chi2 = np.mean(((s.flux[good] - p.reconstruct(s)[good]) / err) ** 2)
        assert out.loc[row, "VAE_CHI2"] == pytest.approx(chi2, rel=1e-3)
    note = store.manifest["columns"]["VAE_CHI2"]
    assert note["model"] == model_dir and note["model_type"] == "vae"


def test_evaluate_writes_the_diagnostics(setup, tmp_path):
    store, model_dir = setup
    rc = cli(["evaluate", "vae", "--store", str(store.path), "--model", model_dir,
              "--out", str(tmp_path / "ev"), "--json", "--batch-size", "16"])
    assert rc == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["held_out"] and 10 < summary["n_spectra"] < 60
    assert summary["median_chi2_nu"] > 0 and 0 <= summary["max_abs_corr"] <= 1
    corr = pd.read_csv(tmp_path / "ev" / "latent_corr.csv", index_col=0)
    assert corr.shape == (31, 31) and np.allclose(np.diag(corr.to_numpy()), 1.0, atol=1e-6)
    block = pd.read_csv(tmp_path / "ev" / "label_corr.csv", index_col=0)
    assert block.shape == (31, 3) and list(block.columns) == ["TEFF", "LOGG", "FE_H"]
    assert summary["max_abs_corr"] == pytest.approx(np.abs(block.to_numpy()[:28]).max(), abs=1e-5)
    res = pd.read_csv(tmp_path / "ev" / "residuals.csv")
    assert len(res) == 7514 and {"resid_mean", "resid_std", "resid_norm_std"} <= set(res.columns)
    corner = pd.read_csv(tmp_path / "ev" / "corner_data.csv")
    assert set(corner["label"]) == {"TEFF", "LOGG", "FE_H"} and set(corner["bin"]) == {0, 1, 2}
    for png in ("chi2_hist.png", "residuals.png", "latent_corr.png", "label_corr.png"):
        assert (tmp_path / "ev" / png).stat().st_size > 1000


def test_cli_infer_prints_json_figures(setup, tmp_path, capsys):
    store, model_dir = setup
    a = synthetic_arrays(20, seed=11)
    with SpectraStore.create(tmp_path / "s", kind="generic") as w:
        w.append(a["flux"], a["error"], a["pixmask"], a["catalog"])
    assert cli(["infer", "vae", "--store", str(tmp_path / "s"), "--model", model_dir,
                "--json", "--batch-size", "8"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["n_spectra"] == 20 and figures["columns_written"] == 28 * 2 + 3
    assert "VAE_S27" in SpectraStore.open(tmp_path / "s").catalog
