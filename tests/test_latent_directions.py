"""Latent directions (core.evaluate.latent_directions): what each latent changes, what it
knows, the slider order, and the cache that never goes into the model directory."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest

from core.evaluate import latent_directions as L
from core.grid import APOGEE_7514
from core.linelist import load_linelist
from core.store import SpectraStore

WAVE = APOGEE_7514.wavelength
P = APOGEE_7514.n_pix


def isolated_line(element: str) -> float:
    """An atomic line of ``element`` with no other element's line within 8 pixels."""
    ll = load_linelist()
    ll = ll[(ll.wavelength_vac > WAVE[10]) & (ll.wavelength_vac < WAVE[-10])]
    pix = np.interp(ll.wavelength_vac, WAVE, np.arange(P))
    for i in np.flatnonzero((ll.element == element).to_numpy() & (ll.kind == "atomic").to_numpy()):
        others = pix[(ll.element != element).to_numpy()]
        if np.min(np.abs(others - pix[i])) > 8:
            return float(ll.wavelength_vac.iloc[i])
    pytest.skip(f"no isolated {element} line in the line list")


def gaussian(centre: float, width_pix: float = 1.2) -> np.ndarray:
    c = np.interp(centre, WAVE, np.arange(P))
    return np.exp(-0.5 * ((np.arange(P) - c) / width_pix) ** 2)


class LineVAE:
    """flux = 1 − Σ_k a_k(z_k) · template_k: latent 0 deepens one Mg line (strongly), latent 1
    one Fe line (a little), latent 2 one Si line with a nonlinear, even response."""

    n_latent = 3
    label_names = ("TEFF", "LOGG", "FE_H")
    label_mean = np.array([4800.0, 2.5, -0.2], np.float32)
    grid = APOGEE_7514

    def __init__(self, model_dir: str = ""):
        self.model_dir = model_dir
        self.templates = np.stack([0.05 * gaussian(isolated_line("Mg")),
                                   0.01 * gaussian(isolated_line("Fe")),
                                   0.03 * gaussian(isolated_line("Si"))]).astype(np.float32)

    def decode(self, z, labels):
        z = np.atleast_2d(np.asarray(z, np.float32))
        amp = np.column_stack([z[:, 0], z[:, 1], z[:, 2] + 0.3 * z[:, 2] ** 3])
        return (1.0 - amp @ self.templates).astype(np.float32)

    def encode(self, spectrum, labels=None):
        v = float(spectrum.meta["VMICRO"])
        # latent 0 knows VMICRO through a nonlinear (but monotone) map, latent 1 knows nothing
        mu = np.array([np.tanh(3 * (v - 1.5)), spectrum.meta["NOISE"], 0.0], np.float32)
        return {"mu": mu, "sigma": np.ones(3, np.float32), "labels": np.asarray(labels)}


def test_a_latent_that_moves_one_elements_line_names_that_element():
    vae = LineVAE()
    res = L.compute(vae, None)
    mg, fe, si = res["directions"]
    assert mg["lines"][0]["element"] == "Mg"
    assert abs(mg["lines"][0]["wavelength"] - isolated_line("Mg")) < 0.01
    assert mg["lines"][0]["delta"] < 0  # z up deepens the line: flux goes down
    assert next(iter(mg["elements"])) == "Mg" and mg["elements"]["Mg"] > 0.8
    assert fe["lines"][0]["element"] == "Fe" and next(iter(fe["elements"])) == "Fe"
    assert si["lines"][0]["element"] == "Si"
    assert abs(mg["top_pixels"][0] - isolated_line("Mg")) < 0.3
    assert res["correlations"] is None and res["correlations_problem"] == "no store open"


def test_sliders_ordered_by_how_much_the_latent_changes_the_spectrum():
    res = L.compute(LineVAE(), None)
    rms = {d["latent"]: d["rms"] for d in res["directions"]}
    # latent 2: 0.03 · (1 + 0.3) over ±1σ beats latent 1's 0.01 but not latent 0's 0.05
    assert res["order"] == [0, 2, 1]
    assert rms[0] > rms[2] > rms[1] > 0
    assert L.slider_order([{"latent": 0, "rms": 1.0}, {"latent": 1, "rms": 1.0},
                           {"latent": 2, "rms": 2.0}]) == [2, 0, 1]


