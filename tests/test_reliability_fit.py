"""Fits that look perfect when they are not: every case of the reliability review.

Each test repeats one measurement of the review on a fresh checkout: too few usable pixels,
an RV at the edge of the search, a flat or pure-noise spectrum, non-positive flux, a large
χ²_ν.  A fit must say what is wrong (FIT_FLAG bits, names and sentences) and leave NaN where
no honest number exists, in the arrays, the catalog, the JSON and the terminal.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from toy_emulator import HI, LO, NAMES, spectrum_like_emulator

from core.errors import BadDataError, BadFileError
from core.fit import FitOptions, fit_batch, fit_spectrum, fit_store
from core.fit.flags import (
    FLAG_MODEL_MISMATCH,
    FLAG_NO_RV_SIGNAL,
    FLAG_RV_AT_SEARCH_EDGE,
    FLAG_TOO_FEW_PIXELS,
    describe_flags,
)
from core.fit.forward import ForwardModel
from core.grid import APOGEE_7514, PIXMASK_VALUE
from core.models.emulator import save_emulator
from core.preprocess import LARGE_ERROR, normalize_arrays
from core.spectrum import Spectrum
from core.store import SpectraStore

torch.set_num_threads(1)
NOISE = 0.01


@pytest.fixture(scope="module")
def emu():
    return spectrum_like_emulator()


def observe(emu, n, rv, noise=NOISE, seed=0, depth=1.0):
    """Stars through the emulator at ``rv``; ``depth`` > 1 deepens every feature (a star the
    emulator cannot describe)."""
    rng = np.random.default_rng(seed)
    truth = LO + (0.2 + 0.6 * rng.random((n, len(NAMES)))) * (HI - LO)
    fwd = ForwardModel(emu)
    p = torch.zeros(n, fwd.n_params)
    p[:, :len(NAMES)] = torch.tensor(emu.scale(truth), dtype=torch.float32)
    p[:, len(NAMES)] = torch.as_tensor(np.broadcast_to(rv, n).copy(), dtype=torch.float32)
    with torch.no_grad():
        clean = fwd.evaluate(p, jacobian=False)[0].numpy()
    clean = 1.0 - depth * (1.0 - clean)
    flux = clean + rng.normal(0, noise, clean.shape).astype(np.float32)
    return flux.astype(np.float32), np.full_like(flux, noise), truth


def spectrum(flux, error, mask=None, normalized=True, star="2M-RELIABLE"):
    mask = np.zeros(flux.shape, np.uint16) if mask is None else mask
    return Spectrum(APOGEE_7514.wavelength, flux, error, mask, meta={"APOGEE_ID": star},
                    grid="apogee7514", normalized=normalized)


# -- A1: too few usable pixels -------------------------------------------------------------------


def test_too_few_pixels_gives_nan_labels_rv_and_chi2(emu, tmp_path):
    flux, err, _ = observe(emu, 3, 0.0)
    good = np.ones(flux.shape, bool)
    good[1, 10:] = False  # ten usable pixels
    fit = fit_batch(emu, flux, err, good, FitOptions())
    assert fit.flags[1] == FLAG_TOO_FEW_PIXELS  # and no other claim about that fit
    for values in (fit.labels[1], fit.labels_err[1], [fit.rv[1], fit.rv_err[1], fit.chi2[1]],
                   [fit.chi2_nu[1]]):
        assert np.isnan(values).all()
    assert np.isfinite(fit.labels[[0, 2]]).all() and np.isfinite(fit.rv[[0, 2]]).all()

    mask = np.zeros(flux.shape, np.uint16)
    mask[1, 10:] = PIXMASK_VALUE["BADPIX"]
    cat = pd.DataFrame({"APOGEE_ID": ["A", "B", "C"]})
    with SpectraStore.create(tmp_path / "store", kind="mock survey") as w:
        w.append(flux, err, mask, cat)
    fit_store(SpectraStore.open(tmp_path / "store"), emu, progress=False)
    row = SpectraStore.open(tmp_path / "store").catalog.iloc[1]
    assert row["FIT_FLAG"] == FLAG_TOO_FEW_PIXELS and row["FIT_FLAG_NAMES"] == "TOO_FEW_PIXELS"
    assert np.isnan([row["FIT_TEFF"], row["FIT_RV"], row["FIT_RV_ERR"], row["FIT_CHI2"]]).all()


# -- A2: an RV at the edge of the ±600 km/s search -----------------------------------------------


def test_rv_at_the_search_edge_is_flagged(emu):
    rvs = np.array([0.0, 30.0, 597.0, -598.0])
    flux, err, _ = observe(emu, 4, rvs, seed=2)
    fit = fit_batch(emu, flux, err, np.ones(flux.shape, bool), FitOptions())
    edge = (fit.flags & FLAG_RV_AT_SEARCH_EDGE) != 0
    assert edge.tolist() == [False, False, True, True]
    assert np.allclose(fit.rv, rvs, atol=1.0)  # the value stays, the flag says to doubt it
    narrow = fit_batch(emu, flux[1:2], err[1:2], np.ones((1, flux.shape[1]), bool),
                       FitOptions(rv_search=30.0))
    assert narrow.flags[0] & FLAG_RV_AT_SEARCH_EDGE


# -- A3: a flat or pure-noise spectrum does not "converge" at the search edge --------------------


def test_flat_and_noise_spectra_have_no_rv_signal(emu):
    stars, err, _ = observe(emu, 2, np.array([-40.0, 25.0]), noise=0.05, seed=3)  # S/N 20
    n = APOGEE_7514.n_pix
    flat = np.ones((1, n), np.float32)
    noise = (1 + np.random.default_rng(4).normal(0, NOISE, (1, n))).astype(np.float32)
    flux = np.vstack([stars, flat, noise])
    error = np.vstack([err, np.full((2, n), NOISE, np.float32)])
    fit = fit_batch(emu, flux, error, np.ones(flux.shape, bool), FitOptions())
    no_signal = (fit.flags & FLAG_NO_RV_SIGNAL) != 0
    assert no_signal.tolist() == [False, False, True, True]
    assert np.allclose(fit.rv[:2], [-40.0, 25.0], atol=1.0)
    assert np.isnan(fit.rv[2:]).all() and np.isnan(fit.rv_err[2:]).all()
    assert np.isnan(fit.rv_start[2:]).all()  # no "−602 ± 0.05" anywhere
    assert not (fit.flags[2:] & FLAG_RV_AT_SEARCH_EDGE).any()

    res = fit_spectrum(spectrum(flat[0], np.full(n, NOISE, np.float32)), emu)
    assert "NO_RV_SIGNAL" in res.flag_names and np.isnan(res.rv) and res.frame_rv == 0.0
    out = res.to_dict()
    assert out["rv"] is None and out["rv_err"] is None
    assert any(d.startswith("NO_RV_SIGNAL:") for d in out["flag_descriptions"])


# -- A4: non-positive flux is refused, never stored as 1 ± 100 -----------------------------------


def test_non_positive_flux_is_refused_when_normalising(emu, tmp_path, capsys):
    n = APOGEE_7514.n_pix
    rng = np.random.default_rng(5)
    negative = (-200.0 + rng.normal(0, 5, n)).astype(np.float32)
    err = np.full(n, 5.0, np.float32)
    with pytest.raises(BadDataError, match=r"2M-RELIABLE: the median flux .*-200 \(≤ 0"):
        fit_spectrum(spectrum(negative, err, normalized=False), emu)

    good_row = (800.0 + rng.normal(0, 5, n)).astype(np.float32)
    res = normalize_arrays(np.vstack([good_row, negative]), np.vstack([err, err]), None,
                           APOGEE_7514)
    assert res.problem[0] == "" and "median flux" in res.problem[1]
    assert res.fit_ok[0].all() and not res.fit_ok[1].any()  # ingest skips such a row

    from fits_fixtures import write_apstar

    from core.cli.main import main
    from core.preprocess.policy import prepare_file_spectrum

    ok = write_apstar(tmp_path / "apStar-dr17-2M00000001+0000001.fits", n_visits=1,
                      apogee_id="2M00000001+0000001")
    flux = apstar_flux_of(ok)
    bad = write_apstar(tmp_path / "apStar-dr17-2M00000002+0000002.fits", n_visits=1,
                       apogee_id="2M00000002+0000002", flux=-flux)
    assert prepare_file_spectrum(ok).normalized
    with pytest.raises(BadFileError, match="median flux") as info:
        prepare_file_spectrum(bad)
    assert str(bad) in str(info.value) and "2M00000002+0000002" in str(info.value)
    model = tmp_path / "emu"
    save_emulator(emu, model)
    assert main(["fit", "--model", str(model), "--file", str(bad), "--json"]) == 1
    err_text = capsys.readouterr().err
    assert str(bad) in err_text and "median flux" in err_text


def test_ingest_skips_a_non_positive_spectrum_with_the_reason(tmp_path):
    """`stellarscope ingest --files` used to store such a spectrum as 1 ± 100 everywhere."""
    from fits_fixtures import write_apstar

    from core.ingest import ingest_files

    ok = write_apstar(tmp_path / "apStar-dr17-2M00000003+0000003.fits", n_visits=1,
                      apogee_id="2M00000003+0000003")
    bad = write_apstar(tmp_path / "apStar-dr17-2M00000004+0000004.fits", n_visits=1,
                       apogee_id="2M00000004+0000004", flux=-apstar_flux_of(ok))
    report = ingest_files([ok, bad], tmp_path / "store", progress=False)
    assert report.n_ingested == 1
    (kind, what, reason), = report.skipped
    assert "2M00000004+0000004" in what or str(bad) in what
    assert "median flux" in reason
    assert list(SpectraStore.open(tmp_path / "store").catalog["APOGEE_ID"]) == [
        "2M00000003+0000003"]


def apstar_flux_of(path) -> np.ndarray:
    """The flux array an apStar fixture file holds (to write a negative copy of it)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        return np.array(hdul[1].data, dtype=np.float32)


