"""End to end on the mock survey with the shipped demo emulator: label recovery and RV.

Held-out stars are drawn with a seed the demo store (seed 42) did not use, kept inside the
emulator's training range, observed at S/N 100–300 by :func:`core.mock.synthesize`, and fitted
against their TRUE_* labels.  Also a real APOGEE file (when ../shared is present) goes
through read → normalise → grid → fit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.fit import FitOptions, fit_batch, fit_spectrum, load_model
from core.grid import C_KMS, bad_pixels
from core.mock import draw_labels, synthesize
from core.paths import SHIPPED_MODELS
from core.spectrum import Spectrum

torch.set_num_threads(1)
DEMO = SHIPPED_MODELS / "emulator-demo"
#: 90 % of the held-out stars within these (and the median error within a third of them). The
#: dr17 population spans Teff 3000–7000 K and log g −0.5 to 5.5 with realistic (weak) dwarf
#: lines: the demo emulator's log g errors reach 0.2–0.4 dex for a few metal-poor giants and
#: dwarfs (it was 0.1 at 90 % on the narrower classic mock).
THRESHOLDS = {"TEFF": 60.0, "LOGG": 0.2, "FE_H": 0.06}


@pytest.fixture(scope="module")
def demo():
    assert (DEMO / "config.json").is_file(), f"the shipped demo emulator is missing at {DEMO}"
    return load_model(DEMO)


def held_out(emu, n: int, seed: int):
    lo, hi = emu.bounds
    pool = draw_labels(30 * n, seed)
    true = pool[[f"TRUE_{k}" for k in emu.label_names]].to_numpy()
    pick = pool[np.all((true >= lo) & (true <= hi), axis=1)].iloc[:n].copy()
    pick["SNR"] = np.random.default_rng(seed).uniform(100, 300, len(pick))
    flux, error, pixmask = synthesize(pick, seed=seed)
    good = ~bad_pixels(pixmask)
    return pick, flux, error, good


def test_demo_fit_recovers_teff_logg_feh_at_high_snr(demo):
    pick, flux, error, good = held_out(demo, 40, seed=777)
    fit = fit_batch(demo, flux, error, good, FitOptions())
    for name, tol in THRESHOLDS.items():
        k = demo.label_names.index(name)
        within = np.abs(fit.labels[:, k] - pick[f"TRUE_{name}"].to_numpy()) <= tol
        assert within.mean() >= 0.9, f"{name}: only {within.mean():.0%} within {tol}"
        median = np.median(np.abs(fit.labels[:, k] - pick[f"TRUE_{name}"].to_numpy()))
        assert median <= tol / 3, f"{name}: median error {median:.3g}"
    assert np.nanmedian(np.abs(fit.rv)) < 0.5  # rest-frame spectra
    # a hot dwarf's few weak lines may give no cross-correlation peak: RV NaN, flagged as such
    from core.fit.flags import FLAG_NO_RV_SIGNAL

    no_rv = ~np.isfinite(fit.rv)
    assert no_rv.mean() <= 0.05 and np.all(fit.flags[no_rv] & FLAG_NO_RV_SIGNAL)
    assert pick["TRUE_TEFF"].to_numpy()[no_rv].min(initial=np.inf) > 6000


@pytest.mark.parametrize("rv", [-60.0, 60.0])
def test_demo_fit_recovers_a_large_rv(demo, rv):
    pick, flux, error, good = held_out(demo, 1, seed=991)
    lam = demo.grid.wavelength
    rest = lam * np.sqrt((1 - rv / C_KMS) / (1 + rv / C_KMS))
    shifted = flux[0].copy()
    for sl in demo.grid.chip_slices():
        shifted[sl] = np.interp(rest[sl], lam[sl], flux[0, sl])
    spec = Spectrum(lam, shifted, error[0], np.where(good[0], 0, 1).astype(np.uint16),
                    meta={"APOGEE_ID": "2M-SHIFTED"}, grid=demo.grid.name, normalized=True)
    res = fit_spectrum(spec, demo)
    assert abs(res.rv - rv) < 1.0
    assert abs(res.labels["TEFF"] - pick["TRUE_TEFF"].iloc[0]) < 100
    assert abs(res.labels["FE_H"] - pick["TRUE_FE_H"].iloc[0]) < 0.1


def test_real_apstar_file_is_fitted_through_the_cli(demo, capsys):
    from reference import shared_path

    from core.cli.main import main

    path = shared_path("data", "apogee_real", "apStar-dr17-2M17335483-2753043.fits")
    assert main(["fit", "--model", str(DEMO), "--file", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["star"] == "2M17335483-2753043" and out["n_pix"] > 6000
    assert all(v is not None for v in out["labels"].values())
    assert abs(out["rv"]) < 30  # apStar spectra are already in the rest frame


def test_real_apvisit_file_is_fitted_through_the_cli(demo, capsys):
    from reference import shared_path

    from core.cli.main import main

    path = shared_path("data", "apogee_real", "apVisit-r13-5095-55844-128.fits")
    assert main(["fit", "--model", str(DEMO), "--file", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pix"] > 5000 and np.isfinite(out["chi2_nu"])
    if out["rv"] is None:  # an F dwarf's weak lines: no significant CCF peak, and it says so
        assert "NO_RV_SIGNAL" in out["flag_names"]
    else:
        assert abs(out["rv"]) < 30  # the reader puts the visit in the rest frame


def test_ingested_real_star_is_fitted_from_its_store(demo, tmp_path, capsys):
    from reference import shared_path

    from core.cli.main import main
    from core.store import SpectraStore

    path = shared_path("data", "apogee_real", "apStar-dr17-2M17335483-2753043.fits")
    store_dir = tmp_path / "real"
    assert main(["ingest", "--files", str(path), "--out", str(store_dir)]) == 0
    capsys.readouterr()
    star = "2M17335483-2753043"
    assert main(["fit", "--model", str(DEMO), "--store", str(store_dir), "--star", star,
                 "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["star"] == star and one["n_pix"] > 6000

    assert main(["fit", "--all", "--model", str(DEMO), "--store", str(store_dir)]) == 0
    row = SpectraStore.open(store_dir).catalog.iloc[0]
    for name in ("TEFF", "LOGG", "FE_H"):
        assert row[f"FIT_{name}"] == pytest.approx(one["labels"][name], rel=1e-3, abs=0.02)
        assert row[f"FIT_{name}_ERR"] > 0
    assert row["FIT_CHI2"] == pytest.approx(one["chi2_nu"], rel=1e-2)  # reduced χ²
