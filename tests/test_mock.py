"""The mock survey: label populations, line physics, noise, PIXMASK, determinism and the store."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from core.grid import APOGEE_7514, air_to_vac, bad_pixels
from core.linelist import brackett_wavelengths, load_linelist
from core.mock import (
    MOCK_LABEL_COLUMNS,
    draw_labels,
    generate_mock_survey,
    noiseless_flux,
    synthesize,
)
from core.mock.populations import apogee_id
from core.store import SpectraStore

WL = APOGEE_7514.wavelength


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    return draw_labels(400, seed=11, population="classic")  # dr17: tests/test_populations.py


def _star(**changes) -> pd.DataFrame:
    """A red-giant reference star with solar-scaled abundances, with some labels changed."""
    base = {"TEFF": 4500.0, "LOGG": 2.2, "FE_H": -0.2, "M_H": -0.2, "VMICRO": 1.5}
    base.update(changes)
    return pd.DataFrame([base])


def _depth(flux: np.ndarray, wavelength_vac: float, half_px: int = 1) -> float:
    """Central depth of a line: 1 − the lowest flux within ±half_px of its pixel."""
    p = int(APOGEE_7514.pixel_of(wavelength_vac))
    assert p >= 0, wavelength_vac
    return float(1.0 - flux[..., p - half_px:p + half_px + 1].min())


def _only(*species) -> pd.DataFrame:
    ll = load_linelist()
    return ll[ll["species"].isin(species)].reset_index(drop=True)


# --- labels ---------------------------------------------------------------------------------

def test_labels_are_deterministic_and_complete(labels):
    again = draw_labels(400, seed=11, population="classic")
    pd.testing.assert_frame_equal(labels, again)
    other = draw_labels(400, seed=12, population="classic")
    assert not np.allclose(labels["TRUE_TEFF"], other["TRUE_TEFF"])
    for name in MOCK_LABEL_COLUMNS:
        for col in (name, f"{name}_ERR", f"TRUE_{name}"):
            assert col in labels.columns, col
            assert np.isfinite(labels[col]).all(), col
    for col in ("APOGEE_ID", "TELESCOPE", "FIELD", "RA", "DEC", "SNR", "STARFLAG", "ASPCAPFLAG",
                "VSCATTER", "POPULATION"):
        assert col in labels.columns, col
    assert (labels["STARFLAG"] == 0).all() and (labels["ASPCAPFLAG"] == 0).all()
    assert len(MOCK_LABEL_COLUMNS) == 21 and "NI_FE" in MOCK_LABEL_COLUMNS


def test_apogee_ids_are_unique_2mass_names_of_the_positions(labels):
    ids = labels["APOGEE_ID"]
    assert ids.is_unique
    assert ids.str.fullmatch(r"2M\d{8}[+-]\d{7}").all()
    assert (apogee_id(labels["RA"], labels["DEC"]) == ids.to_numpy()).all()
    assert apogee_id([263.47845], [-27.88453])[0] == "2M17335482-2753043"
    assert labels["RA"].between(0, 360).all() and labels["DEC"].between(-90, 90).all()
    assert set(labels["TELESCOPE"]) <= {"apo25m", "lco25m", "apo1m"}


def test_label_distributions_are_in_range(labels):
    t, g, feh = labels["TRUE_TEFF"], labels["TRUE_LOGG"], labels["TRUE_FE_H"]
    assert t.between(3500, 6500).all() and g.between(0.5, 4.8).all()
    assert feh.between(-2.5, 0.5).all()
    assert -0.35 < feh.median() < 0.05 and feh.skew() < 0  # peaked near −0.1, metal-poor tail
    assert labels["SNR"].between(50, 500).all() and labels["SNR"].median() < 150
    pops = labels["POPULATION"].value_counts(normalize=True)
    assert set(pops.index) == {"RGB", "RC", "dwarf"} and pops.min() > 0.1
    rc = labels[labels["POPULATION"] == "RC"]
    assert rc["TRUE_TEFF"].between(4550, 5050).all() and rc["TRUE_LOGG"].between(2.25, 2.65).all()
    dwarfs = labels[labels["POPULATION"] == "dwarf"]
    assert dwarfs["TRUE_LOGG"].median() > 4.0
    rgb = labels[labels["POPULATION"] == "RGB"]
    # up the giant branch stars get cooler
    assert np.corrcoef(rgb["TRUE_LOGG"], rgb["TRUE_TEFF"])[0, 1] > 0.6
    # giants show first-dredge-up CN processing
    giants = labels["POPULATION"] != "dwarf"
    assert labels.loc[giants, "TRUE_N_FE"].mean() > labels.loc[~giants, "TRUE_N_FE"].mean() + 0.2
    assert labels.loc[giants, "TRUE_C_FE"].mean() < labels.loc[~giants, "TRUE_C_FE"].mean()


def test_alpha_bimodality_and_errors(labels):
    mid = labels[labels["TRUE_FE_H"].between(-0.9, -0.3)]
    high = (mid["TRUE_MG_FE"] > 0.15).mean()
    low = (mid["TRUE_MG_FE"] < 0.10).mean()
    assert high > 0.1 and low > 0.1  # two sequences at the same [Fe/H]
    # catalog = truth + noise of about the stated size, and errors grow at low S/N
    z = (labels["TEFF"] - labels["TRUE_TEFF"]) / labels["TEFF_ERR"]
    assert 0.8 < z.std() < 1.2
    assert labels["TEFF_ERR"].between(5, 260).all()
    assert np.corrcoef(np.log(labels["SNR"]), np.log(labels["TEFF_ERR"]))[0, 1] < -0.5
    for name in MOCK_LABEL_COLUMNS[5:]:
        assert labels[f"{name}_ERR"].between(0.003, 0.36).all(), name


# --- line physics ---------------------------------------------------------------------------

def test_mg_lines_deepen_with_mg_abundance_and_saturate():
    """The classic synthesis' curve of growth (apogee's: tests/test_mock_physics.py)."""
    mg_line = float(air_to_vac(15954.477))
    p = int(APOGEE_7514.pixel_of(mg_line))
    steps = np.arange(-3.0, 1.01, 0.5)
    stars = pd.concat([_star(MG_FE=x) for x in steps], ignore_index=True)
    flux = noiseless_flux(stars, linelist=_only("Mg I"), physics="classic")
    depth = np.array([_depth(f, mg_line) for f in flux])
    assert np.all(np.diff(depth) > 0)
    # curve of growth: EW ∝ abundance for weak lines, flat once the core saturates
    ew = (1.0 - flux[:, p - 40:p + 41]).sum(axis=1)
    slope = np.diff(np.log10(ew)) / 0.5
    assert slope[0] > 0.85
    assert slope[steps[:-1] >= -0.5].max() < 0.4
    # ... so the central depth gains less per dex at high abundance
    gain = np.diff(depth)
    assert gain[-1] < gain[steps[:-1] == -2.0][0]
    # in the full spectrum too, the Mg line follows [Mg/Fe]
    full = noiseless_flux(stars.iloc[[4, 7]])
    assert _depth(full[1], mg_line) > _depth(full[0], mg_line) + 0.05


def test_fe_lines_deepen_with_metallicity():
    fe_line = float(air_to_vac(15207.526))
    stars = pd.concat([_star(FE_H=x, M_H=x) for x in (-1.5, -0.5, 0.3)], ignore_index=True)
    flux = noiseless_flux(stars)
    depth = [_depth(f, fe_line) for f in flux]
    assert depth[0] < depth[1] < depth[2]
    assert flux[0].mean() > flux[1].mean() > flux[2].mean()


def test_molecules_strengthen_in_cool_stars():
    stars = pd.concat([_star(TEFF=t, LOGG=1.5) for t in (3900.0, 4300.0, 4800.0)],
                      ignore_index=True)
    co = 1.0 - noiseless_flux(stars, linelist=_only("CO"))
    oh = 1.0 - noiseless_flux(stars, linelist=_only("OH"))
    cn = 1.0 - noiseless_flux(stars, linelist=_only("CN"))
    for absorption in (co, oh, cn):
        total = absorption.sum(axis=1)
        assert total[0] > total[1] > total[2] > 0
    # the CO (4-1) band head shows in a cool giant
    assert _depth(co[0], 15779.5, half_px=4) > 0.2


def test_brackett_lines_strengthen_in_hot_stars():
    stars = pd.concat([_star(TEFF=t, LOGG=4.3, VMICRO=1.0) for t in (4500.0, 5500.0, 6500.0)],
                      ignore_index=True)
    h = noiseless_flux(stars, linelist=_only("H I"))
    br11 = [_depth(f, brackett_wavelengths(11)) for f in h]
    assert br11[0] < br11[1] < br11[2]
    assert br11[2] > 0.1
    # Stark wings: the line is many pixels wide in a hot dwarf
    p = int(APOGEE_7514.pixel_of(brackett_wavelengths(11)))
    assert 1.0 - h[2, p + 15] > 0.2 * br11[2]


def test_noiseless_spectra_are_normalised_absorption():
    stars = draw_labels(30, seed=5)
    flux = noiseless_flux(stars)
    assert flux.shape == (30, 7514) and flux.dtype == np.float32
    assert np.isfinite(flux).all() and flux.min() > 0.0 and flux.max() <= 1.0
    assert (flux.max(axis=1) > 0.995).all()  # continuum pixels reach 1
    assert (1.0 - flux).mean() > 0.01


# --- noise, masks, determinism --------------------------------------------------------------

def test_synthesis_is_deterministic_and_independent_of_batching(labels):
    part = labels.iloc[:24]
    a = synthesize(part, seed=3)
    b = synthesize(part, seed=3)
    split = [synthesize(part.iloc[:9], seed=3), synthesize(part.iloc[9:], seed=3)]
    for k in range(3):
        assert np.array_equal(a[k], b[k])
        assert np.array_equal(a[k], np.concatenate([s[k] for s in split]))
    c = synthesize(part, seed=4)
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.float32 and a[1].dtype == np.float32 and a[2].dtype == np.uint16


def test_noise_matches_snr_and_masks_are_realistic(labels):
    part = labels.iloc[:120]
    flux, error, pixmask = synthesize(part, seed=9)
    model = noiseless_flux(part)
    assert np.isfinite(flux).all() and np.isfinite(error).all()
    assert flux.min() >= -0.1 and flux.max() <= 1.3 and (error > 0).all()
    clean = pixmask == 0
    z = np.abs(flux - model)[clean] / error[clean]
    assert 0.75 < z.mean() < 0.85  # E|N(0,1)| = 0.798
    assert 0.62 < np.median(z) < 0.72
    # continuum error ≈ 1/SNR
    cont = (model > 0.995) & clean
    ratio = [np.median(error[i][cont[i]]) * part["SNR"].iloc[i] for i in range(len(part))]
    assert 0.8 < np.median(ratio) < 1.25
    bad = bad_pixels(pixmask, "astronn")
    assert 0.01 < bad.mean() < 0.05
    assert (bad.mean(axis=1) > 0.005).all() and (bad.mean(axis=1) < 0.1).all()
    assert ((pixmask & (1 << 12)) > 0).any(axis=1).all()  # every star has sky lines
    persist = (pixmask & (0b111 << 9)) > 0
    assert persist.any()
    blue = APOGEE_7514.chip_slices()[0]
    assert not persist[:, blue.stop:].any()
    # flagged pixels carry inflated errors
    for i in range(10):
        assert np.median(error[i][bad[i]]) > 1.5 * np.median(error[i][clean[i]])


def test_sky_lines_sit_at_fixed_observed_positions(labels):
    part = labels.iloc[:40]
    _, _, pixmask = synthesize(part, seed=1)
    sky = (pixmask & (1 << 12)) > 0
    # the bright 15240.9 Å sky line is flagged in every star, within its velocity shift
    v = part["VHELIO_AVG"].to_numpy()
    for i in range(len(part)):
        rest = 15240.9 / (1.0 + v[i] / 299792.458)
        p = int(APOGEE_7514.pixel_of(rest))
        assert sky[i, max(p - 10, 0):p + 11].any()


# --- the survey store -----------------------------------------------------------------------

def test_generate_mock_survey_writes_a_store_independent_of_chunk(tmp_path):
    a = generate_mock_survey(tmp_path / "a", n_stars=25, seed=5, progress=False, chunk=7)
    b = generate_mock_survey(tmp_path / "b", n_stars=25, seed=5, progress=False, chunk=25)
    sa, sb = SpectraStore.open(a), SpectraStore.open(b)
    assert sa.is_mock and sa.manifest["kind"] == "mock survey" and len(sa) == 25
    prov = sa.manifest["provenance"]
    assert prov["seed"] == 5 and prov["n_stars"] == 25
    assert re.fullmatch(r"[0-9a-f]{64}", prov["linelist_sha256"])
    assert prov["generator_version"]
    # the default physics and population, recorded (stores without a record are classic)
    assert prov["physics"] == "apogee" and prov["population"] == "dr17"
    assert sa.manifest["title"] == "Mock APOGEE survey (seed 5)"
    ba, bb = sa.read_all(), sb.read_all()
    for name in ("flux", "error", "pixmask"):
        assert np.array_equal(getattr(ba, name), getattr(bb, name))
    expected = draw_labels(25, seed=5)
    assert list(sa.catalog["APOGEE_ID"]) == list(expected["APOGEE_ID"])
    assert np.array_equal(sa.catalog["TRUE_TEFF"].to_numpy(), expected["TRUE_TEFF"].to_numpy())
    star = sa.spectrum(expected["APOGEE_ID"].iloc[3])
    flux, _, _ = synthesize(expected.iloc[[3]], seed=5)
    assert np.array_equal(star.flux, flux[0])
    assert set(MOCK_LABEL_COLUMNS) <= set(sa.label_columns())
    with pytest.raises(Exception, match="already exists"):
        generate_mock_survey(a, n_stars=5, seed=5, progress=False)
