"""One normalisation policy for files: the app's upload, ``fit --file`` and ``inspect`` agree.

An apStar fixture is uploaded through the upload code path (``read_upload``, no browser),
fitted the view's way, and the ``stellarscope fit --file`` command the Fit view prints for it
gives the same labels.  Before the policy the upload used the upper-envelope fit and the CLI
the continuum mask, so the two spectra (and fits) differed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fits_fixtures import write_apstar, write_apvisit
from toy_emulator import spectrum_like_emulator

from core.cli.main import main
from core.fit import fit_spectrum
from core.models.emulator import save_emulator
from core.preprocess import normalize
from core.preprocess.policy import (
    METHOD_ON_GRID,
    METHOD_OWN_WAVELENGTHS,
    method_for,
    prepare_file_spectrum,
)

torch.set_num_threads(1)
NAME = "apStar-dr17-2M00000005+0000005.fits"


@pytest.fixture()
def uploaded(tmp_path):
    """An apStar file on disk, the model directory, and the spectrum the upload path made."""
    upload = pytest.importorskip("dashboard.views.upload")
    path = write_apstar(tmp_path / NAME, n_visits=3, apogee_id="2M00000005+0000005", seed=3)
    model = tmp_path / "emu"
    save_emulator(spectrum_like_emulator(), model)
    spectrum = upload.read_upload(NAME, path.read_bytes())
    return path, model, spectrum


def test_upload_and_cli_normalise_a_file_identically(uploaded):
    path, _, spectrum = uploaded
    cli = prepare_file_spectrum(path)
    assert spectrum.normalized and cli.normalized
    np.testing.assert_array_equal(spectrum.flux, cli.flux)
    np.testing.assert_array_equal(spectrum.error, cli.error)
    assert spectrum.meta["CONTINUUM_METHOD"] == METHOD_ON_GRID == method_for(spectrum)
    assert spectrum.meta["SOURCE"] == NAME  # the user's file name, not the upload temp path
    # the choice matters: the other method gives another spectrum (so equality is no accident)
    from core.io import read_spectrum

    other = normalize(read_spectrum(path), method="clip")
    good = cli.good() & other.good()
    assert np.abs(other.flux[good] - cli.flux[good]).max() > 1e-3


def test_printed_fit_file_command_reproduces_the_upload_fit(uploaded, tmp_path, capsys,
                                                            monkeypatch):
    path, model, spectrum = uploaded
    view_fit = fit_spectrum(spectrum, model)  # what the Fit view runs (core.fit, defaults)
    monkeypatch.chdir(tmp_path)  # the command names the file as uploaded: ./NAME
    assert main(["fit", "--model", str(model), "--file", NAME, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pix"] == view_fit.n_pix and out["flags"] == view_fit.flags
    for name, value in view_fit.labels.items():
        assert out["labels"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)


def test_the_fit_views_printed_command_for_an_upload(uploaded, tmp_path, capsys, monkeypatch):
    """The Fit view itself: fit the uploaded spectrum, run the command it prints."""
    pytest.importorskip("panel")
    from dashboard.state import AppContext, Session
    from dashboard.views.fit import FitView

    path, model, spectrum = uploaded
    from core.fit import load_model

    session = Session(context=AppContext(store=None, models={"emulator": load_model(model)}))
    v = FitView(focus=session.focus, context=session.context)
    v.model_dir = str(model)
    session.show(spectrum, source="upload")
    v.fit(sync=True)
    command = v.cli_command()
    assert f"--file {NAME}" in command and "--star" not in command
    monkeypatch.chdir(tmp_path)
    assert main([*command.split()[1:], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for name, value in v.result.labels.items():
        assert out["labels"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)


def test_policy_per_file_kind_and_agreement_with_ingest(tmp_path):
    from core.ingest import ContinuumSettings
    from core.inspect import summarize_file

    assert ContinuumSettings().method == METHOD_ON_GRID  # a file fitted = the file ingested
    from core.io import read_spectrum

    visit = write_apvisit(tmp_path / "apVisit-dr17-1000-56001-101.fits")
    rest = prepare_file_spectrum(visit)  # resampled to the rest-frame grid by the reader
    assert rest.grid == "apogee7514" and rest.meta["CONTINUUM_METHOD"] == METHOD_ON_GRID
    own = prepare_file_spectrum(read_spectrum(visit, frame="observed"))  # its own pixels
    assert own.grid is None and own.meta["CONTINUUM_METHOD"] == METHOD_OWN_WAVELENGTHS
    apstar = write_apstar(tmp_path / NAME, n_visits=1)
    for path in (apstar, visit):
        assert summarize_file(path)["continuum"].startswith(f"{METHOD_ON_GRID}, Chebyshev")
