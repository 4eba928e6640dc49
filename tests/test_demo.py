"""The embedded demo (what `make serve` builds): the mock store plus the shipped VAE's and
transformer's columns, run through the shared inference runner, and nothing redone on the
next start."""

from __future__ import annotations

import numpy as np

from core.demo import build_demo
from core.store import SpectraStore


def test_demo_builds_once_and_carries_the_shipped_vae_and_transformer_columns(tmp_path, capsys):
    path = tmp_path / "demo"
    lines = []
    first = build_demo(path, n_stars=40, progress=True, log=lines.append)
    assert first.generated and first.inferred == ["vae-demo", "transformer-demo"]
    store = SpectraStore.open(path)
    assert store.is_mock and len(store) == 40
    assert np.isfinite(store.catalog["VAE_CHI2"]).sum() >= 35
    note = store.manifest["columns"]["VAE_Z00"]
    assert note["model_type"] == "vae" and len(note["model_sha256"]) == 64
    for col in ("TF_TEFF", "TF_TEFF_ERR", "TF_LOGG", "TF_FE_H", "TF_FE_H_ERR"):
        assert np.isfinite(store.catalog[col]).all(), col
    assert (store.catalog["TF_TEFF_ERR"] > 0).all() and (store.catalog["TF_NPIX"] > 1000).all()
    tf_note = store.manifest["columns"]["TF_TEFF"]
    assert tf_note["family"] == "transformer" and len(tf_note["model_sha256"]) == 64
    # the long step says what it runs and shows a progress bar with its rate
    assert any("transformer-demo" in line for line in lines)
    err = capsys.readouterr().err
    assert "spectral transformer inference" in err and "spectra/s" in err
    again = build_demo(path, n_stars=40, progress=False, log=lambda *_: None)
    assert not again.generated and again.inferred == []


def test_demo_rebuilds_a_store_of_an_older_mock(tmp_path):
    """A demo store left by a release whose mock had classic physics is regenerated, since the
    shipped models are trained on today's default physics and population."""
    from core.mock import DEFAULT_PHYSICS, DEFAULT_POPULATION, generate_mock_survey, store_physics

    path = tmp_path / "demo"
    generate_mock_survey(path, n_stars=12, seed=42, progress=False, physics="classic",
                         population="classic")
    said = []
    status = build_demo(path, n_stars=12, progress=False, log=said.append)
    assert status.generated
    assert any("classic physics" in line and DEFAULT_PHYSICS in line for line in said)
    store = SpectraStore.open(path)
    assert store_physics(store) == DEFAULT_PHYSICS
    assert store.manifest["provenance"]["population"] == DEFAULT_POPULATION
