import numpy as np
import pytest
from astropy.io import fits
from fits_fixtures import rest_template, write_apstar, write_apstar_dr17
from reference import shared_path

from core.errors import BadFileError
from core.grid import APOGEE_7214, APOGEE_7514, APSTAR, APSTAR_NPIX, PIXMASK_VALUE, get_grid
from core.io import read_apstar

REAL_APSTAR = ("data", "apogee_real", "apStar-dr17-2M17335483-2753043.fits")


def _raw(path, hdu, row=None):
    with fits.open(path) as hdul:
        data = hdul[hdu].data
        return np.array(data if row is None else data[row], dtype=np.float64)


@pytest.fixture
def apstar3(tmp_path):
    return write_apstar(
        tmp_path / "apStar-dr17-2M00000000+0000000.fits", n_visits=3, snr=120.0, seed=4
    )


def test_default_is_global_weighted_row_on_7514(apstar3):
    spec = read_apstar(apstar3)
    assert spec.grid == "apogee7514" and spec.n_pix == 7514
    assert not spec.normalized
    np.testing.assert_array_equal(spec.wavelength, APOGEE_7514.wavelength)
    np.testing.assert_allclose(spec.flux, APOGEE_7514.from_apstar(_raw(apstar3, 1, 1)), rtol=1e-6)
    np.testing.assert_allclose(spec.error, APOGEE_7514.from_apstar(_raw(apstar3, 2, 1)), rtol=1e-6)
    np.testing.assert_array_equal(spec.pixmask, APOGEE_7514.from_apstar(_raw(apstar3, 3, 1)))
    assert spec.meta["ROW"] == 1 and spec.meta["VISITS_IN_FILE"] == 3


def test_meta_from_primary_header(apstar3):
    meta = read_apstar(apstar3).meta
    assert meta["APOGEE_ID"] == "2M00000000+0000000"
    assert meta["SNR"] == pytest.approx(120.0)
    assert meta["TELESCOPE"] == "apo25m" and meta["FIELD"] == "TESTFIELD"
    assert meta["RA"] == pytest.approx(10.0) and meta["DEC"] == pytest.approx(-5.0)
    assert meta["VHELIO"] == pytest.approx(12.5) and meta["NVISITS"] == 3
    assert meta["SOURCE"] == str(apstar3) and meta["READER"] == "apstar"


@pytest.mark.parametrize("visit", [0, 1, 2])
def test_visit_k_is_row_two_plus_k(apstar3, visit):
    spec = read_apstar(apstar3, visit=visit, grid="apstar8575")
    assert spec.n_pix == APSTAR_NPIX and spec.meta["ROW"] == 2 + visit
    raw = _raw(apstar3, 1, 2 + visit)
    finite = np.isfinite(raw)
    np.testing.assert_allclose(spec.flux[finite], raw[finite], rtol=1e-6)
    with fits.open(apstar3) as hdul:
        assert spec.meta["SNR"] == pytest.approx(hdul[0].header[f"SNRVIS{visit + 1}"])
        assert spec.meta["VHELIO"] == pytest.approx(hdul[0].header[f"VHELIO{visit + 1}"])


def test_telescope_and_field_from_the_dr17_folder_layout(tmp_path):
    folder = tmp_path / "lco25m" / "300+05"
    folder.mkdir(parents=True)
    path = write_apstar(folder / "asStar-dr17-2M00000000+0000000.fits", telescope=None, field="")
    meta = read_apstar(path).meta
    assert meta["TELESCOPE"] == "lco25m" and meta["FIELD"] == "300+05"
    bare = write_apstar(tmp_path / "asStar-x.fits", telescope=None)
    assert read_apstar(bare).meta["TELESCOPE"] == "lco25m"
    unknown = write_apstar(tmp_path / "apStar-x.fits", telescope=None)
    assert read_apstar(unknown).meta["TELESCOPE"] is None


def test_visit_out_of_range_names_the_file(apstar3):
    with pytest.raises(BadFileError, match="holds 3 visits") as err:
        read_apstar(apstar3, visit=3)
    assert str(apstar3) in str(err.value)


def test_one_dimensional_single_visit(tmp_path):
    path = write_apstar(tmp_path / "apStar-1.fits", n_visits=1)
    spec = read_apstar(path)
    assert spec.meta["ROW"] is None and spec.meta["ROW_KIND"] == "single visit"
    np.testing.assert_allclose(spec.flux, APOGEE_7514.from_apstar(_raw(path, 1)), rtol=1e-6)
    assert read_apstar(path, visit=0).n_pix == 7514
    with pytest.raises(BadFileError, match="single visit"):
        read_apstar(path, visit=1)


