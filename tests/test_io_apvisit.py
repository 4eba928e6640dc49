import numpy as np
import pytest
from astropy.io import fits
from fits_fixtures import apvisit_wavelength, rest_template, write_apvisit
from reference import shared_path
from scipy.ndimage import median_filter

from core.errors import BadFileError
from core.grid import APOGEE_7514, APSTAR, KMS_PER_PIXEL, PIXMASK_VALUE, apstar_pixel
from core.io import read_apstar, read_apvisit
from core.io.resample import resample_linear

BADPIX = PIXMASK_VALUE["BADPIX"]
REAL_VISIT = ("data", "apogee_real", "apVisit-r13-5095-55844-128.fits")
REAL_APSTAR = ("data", "apogee_real", "apStar-dr17-2M17335483-2753043.fits")


def _line_signal(spec):
    """Flux relative to a running-median continuum, minus 1 (NaN where unusable)."""
    flux = np.where(spec.good(), spec.flux, np.nan).astype(np.float64)
    out = np.full_like(flux, np.nan)
    for chip in spec.grid_obj.chip_slices():
        x = flux[chip]
        filled = np.where(np.isfinite(x), x, np.nanmedian(x))
        out[chip] = x / median_filter(filled, 151, mode="nearest") - 1.0
    return out


def _best_lag(a, b, max_lag=25):
    """Sub-pixel lag L maximising corr(a[i], b[i - L]) (a is b shifted by +L pixels)."""
    lags = np.arange(-max_lag, max_lag + 1)
    corr = []
    for lag in lags:
        x = a[max(lag, 0) : len(a) + min(lag, 0)]
        y = b[max(-lag, 0) : len(b) + min(-lag, 0)]
        ok = np.isfinite(x) & np.isfinite(y)
        corr.append(np.corrcoef(x[ok], y[ok])[0, 1])
    corr = np.array(corr)
    k = int(np.argmax(corr))
    if 0 < k < len(corr) - 1:  # parabola through the peak and its neighbours
        c0, c1, c2 = corr[k - 1 : k + 2]
        return lags[k] + 0.5 * (c0 - c2) / (c0 - 2 * c1 + c2), corr[k]
    return float(lags[k]), corr[k]


# --- resampling ------------------------------------------------------------------------------


def test_resample_reproduces_linear_function_and_propagates_variance():
    x = np.linspace(-0.3, 20.7, 40)
    flux = 3.0 + 2.0 * x
    error = np.linspace(1.0, 2.0, 40)
    res = resample_linear(x, flux, error, np.zeros(40, int), 25)
    inside = np.arange(25) <= 20
    assert np.array_equal(res.covered, inside)
    np.testing.assert_allclose(res.flux[inside], 3.0 + 2.0 * np.arange(21))
    i = np.searchsorted(x, 7.0) - 1
    w1 = (7.0 - x[i]) / (x[i + 1] - x[i])
    expected = np.sqrt((1 - w1) ** 2 * error[i] ** 2 + w1**2 * error[i + 1] ** 2)
    assert res.error[7] == pytest.approx(expected)
    assert np.all(res.flux[~inside] == 0) and np.all(np.isinf(res.error[~inside]))
    assert np.all(res.pixmask[~inside] == BADPIX) and not np.any(res.pixmask[inside])


def test_resample_mask_or_and_nonfinite_taint():
    x = np.arange(10) + 0.5
    mask = np.zeros(10, int)
    mask[3] = 4096
    flux = np.ones(10)
    flux[7] = np.nan
    res = resample_linear(x, flux, np.full(10, 0.1), mask, 11)
    assert np.flatnonzero(res.pixmask & 4096).tolist() == [3, 4]  # pixels bracketing sample 3
    tainted = np.flatnonzero(res.pixmask[1:10] & BADPIX) + 1
    assert tainted.tolist() == [7, 8] and np.all(np.isinf(res.error[[7, 8]]))


def test_resample_rejects_unsorted_positions():
    with pytest.raises(ValueError, match="strictly increasing"):
        resample_linear(np.array([0.0, 2.0, 1.0]), np.ones(3), np.ones(3), np.zeros(3, int), 3)


