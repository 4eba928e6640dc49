"""The nonlinear latent probe (core.evaluate.probe) and its place in ``evaluate vae``.

The metric itself is tested on representations whose content is known: one that holds the
labels through functions with no linear trend (Pearson ~0, excess R² high), one of pure noise
and a row-shuffled copy (excess ~0), and one that knows only the controls (high R² from the
latents alone, but no excess).  Then ``evaluate vae`` on a freshly trained VAE reports the
probe and writes nothing under the model directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.evaluate.probe import knn_regress, latent_probe, mlp_regress, r2_score

torch.set_num_threads(1)
N = 1200
NAMES = ["A", "B", "C"]


def hermite_leak(y: np.ndarray, rng) -> np.ndarray:
    """Latents that hold ``y`` through He₂ = y² − 1 and He₃ = y³ − 3y — both orthogonal to y
    itself, so no latent correlates linearly with a label — rotated, with noise, plus pure
    noise latents."""
    feats = np.column_stack([y**2 - 1, y**3 - 3 * y])
    rot = np.linalg.qr(rng.normal(size=(feats.shape[1], feats.shape[1])))[0]
    leak = feats @ rot + 0.1 * rng.normal(size=feats.shape)
    return np.column_stack([leak, rng.normal(size=(len(y), 6))])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    controls = rng.normal(size=(N, 3))
    y = rng.normal(size=(N, 3))
    return rng, controls, y


def test_r2_score_is_one_for_perfect_and_zero_for_the_mean():
    y = np.random.default_rng(0).normal(size=(50, 2))
    assert np.allclose(r2_score(y, y), 1.0)
    assert np.allclose(r2_score(y, np.broadcast_to(y.mean(0), y.shape)), 0.0)


def test_regressors_learn_a_nonlinear_function_that_a_line_misses():
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(800, 2))
    y = np.column_stack([np.sin(2 * x[:, 0]) + x[:, 1] ** 2, np.abs(x[:, 1])])
    a, b = slice(0, 600), slice(600, None)
    for regress in (mlp_regress, knn_regress):
        assert (r2_score(y[b], regress(x[a], y[a], x[b])) > 0.8).all(), regress.__name__


def test_a_leaky_representation_with_no_linear_trend_has_high_excess_r2(data):
    rng, controls, y = data
    latents = hermite_leak(y, rng)
    pearson = np.corrcoef(latents.T, y.T)[: latents.shape[1], latents.shape[1]:]
    assert np.abs(pearson).max() < 0.12  # the linear check passes …
    p = latent_probe(latents, y, controls, target_names=NAMES, control_names=["c0", "c1", "c2"])
    for t in NAMES:
        assert p["mlp"][t]["excess_r2"] > 0.4, (t, p["mlp"][t])  # … the probe does not
        assert p["mlp"][t]["partial_r2"] > 0.4
        assert p["knn"][t]["excess_over_shuffled_r2"] > 0.2, (t, p["knn"][t])
        assert abs(p["linear"][t]["excess_r2"]) < 0.1  # a linear probe sees nothing
        # row-shuffled: nothing (within the noise of 600 training stars and early stopping
        # on 120 of them)
        assert abs(p["mlp"][t]["shuffled_excess_r2"]) < 0.1
    assert p["n_stars"] == N and sum(p["halves"]) == N


def test_an_independent_representation_has_no_excess(data):
    rng, controls, y = data
    p = latent_probe(rng.normal(size=(N, 12)), y, controls, target_names=NAMES,
                     control_names=["c0", "c1", "c2"], methods=("mlp",))
    for t in NAMES:
        assert abs(p["mlp"][t]["excess_r2"]) < 0.06, p["mlp"][t]
        assert p["mlp"][t]["r2_latents"] < 0.06


def test_what_the_controls_explain_is_not_counted_as_leak():
    """Labels that depend on the controls, latents that know only the controls: the latents
    predict the labels (R² well above 0) but add nothing beyond the controls."""
    rng = np.random.default_rng(5)
    controls = rng.normal(size=(N, 2))
    y = np.column_stack([np.tanh(controls[:, 0]) * 2 + 0.5 * rng.normal(size=N),
                         controls[:, 1] ** 2 + 0.5 * rng.normal(size=N)])
    latents = np.column_stack([controls @ rng.normal(size=(2, 4)),
                               (controls**2) @ rng.normal(size=(2, 3)),
                               rng.normal(size=(N, 4))])
    p = latent_probe(latents, y, controls, target_names=["A", "B"], control_names=["c0", "c1"],
                     methods=("mlp",))
    for t in ("A", "B"):
        assert p["mlp"][t]["r2_latents"] > 0.5, p["mlp"][t]
        assert p["mlp"][t]["r2_controls"] > 0.5
        assert abs(p["mlp"][t]["excess_r2"]) < 0.06, p["mlp"][t]


def test_probe_drops_rows_with_missing_values_and_refuses_too_few():
    rng = np.random.default_rng(2)
    lat, y = rng.normal(size=(100, 3)), rng.normal(size=(100, 1))
    y[:10] = np.nan
    p = latent_probe(lat, y, None, target_names=["A"], methods=("linear",))
    assert p["n_stars"] == 90 and p["n_dropped"] == 10 and p["controls"] == []
    with pytest.raises(ValueError, match="at least 40"):
        latent_probe(lat[:30], y[10:40], None, target_names=["A"], methods=("linear",))


# -- in evaluate vae --------------------------------------------------------------------------

def digest(path: Path) -> dict[str, str]:
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from core.train.synthetic import synthetic_store
    from core.train.vae import VAETrainSettings, train_vae

    root = tmp_path_factory.mktemp("probe-vae")
    store = synthetic_store(root / "syn", n=260, seed=4)
    train_vae(VAETrainSettings(store=str(store.path), out=str(root / "vae"), epochs=2,
                               batch_size=32, encoder_widths=[16, 8], n_latent=4,
                               warmup_steps=2, val_fraction=0.2, progress=False,
                               stats_rows=200, lr=5e-3))
    return store, root / "vae"


def test_evaluate_vae_reports_the_probe_and_never_writes_the_model(trained, tmp_path, capsys):
    from core.cli.main import main
    from core.evaluate.vae import evaluate_vae

    store, model = trained
    before = digest(model)
    # the training store: the held-out stars are the validation split, and so is the probe's
    s = evaluate_vae(store, model, progress=False)
    assert s["training_store"] and s["held_out"]
    n_val = json.loads((model / "config.json").read_text())["training"]["n_validation"]
    assert s["n_spectra"] == s["probe"]["n_stars"] == n_val
    assert s["probe"]["controls"] == []  # the synthetic store has no other label column
    # every star, with the hidden parameter as the control the latents may know
    assert main(["evaluate", "vae", "--store", str(store.path), "--model", str(model),
                 "--rows", "all", "--probe-controls", "HIDDEN", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    out = Path(s["out_dir"])
    assert not out.resolve().is_relative_to(model.resolve())
    p = s["probe"]
    assert p["controls"] == ["HIDDEN"] and p["n_stars"] == 260
    assert set(s["probe_excess_r2"]) == {"TEFF", "LOGG", "FE_H"}
    for figs in p["mlp"].values():
        assert np.isclose(figs["excess_r2"],
                          figs["r2_controls_latents"] - figs["r2_controls"])
        assert figs["partial_r2"] <= 1.0
    table = pd.read_csv(out / "probe.csv")
    assert set(table["method"]) == {"mlp", "knn", "linear"}
    assert "probe.csv" in s["files"]
    s = evaluate_vae(store, model, rows="all", probe_max_stars=100, out_dir=tmp_path / "ev",
                     progress=False)
    assert s["n_spectra"] == 260 and s["probe"]["n_stars"] == 100
    assert digest(model) == before