def test_flux_change_is_the_central_difference_over_one_sigma():
    vae = LineVAE()
    ch = L.flux_changes(vae.decode, 3, np.zeros(3), vae.label_mean)
    np.testing.assert_allclose(ch[0], -vae.templates[0], atol=1e-6)
    np.testing.assert_allclose(ch[2], -1.3 * vae.templates[2], atol=1e-6)


def make_store(path, n=120, seed=0) -> SpectraStore:
    rng = np.random.default_rng(seed)
    flux = np.ones((n, P), np.float32)
    cat = pd.DataFrame({
        "APOGEE_ID": [f"2M{i:08d}" for i in range(n)],
        "TEFF": rng.uniform(4000, 5500, n), "LOGG": rng.uniform(1, 3.5, n),
        "FE_H": rng.normal(-0.2, 0.3, n), "VMICRO": rng.uniform(0.8, 2.2, n),
        "MG_FE": rng.normal(0.1, 0.1, n), "NOISE": rng.normal(size=n)})
    with SpectraStore.create(path, kind="mock survey", title="directions test") as w:
        w.append(flux, np.full((n, P), 0.01, np.float32), np.zeros((n, P), np.uint16), cat)
    return SpectraStore.open(path)


def test_per_latent_r2_finds_the_label_a_latent_knows_nonlinearly(tmp_path):
    store = make_store(tmp_path / "store")
    res = L.compute(LineVAE(), store)
    corr = res["correlations"]
    assert corr is not None, res["correlations_problem"]
    assert corr["latents_from"] == "120 stars encoded"
    cols = corr["columns"]
    assert "VMICRO" in cols and "MG_FE" in cols and set(corr["injected"]) == {"TEFF", "LOGG",
                                                                              "FE_H"}
    r2 = np.array(corr["r2"])
    assert r2.shape == (3, len(cols))
    assert r2[0, cols.index("VMICRO")] > 0.8
    assert r2[1, cols.index("VMICRO")] < 0.2 and r2[0, cols.index("MG_FE")] < 0.2


def test_cache_goes_under_the_home_never_into_a_read_only_model_dir(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("STELLARSCOPE_HOME", str(home))
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights v1")
    (model / "config.json").write_text("{}")
    os.chmod(model, stat.S_IRUSR | stat.S_IXUSR)
    try:
        store = make_store(tmp_path / "store")
        vae = LineVAE(str(model))
        first = L.directions_for(vae, store)
        assert "cached" not in first and first["weights_sha256"]
        assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]
        files = list((home / "cache" / "latent-directions").glob("*.json"))
        assert len(files) == 1 and str(store.generation) in files[0].name
        again = L.directions_for(vae, store)
        assert again["cached"] == str(files[0]) and again["order"] == first["order"]
        # a new store generation (columns added) misses the cache
        store.add_columns({"EXTRA": np.zeros(len(store))})
        L.directions_for(vae, SpectraStore.open(store.path))
        assert len(list((home / "cache" / "latent-directions").glob("*.json"))) == 2
    finally:
        os.chmod(model, stat.S_IRWXU)
    # new weights miss it too
    (model / "model.safetensors").write_bytes(b"weights v2")
    assert "cached" not in L.directions_for(LineVAE(str(model)), SpectraStore.open(store.path))


def test_catalog_latents_are_used_only_when_this_model_wrote_them(tmp_path):
    store = make_store(tmp_path / "store", n=60)
    vae = LineVAE(str(tmp_path))
    z = np.random.default_rng(1).normal(size=(60, 3))
    store.add_columns({f"VAE_Z{k:02d}": z[:, k] for k in range(3)},
                      note={"model": str(tmp_path / "other-model")})
    rows, mu, where = L.store_latents(vae, SpectraStore.open(store.path), None)
    assert where == "60 stars encoded"
    store = SpectraStore.open(store.path)
    store.add_columns({f"VAE_Z{k:02d}": z[:, k] for k in range(3)}, note={"model": str(tmp_path)})
    rows, mu, where = L.store_latents(vae, SpectraStore.open(store.path), None)
    assert where == "the catalog's VAE_Z columns"
    np.testing.assert_allclose(mu, z[rows])