# --- synthetic apVisit -----------------------------------------------------------------------


@pytest.mark.parametrize("vrad", [-44.4, 83.0])
def test_rest_frame_lines_land_on_the_template(tmp_path, vrad):
    path = write_apvisit(tmp_path / "apVisit-x.fits", vrad=vrad, snr=200.0)
    rest = read_apvisit(path)
    observed_on_grid = read_apvisit(path, rv=0.0)
    assert rest.meta["RV_USED"] == pytest.approx(vrad) and rest.meta["RV_SOURCE"] == "VRAD"
    template = rest_template(rest.wavelength) - 1.0
    lag_rest, corr = _best_lag(_line_signal(rest), template)
    assert abs(lag_rest) < 0.15 and corr > 0.9
    lag_obs, _ = _best_lag(_line_signal(observed_on_grid), template)
    # an approaching star (negative RV) shows its lines blueward, i.e. at lower pixels
    assert lag_obs == pytest.approx(vrad / KMS_PER_PIXEL, abs=0.2)


def test_chip_storage_order_does_not_matter(tmp_path):
    down = read_apvisit(write_apvisit(tmp_path / "d.fits", descending=True, seed=1))
    up = read_apvisit(write_apvisit(tmp_path / "u.fits", descending=False, seed=1))
    assert down.meta["CHIP_ORDER_IN_FILE"].startswith("red to blue")
    assert up.meta["CHIP_ORDER_IN_FILE"].startswith("blue to red")
    good = down.good() & up.good()
    assert np.corrcoef(down.flux[good], up.flux[good])[0, 1] > 0.95


def test_observed_frame_returns_sorted_raw_pixels(tmp_path):
    path = write_apvisit(tmp_path / "v.fits")
    spec = read_apvisit(path, frame="observed")
    assert spec.grid is None and spec.n_pix == 3 * 4096 and spec.meta["FRAME"] == "observed"
    assert np.all(np.diff(spec.wavelength) > 0)
    with fits.open(path) as hdul:
        raw_wave = np.array(hdul[4].data, dtype=np.float64)
        raw_flux = np.array(hdul[1].data, dtype=np.float64)
    np.testing.assert_array_equal(spec.wavelength, np.sort(raw_wave.ravel()))
    np.testing.assert_allclose(spec.flux[:4096], raw_flux[2, ::-1], rtol=1e-6)  # blue chip first


def test_error_and_mask_propagation(tmp_path):
    wave = apvisit_wavelength()
    error = np.full(wave.shape, 2.0)
    mask = np.zeros(wave.shape, dtype=np.int16)
    mask[1, 2000] = 4096  # one flagged sample in the green chip
    path = write_apvisit(tmp_path / "v.fits", vrad=0.0, error=error, pixmask=mask, n_bad=0)
    spec = read_apvisit(path, grid="apstar8575")
    covered = spec.pixmask & BADPIX == 0
    # each output pixel blends two samples of error 2: sqrt(w0² + w1²)·2 lies in [√2, 2]
    assert np.all(
        (spec.error[covered] >= np.sqrt(2.0) - 1e-4) & (spec.error[covered] <= 2.0 + 1e-4)
    )
    flagged = np.flatnonzero(spec.pixmask & 4096)
    assert 1 <= flagged.size <= 2
    assert abs(flagged[0] - apstar_pixel(wave[1, 2000])) < 1.0


def test_uncovered_pixels_get_badpix_and_infinite_error(tmp_path):
    spec = read_apvisit(write_apvisit(tmp_path / "v.fits", vrad=0.0), grid="apstar8575")
    lowest = apvisit_wavelength().min()
    outside = APSTAR.wavelength < lowest
    assert outside.any()
    assert np.all(spec.pixmask[outside] & BADPIX) and np.all(np.isinf(spec.error[outside]))
    assert np.all(spec.flux[outside] == 0)
    assert spec.meta["COVERED_FRACTION"] < 1.0