def test_dr17_two_row_single_visit_reads_row_zero(tmp_path):
    path = write_apstar_dr17(tmp_path / "apStar-dr17-2M00000000+0000000.fits", n_visits=1)
    assert _raw(path, 1).shape == (2, APSTAR_NPIX) and not _raw(path, 1, 1).any()
    spec = read_apstar(path)
    assert spec.meta["ROW"] == 0 and spec.meta["ROW_KIND"] == "single visit"
    assert spec.meta["VISITS_IN_FILE"] == 1 and spec.meta["NVISITS"] == 1
    np.testing.assert_allclose(spec.flux, APOGEE_7514.from_apstar(_raw(path, 1, 0)), rtol=1e-6)
    np.testing.assert_array_equal(spec.pixmask, APOGEE_7514.from_apstar(_raw(path, 3, 0)))
    assert spec.meta["PIXMASK_ROW"] == 0 and spec.masked_fraction() < 0.01
    np.testing.assert_array_equal(read_apstar(path, visit=0).flux, spec.flux)
    with pytest.raises(BadFileError, match="single visit"):
        read_apstar(path, visit=1)


def test_dr17_one_row_single_visit(tmp_path):
    path = write_apstar_dr17(tmp_path / "apStar-1row.fits", n_visits=1, n_rows=1)
    spec = read_apstar(path)
    assert spec.meta["ROW"] == 0 and spec.meta["ROW_KIND"] == "single visit"
    np.testing.assert_allclose(spec.flux, APOGEE_7514.from_apstar(_raw(path, 1, 0)), rtol=1e-6)


def test_dr17_multi_visit_says_which_combination(tmp_path):
    path = write_apstar_dr17(tmp_path / "apStar-3.fits", n_visits=3)
    spec = read_apstar(path)
    assert spec.meta["ROW"] == 1 and spec.meta["ROW_KIND"] == "combined (global weighting)"
    assert "row 1" in spec.meta["ROW_NOTE"] and spec.meta["PIXMASK_ROW"] == 0
    np.testing.assert_allclose(spec.flux, APOGEE_7514.from_apstar(_raw(path, 1, 1)), rtol=1e-6)
    empty1 = write_apstar_dr17(tmp_path / "apStar-e1.fits", n_visits=3, empty_rows=(1,))
    spec = read_apstar(empty1)
    assert spec.meta["ROW"] == 0 and spec.meta["ROW_KIND"] == "combined (pixel weighting)"
    np.testing.assert_allclose(spec.flux, APOGEE_7514.from_apstar(_raw(empty1, 1, 0)), rtol=1e-6)


def test_both_combined_rows_empty_points_to_the_visits(tmp_path):
    path = write_apstar_dr17(tmp_path / "apStar-e01.fits", n_visits=2, empty_rows=(0, 1))
    with pytest.raises(BadFileError, match=r"both combined rows .*\(visit=0\.\.1\)") as err:
        read_apstar(path)
    assert str(path) in str(err.value)
    assert read_apstar(path, visit=1).meta["ROW"] == 3


def test_every_row_empty_is_refused(tmp_path):
    path = write_apstar_dr17(tmp_path / "apStar-z.fits", n_visits=1, empty_rows=(0, 1))
    with pytest.raises(BadFileError, match="zero at every pixel"):
        read_apstar(path)


@pytest.mark.parametrize("grid", [APOGEE_7514, APOGEE_7214, APSTAR])
def test_requested_grid(apstar3, grid):
    spec = read_apstar(apstar3, grid=grid.name)
    assert spec.grid == grid.name and spec.n_pix == grid.n_pix
    full = read_apstar(apstar3, grid="apstar8575")
    np.testing.assert_array_equal(spec.flux, grid.from_apstar(full.flux))


def test_big_endian_file_gives_native_float32(apstar3):
    spec = read_apstar(apstar3)
    for arr in (spec.flux, spec.error, spec.pixmask, spec.wavelength):
        assert arr.dtype.isnative
    assert spec.flux.dtype == np.float32 and spec.pixmask.dtype == np.uint16


def test_gap_nan_gets_badpix_on_full_grid(apstar3):
    spec = read_apstar(apstar3, grid="apstar8575")
    gaps = ~np.isfinite(spec.flux)
    assert gaps.sum() == APSTAR_NPIX - 7514
    assert np.all(spec.pixmask[gaps] & PIXMASK_VALUE["BADPIX"])
    assert np.all(spec.bad()[gaps])


def test_flux_shows_the_template_lines(apstar3):
    spec = read_apstar(apstar3)
    template = rest_template(spec.wavelength)
    good = spec.good()
    assert np.corrcoef(spec.flux[good], template[good])[0, 1] > 0.7


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"crval1": 4.18}, "not the apStar grid"),
        ({"cdelt1": 5e-6}, "not the apStar grid"),
        ({"flux": np.ones(8000), "error": np.ones(8000), "pixmask": np.zeros(8000)}, "8000 pixels"),
    ],
)
def test_wrong_wavelength_grid_is_rejected(tmp_path, kwargs, problem):
    path = write_apstar(tmp_path / "bad.fits", n_visits=1, **kwargs)
    with pytest.raises(BadFileError, match=problem) as err:
        read_apstar(path)
    assert str(path) in str(err.value)


