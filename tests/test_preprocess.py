"""Continuum normalisation, bad-pixel cleaning, the continuum mask and catalog selections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import BadDataError
from core.grid import APOGEE_7214, APOGEE_7514, APSTAR, PIXMASK_VALUE
from core.preprocess import (
    LARGE_ERROR,
    apply_error_floor,
    clean,
    derive_continuum_mask,
    get_selection,
    load_continuum_mask,
    normalize,
    normalize_arrays,
)
from core.preprocess.continuum import chip_slices, chip_slices_from_wavelength, fit_chip_clipped
from core.preprocess.selection import SELECTIONS, format_report
from core.spectrum import Spectrum

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_APSTAR = SHARED / "data/apogee_real/apStar-dr17-2M17335483-2753043.fits"
REF_MASK = SHARED / "data/reference/dr17_contmask.npy"
BADPIX = PIXMASK_VALUE["BADPIX"]


def _shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (a fresh clone has no ../shared)")
    return path


def true_continuum(grid, rng) -> np.ndarray:
    """A different quadratic (in chip coordinates) on every chip, levels 500-1500."""
    cont = np.ones(grid.n_pix)
    for sl in chip_slices(grid):
        x = np.linspace(-1, 1, sl.stop - sl.start)
        a0, a1, a2 = rng.uniform(500, 1500), rng.uniform(-100, 100), rng.uniform(-60, 60)
        cont[sl] = a0 + a1 * x + a2 * (2 * x * x - 1)
    return cont


def absorption(n_pix: int, n_lines: int, rng, avoid: np.ndarray | None = None) -> np.ndarray:
    """Gaussian lines 2-60 % deep, 1-2.5 px wide, none within 6 σ of an ``avoid`` pixel."""
    x = np.arange(n_pix)
    keep_out = np.zeros(n_pix, dtype=bool) if avoid is None else avoid
    out = np.ones(n_pix)
    placed = 0
    while placed < n_lines:
        c, w, d = rng.uniform(0, n_pix), rng.uniform(1.0, 2.5), rng.uniform(0.02, 0.6)
        lo, hi = int(max(c - 6 * w, 0)), int(min(c + 6 * w + 1, n_pix))
        if keep_out[lo:hi].any():
            continue
        out[lo:hi] *= 1 - d * np.exp(-0.5 * ((x[lo:hi] - c) / w) ** 2)
        placed += 1
    return out


def synthetic(grid, n_lines, snr, seed, avoid=None, n=1):
    rng = np.random.default_rng(seed)
    flux, error, cont = [], [], []
    for _ in range(n):
        c = true_continuum(grid, rng)
        model = c * absorption(grid.n_pix, n_lines, rng, avoid)
        e = c / snr
        flux.append(model + rng.normal(size=grid.n_pix) * e)
        error.append(e)
        cont.append(c)
    return np.array(flux), np.array(error), np.zeros((n, grid.n_pix), np.uint16), np.array(cont)


# --- continuum normalisation -------------------------------------------------------------------


def test_mask_mode_recovers_known_continuum_to_one_percent():
    mask = load_continuum_mask(APOGEE_7514)
    flux, error, pixmask, cont = synthetic(APOGEE_7514, 1200, snr=150, seed=1, avoid=mask, n=3)
    res = normalize_arrays(flux, error, pixmask, APOGEE_7514, method="mask")
    assert res.fit_ok.all()
    rel = res.continuum / cont - 1
    assert np.abs(rel).max() < 0.01
    # on the continuum pixels the normalised flux is 1 within the noise
    assert abs(np.median(res.flux[:, mask]) - 1) < 0.002
    # the lines survive: normalised depth ≈ true depth away from the continuum pixels
    true_norm = flux / cont
    assert np.abs(res.flux - true_norm).max() < 0.02


def test_single_spectrum_equals_batch_row():
    flux, error, pixmask, _ = synthetic(APOGEE_7514, 500, snr=100, seed=2, n=3)
    batch = normalize_arrays(flux, error, pixmask, APOGEE_7514)
    one = normalize_arrays(flux[1], error[1], pixmask[1], APOGEE_7514)
    assert one.flux.shape == (APOGEE_7514.n_pix,)
    np.testing.assert_allclose(one.flux, batch.flux[1], rtol=1e-6)
    np.testing.assert_allclose(one.error, batch.error[1], rtol=1e-6)


def test_error_divided_by_the_same_continuum():
    flux, error, pixmask, _ = synthetic(APOGEE_7514, 300, snr=80, seed=3)
    res = normalize_arrays(flux, error, pixmask, APOGEE_7514)
    np.testing.assert_allclose(res.error[0] * res.continuum[0], error[0], rtol=1e-4)


@pytest.mark.parametrize("n_lines,snr", [(300, 50), (1500, 150)])
def test_clip_mode_without_mask_finds_the_continuum(n_lines, snr):
    flux, error, pixmask, cont = synthetic(APOGEE_7514, n_lines, snr=snr, seed=4, n=2)
    res = normalize_arrays(flux, error, pixmask, APOGEE_7514, method="clip")
    rel = res.continuum / cont - 1
    assert abs(np.median(rel)) < 0.01
    assert np.percentile(np.abs(rel), 95) < 0.015


def test_clip_mode_is_not_fooled_by_emission_spikes():
    flux, error, pixmask, cont = synthetic(APOGEE_7514, 300, snr=100, seed=5)
    spiky = flux.copy()
    rng = np.random.default_rng(0)
    spikes = rng.choice(APOGEE_7514.n_pix, 60, replace=False)
    spiky[0, spikes] *= 3.0  # unflagged sky-line residuals
    res = normalize_arrays(spiky, error, pixmask, APOGEE_7514, method="clip")
    assert np.abs(res.continuum / cont - 1).max() < 0.01


def test_masked_and_nan_pixels_do_not_bias_the_fit():
    mask = load_continuum_mask(APOGEE_7514)
    flux, error, pixmask, cont = synthetic(APOGEE_7514, 600, snr=150, seed=6, avoid=mask)
    clean_res = normalize_arrays(flux, error, pixmask, APOGEE_7514)
    rng = np.random.default_rng(1)
    cont_pix = np.nonzero(mask)[0]
    flagged = rng.choice(cont_pix, 60, replace=False)
    nan_pix = rng.choice(np.setdiff1d(cont_pix, flagged), 40, replace=False)
    bad_err = rng.choice(np.setdiff1d(cont_pix, np.r_[flagged, nan_pix]), 20, replace=False)
    f, e, m = flux.copy(), error.copy(), pixmask.copy()
    f[0, flagged] *= 10.0  # would drag the fit up if used
    m[0, flagged] = BADPIX
    f[0, nan_pix] = np.nan
    e[0, bad_err] = 0.0
    res = normalize_arrays(f, e, m, APOGEE_7514)
    assert np.abs(res.continuum / clean_res.continuum - 1).max() < 0.003
    assert np.abs(res.continuum / cont - 1).max() < 0.01
    for pix in (flagged, nan_pix, bad_err):
        assert np.all(res.flux[0, pix] == 1.0)
        assert np.all(res.error[0, pix] == LARGE_ERROR)
    assert np.isfinite(res.flux).all() and np.isfinite(res.error).all()


def test_bad_bits_choose_which_flags_are_ignored():
    mask = load_continuum_mask(APOGEE_7514)
    flux, error, pixmask, _ = synthetic(APOGEE_7514, 100, snr=100, seed=7)
    skyline = np.nonzero(mask)[0][:5]
    pixmask[0, skyline] = PIXMASK_VALUE["SIG_SKYLINE"]
    astronn = normalize_arrays(flux, error, pixmask, APOGEE_7514, bad_bits="astronn")
    pipeline = normalize_arrays(flux, error, pixmask, APOGEE_7514, bad_bits="pipeline")
    assert np.all(astronn.flux[0, skyline] == 1.0)  # SIG_SKYLINE is in astroNN's set
    assert np.all(pipeline.error[0, skyline] < 1.0)  # but not in the pipeline's


def test_chip_without_pixels_is_filled_and_reported():
    flux, error, pixmask, _ = synthetic(APOGEE_7514, 100, snr=100, seed=8)
    green = chip_slices(APOGEE_7514)[1]
    flux[0, green] = np.nan
    res = normalize_arrays(flux, error, pixmask, APOGEE_7514)
    assert res.fit_ok.tolist() == [[True, False, True]]
    assert np.all(res.flux[0, green] == 1.0) and np.all(res.error[0, green] == LARGE_ERROR)
    assert np.isnan(res.continuum[0, green]).all()


def test_negative_flux_clipped_like_astronn():
    flux, error, pixmask, _ = synthetic(APOGEE_7514, 100, snr=100, seed=9)
    flux[0, 100] = -50.0
    assert normalize_arrays(flux, error, pixmask, APOGEE_7514).flux[0, 100] == 0.0
    kept = normalize_arrays(flux, error, pixmask, APOGEE_7514, clip_negative=False)
    assert kept.flux[0, 100] < 0


def test_non_positive_flux_is_refused_not_filled():
    """A continuum through negative flux is negative, and dividing by it used to fill every
    pixel with 1 ± LARGE_ERROR: a spectrum of no data that fits anything."""
    flux, error, pixmask, _ = synthetic(APOGEE_7514, 100, snr=100, seed=12, n=2)
    flux[1] = -flux[1]
    res = normalize_arrays(flux, error, pixmask, APOGEE_7514)
    assert res.problem[0] == "" and "median flux" in res.problem[1] and "≤ 0" in res.problem[1]
    assert res.fit_ok[0].all() and not res.fit_ok[1].any()
    s = Spectrum(APOGEE_7514.wavelength, flux[1], error[1], pixmask[1],
                 meta={"APOGEE_ID": "2M-NEGATIVE"}, grid="apogee7514")
    with pytest.raises(BadDataError, match="2M-NEGATIVE: the median flux"):
        normalize(s)
    # one chip with a negative continuum: that chip's fit is not ok (and it is filled)
    one = flux[0].copy()
    blue = chip_slices(APOGEE_7514)[0]
    one[blue] = -one[blue]
    res = normalize_arrays(one, error[0], pixmask[0], APOGEE_7514)
    assert res.fit_ok.tolist() == [False, True, True] and res.problem == ""
    assert np.all(res.error[blue] == LARGE_ERROR)


@pytest.mark.parametrize("grid", [APOGEE_7214, APSTAR])
def test_other_grids_use_the_same_physical_chips(grid):
    flux7514, error7514, _, cont7514 = synthetic(APOGEE_7514, 400, snr=150, seed=10,
                                                 avoid=load_continuum_mask(APOGEE_7514))
    full_f = APOGEE_7514.to_apstar(flux7514, fill=0.0)
    full_e = APOGEE_7514.to_apstar(error7514, fill=0.0)
    f, e = grid.from_apstar(full_f), grid.from_apstar(full_e)
    res = normalize_arrays(f, e, np.zeros(f.shape, np.uint16), grid)
    assert len(chip_slices(grid)) == 3
    on_7514 = np.isin(grid.index, APOGEE_7514.index)
    truth = grid.from_apstar(APOGEE_7514.to_apstar(cont7514, fill=np.nan))
    # 7214 chips are shorter, so its fit differs a little from the 7514 one: still < 1.5 %
    assert np.nanmax(np.abs(res.continuum[:, on_7514] / truth[:, on_7514] - 1)) < 0.015
    assert np.all(res.flux[:, ~on_7514] == 1.0)  # apStar gaps (zero flux, zero error)


def test_normalize_spectrum_and_arbitrary_wavelengths():
    flux, error, pixmask, _ = synthetic(APOGEE_7514, 300, snr=100, seed=11)
    s = Spectrum(APOGEE_7514.wavelength, flux[0], error[0], pixmask[0],
                 meta={"APOGEE_ID": "x"}, grid="apogee7514")
    n = normalize(s)
    assert n.normalized and not s.normalized
    assert n.meta["CONTINUUM_METHOD"] == "mask"
    assert normalize(n).flux is not n.flux  # already normalised: a copy, untouched
    np.testing.assert_array_equal(normalize(n).flux, n.flux)
    # an observed-frame spectrum: chips found from wavelength breaks, clip mode required
    wl = np.concatenate([np.linspace(16950, 16470, 500), np.linspace(16430, 15860, 500),
                         np.linspace(15810, 15140, 500)])
    assert [(c.start, c.stop) for c in chip_slices_from_wavelength(wl)] == [(0, 500), (500, 1000),
                                                                          (1000, 1500)]
    raw = Spectrum(wl, np.full(1500, 300.0), np.full(1500, 3.0), np.zeros(1500), meta={})
    with pytest.raises(BadDataError, match="method='clip'"):
        normalize(raw)
    out = normalize(raw, method="clip")
    np.testing.assert_allclose(out.flux, 1.0, rtol=1e-5)


def test_bad_arguments_are_refused():
    f = np.ones((2, APOGEE_7514.n_pix))
    with pytest.raises(BadDataError, match="7214 pixels"):
        normalize_arrays(f, f, None, APOGEE_7214)
    with pytest.raises(ValueError, match="method"):
        normalize_arrays(f, f, None, APOGEE_7514, method="spline")
    with pytest.raises(BadDataError, match="mask has shape"):
        normalize_arrays(f, f, None, APOGEE_7514, mask=np.ones(10, bool))


# --- masks ---------------------------------------------------------------------------------------


def test_clean_fills_bad_pixels_and_gives_zero_weight():
    flux = np.array([[1.0, np.nan, 2.0, 3.0, 4.0]])
    error = np.array([[0.1, 0.1, np.inf, 0.1, 0.2]])
    pixmask = np.array([[0, 0, 0, PIXMASK_VALUE["SIG_SKYLINE"], PIXMASK_VALUE["PERSIST_HIGH"]]])
    c = clean(flux, error, pixmask)
    assert c.bad.tolist() == [[False, True, True, True, False]]
    assert c.flux.tolist() == [[1.0, 1.0, 1.0, 1.0, 4.0]]
    assert c.error[0, 1:4].tolist() == [LARGE_ERROR] * 3
    np.testing.assert_allclose(c.weight, [[100.0, 0, 0, 0, 25.0]])
    custom = clean(flux, error, pixmask, bad_bits=["PERSIST_HIGH"], fill=0.0, error_fill=9.0)
    assert custom.bad.tolist() == [[False, True, True, False, True]]
    assert custom.flux[0, 4] == 0.0 and custom.error[0, 4] == 9.0


def test_error_floor():
    e = np.array([0.001, 0.005, 0.02, np.nan], dtype=np.float32)
    out = apply_error_floor(e)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:3], [0.005, 0.005, 0.02])
    assert np.isnan(out[3])
    with pytest.raises(ValueError):
        apply_error_floor(e, floor=-1)


# --- the continuum mask ----------------------------------------------------------------------


def test_shipped_mask_covers_every_chip_on_every_grid():
    m = load_continuum_mask(APOGEE_7514)
    assert m.dtype == bool and m.shape == (7514,)
    per_chip = [int(m[sl].sum()) for sl in chip_slices(APOGEE_7514)]
    assert all(n > 100 for n in per_chip) and 400 < m.sum() < 700
    m7214 = load_continuum_mask(APOGEE_7214)
    assert 0 < m7214.sum() <= m.sum()
    mfull = load_continuum_mask(APSTAR)
    assert mfull.sum() == m.sum() and not mfull[~np.isin(np.arange(8575), APOGEE_7514.index)].any()


def test_derive_mask_picks_line_free_pixels():
    rng = np.random.default_rng(12)
    lines = absorption(APOGEE_7514.n_pix, 1500, rng)  # shared by all stars
    flux, error, pixmask = [], [], []
    for _ in range(4):
        c = true_continuum(APOGEE_7514, rng)
        depth = lines ** rng.uniform(0.7, 1.3)  # stars differ in line strength
        flux.append(c * depth + rng.normal(size=c.size) * c / 150)
        error.append(c / 150)
        pixmask.append(np.zeros(c.size, np.uint16))
    mask = derive_continuum_mask(np.array(flux), np.array(error), np.array(pixmask), n_target=400)
    assert 300 < mask.sum() <= 420
    assert np.median(lines[mask]) > 0.995
    assert np.mean(lines[mask] > 0.98) > 0.9
    for sl in chip_slices(APOGEE_7514):
        assert mask[sl].sum() > 50


def test_shipped_mask_agrees_with_astronn_on_the_real_star():
    from core.io import read_apstar

    ref = np.load(_shared(REF_MASK))
    spec = read_apstar(_shared(REAL_APSTAR))
    ours = load_continuum_mask(APOGEE_7514)
    overlap, chance = (ours & ref).sum(), ours.sum() * ref.sum() / ours.size
    assert overlap > 2.5 * chance
    mine = normalize_arrays(spec.flux, spec.error, spec.pixmask, APOGEE_7514)
    theirs = normalize_arrays(spec.flux, spec.error, spec.pixmask, APOGEE_7514, mask=ref)
    for sl in chip_slices(APOGEE_7514):
        assert abs(np.median(mine.continuum[sl] / theirs.continuum[sl]) - 1) < 0.04
    good = spec.good()
    assert abs(np.median(mine.flux[good]) - np.median(theirs.flux[good])) < 0.02


# --- selections ------------------------------------------------------------------------------


def allstar_frame() -> pd.DataFrame:
    """Ten rows with known outcomes for the vae and spectrafm selections."""
    return pd.DataFrame({
        "APOGEE_ID": ["A", "B", "C", "D", "E", "F", "G", "A", "A", "H"],
        "SNR": [250, 150, 300, 400, 260, 220, 500, 320, 210, np.nan],
        "TEFF": [4500, 4500, 3900, 5000, 5000, 4800, 4700, 4600, 4600, 4500],
        "LOGG": [2.0, 2.0, 2.0, 3.6, 2.5, 1.0, 2.2, 2.1, 2.1, 2.0],
        "FE_H": [0.0, 0.0, 0.0, 0.0, -5.0, -0.5, 0.1, 0.0, 0.0, 0.0],
        "ASPCAPFLAG": [0, 0, 0, 0, 0, 1 << 23, 0, 0, 0, 0],
        "ASPCAPFLAGS": ["", "", "", "", "", "STAR_BAD,TEFF_WARN", "", "", "", ""],
        "STARFLAG": [0, 0, 0, 0, 0, 0, 4, 0, 0, 0],
        "VSCATTER": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 1.5, 0.1],
    })


def test_vae_selection_counts_each_cut():
    df = allstar_frame()
    keep, counts = get_selection("vae").report(df)
    assert keep.tolist() == [True, False, False, False, False, False, True, True, True, False]
    by_cut = {c.cut: (c.removed, c.failing, c.remaining) for c in counts}
    assert by_cut["no STAR_BAD"] == (1, 1, 9)
    assert by_cut["SNR > 200"] == (2, 2, 7)  # B (150) and H (NaN)
    assert by_cut["TEFF > 4000"] == (1, 1, 6)
    assert by_cut["LOGG < 3.5"] == (1, 1, 5)
    assert by_cut["FE_H > -4"] == (1, 1, 4)
    assert [c.remaining for c in counts][-1] == keep.sum() == 4
    text = format_report(counts, len(df))
    assert "SNR > 200" in text and "-2" in text


def test_spectrafm_selection_deduplicates_keeping_highest_snr():
    df = allstar_frame()
    keep, counts = get_selection("spectrafm").report(df)
    # A appears at rows 0 (SNR 250), 7 (320) and 8 (210, VSCATTER 1.5 → cut): row 7 stays
    assert np.nonzero(keep)[0].tolist() == [2, 3, 4, 7]
    last = counts[-1]
    assert last.cut.startswith("one row per APOGEE_ID") and last.removed == 1
    assert {c.cut: c.removed for c in counts}["STARFLAG == 0"] == 1  # G


def test_overrides_and_none_selection():
    df = allstar_frame()
    assert get_selection("none").apply(df).all()
    loose = get_selection("vae", snr_min=100)
    assert loose.snr_min == 100 and SELECTIONS["vae"].snr_min == 200
    assert loose.apply(df).sum() == 5  # B comes back
    assert get_selection("vae", teff_min=None).apply(df).sum() == 5  # C comes back
    with pytest.raises(TypeError, match="snr_minimum"):
        get_selection("vae", snr_minimum=3)
    with pytest.raises(KeyError, match="unknown selection"):
        get_selection("payne")


def test_missing_columns_are_named():
    df = allstar_frame().drop(columns=["VSCATTER"])
    with pytest.raises(BadDataError, match="VSCATTER"):
        get_selection("spectrafm").apply(df)
    # core.io fills columns a file lacks and lists them: those count as missing
    df = allstar_frame()
    df["ASPCAPFLAGS"] = ""
    df.attrs["missing_columns"] = ["ASPCAPFLAGS"]
    keep = get_selection("vae").apply(df)  # falls back on the ASPCAPFLAG bit
    assert not keep[5]
    df = df.drop(columns=["ASPCAPFLAG"])
    with pytest.raises(BadDataError, match="ASPCAPFLAGS or ASPCAPFLAG"):
        get_selection("vae").apply(df)


def test_dr16_spec_names_are_accepted():
    df = allstar_frame().rename(columns={"TEFF": "TEFF_SPEC", "LOGG": "LOGG_SPEC"})
    assert get_selection("vae").apply(df).sum() == 4


def test_clipping_never_loses_a_fit_it_had():
    # A step: every pixel is "far" from any quadratic in units of its tiny error, so the
    # clipping would reject all of them; the last usable fit must be kept instead.
    flux = np.array([[1.0, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5]])
    cont, ok = fit_chip_clipped(flux, np.full_like(flux, 1e6), 2, 2.0, 3.0, 10)
    assert ok.all() and np.isfinite(cont).all()
