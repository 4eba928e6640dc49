import numpy as np
import pytest

from core.errors import BadDataError
from core.grid import APOGEE_7514
from core.spectrum import Spectrum


def _spec(**kw):
    n = APOGEE_7514.n_pix
    args = dict(wavelength=APOGEE_7514.wavelength, flux=np.ones(n), error=np.full(n, 0.01),
                pixmask=np.zeros(n, int), meta={"APOGEE_ID": "2M1"}, grid="apogee7514")
    args.update(kw)
    return Spectrum(**args)


def test_types_and_quality():
    n = APOGEE_7514.n_pix
    flux = np.ones(n)
    flux[10] = np.nan
    mask = np.zeros(n, np.int64)
    mask[20] = 1 << 12
    mask[30] = (1 << 16) | (1 << 9)  # bits above 15 are not PIXMASK bits
    s = _spec(flux=flux, pixmask=mask)
    assert s.flux.dtype == np.float32 and s.pixmask.dtype == np.uint16
    assert s.bad()[[10, 20]].all() and not s.bad()[30]
    assert s.masked_fraction() == pytest.approx(2 / n)
    assert s.label == "2M1"


def test_shape_errors_name_the_star():
    with pytest.raises(BadDataError, match="2M1: flux"):
        _spec(flux=np.ones(10))
    with pytest.raises(BadDataError, match="grid apogee7214"):
        _spec(grid="apogee7214")


def test_unusable_spectra_are_refused():
    n = APOGEE_7514.n_pix
    with pytest.raises(BadDataError, match="every pixel"):
        _spec(flux=np.full(n, np.nan)).check_usable()
    with pytest.raises(BadDataError, match="zero"):
        _spec(flux=np.zeros(n)).check_usable()
    assert _spec().check_usable().snr() == pytest.approx(100.0)


def test_copy_is_independent():
    s = _spec()
    c = s.copy()
    c.flux[0] = 5
    c.meta["X"] = 1
    assert s.flux[0] == 1 and "X" not in s.meta


def test_copy_with_new_meta():
    s = _spec()
    c = s.copy(meta={"APOGEE_ID": "2M2"}, normalized=True)
    assert c.label == "2M2" and c.normalized and s.label == "2M1"
