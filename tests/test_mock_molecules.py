"""The computed molecular line lists (core.mock.molecules) and the 'apogee2' physics that uses
them: CO band heads where they are measured, OH lines near measured OH positions, molecular
equilibrium and line strengths that follow the temperature, the new variant recorded in a
store and deterministic, and, on the shared real M giant, closer to it than 'apogee'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.grid import APOGEE_7514
from core.linelist import load_linelist
from core.mock import apogee, apogee2, generate_mock_survey, noiseless_flux, synthesize
from core.mock import molecules as mol
from core.mock.physics import get_physics, store_physics
from core.mock.synth import _physics_model, label_arrays

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "apogee_real"
SKY = Path(__file__).resolve().parents[1] / "assets" / "linelists" / "apogee_sky_oh_lines.csv"


def _labels(teff, logg, fe_h=0.0):
    from core.evaluate.realism import synth_labels

    return label_arrays(synth_labels(teff, logg, fe_h))


# --- CO -------------------------------------------------------------------------------------

def test_co_second_overtone_bandheads_at_their_vacuum_wavelengths():
    heads = mol.co_bandheads(3, range(0, 7))
    # measured vacuum heads of the 12CO Δv = 3 bands seen in APOGEE giants
    known = {(3, 0): 15582.0, (4, 1): 15780.0, (5, 2): 15982.0, (6, 3): 16189.0, (9, 6): 16840.0}
    for band, lam in known.items():
        assert abs(heads[band] - lam) < 1.0, (band, heads[band])
    # heads move apart smoothly as the vibrational spacing shrinks (anharmonicity)
    lam = np.array([heads[(v + 3, v)] for v in range(7)])
    gaps = np.diff(lam)
    assert np.all(np.diff(gaps) > 0) and 190 < gaps[0] < 205


def test_co_isotopologue_shift_matches_the_k_band_heads():
    # the first-overtone 2-0 heads of 12CO and 13CO (2.2935 and 2.3448 µm) check the
    # Dunham coefficients and their reduced-mass scaling
    assert abs(mol.co_bandheads(2, [0])[(2, 0)] - 22935.0) < 3.0
    assert abs(mol.co_bandheads(2, [0], "13C16O")[(2, 0)] - 23448.0) < 3.0
    assert mol.isotope_rho("12C16O") == 1.0


def test_co_lines_have_physical_energies_and_strengths():
    co = mol.co_lines()
    assert len(co) > 500 and co["wavelength_vac"].between(mol.LO, mol.HI).all()
    low = co[(co["v_lower"] == 0) & (co["branch"] == "R")].sort_values("j_lower")
    assert low["excitation_potential"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    # E(J) ≈ B J (J + 1): J = 20 of v = 0 lies ~0.1 eV up
    j20 = low[low["j_lower"] == 20]["excitation_potential"].iloc[0]
    assert 0.09 < j20 < 0.11
    # hot bands are stronger per line (harmonic C(v', 3)) at equal J
    hot = co[(co["v_lower"] == 1) & (co["branch"] == "R") & (co["j_lower"] == 20)]
    assert hot["log_gf"].iloc[0] > low[low["j_lower"] == 20]["log_gf"].iloc[0]


# --- OH -------------------------------------------------------------------------------------

def test_oh_lines_lie_near_measured_oh_positions():
    oh = mol.oh_lines()
    lam = np.sort(oh["wavelength_vac"].to_numpy())
    shipped = load_linelist()
    measured = shipped[(shipped["species"] == "OH")
                       & shipped["note"].str.contains("published|literature")]
    sky = pd.read_csv(SKY, comment="#")["wavelength_vac"].to_numpy()

    def nearest(w):
        return np.array([np.min(np.abs(lam - x)) for x in w])

    d_star = nearest(measured["wavelength_vac"].to_numpy())
    d_sky = nearest(sky)
    rng = np.random.default_rng(0)
    d_random = nearest(rng.uniform(15200.0, 16900.0, 500))
    # computed from constants: good to about a pixel or two, far better than chance
    assert np.median(d_star) < 0.8 and np.median(d_sky) < 0.5
    assert np.median(d_star) < 0.5 * np.median(d_random)


def test_oh_levels_spin_and_lambda_structure():
    j = np.arange(1.5, 30.0)
    f1e, f1f, f2e, f2f = mol.oh_levels(0, j)
    # the inverted ground state: F1 (Ω = 3/2) lies below F2 at low J
    assert f1e[0] < f2e[0]
    # Λ-doubling is small next to the spin splitting and grows with J
    split = np.abs(f1e - f1f)
    assert np.all(split < np.abs(f2e - f1e) + 1e-9) and split[-1] > split[0]
    # P lines dominate the H band and carry published-size gf (−5.5 … −4.5 at N ~ 10–18)
    oh = mol.oh_lines()
    p = oh[(oh["branch"].str[0] == "P") & oh["n_lower"].between(10, 18) & (oh["v_lower"] <= 1)]
    assert p["log_gf"].between(-6.0, -4.3).all()


def test_oh_and_co_strength_rise_as_teff_falls():
    model = _physics_model(get_physics("apogee2"), None, APOGEE_7514)
    sp = model.table["species"].to_numpy()
    totals = {"OH": [], "CO": []}
    for teff in (5000.0, 4500.0, 4000.0, 3600.0):
        width, _ = apogee2.line_strengths(_labels(teff, 1.5), model)
        for name in totals:
            totals[name].append(width[0, sp == name].sum())
    for name, w in totals.items():
        assert np.all(np.diff(w) > 0), (name, w)


def test_molecular_equilibrium_is_physical():
    t = np.array([2500.0, 3500.0, 5000.0])
    for m in ("CO", "CN", "OH"):
        assert np.all(np.diff(apogee2.log_kp(m, t)) > 0)  # dissociation grows with T
    # CO binds more strongly than OH: far smaller K_p
    assert np.all(apogee2.log_kp("CO", t) < apogee2.log_kp("OH", t) - 5)
    from core.mock.synth import line_setup

    model = _physics_model(get_physics("apogee2"), None, APOGEE_7514)
    cool = line_setup(_labels(3600.0, 1.0), model).state
    x = apogee2.molecular_fractions(cool, apogee2.T_MOL * cool.teff)
    # in a cool giant with O > C almost all carbon sits in CO
    c = 10.0 ** (cool.log_eps["C"] - 12.0)
    assert 0.9 < 10.0 ** x["CO"][0] / c <= 1.0


def test_carbon_isotope_ratio_follows_the_giant_branch():
    r = apogee2.carbon_isotope_ratio([4.5, 3.8, 3.0, 2.0, 0.5])
    assert r[0] == pytest.approx(89.0) and r[1] == pytest.approx(89.0)
    assert np.all(np.diff(r) <= 0) and r[-1] == pytest.approx(12.0)


def test_zero_points_keep_apogee_at_the_reference_giant():
    lab = _labels(*apogee2.REFERENCE_GIANT)
    m1 = _physics_model(get_physics("apogee"), None, APOGEE_7514)
    m2 = _physics_model(get_physics("apogee2"), None, APOGEE_7514)
    w1, _ = apogee.line_strengths(lab, m1)
    w2, _ = apogee2.line_strengths(lab, m2)
    for sp in ("CO", "OH", "CN"):
        a = w1[0, m1.table["species"].to_numpy() == sp].sum()
        b = w2[0, m2.table["species"].to_numpy() == sp].sum()
        assert b == pytest.approx(a, rel=0.02), sp
    # the atoms are those of apogee
    at1 = m1.table["kind"].to_numpy() == "atomic"
    at2 = m2.table["kind"].to_numpy() == "atomic"
    assert w2[0, at2].sum() == pytest.approx(w1[0, at1].sum(), rel=1e-9)


def test_apogee2_line_list_keeps_measured_oh_positions():
    ll = apogee2.apogee2_linelist()
    shipped = load_linelist()
    oh = ll[ll["species"] == "OH"]
    measured = shipped[(shipped["species"] == "OH") & (shipped["kind"] == "molecular")]
    assert np.array_equal(np.sort(oh["wavelength_vac"].to_numpy()),
                          np.sort(measured["wavelength_vac"].to_numpy()))
    # half of them take χ and gf from a computed line within 1.2 Å
    assert oh["note"].str.contains("computed").mean() > 0.5
    assert oh["log_gf"].notna().mean() > 0.5
    iso = ll.loc[(ll["species"] == "CO") & (ll["kind"] == "molecular"), "isotopologue"]
    assert set(iso) == {"12C16O", "13C16O"}


# --- the variant as a whole -----------------------------------------------------------------

def test_apogee2_is_deterministic_and_sane():
    stars = pd.DataFrame([
        dict(APOGEE_ID="2M00000001+0000001", TRUE_TEFF=3700.0, TRUE_LOGG=0.8, TRUE_FE_H=-0.3,
             SNR=150.0, TELESCOPE="apo25m", VHELIO_AVG=0.0),
        dict(APOGEE_ID="2M00000002+0000002", TRUE_TEFF=5800.0, TRUE_LOGG=4.4, TRUE_FE_H=0.0,
             SNR=80.0, TELESCOPE="apo25m", VHELIO_AVG=10.0),
    ])
    a = synthesize(stars, seed=5, physics="apogee2")
    b = synthesize(stars, seed=5, physics="apogee2")
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    f = noiseless_flux(stars, physics="apogee2")
    assert np.all(np.isfinite(f)) and f.min() > 0.0 and f.max() <= 1.0 + 1e-6
    g = noiseless_flux(stars, physics="apogee")
    # the cool giant changes (molecules), the solar dwarf hardly (atoms as in apogee)
    assert np.abs(f[0] - g[0]).max() > 0.05
    assert np.abs(f[1] - g[1]).mean() < 0.002


def test_store_records_apogee2(tmp_path):
    out = tmp_path / "m"
    generate_mock_survey(out, n_stars=3, seed=1, physics="apogee2", progress=False)
    assert store_physics(out) == "apogee2"
    manifest = json.loads((out / "manifest.json").read_text())
    prov = manifest["provenance"]
    assert prov["physics_synthesis"] == "apogee2" and "molecules" in prov


@pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/data/apogee_real (real APOGEE "
                    "files kept beside the project, absent in a fresh clone)")
def test_apogee2_is_closer_to_the_real_m_giant_than_apogee():
    import importlib.util

    from core.paths import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("bench_realism",
                                                  PROJECT_ROOT / "bench" / "realism.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.measure_synth(REAL / "apStar-dr17-2M17335483-2753043.fits",
                              ["apogee", "apogee2"])
    old, new = res["physics"]["apogee"], res["physics"]["apogee2"]
    assert new["chi2_nu_header"] < 0.9 * old["chi2_nu_header"]
    assert new["fit"]["chi2_nu"] < old["fit"]["chi2_nu"]
    assert abs(new["fit"]["delta_teff_vs_header"]) <= 300
    assert abs(new["fit"]["delta_fe_h_vs_header"]) <= abs(old["fit"]["delta_fe_h_vs_header"])
    # fitted log g nearer the header's 0.53
    head_logg = res["header_labels"]["LOGG"]
    assert (abs(new["fit"]["labels"]["LOGG"] - head_logg)
            < abs(old["fit"]["labels"]["LOGG"] - head_logg))


def test_oh_constants_are_the_refinement_on_measured_positions():
    shipped = load_linelist()
    stellar = shipped[(shipped["species"] == "OH")
                      & shipped["note"].str.contains("published|literature")]
    sky = pd.read_csv(SKY, comment="#")["wavelength_vac"].to_numpy()
    c, assigned, resid = mol.refine_oh_constants(stellar["wavelength_vac"].to_numpy(), sky)
    assert len(assigned) >= 30 and np.sqrt(np.mean(resid**2)) < 0.85
    for k in mol.OH_FREE:  # the shipped constants are this refinement's result
        assert c[k] == pytest.approx(mol.OH_CONSTANTS[k], rel=1e-4, abs=5e-8), k
    # and stay close to the textbook ground state
    assert abs(c["be"] - mol.OH_TEXTBOOK["be"]) < 0.05
    assert abs(c["we"] - mol.OH_TEXTBOOK["we"]) < 3.0


def test_apogee2_stays_close_to_apogee_across_the_hr_diagram():
    grid_stars = ((6500, 4.2), (5777, 4.44), (5000, 3.5), (4500, 2.0), (4000, 1.5), (3700, 0.8),
                  (3400, 0.3), (4500, 4.6), (3600, 4.8), (3200, 5.0))
    stars = pd.DataFrame([dict(TEFF=t, LOGG=g, FE_H=0.0) for t, g in grid_stars])
    depth = {}
    for name in ("apogee", "apogee2"):
        f = noiseless_flux(stars, physics=name)
        assert np.all(np.isfinite(f)) and f.min() > 0.0 and f.max() <= 1.0 + 1e-6
        depth[name] = 1.0 - f.mean(axis=1)
    # the molecules' new physics changes mean depths by at most ~15 % anywhere in the box
    assert np.all(np.abs(depth["apogee2"] / depth["apogee"] - 1.0) < 0.15)
    # and giants still deepen monotonically as they cool
    giants = depth["apogee2"][[2, 3, 4, 5, 6]]
    assert np.all(np.diff(giants) > 0)
