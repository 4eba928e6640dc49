"""The emulator fitter: recovery, RV, masks, bounds, element mode, store fitting, bad input.

A small emulator is trained on a toy line-spectrum store once per module; test spectra are
then made by the fitter's own forward model (emulator → Doppler shift → continuum) plus
noise, so the fitter is checked against a known truth independent of emulator accuracy.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from toy_emulator import HI, LO, NAMES, toy_flux  # noqa: E402

from core.errors import BadDataError
from core.fit import (
    FitOptions,
    Start,
    fit_batch,
    fit_element,
    fit_spectrum,
    fit_store,
    on_grid,
)
from core.fit.engine import FLAG_LABEL_AT_BOUND
from core.fit.forward import ForwardModel, rv_to_shift, shift_to_rv
from core.grid import APOGEE_7214, APOGEE_7514, APSTAR, KMS_PER_PIXEL, PIXMASK_VALUE
from core.models.emulator import load_emulator, save_emulator
from core.spectrum import Spectrum
from core.store import SpectraStore
from core.train.emulator import TrainSettings, train_emulator

torch.set_num_threads(1)

SNR = 100.0


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    rng = np.random.default_rng(0)
    labels = LO + rng.random((400, 4)) * (HI - LO)
    flux = toy_flux(labels, n_lines=150, seed=7)
    cat = pd.DataFrame({"APOGEE_ID": [f"T{i}" for i in range(400)]})
    for k, name in enumerate(NAMES):
        cat[name], cat[f"{name}_ERR"] = labels[:, k], 0.01
    with SpectraStore.create(root / "store", kind="mock survey") as w:
        w.append(flux, np.full_like(flux, 0.01), np.zeros(flux.shape, np.uint16), cat)
    settings = TrainSettings(hidden=(32, 32), epochs=12, batch_size=32, lr=3e-3)
    train_emulator(root / "store", root / "emu", settings, progress=False)
    return load_emulator(root / "emu")


def synth(emu, labels, rv=0.0, cont=None, degree=None, snr=SNR, seed=0):
    """Noisy spectra from the fitter's own forward model (observed frame)."""
    labels = np.atleast_2d(labels)
    fwd = ForwardModel(emu, degree)
    p = torch.zeros(len(labels), fwd.n_params)
    p[:, :emu.n_labels] = torch.tensor(emu.scale(labels), dtype=torch.float32)
    p[:, emu.n_labels] = torch.as_tensor(np.broadcast_to(rv, len(labels)).copy(), dtype=torch.float32)
    if cont is not None:
        p[:, emu.n_labels + 1:] = torch.tensor(cont, dtype=torch.float32)
    with torch.no_grad():
        clean = fwd.evaluate(p, jacobian=False)[0].numpy()
    rng = np.random.default_rng(seed)
    noisy = clean + rng.normal(0, 1 / snr, clean.shape).astype(np.float32)
    return noisy, np.full_like(noisy, 1 / snr)


def spectrum_of(flux, error, mask=None, **meta):
    mask = np.zeros(flux.shape, np.uint16) if mask is None else mask
    return Spectrum(APOGEE_7514.wavelength, flux, error, mask, meta={"APOGEE_ID": "2M-TEST", **meta},
                    grid="apogee7514", normalized=True)


def inner_labels(n, seed=1):
    return LO + (0.15 + 0.7 * np.random.default_rng(seed).random((n, 4))) * (HI - LO)


EXACT = FitOptions(model_error=False, pixel_floor=0.0)  # the exact noise model: χ²_ν ≈ 1


# -- recovery ---------------------------------------------------------------------------------


def test_batch_fit_recovers_labels_with_honest_errors(emulator):
    truth = inner_labels(12)
    flux, err = synth(emulator, truth, rv=np.linspace(-20, 20, 12))
    fit = fit_batch(emulator, flux, err, np.ones_like(flux, bool), EXACT)
    pulls = (fit.labels - truth) / fit.labels_err
    assert np.all(np.isfinite(pulls))
    assert np.mean(np.abs(pulls) < 3) > 0.9  # 1σ from the covariance means what it says
    assert np.all(np.abs(fit.chi2_nu - 1) < 0.1)
    assert np.all(fit.flags == 0) and fit.converged.all()


