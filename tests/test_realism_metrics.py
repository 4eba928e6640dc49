"""The realism measures (core.evaluate.realism) on spectra whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluate.realism import (
    chip_metrics,
    depth_stats,
    find_minima,
    match_fraction,
    noise_threshold,
    per_100_angstrom,
    spectrum_metrics,
)

N_PIX = 3000
CENTRES = np.arange(40, N_PIX - 40, 30)  # 98 well-separated lines
DEPTH, SIGMA = 0.3, 1.5


def _lines(centres=CENTRES, depth=DEPTH, sigma=SIGMA, n=N_PIX):
    x = np.arange(n, dtype=np.float64)
    flux = np.ones(n)
    for c in centres:
        flux -= depth * np.exp(-0.5 * ((x - c) / sigma) ** 2)
    return flux


def test_known_gaussian_lines_give_known_depth_count_and_match():
    flux = _lines()
    mean_depth, deep = depth_stats(flux)
    # each line removes depth·σ·√(2π) pixel-units of flux
    assert mean_depth == pytest.approx(CENTRES.size * DEPTH * SIGMA * np.sqrt(2 * np.pi) / N_PIX,
                                       rel=1e-6)
    # pixels deeper than 5 %: |x − c| < σ √(2 ln(d / 0.05)) (2.84 px here) → offsets −2 … 2
    half = SIGMA * np.sqrt(2 * np.log(DEPTH / 0.05))
    per_line = 2 * int(np.floor(half)) + 1
    assert deep == pytest.approx(CENTRES.size * per_line / N_PIX)
    minima = find_minima(flux)
    np.testing.assert_array_equal(minima, CENTRES)
    assert match_fraction(minima, find_minima(_lines())) == 1.0


def test_shift_by_five_pixels_matches_nothing():
    real = find_minima(_lines())
    shifted = find_minima(_lines(CENTRES + 5))
    assert shifted.size == real.size
    assert match_fraction(real, shifted) == 0.0
    assert match_fraction(real, find_minima(_lines(CENTRES + 2))) == 1.0  # within ± 2 px


def test_threshold_and_bad_pixels():
    shallow = _lines(depth=0.015)  # below the 2 % threshold
    assert find_minima(shallow).size == 0
    assert find_minima(shallow, threshold=0.01).size == CENTRES.size
    flux = _lines()
    good = np.ones(N_PIX, bool)
    good[CENTRES[:10]] = False  # the cores of ten lines are bad
    found = find_minima(flux, good)
    assert not np.isin(CENTRES[:10], found).any()
    assert np.isin(CENTRES[10:], found).all()
    d_all, _ = depth_stats(flux)
    d_good, _ = depth_stats(flux, good)
    assert d_good < d_all  # the deepest pixels were excluded


def test_noise_below_threshold_makes_no_minima():
    rng = np.random.default_rng(1)
    flux = 1 + rng.normal(0, 0.002, N_PIX)
    assert find_minima(flux).size == 0


def test_per_100_angstrom_and_chips():
    lam = np.linspace(15000.0, 15300.0, N_PIX)  # 0.1 Å per pixel, 300 Å
    good = np.ones(N_PIX, bool)
    assert per_100_angstrom(30, lam, good) == pytest.approx(10.0, rel=1e-3)
    good[: N_PIX // 2] = False
    assert per_100_angstrom(30, lam, good) == pytest.approx(20.0, rel=1e-2)
    flux = _lines()
    chips = {"a": slice(0, 1500), "b": slice(1500, N_PIX)}
    res = chip_metrics(lam, flux, np.ones(N_PIX, bool), chips,
                       {"same": flux, "shifted": _lines(CENTRES + 5)})
    for chip in chips:
        assert res[chip]["same"]["match_fraction"] == 1.0
        assert res[chip]["shifted"]["match_fraction"] == 0.0
        assert "minima" not in res[chip]["real"]
    total = res["a"]["real"]["n_minima"] + res["b"]["real"]["n_minima"]
    assert total == CENTRES.size
    whole = spectrum_metrics(lam, flux, None)
    assert whole["minima_per_100A"] == pytest.approx(CENTRES.size / 3.0, rel=1e-3)


def test_noise_threshold_keeps_noise_out_and_lines_in():
    rng = np.random.default_rng(2)
    error = np.full(N_PIX, 0.02)  # S/N 50
    noisy = 1 + rng.normal(0, 0.02, N_PIX)
    assert find_minima(noisy).size > 50  # a fixed 2 % threshold counts noise as lines
    thr = noise_threshold(error)
    assert thr == pytest.approx(0.10)  # 5σ
    assert find_minima(noisy, threshold=thr).size < 5
    assert noise_threshold(np.full(N_PIX, 0.001)) == pytest.approx(0.02)  # the floor
    lines = _lines(depth=0.4) + rng.normal(0, 0.02, N_PIX)
    found = find_minima(lines, threshold=thr)
    assert match_fraction(CENTRES, found) > 0.9


def _bench_and_single_visit(tmp_path):
    """bench/realism.py as a module, and a folder holding one synthetic DR17 single-visit
    apStar with Doppler header labels 4650 K / 2.3 / −0.2."""
    import importlib.util

    from fits_fixtures import write_apstar_dr17

    from core.paths import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("bench_realism",
                                                  PROJECT_ROOT / "bench" / "realism.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = tmp_path / "real"
    data.mkdir()
    write_apstar_dr17(data / "apStar-dr17-2M00000000+0000000.fits", n_visits=1,
                      rv_labels=(4650.0, 2.3, -0.2))
    return bench, data


def test_bench_measures_a_single_visit_dr17_file(tmp_path):
    """bench/realism.py end to end on a synthetic DR17 single-visit apStar: header labels from
    RV_TEFF…, every chip measured, JSON written."""
    import json

    bench, data = _bench_and_single_visit(tmp_path)
    out = tmp_path / "realism.json"
    assert bench.main(["--data", str(data), "--out", str(out)]) == 0
    res = json.loads(out.read_text())["files"][0]
    assert res["row_kind"] == "single visit"
    assert res["header_labels"]["TEFF"]["value"] == 4650.0
    assert res["header_labels"]["TEFF"]["source"].startswith("HDU0 RV_TEFF")
    assert res["header_labels"]["FE_H"]["source"].startswith("HDU0 RV_FEH")
    assert set(res["per_chip"]) == {"blue", "green", "red"}
    for row in res["per_chip"].values():
        assert row["real"]["minima_per_100A"] > 0
        assert 0 <= row["fit_model"]["match_fraction"] <= 1
    assert res["fit"]["chi2_nu"] > 0


def test_bench_synth_mode_adds_a_synth_section_and_keeps_the_emulator_one(tmp_path):
    """bench/realism.py --synth: the synthesiser at the header labels and its direct fit, per
    physics, written beside (not over) the emulator section of an earlier run."""
    import json

    bench, data = _bench_and_single_visit(tmp_path)
    out = tmp_path / "realism.json"
    out.write_text(json.dumps({"what": "emulator", "files": [{"file": "x"}]}))
    assert bench.main(["--data", str(data), "--out", str(out), "--synth",
                       "--physics", "apogee"]) == 0
    res = json.loads(out.read_text())
    assert res["what"] == "emulator" and res["files"] == [{"file": "x"}]  # kept
    synth = res["synth"]
    assert synth["physics"] == ["apogee"]
    f = synth["files"][0]
    assert f["header_labels"]["TEFF"] == 4650.0
    p = f["physics"]["apogee"]
    assert p["chi2_nu_header"] > 0 and p["fit"]["chi2_nu"] > 0
    assert p["fit"]["chi2_nu"] <= p["chi2_nu_header"] * 1.001  # the fit starts there
    assert set(p["fit"]["labels"]) == {"TEFF", "LOGG", "FE_H", "VMICRO", "ALPHA_M"}
    assert set(f["per_chip"]) == {"blue", "green", "red"}
    for row in f["per_chip"].values():
        assert set(row) == {"real", "apogee_header", "apogee_fit"}
        assert 0 <= row["apogee_header"]["match_fraction"] <= 1
        assert row["apogee_header"]["depth_ratio"] is not None
    assert set(p["targets_met"]) >= {"fit_teff_within_300K", "fit_fe_h_within_0.3dex",
                                     "fit_chi2_nu_at_most_10"}
