"""``train emulator --labels-from noiseless``: The Payne's way of learning from model spectra."""

from __future__ import annotations

import numpy as np
import pytest

from core.chi2 import ERROR_FLOOR
from core.errors import BadDataError
from core.mock import generate_mock_survey
from core.mock.synth import noiseless_flux
from core.store import SpectraStore
from core.train.emulator import EmulatorTrainSettings, load_training_data
from core.train.synthetic import synthetic_store


@pytest.fixture(scope="module")
def mock_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("noiseless") / "mock"
    generate_mock_survey(path, n_stars=40, seed=5, progress=False)
    return SpectraStore.open(path)


def test_noiseless_targets_are_the_synthesis_at_the_true_labels(mock_store):
    settings = EmulatorTrainSettings(labels=["TEFF", "LOGG", "FE_H", "VMICRO"],
                                     labels_from="noiseless", progress=False)
    data = load_training_data(mock_store, settings)
    cat = mock_store.catalog.iloc[data.rows]
    np.testing.assert_allclose(data.labels[:, 0], cat["TRUE_TEFF"].to_numpy(), rtol=1e-6)
    expected = noiseless_flux(cat, mock_store.grid)
    np.testing.assert_allclose(data.flux, expected, atol=1e-6)
    assert data.weight.shape == (len(data.rows), 1)  # one weight per row: every pixel alike
    assert np.all(data.weight == np.float32(1.0 / ERROR_FLOOR**2))
    # the observed spectra differ from these by the noise
    observed = mock_store.read(data.rows[:5]).flux
    assert np.nanstd(observed - expected[:5]) > 1e-3


def test_noiseless_refuses_a_store_that_is_not_a_mock(tmp_path):
    store = synthetic_store(tmp_path / "synthetic", n=40)
    settings = EmulatorTrainSettings(labels=["TEFF", "LOGG", "FE_H"], labels_from="noiseless",
                                     progress=False)
    with pytest.raises(BadDataError, match="mock survey"):
        load_training_data(store, settings)


def test_unknown_label_source_is_refused():
    with pytest.raises(ValueError, match="labels_from"):
        EmulatorTrainSettings(labels_from="catalogue")


def test_extra_stars_are_new_draws_of_the_population_that_train_but_never_validate(mock_store, tmp_path):
    from core.mock.populations import draw_labels
    from core.train.emulator import EmulatorTask, _extra_truth

    settings = EmulatorTrainSettings(labels=["TEFF", "LOGG", "FE_H", "VMICRO"],
                                     labels_from="noiseless", extra_stars=25, progress=False,
                                     store=str(mock_store.path), out=str(tmp_path / "emu"),
                                     epochs=1, val_fraction=0.2)
    data = load_training_data(mock_store, settings)
    n = len(data.rows)
    assert data.n_extra == 25 and data.labels.shape == (n + 25, 4)
    assert data.flux.shape == (n + 25, mock_store.grid.n_pix)
    extra_teff = data.labels[n:, 0]
    # not the store's stars, and not the draw with the store's own seed either
    assert not np.isin(extra_teff, mock_store.catalog["TRUE_TEFF"].to_numpy()).any()
    assert not np.isin(extra_teff, draw_labels(25, seed=5)["TRUE_TEFF"].to_numpy()).any()
    extra = _extra_truth(mock_store, 25, settings.seed)
    np.testing.assert_allclose(extra_teff, extra["TRUE_TEFF"].to_numpy())
    np.testing.assert_allclose(data.flux[n:], noiseless_flux(extra, mock_store.grid), atol=1e-6)

    task = EmulatorTask(settings)
    task.prepare(None)
    assert np.all(task.val_idx < n)                       # validation: the store's stars only
    assert set(range(n, n + 25)) <= set(task.train_idx.tolist())
    assert task.train_idx.size + task.val_idx.size == n + 25


def test_extra_stars_need_noiseless_labels():
    with pytest.raises(ValueError, match="noiseless"):
        EmulatorTrainSettings(labels_from="truth", extra_stars=10)
    with pytest.raises(ValueError, match="extra_stars"):
        EmulatorTrainSettings(labels_from="noiseless", extra_stars=-1)