@pytest.mark.parametrize("rv", [-60.0, 60.0])
def test_large_radial_velocity_is_recovered(emulator, rv):
    truth = inner_labels(1, seed=4)[0]
    flux, err = synth(emulator, truth, rv=rv, seed=2)
    res = fit_spectrum(spectrum_of(flux[0], err[0]), emulator, EXACT)
    assert abs(res.rv_start - rv) < 2.0  # the cross-correlation pre-estimate
    assert abs(res.rv - rv) < max(0.5, 4 * res.rv_err)
    assert "RV" not in res.at_bound
    for k, name in enumerate(NAMES):
        assert abs(res.labels[name] - truth[k]) < 5 * res.errors[name] + 1e-3 * (HI[k] - LO[k])


def test_rv_pixel_shift_conversions_are_inverse():
    rv = torch.tensor([-300.0, -1.0, 0.0, 45.0, 600.0], dtype=torch.float64)
    assert torch.allclose(shift_to_rv(rv_to_shift(rv)), rv, atol=1e-9)
    assert abs(float(rv_to_shift(torch.tensor(KMS_PER_PIXEL, dtype=torch.float64))) - 1) < 1e-4


def test_continuum_correction_is_fitted_per_chip(emulator):
    truth = inner_labels(1, seed=6)
    cont = np.array([[0.03, -0.02, 0.01, -0.04, 0.0, 0.02, 0.01, 0.03, -0.01]])
    flux, err = synth(emulator, truth, cont=cont, degree=2, seed=3)
    opts = FitOptions(model_error=False, continuum_degree=2, pixel_floor=0.0)
    res = fit_spectrum(spectrum_of(flux[0], err[0]), emulator, opts)
    assert np.allclose(res.continuum, cont[0], atol=5e-3)
    assert abs(res.chi2_nu - 1) < 0.1
    plain = fit_spectrum(spectrum_of(flux[0], err[0]), emulator, EXACT)
    assert plain.chi2_nu > res.chi2_nu + 0.05  # without the correction the fit is worse


# -- masks, bounds and bad input --------------------------------------------------------------


def test_masked_pixels_do_not_move_the_fit(emulator):
    truth = inner_labels(1, seed=8)[0]
    flux, err = synth(emulator, truth, rv=12.0, seed=5)
    rng = np.random.default_rng(1)
    bad = rng.random(flux.shape[1]) < 0.15
    mask = np.where(bad, PIXMASK_VALUE["CRPIX"], 0).astype(np.uint16)
    wrecked = np.where(bad, rng.uniform(-5, 50, bad.size), flux[0]).astype(np.float32)
    a = fit_spectrum(spectrum_of(flux[0], err[0], mask), emulator, EXACT)
    b = fit_spectrum(spectrum_of(wrecked, err[0], mask), emulator, EXACT)
    c = fit_spectrum(spectrum_of(wrecked, err[0]), emulator, EXACT, mask=bad)  # user mask
    for other in (b, c):
        assert other.rv == pytest.approx(a.rv, abs=1e-4)
        for name in NAMES:
            assert other.labels[name] == pytest.approx(a.labels[name], rel=1e-5, abs=1e-6)
    assert a.n_pix == b.n_pix == c.n_pix <= (~bad).sum()
    unmasked = fit_spectrum(spectrum_of(wrecked, err[0]), emulator, EXACT)
    assert unmasked.chi2_nu > 100 * a.chi2_nu  # the same pixels unmasked do matter


def test_fit_at_the_training_range_edge_is_flagged(emulator):
    lo = emulator.bounds[0]
    outside = inner_labels(1, seed=9)[0]
    outside[0] = lo[0] - 0.4 * (HI[0] - LO[0])
    fwd = ForwardModel(emulator)
    p = torch.zeros(1, fwd.n_params)
    p[0, :4] = torch.tensor(emulator.scale(outside), dtype=torch.float32)  # extrapolated truth
    with torch.no_grad():
        flux = fwd.evaluate(p, jacobian=False)[0].numpy()
    res = fit_spectrum(spectrum_of(flux[0], np.full_like(flux[0], 0.01)), emulator, EXACT)
    assert "TEFF" in res.at_bound and res.flags & FLAG_LABEL_AT_BOUND
    assert res.labels["TEFF"] == pytest.approx(lo[0], abs=1e-3 * (HI[0] - LO[0]))