def test_error_shape_mismatch(tmp_path):
    path = write_apstar(tmp_path / "bad.fits", n_visits=3, error=np.ones((4, APSTAR_NPIX)))
    with pytest.raises(BadFileError, match=r"HDU2 \(error\) has shape \(4, 8575\)"):
        read_apstar(path)


def test_float_or_negative_pixmask_is_rejected(tmp_path):
    path = write_apstar(
        tmp_path / "f.fits", n_visits=1, pixmask=np.zeros(APSTAR_NPIX), mask_dtype=np.float32
    )
    with pytest.raises(BadFileError, match=r"HDU3 \(PIXMASK\) holds float32 values"):
        read_apstar(path)
    path = write_apstar(tmp_path / "n.fits", n_visits=1, pixmask=np.full(APSTAR_NPIX, -1))
    with pytest.raises(BadFileError, match="negative"):
        read_apstar(path)


def test_partial_nan_is_flagged_not_fatal(tmp_path):
    flux = np.ones(APSTAR_NPIX)
    flux[APOGEE_7514.index[:100]] = np.nan
    flux[APOGEE_7514.index[100:110]] = np.inf
    path = write_apstar(
        tmp_path / "x.fits",
        n_visits=1,
        flux=flux,
        error=np.full(APSTAR_NPIX, 0.1),
        pixmask=np.zeros(APSTAR_NPIX),
    )
    spec = read_apstar(path)
    assert np.all(spec.pixmask[:110] & PIXMASK_VALUE["BADPIX"])
    assert not np.any(spec.pixmask[110:] & PIXMASK_VALUE["BADPIX"])
    assert spec.masked_fraction() == pytest.approx(110 / 7514)


# --- the real DR17 apStar -----------------------------------------------------------------------


def test_real_apstar_meta_and_shapes():
    path = shared_path(*REAL_APSTAR)
    spec = read_apstar(path)
    assert spec.apogee_id == "2M17335483-2753043"
    assert spec.meta["SNR"] == pytest.approx(154.155, abs=0.01)
    assert spec.meta["NVISITS"] == 3 and spec.meta["VISITS_IN_FILE"] == 3
    assert spec.meta["FIELD"] == "000+02"
    assert spec.meta["RA"] == pytest.approx(263.478474) and spec.meta["DEC"] == pytest.approx(
        -27.884539
    )
    assert spec.meta["VHELIO"] == pytest.approx(15.68, abs=0.01)
    assert spec.flux.shape == spec.error.shape == spec.pixmask.shape == (7514,)
    assert np.all(np.isfinite(spec.flux)) and spec.masked_fraction() < 0.05
    assert 100 < np.median(spec.flux) < 5000  # flux-calibrated units, not normalised
    # the header SNR should match the data it describes
    assert np.median(spec.flux / spec.error) == pytest.approx(154, rel=0.2)


def test_real_apstar_visits_and_full_grid():
    path = shared_path(*REAL_APSTAR)
    snrs = [read_apstar(path, visit=k).meta["SNR"] for k in range(3)]
    assert snrs == pytest.approx([67.20, 90.56, 105.90], abs=0.01)
    full = read_apstar(path, grid="apstar8575")
    assert full.n_pix == APSTAR_NPIX
    assert (~np.isfinite(full.flux)).sum() == 784  # the NaN-filled chip gaps and ends
    visit = read_apstar(path, visit=2)
    combined = read_apstar(path)
    good = visit.good() & combined.good()
    assert np.corrcoef(visit.flux[good], combined.flux[good])[0, 1] > 0.95


def test_grid_wavelengths_match_reference_csv():
    reference = np.loadtxt(shared_path("data", "reference", "apogee_wavelength_7514.csv"))
    assert reference.shape == (7514,)
    np.testing.assert_allclose(get_grid(7514).wavelength, reference, rtol=0, atol=1e-6)
    spec = read_apstar(shared_path(*REAL_APSTAR))
    np.testing.assert_allclose(spec.wavelength, reference, rtol=0, atol=1e-6)


def test_real_dr17_combined_row_takes_pixmask_from_row0():
    from reference import shared_path

    from core.io import read_apstar

    path = shared_path("data", "apogee_real", "apStar-dr17-2M17335483-2753043.fits")
    spec = read_apstar(path)
    assert spec.meta["ROW"] == 1 and spec.meta["PIXMASK_ROW"] == 0
    assert (spec.pixmask != 0).sum() > 100  # sky lines and bad pixels are flagged
