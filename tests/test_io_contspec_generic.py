import h5py
import numpy as np
import pytest
from astropy.io import fits
from fits_fixtures import write_contspec_trio, write_generic

from core.errors import BadFileError
from core.grid import APOGEE_7514
from core.io import iter_contspec, read_contspec, read_generic

# --- contspec ---------------------------------------------------------------------------------


@pytest.fixture
def trio(tmp_path):
    return write_contspec_trio(tmp_path / "cs", n=11, seed=3)


def test_trio_is_memory_mapped_with_matching_shapes(trio):
    flux, error, mask = read_contspec(*trio)
    assert isinstance(flux, np.memmap) and isinstance(mask, np.memmap)
    assert flux.shape == error.shape == mask.shape == (11, 7514)
    with fits.open(trio[0]) as hdul:
        np.testing.assert_array_equal(flux, hdul[0].data)
    assert mask[0, 97] == 4096


def test_rows_are_native_copies(trio):
    flux, error, mask = read_contspec(*trio, rows=[7, 2, -1])
    full = read_contspec(*trio)
    assert flux.dtype == np.float32 and flux.dtype.isnative and mask.dtype == np.uint16
    np.testing.assert_array_equal(flux, np.asarray(full[0])[[7, 2, 10]])
    np.testing.assert_array_equal(mask, np.asarray(full[2])[[7, 2, 10]])
    with pytest.raises(BadFileError, match="out of range"):
        read_contspec(*trio, rows=[11])


def test_batches_cover_every_row_once(trio):
    batches = list(iter_contspec(*trio, batch_size=4))
    assert [b.rows.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    full_flux = np.asarray(read_contspec(*trio)[0])
    np.testing.assert_array_equal(np.concatenate([b.flux for b in batches]), full_flux)
    picked = list(iter_contspec(*trio, batch_size=2, rows=[9, 1, 5]))
    assert [b.rows.tolist() for b in picked] == [[9, 1], [5]]
    np.testing.assert_array_equal(picked[0].flux, full_flux[[9, 1]])
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_contspec(*trio, batch_size=0))


def test_trio_shape_disagreement_names_the_file(tmp_path, trio):
    other = write_contspec_trio(tmp_path / "other", n=5)
    with pytest.raises(BadFileError, match="error image has shape") as err:
        read_contspec(trio[0], other[1], trio[2])
    assert str(other[1]) in str(err.value)
    narrow = write_contspec_trio(tmp_path / "narrow", n=3, npix=7000)
    with pytest.raises(BadFileError, match="7000 pixels"):
        read_contspec(*narrow)


def test_scaled_mask_image_is_read_into_memory(tmp_path, trio):
    path = tmp_path / "mask_u16.fits"
    fits.PrimaryHDU(np.full((11, 7514), 40000, dtype=np.uint16)).writeto(path)  # stored with BZERO
    _, _, mask = read_contspec(trio[0], trio[1], path)
    assert not isinstance(mask, np.memmap) and int(mask[0, 0]) == 40000


def test_float_mask_is_rejected(tmp_path, trio):
    path = tmp_path / "mask_f.fits"
    fits.PrimaryHDU(np.zeros((11, 7514), dtype=np.float32)).writeto(path)
    with pytest.raises(BadFileError, match="bitmask must be integers"):
        read_contspec(trio[0], trio[1], path)


# --- generic HDF5 / NPZ ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_generic_round_trip(tmp_path, suffix):
    path = write_generic(tmp_path / f"mine{suffix}", n=4, seed=1)
    data = read_generic(path)
    assert len(data) == 4 and data.grid == "apogee7514"
    np.testing.assert_array_equal(data.wavelength, APOGEE_7514.wavelength)
    assert data.flux.dtype == np.float32 and data.mask.dtype == np.uint16 and data.mask[0, 5] == 1
    assert data.labels.columns[0] == "APOGEE_ID" and set(data.labels.columns) == {
        "APOGEE_ID",
        "TEFF",
        "LOGG",
    }
    assert data.ids[2] == "2M00000002+0000000"
    spec = data.spectrum(2)
    assert spec.apogee_id == "2M00000002+0000000" and spec.grid == "apogee7514"
    assert spec.meta["TEFF"] == pytest.approx(float(data.labels["TEFF"].iloc[2]))


def test_generic_wavelength_given_or_unknown(tmp_path):
    data = read_generic(write_generic(tmp_path / "a.npz", npix=7514, with_wavelength=True))
    assert data.grid == "apogee7514"
    data = read_generic(write_generic(tmp_path / "b.npz", npix=300, with_wavelength=True))
    assert data.grid is None and data.wavelength.shape == (300,)
    with pytest.raises(BadFileError, match="300 pixels match no APOGEE grid"):
        read_generic(write_generic(tmp_path / "c.npz", npix=300))


def test_generic_structured_labels_ivar_and_no_mask(tmp_path):
    labels = np.zeros(2, dtype=[("TEFF", "f8"), ("FE_H", "f4")])
    labels["TEFF"] = [4000, 5000]
    path = tmp_path / "s.npz"
    np.savez(path, flux=np.ones((2, 7214)), ivar=np.full((2, 7214), 4.0), labels=labels)
    data = read_generic(path)
    assert data.grid == "apogee7214" and data.ids is None
    np.testing.assert_allclose(data.error, 0.5)
    assert not data.mask.any() and list(data.labels["TEFF"]) == [4000, 5000]


def test_generic_refuses_pickled_objects(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(
        path,
        flux=np.ones((1, 7514)),
        error=np.ones((1, 7514)),
        ids=np.array([{"x": 1}], dtype=object),
    )
    with pytest.raises(BadFileError, match="Python-object arrays"):
        read_generic(path)


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"error": np.ones((2, 7514))}, "no flux array"),
        ({"flux": np.ones((2, 7514))}, "no error array"),
        ({"flux": np.ones((2, 7514)), "error": np.ones((3, 7514))}, "error has shape"),
        (
            {"flux": np.ones((2, 7514)), "error": np.ones((2, 7514)), "mask": np.ones((2, 7514))},
            "mask must hold integers",
        ),
        ({"flux": np.full((2, 7514), np.nan), "error": np.ones((2, 7514))}, "NaN/inf everywhere"),
        (
            {"flux": np.ones((2, 7514)), "error": np.ones((2, 7514)), "ids": np.array(["a"])},
            "ids has 1 values",
        ),
        (
            {"flux": np.ones((2, 7514)), "error": np.ones((2, 7514)), "labels/TEFF": np.ones(3)},
            "label 'TEFF'",
        ),
    ],
)
def test_generic_bad_contents(tmp_path, arrays, problem):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as h5:
        for key, value in arrays.items():
            h5[key] = value.astype("S") if value.dtype.kind == "U" else value
    with pytest.raises(BadFileError, match=problem) as err:
        read_generic(path)
    assert str(path) in str(err.value)


def test_generic_unknown_format(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"hello world")
    with pytest.raises(BadFileError, match="neither an HDF5 nor an NPZ"):
        read_generic(path)