def test_bad_input_gives_clear_errors(emulator):
    flux, err = synth(emulator, inner_labels(1)[0])
    all_masked = np.full(flux.shape[1], PIXMASK_VALUE["BADPIX"], np.uint16)
    with pytest.raises(BadDataError, match="2M-TEST: every pixel is masked"):
        fit_spectrum(spectrum_of(flux[0], err[0], all_masked), emulator)
    nan = np.full(flux.shape[1], np.nan, np.float32)
    with pytest.raises(BadDataError, match="2M-TEST: the flux is NaN"):
        fit_spectrum(spectrum_of(nan, err[0]), emulator)
    few = np.where(np.arange(flux.shape[1]) < 10, 0, PIXMASK_VALUE["BADPIX"]).astype(np.uint16)
    with pytest.raises(BadDataError, match="only 10 usable pixels"):
        fit_spectrum(spectrum_of(flux[0], err[0], few), emulator)
    with pytest.raises(BadDataError, match="user mask"):
        fit_spectrum(spectrum_of(flux[0], err[0]), emulator, mask=np.zeros(5, bool))


def test_partly_nan_flux_is_masked_not_fatal(emulator):
    truth = inner_labels(1, seed=11)[0]
    flux, err = synth(emulator, truth, seed=6)
    f = flux[0].copy()
    f[::7] = np.nan
    res = fit_spectrum(spectrum_of(f, err[0]), emulator, EXACT)
    assert res.n_pix < flux.shape[1] * 6 / 7 + 1
    assert abs(res.labels["TEFF"] - truth[0]) < 5 * res.errors["TEFF"] + 5


# -- grids ------------------------------------------------------------------------------------


def test_spectra_on_other_grids_are_put_on_the_model_grid(emulator):
    truth = inner_labels(1, seed=12)[0]
    flux, err = synth(emulator, truth, seed=7)
    native = spectrum_of(flux[0], err[0])
    apstar = Spectrum(APSTAR.wavelength, APOGEE_7514.to_apstar(flux[0], 1.0),
                      APOGEE_7514.to_apstar(err[0], 1.0), np.zeros(APSTAR.n_pix, np.uint16),
                      grid="apstar8575", normalized=True)
    back = on_grid(apstar, APOGEE_7514)
    assert np.array_equal(back.flux, native.flux)
    narrow = on_grid(native, APOGEE_7214)  # a Payne-grid model sees a subset of pixels
    assert narrow.grid == "apogee7214" and np.isfinite(narrow.flux).all()
    # an arbitrary wavelength array (like an apVisit) is resampled chip by chip
    own = Spectrum(APOGEE_7514.wavelength[::-1], flux[0][::-1], err[0][::-1],
                   np.zeros(flux.shape[1], np.uint16), normalized=True)
    resampled = on_grid(own, APOGEE_7514)
    good = resampled.good()
    assert good.mean() > 0.99
    assert np.allclose(resampled.flux[good], native.flux[good], atol=1e-5)
    a = fit_spectrum(native, emulator, EXACT)
    b = fit_spectrum(apstar, emulator, EXACT)
    assert b.labels["TEFF"] == pytest.approx(a.labels["TEFF"], abs=1e-3)


def test_unnormalised_spectrum_is_normalised_before_fitting(emulator):
    truth = inner_labels(1, seed=13)[0]
    flux, err = synth(emulator, truth, seed=8)
    raw = spectrum_of(flux[0] * 850.0, err[0] * 850.0)
    raw.normalized = False
    res = fit_spectrum(raw, emulator, FitOptions(model_error=False, continuum_degree=1))
    assert res.n_pix > 7000 and np.isfinite(res.labels["TEFF"])


# -- element mode -----------------------------------------------------------------------------