def _drop_keys(path, *keys, table=False):
    with fits.open(path) as hdul:
        hdus = [h.copy() for h in (hdul if table else hdul[:5])]
    for key in keys:
        hdus[0].header.remove(key, ignore_missing=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


@pytest.mark.parametrize(
    ("drop", "keep_table", "source", "value"),
    [
        ((), True, "VRAD", -44.4),
        (("VRAD",), True, "table VREL", -44.4),
        (("VRAD",), False, "VHELIO-BC", -44.4),
        (
            ("VRAD", "BC"),
            False,
            "VHELIO (no BC in file; barycentric correction not removed)",
            -33.1,
        ),
    ],
)
def test_radial_velocity_fallbacks(tmp_path, drop, keep_table, source, value):
    path = _drop_keys(
        write_apvisit(tmp_path / "v.fits", vrad=-44.4, bc=11.3), *drop, table=keep_table
    )
    spec = read_apvisit(path)
    assert spec.meta["RV_SOURCE"] == source
    assert spec.meta["RV_USED"] == pytest.approx(value, abs=1e-4)


def test_no_radial_velocity_needs_rv_or_observed_frame(tmp_path):
    path = _drop_keys(write_apvisit(tmp_path / "v.fits"), "VRAD", "VHELIO", "BC", table=False)
    with pytest.raises(BadFileError, match="no radial velocity") as err:
        read_apvisit(path)
    assert str(path) in str(err.value)
    assert read_apvisit(path, rv=-44.4).meta["RV_SOURCE"] == "argument"
    assert read_apvisit(path, frame="observed").grid is None


def test_implausible_velocity_and_bad_wavelengths(tmp_path):
    path = write_apvisit(tmp_path / "v.fits", vrad=6000.0, bc=0.0)
    with pytest.raises(BadFileError, match="not plausible"):
        read_apvisit(path)
    wave = apvisit_wavelength()
    wave[0, 100] = wave[0, 300]
    path = write_apvisit(tmp_path / "w.fits", wavelength=wave)
    with pytest.raises(BadFileError, match="chip 0 is not monotonic"):
        read_apvisit(path)
    with pytest.raises(ValueError, match="frame must be one of"):
        read_apvisit(path, frame="barycentric")


# --- the real DR17 apVisit -------------------------------------------------------------------


def test_real_apvisit_meta_and_shapes():
    path = shared_path(*REAL_VISIT)
    spec = read_apvisit(path)
    assert spec.apogee_id == "2M01183798+8403419"
    assert spec.meta["SNR"] == pytest.approx(44.97, abs=0.01)
    assert spec.meta["TELESCOPE"] == "apo25m"
    assert spec.meta["RV_SOURCE"] == "VRAD" and spec.meta["RV_USED"] == pytest.approx(-44.4206)
    assert spec.meta["CHIP_ORDER_IN_FILE"] == "red to blue, descending"
    assert spec.grid == "apogee7514" and spec.flux.shape == (7514,)
    assert spec.meta["COVERED_FRACTION"] == 1.0 and spec.masked_fraction() < 0.2
    raw = read_apvisit(path, frame="observed")
    assert raw.n_pix == 12288 and np.all(np.diff(raw.wavelength) > 0)
    assert raw.wavelength[0] == pytest.approx(15142.685, abs=1e-3)
    assert raw.wavelength[-1] == pytest.approx(16954.791, abs=1e-3)


def test_real_apvisit_rv_shift_direction():
    """The rest-frame visit lines up with an apStar's features; the unshifted one is off
    by VRAD / 4.14 km/s ≈ -10.7 pixels (the star approaches, lines are blueshifted)."""
    visit_path = shared_path(*REAL_VISIT)
    star = _line_signal(read_apstar(shared_path(*REAL_APSTAR)))
    rest = _line_signal(read_apvisit(visit_path))
    unshifted = _line_signal(read_apvisit(visit_path, rv=0.0))
    lag, corr = _best_lag(rest, star)
    assert abs(lag) < 1.0 and corr > 0.1
    lag_obs, _ = _best_lag(unshifted, star)
    assert lag_obs == pytest.approx(-44.4206 / KMS_PER_PIXEL, abs=1.0)
    lag_self, corr_self = _best_lag(unshifted, rest)
    assert lag_self == pytest.approx(-44.4206 / KMS_PER_PIXEL, abs=0.3) and corr_self > 0.8
    assert APOGEE_7514.n_pix == len(rest)
