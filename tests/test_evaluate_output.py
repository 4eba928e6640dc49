"""Evaluations write only where the user says (or under $STELLARSCOPE_HOME/evaluations) and
never change a shipped model: ``evaluate emulator --save`` refuses one and ``--save-as``
writes a calibrated copy; ``evaluate vae`` leaves the model directory alone."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli.main import main
from core.mock import generate_mock_survey
from core.paths import SHIPPED_MODELS

torch.set_num_threads(1)
EMULATOR = SHIPPED_MODELS / "emulator-demo"
VAE = SHIPPED_MODELS / "vae-demo"


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its SHA-256: any write shows up."""
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("evaluate") / "mock"
    generate_mock_survey(path, n_stars=80, seed=7, progress=False)
    return path


def home() -> Path:
    return Path(os.environ["STELLARSCOPE_HOME"])


def test_evaluate_emulator_never_changes_the_shipped_model(store, tmp_path, capsys):
    if not (EMULATOR / "config.json").is_file():
        pytest.skip(f"no shipped demo emulator at {EMULATOR}")
    before = tree_digest(SHIPPED_MODELS)
    args = ["evaluate", "emulator", "--model", str(EMULATOR), "--store", str(store),
            "--n-stars", "12"]
    assert main([*args, "--save"]) == 1  # refused before any star is fitted
    err = capsys.readouterr().err
    assert str(EMULATOR) in err and "shipped model" in err and "--save-as" in err

    copy, out = tmp_path / "calibrated", tmp_path / "evaluation"
    assert main([*args, "--save-as", str(copy), "--out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["saved_to"] == str(copy) and record["out_dir"] == str(out)
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["n_stars"] == 12 and saved["error_floor"] == record["error_floor"]
    config = json.loads((copy / "config.json").read_text())
    assert config["training"]["error_calibration"]["n_stars"] == 12
    assert config["architecture"]["error_floor"] == pytest.approx(record["error_floor"])
    assert (copy / "model.safetensors").read_bytes() == (EMULATOR / "model.safetensors").read_bytes()
    assert main([*args, "--save-as", str(copy)]) == 1  # an existing copy is not overwritten
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--out", str(EMULATOR / "evaluation")]) == 1
    assert "never written" in capsys.readouterr().err
    assert tree_digest(SHIPPED_MODELS) == before


def test_evaluate_emulator_writes_under_the_home_by_default_and_saves_own_models(
        store, tmp_path, capsys, monkeypatch):
    from toy_emulator import spectrum_like_emulator

    from core.models.emulator import save_emulator

    mine = tmp_path / "my-emulator"
    save_emulator(spectrum_like_emulator(), mine)
    # a model inside (a stand-in for) the shipped models is refused like the real ones
    fake_shipped = tmp_path / "assets-models"
    save_emulator(spectrum_like_emulator(), fake_shipped / "other")
    monkeypatch.setattr("core.paths.SHIPPED_MODELS", fake_shipped)
    assert main(["evaluate", "emulator", "--model", str(fake_shipped / "other"), "--store",
                 str(store), "--n-stars", "12", "--save"]) == 1
    assert "shipped model" in capsys.readouterr().err

    # the user's own model: --save writes into it; the record goes under the home
    with pytest.MonkeyPatch.context() as m:
        m.setattr("core.fit.calibrate.fit_store_table", _fake_fits)
        assert main(["evaluate", "emulator", "--model", str(mine), "--store", str(store),
                     "--n-stars", "12", "--save", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    out = Path(record["out_dir"])
    assert out.parent == home() / "evaluations" and out.name.startswith("my-emulator-")
    assert (out / "calibration.json").is_file() and record["saved_to"] == str(mine)
    assert json.loads((mine / "config.json").read_text())["architecture"]["error_floor"]


def _fake_fits(store, emulator, options=None, *, rows=None, **kwargs):
    """Fits that scatter around the truth by 2σ (a floor to measure), without fitting."""
    import pandas as pd

    cat = store.catalog.iloc[rows]
    rng = np.random.default_rng(0)
    cols = {}
    for name in emulator.label_names:
        truth = cat[f"TRUE_{name}"].to_numpy(float) if f"TRUE_{name}" in cat else np.zeros(len(rows))
        cols[f"FIT_{name}"] = truth + rng.normal(0, 2.0, len(rows))
        cols[f"FIT_{name}_ERR"] = np.ones(len(rows))
    return pd.DataFrame(cols, index=rows)


def test_evaluate_vae_writes_outside_the_model_and_uses_every_held_out_star(store, capsys):
    if not (VAE / "config.json").is_file():
        pytest.skip(f"no shipped demo VAE at {VAE}")
    from core.evaluate.vae import held_out_rows
    from core.models.io import read_config
    from core.store import SpectraStore
    from core.train import data as D

    before = tree_digest(SHIPPED_MODELS)
    assert main(["evaluate", "vae", "--model", str(VAE), "--store", str(store), "--json",
                 "--batch-size", "32"]) == 0
    summary = json.loads(capsys.readouterr().out)
    out = Path(summary["out_dir"])
    assert out.parent == home() / "evaluations" and out.name.startswith("vae-demo-")
    assert (out / "summary.json").is_file() and (out / "chi2_hist.png").is_file()
    s = SpectraStore.open(store)
    config = read_config(VAE)
    labels, _ = D.label_arrays(s.catalog, list(config["label_names"]), str(store))
    assert summary["n_spectra"] == len(held_out_rows(s, config, labels)) >= 3
    assert main(["evaluate", "vae", "--model", str(VAE), "--store", str(store),
                 "--out", str(VAE / "eval-here")]) == 1
    assert "never written" in capsys.readouterr().err
    assert tree_digest(SHIPPED_MODELS) == before