def test_element_mode_fits_one_label_inside_its_windows(emulator):
    truth = inner_labels(1, seed=14)[0]
    flux, err = synth(emulator, truth, rv=25.0, seed=9)
    spec = spectrum_of(flux[0], err[0])
    full = fit_spectrum(spec, emulator, EXACT)
    lam = APOGEE_7514.wavelength
    windows = pd.DataFrame({"element": ["Mg"] * 6, "start_vac": lam[500:6000:1000],
                            "end_vac": lam[530:6030:1000]})
    el = fit_element(spec, emulator, "mg", full, windows=windows, options=EXACT)
    assert el.label == "MG_FE" and el.n_pix <= 6 * 31
    assert abs(el.value - truth[3]) < 5 * el.error + 0.01
    assert el.error > full.errors["MG_FE"]  # fewer pixels, larger σ
    assert not el.used[:400].any()  # only the windows entered χ²
    with pytest.raises(KeyError, match="no label for element 'Ca'"):
        fit_element(spec, emulator, "Ca", full, windows=windows)
    with pytest.raises(KeyError, match="no line windows"):
        fit_element(spec, emulator, "Fe", full, windows=windows)


def test_known_start_fits_only_the_free_labels(emulator):
    truth = inner_labels(2, seed=15)
    flux, err = synth(emulator, truth, seed=10)
    start = Start(labels=truth.copy(), rv=np.zeros(2))
    start.labels[:, 2] += 0.2
    fit = fit_batch(emulator, flux, err, np.ones_like(flux, bool),
                    FitOptions(model_error=False, fit_rv=False), start=start, free_labels=["FE_H"])
    assert np.allclose(fit.labels[:, [0, 1, 3]], truth[:, [0, 1, 3]], rtol=1e-5)
    assert np.all(np.abs(fit.labels[:, 2] - truth[:, 2]) < 5 * fit.labels_err[:, 2])
    assert np.isnan(fit.labels_err[:, 0]).all() and np.isnan(fit.rv_err).all()
    assert fit.free == ["FE_H"]


# -- whole store and CLI ----------------------------------------------------------------------


@pytest.fixture()
def fit_store_dir(emulator, tmp_path):
    truth = inner_labels(5, seed=16)
    flux, err = synth(emulator, truth, rv=np.array([-30, -5, 0, 10, 40.0]), seed=11)
    mask = np.zeros(flux.shape, np.uint16)
    mask[4] = PIXMASK_VALUE["BADPIX"]  # a star with nothing usable
    cat = pd.DataFrame({"APOGEE_ID": [f"S{i}" for i in range(5)]})
    for k, name in enumerate(NAMES):
        cat[name], cat[f"{name}_ERR"] = truth[:, k], 0.01
    with SpectraStore.create(tmp_path / "store", kind="mock survey") as w:
        w.append(flux, err, mask, cat)
    return tmp_path / "store", truth


def test_store_fit_writes_catalog_columns(emulator, fit_store_dir):
    path, truth = fit_store_dir
    store = SpectraStore.open(path)
    summary = fit_store(store, emulator, EXACT, chunk=2, progress=False)
    cat = SpectraStore.open(path).catalog
    for name in NAMES + ["RV"]:
        assert f"FIT_{name}" in cat and f"FIT_{name}_ERR" in cat
    assert {"FIT_CHI2", "FIT_FLAG", "FIT_NPIX"} <= set(cat.columns)
    ok = cat.iloc[:4]
    assert np.all(np.abs(ok["FIT_TEFF"] - truth[:4, 0]) < 5 * ok["FIT_TEFF_ERR"] + 5)
    assert np.allclose(ok["FIT_RV"], [-30, -5, 0, 10], atol=0.5)
    assert cat["FIT_FLAG"].iloc[4] & 8 and np.isnan(cat["FIT_TEFF"].iloc[4])
    assert summary["stars"] == 5 and summary["flag_counts"]["TOO_FEW_PIXELS"] == 1
    assert "FIT_TEFF" in store.manifest["columns"]
    again = fit_store(store, emulator, FitOptions(model_error=False, fit_rv=False, rv=0.0),
                      rows=[0], progress=False)  # a refit of one row leaves the others alone
    after = SpectraStore.open(path).catalog
    assert again["stars"] == 1 and after["FIT_RV"].iloc[0] == 0.0
    assert np.array_equal(after["FIT_TEFF"].iloc[1:4], cat["FIT_TEFF"].iloc[1:4])


