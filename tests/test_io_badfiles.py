"""Bad input: every reader returns a valid result or raises BadFileError naming the file."""

import numpy as np
import pytest
from fits_fixtures import (
    drop_hdus,
    truncate_copy,
    write_allstar,
    write_apstar,
    write_apvisit,
    write_aspcapstar,
    write_generic,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.errors import BadFileError
from core.grid import APSTAR_NPIX, PIXMASK_VALUE
from core.io import read_allstar, read_apstar, read_apvisit, read_aspcapstar, read_generic
from core.spectrum import Spectrum

BADPIX = PIXMASK_VALUE["BADPIX"]
SPECTRUM_READERS = {
    "apstar": (lambda p, **kw: write_apstar(p, n_visits=1, **kw), read_apstar),
    "aspcapstar": (write_aspcapstar, read_aspcapstar),
    "apvisit": (write_apvisit, read_apvisit),
}
APVISIT_SHAPE = (3, 4096)


def _raises_naming(path, reader, problem):
    with pytest.raises(BadFileError, match=problem) as err:
        reader(path)
    assert str(path) in str(err.value)
    assert err.value.path == str(path)


def _shape(kind):
    return APVISIT_SHAPE if kind == "apvisit" else (APSTAR_NPIX,)


# --- the fixed list of broken files ---------------------------------------------------------


@pytest.mark.parametrize(
    "reader", [read_apstar, read_aspcapstar, read_apvisit, read_allstar, read_generic]
)
def test_missing_empty_and_foreign_files(tmp_path, reader):
    _raises_naming(tmp_path / "nothere.fits", reader, "file not found")
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    _raises_naming(empty, reader, "file is empty")
    _raises_naming(tmp_path, reader, "not a regular file")
    text = tmp_path / "notes.fits"
    text.write_text("this is not FITS\n" * 300)
    _raises_naming(text, reader, "not a FITS file|neither an HDF5 nor an NPZ")


@pytest.mark.parametrize("kind", sorted(SPECTRUM_READERS))
@pytest.mark.parametrize("keep", ["10 bytes", "2000 bytes", "half", "all but the last block"])
def test_truncated_files(tmp_path, kind, keep):
    write, reader = SPECTRUM_READERS[kind]
    full = write(tmp_path / "full.fits")
    size = full.stat().st_size
    # the last data unit's padding is < 2880 bytes: cutting 2881 always loses data
    n_bytes = {
        "10 bytes": 10,
        "2000 bytes": 2000,
        "half": size // 2,
        "all but the last block": size - 2881,
    }[keep]
    cut = truncate_copy(full, tmp_path / "cut.fits", n_bytes)
    _raises_naming(cut, reader, "truncated|cannot be read as FITS|missing HDU|not a FITS file")


@pytest.mark.parametrize(
    ("kind", "keep", "missing"),
    [("apstar", 3, 3), ("aspcapstar", 3, 3), ("apvisit", 4, 4), ("apstar", 1, 1)],
)
def test_missing_hdu(tmp_path, kind, keep, missing):
    write, reader = SPECTRUM_READERS[kind]
    path = drop_hdus(write(tmp_path / "full.fits"), tmp_path / "short.fits", keep=keep)
    _raises_naming(path, reader, f"missing HDU{missing}")


@pytest.mark.parametrize("kind", sorted(SPECTRUM_READERS))
@pytest.mark.parametrize(
    ("fill", "problem"),
    [
        (np.nan, "NaN/inf at every pixel"),
        (np.inf, "NaN/inf at every pixel"),
        (0.0, "zero at every pixel"),
    ],
)
def test_flux_without_any_usable_value(tmp_path, kind, fill, problem):
    write, reader = SPECTRUM_READERS[kind]
    path = write(tmp_path / "x.fits", flux=np.full(_shape(kind), fill))
    _raises_naming(path, reader, problem)


@pytest.mark.parametrize("kind", sorted(SPECTRUM_READERS))
def test_error_without_any_finite_value(tmp_path, kind):
    write, reader = SPECTRUM_READERS[kind]
    path = write(tmp_path / "x.fits", error=np.full(_shape(kind), np.nan))
    _raises_naming(path, reader, "error is NaN/inf at every pixel|NaN/inf at every pixel")


@pytest.mark.parametrize("kind", sorted(SPECTRUM_READERS))
def test_wrong_length(tmp_path, kind):
    write, reader = SPECTRUM_READERS[kind]
    shape = (3, 1000) if kind == "apvisit" else (6000,)
    path = write(tmp_path / "x.fits", flux=np.ones(shape))
    _raises_naming(path, reader, "has shape|6000 pixels|no APOGEE grid")


def test_catalog_truncated_and_generic_truncated(tmp_path):
    catalog = write_allstar(tmp_path / "allStar.fits", [f"2M{i}" for i in range(50)], dr=14)
    cut = truncate_copy(catalog, tmp_path / "cut.fits", catalog.stat().st_size - 3000)
    _raises_naming(cut, read_allstar, "truncated")
    for suffix in (".h5", ".npz"):
        full = write_generic(tmp_path / f"g{suffix}", n=2)
        cut = truncate_copy(full, tmp_path / f"cut{suffix}", full.stat().st_size // 2)
        _raises_naming(cut, read_generic, "cannot be read as")


# --- fuzzing ---------------------------------------------------------------------------------


def _check_outcome(reader, path):
    """The reader must give a well-formed result or a BadFileError naming the file."""
    try:
        result = reader(path)
    except BadFileError as exc:
        assert str(path) in str(exc)
        return None
    if isinstance(result, Spectrum):
        assert (
            result.flux.shape
            == result.error.shape
            == result.pixmask.shape
            == result.wavelength.shape
        )
        assert result.flux.dtype == np.float32 and result.pixmask.dtype == np.uint16
        unusable = ~np.isfinite(result.flux) | ~np.isfinite(result.error)
        assert np.all(result.pixmask[unusable] & BADPIX)
        assert np.isfinite(result.flux).any()
    return result


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Small valid files whose bytes the fuzzers mutate."""
    base = tmp_path_factory.mktemp("seeds")
    return {
        "apstar": (
            write_apstar(base / "s.fits", n_visits=1, dtype=np.float32).read_bytes(),
            read_apstar,
        ),
        "aspcapstar": (write_aspcapstar(base / "a.fits").read_bytes(), read_aspcapstar),
        "apvisit": (write_apvisit(base / "v.fits").read_bytes(), read_apvisit),
        "allstar": (
            write_allstar(base / "c.fits", ["2M1", "2M2", "2M3"], dr=14).read_bytes(),
            read_allstar,
        ),
        "generic": (write_generic(base / "g.npz", n=2).read_bytes(), read_generic),
    }


FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(
    kind=st.sampled_from(["apstar", "aspcapstar", "apvisit", "allstar", "generic"]),
    cut=st.floats(0.0, 1.0),
)
def test_fuzz_truncation(tmp_path, seeds, kind, cut):
    data, reader = seeds[kind]
    path = tmp_path / f"fuzz-{kind}.bin"
    path.write_bytes(data[: int(len(data) * cut)])
    _check_outcome(reader, path)


@FUZZ
@given(
    kind=st.sampled_from(["apstar", "aspcapstar", "apvisit", "allstar", "generic"]),
    edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), min_size=1, max_size=12),
    in_header=st.booleans(),
)
def test_fuzz_corrupted_bytes(tmp_path, seeds, kind, edits, in_header):
    data, reader = seeds[kind]
    buf = bytearray(data)
    span = min(len(buf), 2880 * 2) if in_header else len(buf)  # headers are where parsing breaks
    for where, value in edits:
        buf[min(int(where * span), len(buf) - 1)] = value
    path = tmp_path / f"fuzz-{kind}.bin"
    path.write_bytes(bytes(buf))
    _check_outcome(reader, path)


_SPECIAL = st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 1e30, 3.4e38])
_VALUES = st.one_of(st.floats(width=32, allow_nan=True, allow_infinity=True), _SPECIAL)


@FUZZ
@given(
    kind=st.sampled_from(sorted(SPECTRUM_READERS)),
    flux=st.data(),
    error_fill=_SPECIAL,
)
def test_fuzz_array_contents(tmp_path, kind, flux, error_fill):
    write, reader = SPECTRUM_READERS[kind]
    shape = _shape(kind)
    f = flux.draw(arrays(np.float32, shape, elements=_VALUES, fill=_SPECIAL))
    e = flux.draw(arrays(np.float32, shape, elements=_VALUES, fill=st.just(np.float32(error_fill))))
    path = write(tmp_path / "fuzz.fits", flux=f, error=e)
    _check_outcome(reader, path)


@FUZZ
@given(
    vrad=st.floats(allow_nan=True, allow_infinity=True), bc=st.one_of(st.none(), st.floats(-40, 40))
)
def test_fuzz_apvisit_velocity_keywords(tmp_path, vrad, bc):
    path = write_apvisit(tmp_path / "v.fits", vrad=0.0, bc=None, with_table=False)
    from astropy.io import fits

    with fits.open(path, mode="update") as hdul:
        hdul[0].header["VRAD"] = vrad if np.isfinite(vrad) else str(vrad)
        if bc is not None:
            hdul[0].header["BC"] = bc
    result = _check_outcome(read_apvisit, path)
    if result is not None:
        assert np.isfinite(result.meta["RV_USED"]) and abs(result.meta["RV_USED"]) < 5000


def test_damaged_gzip_and_unreadable_files_are_named(tmp_path, monkeypatch):
    import builtins
    import gzip

    good = write_aspcapstar(tmp_path / "aspcapStar-dr17-2M1.fits")
    packed = gzip.compress(good.read_bytes())
    cut = tmp_path / "cut.fits.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    _raises_naming(cut, read_aspcapstar, "damaged gzip data")
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if str(file) == str(good):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    for reader in (read_aspcapstar, read_generic):
        _raises_naming(good, reader, "cannot be read: permission denied")
