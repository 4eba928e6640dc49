import shutil

import numpy as np
import pytest
from astropy.io import fits
from fits_fixtures import (
    write_allstar,
    write_apstar,
    write_apvisit,
    write_aspcapstar,
    write_astronn_vac,
    write_contspec_trio,
    write_generic,
)
from reference import shared_path

from core.errors import BadFileError
from core.io import detect_kind, read_catalog, read_spectrum

WRITERS = {
    "apstar": lambda p: write_apstar(p, n_visits=2),
    "apstar_1d": lambda p: write_apstar(p, n_visits=1),
    "aspcapstar": write_aspcapstar,
    "apvisit": write_apvisit,
    "allstar": lambda p: write_allstar(p, ["2M1", "2M2"], dr=17),
    "allstar_dr14": lambda p: write_allstar(p, ["2M1", "2M2"], dr=14),
    "astronn_vac": lambda p: write_astronn_vac(p, ["2M1", "2M2"]),
}
NAMES = {
    "apstar": "apStar-dr17-2M00000000+0000000.fits",
    "apstar_1d": "asStar-dr17-2M00000000+0000000.fits",
    "aspcapstar": "aspcapStar-dr17-2M00000000+0000000.fits",
    "apvisit": "apVisit-dr17-5095-55844-128.fits",
    "allstar": "allStar-dr17-synspec_rev1.fits",
    "allstar_dr14": "allStar-l31c.2.fits",
    "astronn_vac": "apogee_astroNN-DR17.fits",
}


@pytest.mark.parametrize("which", sorted(WRITERS))
@pytest.mark.parametrize("named", [True, False])
def test_kind_from_name_and_from_layout(tmp_path, which, named):
    path = WRITERS[which](tmp_path / (NAMES[which] if named else "renamed.fits"))
    assert detect_kind(path) == which.split("_dr")[0].replace("_1d", "")


def test_contspec_and_generic_kinds(tmp_path):
    flux_path, _, _ = write_contspec_trio(tmp_path, n=2)
    assert detect_kind(flux_path) == "contspec"
    plain = shutil.copy(flux_path, tmp_path / "plain.fits")
    assert detect_kind(plain) == "contspec"
    assert detect_kind(write_generic(tmp_path / "g.h5")) == "generic"
    assert detect_kind(write_generic(tmp_path / "g.npz")) == "generic"


def test_real_files_are_recognised():
    assert (
        detect_kind(shared_path("data", "apogee_real", "apStar-dr17-2M17335483-2753043.fits"))
        == "apstar"
    )
    assert (
        detect_kind(shared_path("data", "apogee_real", "apVisit-r13-5095-55844-128.fits"))
        == "apvisit"
    )


def test_read_spectrum_dispatches_with_options(tmp_path):
    visit = write_apvisit(tmp_path / "renamed.fits")
    assert read_spectrum(visit, frame="observed").grid is None
    assert read_spectrum(visit, grid="apstar8575").n_pix == 8575
    star = write_apstar(tmp_path / "apStar-x.fits", n_visits=3)
    assert read_spectrum(star, visit=1).meta["ROW"] == 3
    aspcap = write_aspcapstar(tmp_path / "aspcapStar-x.fits")
    assert read_spectrum(aspcap).normalized
    assert read_spectrum(aspcap, kind="aspcapstar").model is not None


def test_wrong_reader_for_the_kind(tmp_path):
    catalog = write_allstar(tmp_path / "allStar-x.fits", ["2M1"], dr=17)
    with pytest.raises(BadFileError, match="not a single spectrum .use read_catalog."):
        read_spectrum(catalog)
    star = write_apstar(tmp_path / "apStar-x.fits")
    with pytest.raises(BadFileError, match="is a apstar file, not an allStar catalog"):
        read_catalog(star)
    assert list(read_catalog(catalog)["APOGEE_ID"]) == ["2M1"]


def test_unrecognised_fits_layout(tmp_path):
    path = tmp_path / "thing.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones(10))]).writeto(path)
    with pytest.raises(BadFileError, match="unrecognised FITS layout") as err:
        detect_kind(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("which", sorted(WRITERS))
def test_gzip_compressed_files_are_recognised_and_read(tmp_path, which):
    import gzip

    path = WRITERS[which](tmp_path / NAMES[which])
    packed = tmp_path / (path.name + ".gz")
    packed.write_bytes(gzip.compress(path.read_bytes()))
    kind = which.split("_dr")[0].replace("_1d", "")
    assert detect_kind(packed) == kind
    if kind in ("apstar", "aspcapstar", "apvisit"):
        assert np.array_equal(read_spectrum(packed).flux, read_spectrum(path).flux, equal_nan=True)
    else:
        assert read_catalog(packed).equals(read_catalog(path))


def test_gzip_contspec_is_read_into_memory(tmp_path):
    import gzip

    from core.io import read_contspec

    flux_path, err_path, mask_path = write_contspec_trio(tmp_path, n=3)
    packed = tmp_path / "flux.fits.gz"
    packed.write_bytes(gzip.compress(flux_path.read_bytes()))
    assert detect_kind(packed) == "contspec"
    a = read_contspec(packed, err_path, mask_path)[0]
    b = read_contspec(flux_path, err_path, mask_path)[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))