def test_cli_fit_star_json_and_all(emulator, fit_store_dir, tmp_path, capsys):
    from core.cli.main import main
    from core.models.emulator import save_emulator

    path, truth = fit_store_dir
    save_emulator(emulator, tmp_path / "emu")
    assert main(["fit", "--model", str(tmp_path / "emu"), "--star", "S1", "--store", str(path),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["labels"]) == set(NAMES) and out["chi2_nu"] > 0 and "rv_err" in out
    assert out["catalog"]["TEFF"] == pytest.approx(truth[1, 0])
    assert main(["fit", "--model", str(tmp_path / "emu"), "--star", "S4", "--store", str(path)]) == 1
    assert "every pixel is masked" in capsys.readouterr().err
    assert main(["fit", "--all", "--model", str(tmp_path / "emu"), "--store", str(path),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stars"] == 5


def test_store_fit_checkpoints_and_resumes(emulator, fit_store_dir, tmp_path, capsys,
                                           monkeypatch):
    import shutil

    from core.cli.main import main
    from core.fit import store as fit_store_module
    from core.fit.store import unfitted_rows

    path = tmp_path / "resumed-store"
    shutil.copytree(fit_store_dir[0], path)
    assert list(unfitted_rows(SpectraStore.open(path))) == [0, 1, 2, 3, 4]

    class Interrupted(Exception):
        pass

    real, calls = fit_store_module.fit_batch, []

    def dies_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_store_module, "fit_batch", dies_on_third_chunk)
    with pytest.raises(Interrupted):
        fit_store(SpectraStore.open(path), emulator, EXACT, chunk=2, progress=False,
                  checkpoint_stars=2)
    monkeypatch.undo()
    store = SpectraStore.open(path)
    assert list(unfitted_rows(store)) == [4]  # two checkpointed chunks survive the crash
    assert np.isfinite(store.catalog["FIT_TEFF"].iloc[:4]).all()

    model = tmp_path / "emu"
    save_emulator(emulator, model)
    assert main(["fit", "--all", "--resume", "--store", str(path), "--model", str(model),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stars"] == 1
    assert len(unfitted_rows(SpectraStore.open(path))) == 0
    assert main(["fit", "--all", "--resume", "--store", str(path), "--model", str(model)]) == 0
    assert "nothing to fit" in capsys.readouterr().err


def test_systematic_floor_recovers_a_known_floor():
    from core.fit.calibrate import robust_width, systematic_floor

    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 1.5, 4000)
    diff = rng.normal(0, np.sqrt(sigma**2 + 2.0**2))
    assert systematic_floor(diff, sigma) == pytest.approx(2.0, rel=0.08)
    honest = rng.normal(0, 0.8 * sigma)
    assert systematic_floor(honest, sigma) == 0.0
    ref_err = np.full(4000, 1.0)  # the reference's own errors explain the extra scatter
    diff = rng.normal(0, np.sqrt(sigma**2 + ref_err**2))
    assert systematic_floor(diff, sigma, ref_err) < 0.3
    assert robust_width(np.array([np.nan, 1.0, -1.0, 1.0, -1.0])) == pytest.approx(1.4826)
    with pytest.raises(BadDataError, match="only 3 usable stars"):
        systematic_floor(diff[:3], sigma[:3])


def test_calibrated_floor_is_saved_and_widens_later_fits(emulator, tmp_path, capsys):
    """The briefly trained toy emulator is imperfect: against spectra of the true physics its
    formal σ are too small, the calibration measures floors, and later fits add them."""
    from core.cli.main import main
    from core.fit.calibrate import calibrate_errors

    truth = inner_labels(60, seed=21)
    rng = np.random.default_rng(5)
    flux = toy_flux(truth, n_lines=150, seed=7)
    flux = flux + rng.normal(0, 1 / 300, flux.shape).astype(np.float32)
    cat = pd.DataFrame({"APOGEE_ID": [f"C{i}" for i in range(60)], "SNR": 300.0})
    for k, name in enumerate(NAMES):
        cat[name], cat[f"{name}_ERR"], cat[f"TRUE_{name}"] = truth[:, k], 0.0, truth[:, k]
    with SpectraStore.create(tmp_path / "calib", kind="mock survey") as w:
        w.append(flux, np.full_like(flux, 1 / 300), np.zeros(flux.shape, np.uint16), cat)
    store = SpectraStore.open(tmp_path / "calib")
    opts = FitOptions(fit_rv=False, rv=0.0)
    record = calibrate_errors(emulator, store, n_stars=60, options=opts)
    assert record["reference"] == "truth" and record["n_stars"] == 60
    assert max(record["pull_width_before"].values()) > 1.5  # formal σ were too small
    assert all(abs(w - 1) < 0.05 for w in record["pull_width_after"].values())
    assert any(v > 0 for v in record["error_floor"].values())

    model = tmp_path / "emu"
    save_emulator(emulator, model)
    assert main(["evaluate", "emulator", "--model", str(model), "--store", str(store.path),
                 "--n-stars", "60", "--save", "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    calibrated = load_emulator(model)
    assert calibrated.config.error_floor == pytest.approx(saved["error_floor"])
    assert calibrated.config.training["error_calibration"]["n_stars"] == 60
    # the fits' χ²_ν percentiles become the model's "does it apply" reference for the app
    from core.models.applicability import reference

    p = calibrated.config.training["applicability"]["fit_chi2"]
    assert p == pytest.approx(saved["fit_chi2_percentiles"]) and p == sorted(p) and p[0] > 0
    assert reference(model)["fit_chi2"] == pytest.approx(p)
    flux_one, err_one = flux[:3], np.full_like(flux[:3], 1 / 300)
    good = np.ones(flux_one.shape, bool)
    formal = fit_batch(calibrated, flux_one, err_one, good,
                       FitOptions(fit_rv=False, rv=0.0, error_floor=False)).labels_err
    widened = fit_batch(calibrated, flux_one, err_one, good, opts).labels_err
    floor = np.array([saved["error_floor"][n] for n in NAMES])
    np.testing.assert_allclose(widened, np.sqrt(formal**2 + floor**2), rtol=1e-6)


def test_store_fit_applies_one_mask_to_every_star(emulator, fit_store_dir):
    from core.fit.store import fit_store_table

    store = SpectraStore.open(fit_store_dir[0])
    opts = FitOptions(fit_rv=False, rv=0.0)
    plain = fit_store_table(store, emulator, opts, rows=[0, 1], progress=False)
    mask = np.zeros(emulator.n_pix, bool)
    mask[1000:1400] = True
    masked = fit_store_table(store, emulator, opts, rows=[0, 1], progress=False, mask=mask)
    np.testing.assert_array_equal(masked["FIT_NPIX"], plain["FIT_NPIX"] - 400)


def test_cli_fits_an_aspcapstar_file_and_names_a_truncated_one(emulator, tmp_path, capsys):
    from fits_fixtures import truncate_copy, write_aspcapstar

    from core.cli.main import main

    truth = inner_labels(1, seed=33)[0]
    flux, err = synth(emulator, truth, snr=200, seed=4)
    on_apstar = [APOGEE_7514.to_apstar(a[0], fill=0.0) for a in (flux, err)]
    path = write_aspcapstar(tmp_path / "aspcapStar-dr17-2M00000001+0000001.fits",
                            apogee_id="2M00000001+0000001", flux=on_apstar[0],
                            error=on_apstar[1])
    model = tmp_path / "emu"
    save_emulator(emulator, model)
    assert main(["fit", "--model", str(model), "--file", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["star"] == "2M00000001+0000001" and out["n_pix"] > 7000
    for k, name in enumerate(NAMES):
        assert abs(out["labels"][name] - truth[k]) < 5 * out["errors"][name] + 1e-3 * (HI[k] - LO[k])
    cut = truncate_copy(path, tmp_path / "aspcapStar-cut.fits", 20_000)
    assert main(["fit", "--model", str(model), "--file", str(cut)]) == 1
    assert str(cut) in capsys.readouterr().err
