"""core.models.applicability: training-distribution percentiles and plain-language reasons."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_dashboard_state import write_store

from core.models import applicability as AP


def _catalog(n=5000, seed=1):
    rng = np.random.default_rng(seed)
    cat = pd.DataFrame({"VAE_CHI2": rng.gamma(20.0, 0.05, n),  # around 1
                        "FIT_CHI2": rng.gamma(30.0, 0.04, n)})
    for k in range(3):
        cat[f"VAE_Z{k:02d}"] = rng.standard_normal(n) + k
    cat.loc[:9, "VAE_CHI2"] = np.nan  # unusable rows are NaN and left out
    return cat


def test_percentiles_from_a_catalog_the_model_wrote():
    cat = _catalog()
    notes = {c: {"model": "/models/vae-a"} for c in cat.columns}
    ref = AP.from_catalog(cat, notes, "/models/vae-a")
    assert ref["vae_chi2"] == pytest.approx(np.nanpercentile(cat["VAE_CHI2"], AP.PERCENTILES))
    assert ref["latents"].shape == (3, 5)
    assert ref["latents"][2] == pytest.approx(np.percentile(cat["VAE_Z02"], AP.PERCENTILES))
    assert ref["fit_chi2"][2] == pytest.approx(np.median(cat["FIT_CHI2"]))
    assert np.all(np.diff(ref["latents"], axis=1) > 0)
    # columns another model wrote say nothing about this one
    assert AP.from_catalog(cat, notes, "/models/vae-b") is None
    assert AP.from_catalog(cat, {}, "/models/vae-a") is None


def test_reference_prefers_the_percentiles_saved_with_the_model(tmp_path):
    model = tmp_path / "vae"
    model.mkdir()
    saved = {"vae_chi2": [0.6, 0.7, 1.0, 1.5, 1.9],
             "latents": [[-3.9, -2.5, 0.0, 2.6, 4.1]] * 2}
    (model / "config.json").write_text(json.dumps(
        {"model_type": "vae", "training": {"applicability": saved}}))
    ref = AP.reference(str(model))
    assert ref["source"] == "saved with the model"
    assert ref["vae_chi2"][-1] == 1.9 and ref["latents"].shape == (2, 5)
    assert "fit_chi2" not in ref


def test_reference_from_a_store_is_cached_and_follows_the_weights(tmp_path):
    store = write_store(tmp_path / "store", n=40, seed=2)
    model = tmp_path / "vae"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "vae"}))  # nothing saved
    assert AP.reference(str(model), store) is None  # the store has no VAE columns yet
    rng = np.random.default_rng(0)
    cols = {"VAE_CHI2": rng.uniform(0.8, 1.2, 40), "VAE_Z00": rng.normal(0, 1, 40)}
    store.add_columns(cols, note={"model": str(model)})
    ref = AP.reference(str(model), store)
    assert ref["source"] == "this store's catalog"
    assert ref["vae_chi2"][-1] == pytest.approx(np.percentile(cols["VAE_CHI2"], 99.9))
    assert AP.reference(str(model), store) is ref  # cached
    store.add_columns(cols, note={"model": str(tmp_path / "other")})  # rewritten by other weights
    assert AP.reference(str(model), store) is None
    assert AP.reference(None, store) is None


REF = {"vae_chi2": np.array([0.6, 0.7, 1.0, 1.5, 1.9]),
       "latents": np.array([[-3.9, -2.5, 0.0, 2.6, 4.1]] * 8),
       "fit_chi2": np.array([0.7, 0.8, 1.1, 1.8, 2.4])}


def test_a_star_inside_the_distribution_gives_no_reasons():
    assert AP.judge(REF, vae_chi2=1.2, latents=np.linspace(-3, 3, 8), fit_chi2=1.3) == []
    assert AP.judge(None, vae_chi2=913.0, latents=[11.2] * 8) == []  # nothing known: silent


def test_an_out_of_distribution_star_names_the_numbers():
    mu = np.zeros(8)
    mu[7] = 11.2
    reasons = AP.judge(REF, vae_chi2=900.0, latents=mu, fit_chi2=451.0)
    assert len(reasons) == 3
    assert reasons[0].startswith("VAE χ²_ν 900 is above the 99.9th percentile")
    assert "(1.9)" in reasons[0]
    assert reasons[1] == "latent z07 = +11.2 lies beyond the training range (−3.9…4.1)"
    assert "fit χ²_ν 451" in reasons[2] and "(2.4)" in reasons[2]
    store_ref = {**REF, "source": AP.STORE_SOURCE}  # a store's stars are not the training set
    assert AP.judge(store_ref, latents=[0.0] * 7 + [11.2]) == [
        "latent z07 = +11.2 lies beyond the range of this store's stars (−3.9…4.1)"]
    assert "percentile of this store's stars (1.9)" in AP.judge(store_ref, vae_chi2=900.0)[0]
    low = AP.judge(REF, latents=[-5.0] + [0.0] * 7)
    assert low == ["latent z00 = −5.0 lies beyond the training range (−3.9…4.1)"]


def test_fit_chi2_without_percentiles_uses_the_model_mismatch_rule():
    assert AP.judge({}, fit_chi2=2.5) == []
    reasons = AP.judge({"vae_chi2": REF["vae_chi2"]}, fit_chi2=451.0)
    assert reasons == ["fit χ²_ν 451 is above 3.0 (MODEL_MISMATCH): the emulator does not "
                       "describe this star"]


def test_summary_keeps_the_warning_short():
    reasons = AP.judge(REF, vae_chi2=900.0, latents=np.full(8, 11.0))
    assert len(reasons) == 9
    line = AP.summary(reasons)
    assert line.startswith("VAE χ²_ν 900") and "z02" in line and "z03" not in line
    assert line.endswith("and 5 more values out of range")
    assert AP.summary(reasons[:2]) == "; ".join(reasons[:2])
