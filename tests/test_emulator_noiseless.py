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