def test_filled_store_rows_are_not_a_perfect_fit(emu, tmp_path):
    """A store row that an older ingest filled with 1 ± LARGE_ERROR holds no data."""
    flux, err, _ = observe(emu, 2, 0.0, seed=6)
    flux[1], err[1] = 1.0, LARGE_ERROR
    with SpectraStore.create(tmp_path / "store", kind="mock survey") as w:
        w.append(flux, err, np.zeros(flux.shape, np.uint16), pd.DataFrame({"APOGEE_ID": ["A", "B"]}))
    store = SpectraStore.open(tmp_path / "store")
    fit_store(store, emu, progress=False)
    cat = SpectraStore.open(tmp_path / "store").catalog
    assert cat["FIT_FLAG"].tolist()[1] == FLAG_TOO_FEW_PIXELS
    assert np.isnan(cat["FIT_CHI2"].iloc[1]) and np.isfinite(cat["FIT_CHI2"].iloc[0])
    with pytest.raises(BadDataError, match="B: every pixel .* filled by normalisation"):
        fit_spectrum(store.spectrum("B"), emu)


# -- A5: χ²_ν far above 1 ------------------------------------------------------------------------


def test_large_chi2_is_flagged_and_sigma_inflated(emu, tmp_path, capsys):
    flux, err, _ = observe(emu, 2, 0.0, seed=7)
    deep, _, _ = observe(emu, 1, 0.0, seed=8, depth=3.0)  # lines the emulator cannot make
    flux = np.vstack([flux[:1], deep])
    err = err[:2]
    good = np.ones(flux.shape, bool)
    fit = fit_batch(emu, flux, err, good, FitOptions())
    plain = fit_batch(emu, flux, err, good, FitOptions(mismatch_chi2=None))
    assert fit.chi2_nu[0] < 3 < fit.chi2_nu[1]
    assert not fit.flags[0] & FLAG_MODEL_MISMATCH and fit.flags[1] & FLAG_MODEL_MISMATCH
    assert not plain.flags[1] & FLAG_MODEL_MISMATCH
    assert fit.sigma_scale[0] == 1.0
    assert fit.sigma_scale[1] == pytest.approx(np.sqrt(fit.chi2_nu[1]))
    np.testing.assert_allclose(fit.labels, plain.labels)  # the values stay, the σ widen
    np.testing.assert_allclose(fit.labels_err[1], plain.labels_err[1] * fit.sigma_scale[1],
                               rtol=1e-6)
    np.testing.assert_allclose(fit.rv_err[1], plain.rv_err[1] * fit.sigma_scale[1], rtol=1e-6)
    np.testing.assert_allclose(fit.labels_err[0], plain.labels_err[0], rtol=1e-6)

    # the JSON and the terminal say so
    from core.cli.main import main

    model = tmp_path / "emu"
    save_emulator(emu, model)
    cat = pd.DataFrame({"APOGEE_ID": ["OK", "DEEP"]})
    with SpectraStore.create(tmp_path / "store", kind="mock survey") as w:
        w.append(flux, err, np.zeros(flux.shape, np.uint16), cat)
    args = ["fit", "--model", str(model), "--store", str(tmp_path / "store"), "--star", "DEEP"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "MODEL_MISMATCH" in out["flag_names"]
    assert out["sigma_scale"] == pytest.approx(np.sqrt(out["chi2_nu"]), rel=1e-6)
    assert any("inflated by √χ²_ν" in d for d in out["flag_descriptions"])
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "σ inflated ×" in text and "MODEL_MISMATCH:" in text
    assert main(["fit", "--all", "--model", str(model), "--store", str(tmp_path / "store"),
                 "--json"]) == 0
    capsys.readouterr()
    cat = SpectraStore.open(tmp_path / "store").catalog
    assert "MODEL_MISMATCH" in cat["FIT_FLAG_NAMES"].iloc[1]
    assert "MODEL_MISMATCH" not in cat["FIT_FLAG_NAMES"].iloc[0]


def test_flags_have_readable_descriptions():
    assert describe_flags(0) == []
    lines = describe_flags(FLAG_NO_RV_SIGNAL | FLAG_MODEL_MISMATCH)
    assert [line.split(":")[0] for line in lines] == ["NO_RV_SIGNAL", "MODEL_MISMATCH"]
    assert all(len(line) > 30 for line in lines)
