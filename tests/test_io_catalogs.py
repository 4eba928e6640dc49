import numpy as np
import pytest
from astropy.io import fits
from fits_fixtures import DR14_ELEMENTS, DR17_ELEMENTS, write_allstar, write_astronn_vac

from core.errors import BadFileError
from core.io import read_allstar, read_astronn_vac, read_catalog
from core.io.allstar import BASE_COLUMNS

IDS = [f"2M0000000{i}+0000000" for i in range(6)]


def _table(path, hdu=1):
    with fits.open(path) as hdul:
        return {name: np.array(hdul[hdu].data[name]) for name in hdul[hdu].columns.names}


def _assert_native(frame):
    for name, dtype in frame.dtypes.items():
        if dtype.kind in "fiu":
            assert dtype.isnative, f"{name} is {dtype}"


@pytest.mark.parametrize("dr", [14, 16, 17])
def test_every_release_gives_the_allstar_columns(tmp_path, dr):
    path = write_allstar(tmp_path / f"allStar-dr{dr}.fits", IDS, dr=dr)
    frame = read_allstar(path)
    assert list(frame.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert frame.attrs["missing_columns"] == [] and frame.attrs["release"] == dr
    assert len(frame) == len(IDS) and list(frame["APOGEE_ID"]) == IDS
    assert frame["TELESCOPE"].iloc[0] == "apo25m"  # stripped of FITS padding
    assert (
        frame["ASPCAPFLAGS"].iloc[1] == "STAR_BAD,TEFF_WARN" and frame["ASPCAPFLAGS"].iloc[0] == ""
    )
    assert frame["ASPCAPFLAG"].iloc[1] == 1 << 23
    assert np.isnan(frame["TEFF_ERR"].iloc[0])  # the -9999 sentinel
    assert frame["TEFF_ERR"].iloc[1:].notna().all()
    for element in ("C", "MG", "TIII", "NI"):
        assert f"{element}_FE" in frame and f"{element}_FE_ERR" in frame
    assert np.isnan(frame["MG_FE"].iloc[0])
    _assert_native(frame)


def test_dr17_values_are_the_named_columns(tmp_path):
    path = write_allstar(tmp_path / "allStar-dr17-synspec_rev1.fits", IDS, dr=17)
    frame, raw = read_allstar(path), _table(path)
    for name in ("TEFF", "LOGG", "M_H", "FE_H", "VMICRO", "SNR", "CA_FE", "CA_FE_ERR"):
        np.testing.assert_allclose(frame[name], raw[name], rtol=1e-6)
    # the named <X>_FE columns win over the X_H array that DR17 files also carry
    x_fe = [c for c in frame.columns if c.endswith("_FE")]
    assert x_fe == [f"{e}_FE" for e in DR17_ELEMENTS]
    assert not (frame[x_fe] == 99.0).any().any()


def test_dr16_spec_names_become_teff_logg(tmp_path):
    path = write_allstar(tmp_path / "allStar-r12-l33.fits", IDS, dr=16)
    frame, raw = read_allstar(path), _table(path)
    assert "TEFF" not in raw and "TEFF_SPEC" in raw
    np.testing.assert_allclose(frame["TEFF"], raw["TEFF_SPEC"], rtol=1e-6)
    np.testing.assert_allclose(frame["LOGG"], raw["LOGG_SPEC"], rtol=1e-6)


def test_dr14_values_are_derived_from_arrays(tmp_path):
    path = write_allstar(tmp_path / "allStar-l31c.2.fits", IDS, dr=14)
    frame, raw = read_allstar(path), _table(path)
    np.testing.assert_allclose(frame["TEFF"], raw["PARAM"][:, 0], rtol=1e-6)
    np.testing.assert_allclose(frame["LOGG"], raw["PARAM"][:, 1], rtol=1e-6)
    np.testing.assert_allclose(frame["M_H"], raw["PARAM"][:, 3], rtol=1e-6)
    np.testing.assert_allclose(frame["LOGG_ERR"], np.sqrt(raw["PARAM_COV"][:, 1, 1]), rtol=1e-5)
    assert np.isnan(frame["TEFF_ERR"].iloc[0])
    fe = DR14_ELEMENTS.index("Fe")
    assert fe == 17
    np.testing.assert_allclose(frame["FE_H"], raw["X_H"][:, 17], rtol=1e-6)
    np.testing.assert_allclose(frame["FE_H_ERR"], raw["X_H_ERR"][:, 17], rtol=1e-6)
    for k, element in enumerate(DR14_ELEMENTS):
        if element == "Fe":
            assert "FE_FE" not in frame
            continue
        name = f"{element.upper()}_FE"
        expected = raw["X_H"][:, k] - raw["X_H"][:, 17]
        expected[raw["X_H"][:, k] <= -9999] = np.nan
        np.testing.assert_allclose(frame[name], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(frame[f"{name}_ERR"], raw["X_H_ERR"][:, k], rtol=1e-6)
    assert "TIII_FE" in frame and np.isnan(frame["MG_FE"].iloc[0])


def test_dr14_without_symbol_table_uses_default_order(tmp_path):
    path = write_allstar(tmp_path / "allStar-l31c.2.fits", IDS, dr=14)
    with fits.open(path) as hdul:
        fits.HDUList([hdul[0].copy(), hdul[1].copy()]).writeto(path, overwrite=True)
    frame, raw = read_allstar(path), _table(path)
    np.testing.assert_allclose(frame["FE_H"], raw["X_H"][:, 17], rtol=1e-6)
    np.testing.assert_allclose(frame["ND_FE"], raw["X_H"][:, 25] - raw["X_H"][:, 17], rtol=1e-5)


def test_column_selection(tmp_path):
    path = write_allstar(tmp_path / "allStar-dr17.fits", IDS, dr=17)
    frame = read_allstar(path, columns=["APOGEE_ID", "TEFF", "RA", "LOCATION_ID"])
    assert list(frame.columns) == ["APOGEE_ID", "TEFF", "RA", "LOCATION_ID"]
    assert frame["LOCATION_ID"].dtype.kind == "i"
    with pytest.raises(BadFileError, match="no column 'NOPE'"):
        read_allstar(path, columns=["NOPE"])


def test_missing_base_columns_are_filled_and_listed(tmp_path):
    path = tmp_path / "allStar-min.fits"
    cols = [
        fits.Column(name="APOGEE_ID", format="18A", array=IDS),
        fits.Column(name="TEFF", format="E", array=np.arange(6.0)),
    ]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    frame = read_allstar(path)
    assert "LOGG" in frame.attrs["missing_columns"] and frame["LOGG"].isna().all()
    assert (frame["TELESCOPE"] == "").all()
    np.testing.assert_array_equal(frame["TEFF"], np.arange(6.0))


def test_table_without_apogee_id_is_not_an_allstar(tmp_path):
    path = tmp_path / "allStar-x.fits"
    cols = [fits.Column(name="TEFF", format="E", array=np.arange(3.0))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    with pytest.raises(BadFileError, match="no APOGEE_ID column"):
        read_allstar(path)
    with pytest.raises(BadFileError, match="no binary table"):
        fits.PrimaryHDU(np.ones(3)).writeto(tmp_path / "img.fits")
        read_allstar(tmp_path / "img.fits")


def test_astronn_vac_keeps_published_names(tmp_path):
    path = write_astronn_vac(tmp_path / "apogee_astroNN-DR17.fits", IDS)
    frame, raw = read_astronn_vac(path), _table(path)
    for name in (
        "APOGEE_ID",
        "TELESCOPE",
        "FIELD",
        "TEFF",
        "TEFF_ERR",
        "LOGG",
        "FE_H",
        "FE_H_ERR",
        "MG_H",
        "dist",
        "age",
    ):
        assert name in frame
    np.testing.assert_allclose(frame["FE_H"], raw["FE_H"], rtol=1e-6)
    assert np.isnan(frame["NA_H"].iloc[0]) and frame["NA_H"].iloc[1:].notna().all()
    assert frame.attrs["skipped_columns"] == ["astroNN"]
    assert frame["source_id"].dtype == np.int64
    assert frame["APOGEE_ID"].iloc[2] == IDS[2]
    _assert_native(frame)
    subset = read_catalog(path, columns=["APOGEE_ID", "TEFF"])
    assert list(subset.columns) == ["APOGEE_ID", "TEFF"]
    with pytest.raises(BadFileError, match="no column"):
        read_astronn_vac(path, columns=["ZZ"])
