"""File readers: APOGEE products (and user HDF5/NPZ files) → :class:`~core.spectrum.Spectrum`
or a pandas DataFrame.

``read_spectrum`` and ``read_catalog`` recognise the product from its HDU layout (falling
back on the file name) and hand it to the matching reader.
"""

from __future__ import annotations

import os

import pandas as pd
from astropy.io import fits

from ..errors import BadFileError
from ..spectrum import Spectrum
from . import fitsutil as fu
from .allstar import read_allstar
from .apstar import read_apstar
from .apvisit import read_apvisit
from .aspcap import read_aspcapstar
from .astronn_vac import read_astronn_vac
from .contspec import ContspecBatch, iter_contspec, read_contspec
from .generic import SpectraArrays, read_generic
from .naming import kind_from_name

SPECTRUM_KINDS = ("apstar", "aspcapstar", "apvisit")
CATALOG_KINDS = ("allstar", "astronn_vac")
KINDS = SPECTRUM_KINDS + CATALOG_KINDS + ("contspec", "generic")

_SPECTRUM_READERS = {"apstar": read_apstar, "aspcapstar": read_aspcapstar, "apvisit": read_apvisit}
_CATALOG_READERS = {"allstar": read_allstar, "astronn_vac": read_astronn_vac}
#: What a file that is not one star's spectrum is, and what to do with it instead.
_NOT_A_SPECTRUM = {
    "allstar": ("an allStar catalog", "use read_catalog in Python, or give it to "
                "'stellarscope ingest --allstar'"),
    "astronn_vac": ("an astroNN VAC file", "use read_catalog in Python; it holds labels, "
                    "not spectra"),
    "contspec": ("a contspec image of many spectra",
                 "make a store of it with 'stellarscope ingest --contspec FLUX ERR MASK'"),
    "generic": ("an HDF5/NPZ file of spectra",
                "make a store of it with 'stellarscope ingest --generic FILE'"),
}
_ALLSTAR_MARKERS = {
    "ASPCAPFLAG",
    "ASPCAPFLAGS",
    "STARFLAG",
    "PARAM",
    "X_H",
    "TEFF_SPEC",
    "ASPCAP_ID",
}

__all__ = [
    "CATALOG_KINDS", "KINDS", "SPECTRUM_KINDS", "ContspecBatch", "SpectraArrays",
    "detect_kind", "iter_contspec", "read_allstar", "read_apstar", "read_apvisit",
    "read_aspcapstar", "read_astronn_vac", "read_catalog", "read_contspec", "read_generic",
    "read_spectrum",
]  # fmt: skip


def _image_shape(hdu) -> tuple[int, ...] | None:
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)):
        return None
    header = hdu.header
    naxis = int(header.get("NAXIS", 0))
    return tuple(int(header.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1)) or None


def _kind_from_layout(hdul: fits.HDUList, name_kind: str | None) -> str | None:
    primary = _image_shape(hdul[0])
    if primary is not None and len(primary) == 2 and len(hdul) == 1:
        return "contspec"
    if len(hdul) < 2:
        return None
    hdu1 = hdul[1]
    if isinstance(hdu1, fits.BinTableHDU):
        names = set(hdu1.columns.names)
        if "APOGEE_ID" not in names:
            return None
        if name_kind in CATALOG_KINDS:
            return name_kind
        return "allstar" if names & _ALLSTAR_MARKERS else "astronn_vac"
    shape1 = _image_shape(hdu1)
    if shape1 is None:
        return None
    shape4 = _image_shape(hdul[4]) if len(hdul) > 4 else None
    if (
        len(shape1) == 2
        and shape4 == shape1
        and int(hdul[4].header.get("BITPIX", 0)) < 0
        and shape1[1] < 8575
    ):
        return "apvisit"
    shape3 = _image_shape(hdul[3]) if len(hdul) > 3 else None
    if shape3 == shape1:
        integer_mask = int(hdul[3].header.get("BITPIX", 0)) > 0
        if integer_mask or "NVISITS" in hdul[0].header:
            return "apstar"
        if len(shape1) == 1:
            return "aspcapstar"
    return None


def detect_kind(path: str | os.PathLike) -> str:
    """One of :data:`KINDS`, judged from the HDU layout and headers, else the file name."""
    p = fu.check_readable_file(path)
    head = fu.read_head(p, 8)  # inside gzip too: a .fits.gz is a FITS file
    if head.startswith(b"\x89HDF") or head.startswith(b"PK\x03\x04"):
        return "generic"
    name_kind = kind_from_name(p)
    with fu.open_fits(p) as hdul:
        kind = _kind_from_layout(hdul, name_kind)
    kind = kind or name_kind
    if kind is None:
        raise BadFileError(
            p,
            "unrecognised FITS layout: not an apStar, aspcapStar, apVisit, allStar, "
            "astroNN VAC or contspec file",
        )
    return kind


def read_spectrum(path: str | os.PathLike, kind: str | None = None, **kwargs) -> Spectrum:
    """Read one star's spectrum from an apStar, aspcapStar or apVisit file.

    ``kind`` skips detection; ``kwargs`` go to the reader (``grid=``, ``visit=``, ``frame=``…).
    """
    kind = kind or detect_kind(path)
    if kind not in _SPECTRUM_READERS:
        what, hint = _NOT_A_SPECTRUM[kind]
        raise BadFileError(path, f"is {what}, not a single spectrum ({hint})")
    return _SPECTRUM_READERS[kind](path, **kwargs)


def read_catalog(
    path: str | os.PathLike, columns: list[str] | None = None, kind: str | None = None
) -> pd.DataFrame:
    """Read an allStar catalog or an astroNN VAC into a DataFrame."""
    kind = kind or detect_kind(path)
    if kind not in _CATALOG_READERS:
        raise BadFileError(path, f"is a {kind} file, not an allStar catalog or astroNN VAC")
    return _CATALOG_READERS[kind](path, columns=columns)
