"""Named physics sets of the mock synthesiser: classic unchanged, apogee and shifted deterministic,
the shifted perturbations of the stated size, the physics recorded in a store's manifest, and
the apogee physics plausible across the HR diagram."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import BadDataError
from core.grid import APOGEE_7514
from core.mock import generate_mock_survey, noiseless_flux, synthesize
from core.mock.apogee import hminus_bf_cross_section, hminus_ff, hydrogen_continuum, max_depth
from core.mock.physics import (
    PHYSICS,
    broaden_lsf,
    continuum_ripples,
    get_physics,
    shifted_linelist,
    store_physics,
)
from core.mock.profiles import LSF_SIGMA_PX
from core.mock.synth import _physics_model, line_model
from core.store import SpectraStore

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "apogee_real"

#: Five fixed stars (not drawn from the populations, which may change) for the golden values.
GOLDEN_STARS = pd.DataFrame([
    dict(APOGEE_ID="2M00000001+0000001", TRUE_TEFF=4500., TRUE_LOGG=2.2, TRUE_FE_H=-0.2,
         TRUE_M_H=-0.2, TRUE_VMICRO=1.5, TRUE_MG_FE=0.1, TRUE_C_FE=-0.1, TRUE_N_FE=0.2,
         SNR=120., TELESCOPE="apo25m", VHELIO_AVG=-20.),
    dict(APOGEE_ID="2M00000002+0000002", TRUE_TEFF=3700., TRUE_LOGG=0.8, TRUE_FE_H=-0.3,
         TRUE_M_H=-0.3, TRUE_VMICRO=1.9, TRUE_O_FE=0.05, SNR=300., TELESCOPE="lco25m",
         VHELIO_AVG=35.),
    dict(APOGEE_ID="2M00000003+0000003", TRUE_TEFF=5800., TRUE_LOGG=4.4, TRUE_FE_H=0.0,
         TRUE_M_H=0.0, TRUE_VMICRO=1.0, SNR=80., TELESCOPE="apo25m", VHELIO_AVG=5.),
    dict(APOGEE_ID="2M00000004+0000004", TRUE_TEFF=6400., TRUE_LOGG=4.1, TRUE_FE_H=-1.5,
         TRUE_M_H=-1.5, TRUE_VMICRO=1.3, TRUE_MG_FE=0.3, SNR=60., TELESCOPE="apo1m",
         VHELIO_AVG=-150.),
    dict(APOGEE_ID="2M00000005+0000005", TRUE_TEFF=4000., TRUE_LOGG=4.7, TRUE_FE_H=0.3,
         TRUE_M_H=0.3, TRUE_VMICRO=0.8, TRUE_AL_FE=0.1, SNR=400., TELESCOPE="apo25m",
         VHELIO_AVG=0.),
]).fillna(0.0)

# Computed from the code before physics variants existed (commit a7a836e): the classic
# synthesis must reproduce them (the shipped demo models were trained on it).
GOLDEN_ROW_SUMS = [6677.8894927203655, 6189.105358019471, 6906.828574389219,
                   7371.753418505192, 5876.660371243954]
GOLDEN_ROW_MIN = [0.33311769366264343, 0.16166551411151886, 0.31125596165657043,
                  0.5312966704368591, 0.12529264390468597]
GOLDEN_AT = {
    57: [0.8443933725357056, 0.8105564713478088, 0.8687822818756104, 0.9931616187095642,
         0.5724440813064575],
    2100: [0.6345072388648987, 0.4423886239528656, 0.7019487619400024, 0.9737932682037354,
           0.42726844549179077],
    3500: [0.623094916343689, 0.5835457444190979, 0.6391840577125549, 0.9681545495986938,
           0.2392871379852295],
    6000: [0.8922827839851379, 0.8453782200813293, 0.9307622313499451, 0.9987616539001465,
           0.8839806318283081],
    7513: [0.9998809099197388, 0.9990535974502563, 0.9999827742576599, 0.9997861385345459,
           0.9992254376411438],
}
GOLDEN_NOISY_SUMS = [6676.399727344513, 6188.790659531951, 6907.790789812803,
                     7372.1275190114975, 5888.065444327891]
GOLDEN_ERROR_SUMS = [74.3497730595991, 37.56011417764239, 108.96730898180977,
                     147.06073021423072, 35.684617484686896]
GOLDEN_MASK_SUMS = [450603, 442407, 447525, 446500, 4970538]


def _star(teff, logg, fe_h, **more) -> pd.DataFrame:
    return pd.DataFrame([dict(TEFF=teff, LOGG=logg, FE_H=fe_h, **more)])


# --- classic stays bit-for-bit what it was --------------------------------------------------

def test_classic_output_is_unchanged():
    f = noiseless_flux(GOLDEN_STARS, physics="classic")
    assert f.astype(np.float64).sum(axis=1) == pytest.approx(GOLDEN_ROW_SUMS, rel=1e-7)
    assert f.min(axis=1) == pytest.approx(GOLDEN_ROW_MIN, rel=1e-6, abs=1e-7)
    for pix, values in GOLDEN_AT.items():
        assert f[:, pix] == pytest.approx(values, rel=1e-6, abs=1e-7), pix
    flux, error, pixmask = synthesize(GOLDEN_STARS, seed=7, physics="classic")
    assert flux.astype(np.float64).sum(axis=1) == pytest.approx(GOLDEN_NOISY_SUMS, rel=1e-7)
    assert error.astype(np.float64).sum(axis=1) == pytest.approx(GOLDEN_ERROR_SUMS, rel=1e-7)
    assert pixmask.astype(np.int64).sum(axis=1).tolist() == GOLDEN_MASK_SUMS


def test_physics_names_and_errors():
    assert set(PHYSICS) >= {"classic", "apogee", "shifted", "shifted-apogee"}
    assert get_physics(None).name == "apogee"  # the default since the demo rebuild
    assert get_physics("Shifted").name == "shifted"
    assert get_physics("shifted").synthesis == "classic"
    assert get_physics("shifted-apogee").synthesis == "apogee"
    with pytest.raises(BadDataError, match="unknown mock physics 'nope'.*classic"):
        get_physics("nope")
    with pytest.raises(BadDataError, match="unknown mock physics"):
        noiseless_flux(GOLDEN_STARS.iloc[:1], physics="nope")


# --- determinism ----------------------------------------------------------------------------

@pytest.mark.parametrize("physics", ["apogee", "apogee2", "shifted", "shifted-apogee"])
def test_variants_are_deterministic_per_seed_and_batch_independent(physics):
    a = synthesize(GOLDEN_STARS, seed=3, physics=physics)
    b = synthesize(GOLDEN_STARS, seed=3, physics=physics)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    one = synthesize(GOLDEN_STARS.iloc[[2]], seed=3, physics=physics)
    assert np.array_equal(one[0][0], a[0][2])  # a star does not depend on its batch
    c = synthesize(GOLDEN_STARS, seed=4, physics=physics)
    assert not np.array_equal(a[0], c[0])  # the noise follows the seed ...
    f3 = noiseless_flux(GOLDEN_STARS, physics=physics)
    assert np.all(np.isfinite(f3)) and f3.min() > 0.0
    # ... the noiseless spectra do not, and differ from classic
    assert not np.allclose(f3, noiseless_flux(GOLDEN_STARS, physics="classic"), atol=1e-3)


# --- the shifted physics differs from its base by the stated amounts ------------------------

def test_shifted_line_list_perturbations():
    phys = get_physics("shifted")
    base = line_model(None, APOGEE_7514)
    shifted = shifted_linelist(base.table, phys, base.log_gf)
    extra = shifted["note"] == "unidentified (shifted physics)"
    n_extra = int(extra.sum())
    assert n_extra == round(phys.extra_line_fraction * len(base.table))
    assert 0.02 <= n_extra / len(base.table) <= 0.06
    # the original lines keep their order among themselves: compare gf line by line
    orig = shifted[~extra].reset_index(drop=True)
    key = base.table[["wavelength_vac", "species"]].reset_index(drop=True)
    merged = orig.merge(key.assign(gf0=base.log_gf, row=np.arange(len(key))),
                        on=["wavelength_vac", "species"])
    merged = merged.drop_duplicates("row")
    delta = merged["log_gf"].to_numpy() - merged["gf0"].to_numpy()
    assert len(merged) > 0.95 * len(base.table)
    assert 0.09 <= np.std(delta) <= 0.11
    assert abs(np.mean(delta)) < 0.02
    # fixed seed: the same list every time
    again = shifted_linelist(base.table, phys, base.log_gf)
    pd.testing.assert_frame_equal(shifted, again)
    model = _physics_model(phys, None, APOGEE_7514)
    assert len(model.table) == len(shifted)


def test_broader_lsf_and_ripples():
    # a line with the LSF's width, broadened by 8 %: its second moment grows by 8 %
    x = np.arange(400, dtype=np.float64)
    line = 1.0 - 0.3 * np.exp(-0.5 * ((x - 200.0) / LSF_SIGMA_PX) ** 2)
    out = broaden_lsf(line[None, :], [slice(0, 400)], LSF_SIGMA_PX, 0.08)[0]

    def width(f):
        d = 1.0 - f
        return np.sqrt(np.sum(d * (x - 200.0) ** 2) / np.sum(d))

    assert width(out) / width(line) == pytest.approx(1.08, abs=0.01)
    assert np.sum(1 - out) == pytest.approx(np.sum(1 - line), rel=1e-6)  # EW kept
    r = continuum_ripples(GOLDEN_STARS, APOGEE_7514.wavelength, 0.004)
    assert r.shape == (5, APOGEE_7514.n_pix)
    assert np.abs(r - 1).max() <= 0.004 + 1e-12
    assert 0.001 < np.std(r[0]) < 0.004
    assert not np.allclose(r[0], r[1])  # each star its own ripple


def test_shifted_spectra_differ_modestly_from_classic():
    f0 = noiseless_flux(GOLDEN_STARS, physics="classic")
    f1 = noiseless_flux(GOLDEN_STARS, physics="shifted")
    diff = np.abs(f1 - f0).mean(axis=1)
    assert np.all(diff > 0.002) and np.all(diff < 0.05)


# --- the manifest ---------------------------------------------------------------------------

def test_manifest_records_physics_and_reads_back(tmp_path):
    a = generate_mock_survey(tmp_path / "a", n_stars=6, seed=2, progress=False,
                             physics="shifted")
    s = SpectraStore.open(a)
    prov = s.manifest["provenance"]
    assert prov["physics"] == "shifted" and prov["physics_synthesis"] == "classic"
    assert prov["physics_shift"]["gf_sigma_dex"] == pytest.approx(0.1)
    assert "shifted physics" in s.manifest["title"]
    assert store_physics(a) == "shifted" and store_physics(s) == "shifted"
    flux, _, _ = synthesize(s.catalog.iloc[[1]], seed=2, physics="shifted")
    assert np.array_equal(s.spectrum(s.catalog["APOGEE_ID"].iloc[1]).flux, flux[0])
    b = generate_mock_survey(tmp_path / "b", n_stars=3, seed=2, progress=False,
                             physics="apogee")
    prov_b = SpectraStore.open(b).manifest["provenance"]
    assert store_physics(b) == "apogee"
    assert prov_b["forest_file"] == "apogee_hband_forest.csv" and len(prov_b["forest_sha256"]) == 64
    c = generate_mock_survey(tmp_path / "c", n_stars=3, seed=2, progress=False,
                             physics="classic")
    assert store_physics(c) == "classic"
    # stores written before physics variants existed have no record: classic
    m = json.loads((c / "manifest.json").read_text())
    del m["provenance"]["physics"]
    assert store_physics(m) == "classic"


def test_cli_mock_physics(tmp_path, capsys):
    from core.cli.main import main

    out = tmp_path / "s"
    assert main(["mock", "--n-stars", "4", "--seed", "1", "--out", str(out), "--physics",
                 "shifted", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["physics"] == "shifted"
    assert store_physics(out) == "shifted"
    assert main(["mock", "--n-stars", "4", "--out", str(tmp_path / "x"), "--physics",
                 "bogus"]) != 0
    assert "unknown mock physics" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --- the apogee physics ---------------------------------------------------------------------

def test_hminus_opacity():
    lam = np.array([15200.0, 16000.0, 16400.0, 16500.0, 16900.0])
    bf = hminus_bf_cross_section(lam)
    assert np.all(bf[:3] > 0) and np.all(bf[3:] == 0)  # photo-detachment threshold 16 419 Å
    assert bf[0] > bf[1] > bf[2]
    assert hminus_bf_cross_section(8500.0) == pytest.approx(4e-17, rel=0.15)  # near its peak
    ff = hminus_ff(lam, np.array([[1.0]]))[0]
    assert np.all(np.diff(ff) > 0)  # free-free grows with λ
    # limiting depth: deeper in cool stars, between 0 and 1
    d = max_depth(np.array([3500.0, 5000.0, 6500.0]), np.array([16000.0]))[:, 0]
    assert np.all((d > 0.2) & (d < 0.9)) and d[0] > d[1] > d[2]
    # neutral-hydrogen continuum: negligible in cool stars, steeply growing with T
    h = hydrogen_continuum(np.array([16000.0]), np.array([[5040 / 4000], [5040 / 7000],
                                                           [5040 / 12000]]))[:, 0]
    assert h[0] < 1e-29 < h[1] < h[2]


def test_apogee_hot_stars_stay_sane():
    """Beyond the mock box the H I continuum keeps hot stars' lines (Brackett included) from
    growing without bound."""
    f = noiseless_flux(pd.concat([_star(t, 4.0, 0.0) for t in (7000.0, 9000.0, 12000.0)]),
                       physics="apogee")
    depth = 1.0 - f.mean(axis=1)
    assert np.all(np.isfinite(f)) and np.all((depth > 0.002) & (depth < 0.06))


def _chip_depth(flux):
    """Mean depth per chip (chips × stars) away from the Brackett lines: their strength peaks
    in A stars, so with them the mean depth rightly stops falling above ~6000 K."""
    from core.linelist import brackett_wavelengths

    lam = APOGEE_7514.wavelength
    br = brackett_wavelengths(np.arange(11, 22))
    metal = np.min(np.abs(lam[:, None] - br[None, :]), axis=1) > 40.0
    return np.array([1.0 - flux[..., sl][..., metal[sl]].mean(axis=-1)
                     for sl in APOGEE_7514.chip_slices()])


def test_apogee_depths_are_sane_across_the_hr_diagram():
    stars = pd.DataFrame([
        dict(TEFF=6500.0, LOGG=4.2, FE_H=0.0),  # hot dwarf
        dict(TEFF=5777.0, LOGG=4.44, FE_H=0.0),  # the Sun
        dict(TEFF=4500.0, LOGG=2.0, FE_H=0.0),  # K giant
        dict(TEFF=3600.0, LOGG=4.8, FE_H=0.0),  # M dwarf
        dict(TEFF=3700.0, LOGG=0.8, FE_H=0.0),  # M giant
    ])
    f = noiseless_flux(stars, physics="apogee")
    assert np.all(np.isfinite(f)) and f.min() > 0.0 and f.max() <= 1.0 + 1e-6
    depth = _chip_depth(f).mean(axis=0)  # mean over chips, per star
    hot, sun, kgiant, mdwarf, mgiant = depth
    assert 0.001 < hot < sun < kgiant < mgiant < 0.3
    assert sun < mdwarf < 0.3
    # solar H band: the strong Mg I 15770 Å line is clearly visible but not black
    p = int(APOGEE_7514.pixel_of(15770.15))
    mg = 1.0 - f[1, p - 2:p + 3].min()
    assert 0.15 < mg < 0.75
    # metallicity deepens a K giant's lines monotonically
    fe = noiseless_flux(pd.concat([_star(4500.0, 2.0, m) for m in (-2.0, -1.0, -0.3, 0.3)]),
                        physics="apogee")
    d_fe = _chip_depth(fe).mean(axis=0)
    assert np.all(np.diff(d_fe) > 0)
    # hotter → shallower metal lines at fixed log g and [Fe/H], stronger Brackett lines
    tt = noiseless_flux(pd.concat([_star(t, 4.3, 0.0) for t in (4000, 5000, 6000, 7000)]),
                        physics="apogee")
    assert np.all(np.diff(_chip_depth(tt).mean(axis=0)) < 0)
    p11 = int(APOGEE_7514.pixel_of(16811.1))
    br11 = 1.0 - tt[:, p11 - 2:p11 + 3].min(axis=1)
    assert br11[3] > br11[2] > br11[1] and br11[3] > 0.05


def test_synth_fit_recovers_a_mock_star():
    from core.evaluate.realism import fit_with_synth, normalised_synth, synth_labels

    truth = synth_labels(4700.0, 2.4, -0.4, 1.4, 0.1)
    clean = normalised_synth(truth, APOGEE_7514, "apogee")
    rng = np.random.default_rng(0)
    err = np.full(clean.size, 0.01)
    flux = clean + rng.normal(0, 0.01, clean.size)
    good = np.ones(clean.size, bool)
    res = fit_with_synth(flux, err, good, APOGEE_7514, "apogee",
                         start={"TEFF": 4400.0, "LOGG": 2.0, "FE_H": -0.1})
    lab = res["labels"]
    assert abs(lab["TEFF"] - 4700.0) < 60
    assert abs(lab["LOGG"] - 2.4) < 0.25
    assert abs(lab["FE_H"] + 0.4) < 0.08
    assert res["chi2_nu"] < 1.5


@pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/data/apogee_real (real APOGEE "
                    "files kept beside the project, absent in a fresh clone)")
def test_apogee_physics_is_closer_to_a_real_m_giant_than_classic():
    import importlib.util

    from core.paths import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("bench_realism",
                                                  PROJECT_ROOT / "bench" / "realism.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = REAL / "apStar-dr17-2M17335483-2753043.fits"
    res = bench.measure_synth(path, ["classic", "apogee"])
    chi_c = res["physics"]["classic"]["chi2_nu_header"]
    chi_a = res["physics"]["apogee"]["chi2_nu_header"]
    assert chi_a < chi_c
    for row in res["per_chip"].values():
        # the apogee forest counts at least as many real-like minima as classic, and matches more
        assert row["apogee_header"]["count_ratio"] > row["classic_header"]["count_ratio"]
        assert row["apogee_header"]["match_fraction"] > row["classic_header"]["match_fraction"]
    fit = res["physics"]["apogee"]["fit"]
    assert abs(fit["delta_teff_vs_header"]) <= 300
