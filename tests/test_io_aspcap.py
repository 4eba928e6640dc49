import numpy as np
import pytest
from astropy.io import fits
from fits_fixtures import rest_template, write_aspcapstar

from core.errors import BadFileError
from core.grid import APOGEE_7214, APOGEE_7514, APSTAR_NPIX, PIXMASK_VALUE
from core.io import read_aspcapstar

BADPIX = PIXMASK_VALUE["BADPIX"]


@pytest.fixture
def aspcap(tmp_path):
    return write_aspcapstar(tmp_path / "aspcapStar-dr17-2M00000000+0000000.fits", seed=2)


def test_normalised_flux_error_and_model(aspcap):
    spec = read_aspcapstar(aspcap)
    assert spec.normalized and spec.grid == "apogee7514" and spec.n_pix == 7514
    with fits.open(aspcap) as hdul:
        raw = [APOGEE_7514.from_apstar(np.array(hdul[i].data, dtype=np.float64)) for i in (1, 2, 3)]
    np.testing.assert_allclose(spec.flux, raw[0], rtol=1e-6)
    np.testing.assert_allclose(spec.error, raw[1], rtol=1e-6)
    np.testing.assert_allclose(spec.model, raw[2], rtol=1e-6)
    assert spec.model.dtype == np.float32 and spec.model.dtype.isnative
    np.testing.assert_allclose(spec.model, rest_template(spec.wavelength), atol=1e-6)
    assert abs(np.median(spec.flux) - 1.0) < 0.1


def test_meta_from_results_table(aspcap):
    meta = read_aspcapstar(aspcap).meta
    assert meta["APOGEE_ID"] == "2M00000000+0000000"
    assert meta["TELESCOPE"] == "apo25m" and meta["FIELD"] == "TESTFIELD"
    assert meta["SNR"] == pytest.approx(150.0) and meta["TEFF"] == pytest.approx(4800.0)
    assert np.isnan(meta["ALPHA_M"])  # -9999 sentinel
    assert meta["READER"] == "aspcapstar" and meta["SOURCE_GRID"] == "apstar8575"


def test_zero_and_nonfinite_pixels_are_badpix(tmp_path):
    flux = rest_template(np.linspace(15100, 17000, APSTAR_NPIX))
    error = np.full(APSTAR_NPIX, 0.01)
    idx = APOGEE_7514.index
    flux[idx[10:15]] = 0.0
    flux[idx[20]] = np.nan
    error[idx[30]] = 0.0
    error[idx[40]] = np.inf
    path = write_aspcapstar(tmp_path / "a.fits", flux=flux, error=error)
    spec = read_aspcapstar(path)
    flagged = np.flatnonzero(spec.pixmask & BADPIX)
    np.testing.assert_array_equal(flagged, [10, 11, 12, 13, 14, 20, 30, 40])


def test_full_grid_keeps_gap_zeros_flagged(aspcap):
    spec = read_aspcapstar(aspcap, grid="apstar8575")
    gaps = np.ones(APSTAR_NPIX, bool)
    gaps[APOGEE_7514.index] = False
    assert np.all(spec.flux[gaps] == 0) and np.all(spec.pixmask[gaps] & BADPIX)


def test_id_from_filename_without_table_or_header(tmp_path):
    path = write_aspcapstar(
        tmp_path / "aspcapStar-dr17-2M12345678+1234567.fits", apogee_id="", with_table=False
    )
    assert read_aspcapstar(path).apogee_id == "2M12345678+1234567"


def test_gap_removed_7514_file_placed_on_other_grids(tmp_path):
    """Older aspcapStar products store the gap-removed pixels only."""
    base = rest_template(APOGEE_7514.wavelength)
    path = write_aspcapstar(
        tmp_path / "a.fits", flux=base, error=np.full(7514, 0.01), model=base, with_wcs=False
    )
    spec = read_aspcapstar(path)
    assert spec.meta["SOURCE_GRID"] == "apogee7514"
    np.testing.assert_allclose(spec.flux, base, rtol=1e-6)
    other = read_aspcapstar(path, grid="apogee7214")
    inside = np.isin(APOGEE_7214.index, APOGEE_7514.index)
    assert np.all(other.pixmask[~inside] & BADPIX) and not np.any(other.pixmask[inside] & BADPIX)


def test_wrong_length_and_wrong_wcs(tmp_path):
    path = write_aspcapstar(
        tmp_path / "a.fits",
        flux=np.ones(5000),
        error=np.ones(5000),
        model=np.ones(5000),
        with_wcs=False,
    )
    with pytest.raises(BadFileError, match="5000 pixels, which is no APOGEE grid"):
        read_aspcapstar(path)
    path = write_aspcapstar(tmp_path / "b.fits")
    with fits.open(path, mode="update") as hdul:
        hdul[1].header["CDELT1"] = 1e-5
    with pytest.raises(BadFileError, match="not the apStar grid"):
        read_aspcapstar(path)


def test_model_length_mismatch(tmp_path):
    path = write_aspcapstar(tmp_path / "a.fits", model=np.ones(100))
    with pytest.raises(BadFileError, match=r"HDU3 \(best-fit model\) has shape \(100,\)"):
        read_aspcapstar(path)
