"""Open FITS files defensively and pull native-endian arrays and header values out of them.

Every failure — a missing or empty file, bytes that are not FITS, a truncated data unit,
an HDU that is absent or has the wrong shape, a spectrum with no usable value — becomes a
:class:`~core.errors.BadFileError` that names the file and the problem.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from ..errors import BadFileError
from ..labels import MISSING_BELOW

FITS_BLOCK = 2880
_FITS_MAGIC = b"SIMPLE  ="
_GZIP_MAGIC = b"\x1f\x8b"

#: Header values at or below this are APOGEE's "no value" sentinels (-9999, -9999.99): the
#: one limit of :mod:`core.labels`, so files, catalogs and fits agree on what is missing.
SENTINEL_LIMIT = MISSING_BELOW


def check_readable_file(path: str | os.PathLike) -> Path:
    """The path as a Path, or BadFileError when it is missing, a folder, empty or unreadable."""
    p = Path(path)
    try:
        if not p.exists():
            raise BadFileError(p, "file not found")
        if not p.is_file():
            raise BadFileError(p, "is not a regular file")
        if p.stat().st_size == 0:
            raise BadFileError(p, "file is empty (0 bytes)")
    except OSError as exc:  # e.g. a folder on the way that may not be searched
        raise unreadable(p, exc) from None
    return p


def unreadable(path, exc: OSError) -> BadFileError:
    """The BadFileError for an OSError raised while opening or reading ``path``."""
    if isinstance(exc, PermissionError):
        return BadFileError(path, "cannot be read: permission denied")
    return BadFileError(path, f"cannot be read ({exc.strerror or exc})")


def open_binary(path: str | os.PathLike):
    """``open(path, "rb")`` with OSErrors (permissions …) turned into BadFileError."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise unreadable(path, exc) from None


def is_gzipped(path: str | os.PathLike) -> bool:
    with open_binary(path) as fh:
        return fh.read(2) == _GZIP_MAGIC


def read_head(path: str | os.PathLike, n: int = 8) -> bytes:
    """The first ``n`` bytes of a file, looking inside gzip compression; BadFileError when
    it cannot be opened."""
    with open_binary(path) as fh:
        head = fh.read(n)
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as gz:
                return gz.read(n)
        except (OSError, EOFError, zlib.error):
            return head  # damaged gzip data: judged (and reported) by whoever reads it
    return head


def is_fits_file(path: str | os.PathLike) -> bool:
    """True when the file (or the gzip-compressed data in it) starts with a FITS primary
    header card."""
    try:
        return read_head(path, len(_FITS_MAGIC)) == _FITS_MAGIC
    except BadFileError:
        return False


def _gunzip(p: Path) -> bytes:
    try:
        with gzip.open(p, "rb") as gz:
            return gz.read()
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, PermissionError):
            raise unreadable(p, exc) from None
        raise BadFileError(p, f"damaged gzip data ({type(exc).__name__}: {exc})") from None


@contextmanager
def open_fits(path: str | os.PathLike, memmap: bool = True) -> Iterator[fits.HDUList]:
    """Open a FITS file (plain or gzip-compressed) read-only with every header parsed, or
    raise BadFileError.

    Data units are checked against the file length so a truncated file fails here,
    not later inside numpy.  Copy data out before the context ends: with ``memmap``
    the arrays are views of the mapped file.  A ``.fits.gz`` is decompressed into memory.
    """
    p = check_readable_file(path)
    head = read_head(p, len(_FITS_MAGIC))
    if head != _FITS_MAGIC:
        raise BadFileError(p, "not a FITS file (no 'SIMPLE  =' card at the start)")
    if is_gzipped(p):
        raw = _gunzip(p)
        size = len(raw)

        def source():
            return io.BytesIO(raw)

        def peek(offset: int, n: int) -> bytes:
            return raw[offset:offset + n]

        memmap = False
    else:
        size = p.stat().st_size

        def source():
            return open_binary(p)

        def peek(offset: int, n: int) -> bytes:
            with open_binary(p) as fh:
                fh.seek(offset)
                return fh.read(n)

    if size < FITS_BLOCK:
        raise BadFileError(
            p, f"truncated FITS file: {size} bytes, less than one {FITS_BLOCK}-byte header block"
        )
    # astropy leaves its own file handle open when parsing fails; owning the handle avoids that.
    with source() as fh:
        try:
            with warnings.catch_warnings():
                # Truncation and non-standard cards are checked (or tolerated) explicitly below.
                warnings.simplefilter("ignore", AstropyWarning)
                hdul = fits.open(fh, memmap=memmap, lazy_load_hdus=False, mode="readonly")
        except Exception as exc:  # astropy raises many types for corrupt bytes
            raise BadFileError(p, f"cannot be read as FITS ({type(exc).__name__}: {exc})") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)
                _parse_headers(p, hdul)
                _check_data_lengths(p, hdul, size, peek)
                try:
                    yield hdul
                except BadFileError:
                    raise
                except Exception as exc:  # damaged content that slipped past the checks above
                    raise BadFileError(
                        p, f"unreadable FITS content ({type(exc).__name__}: {exc})"
                    ) from exc
        finally:
            hdul.close()


def _parse_headers(path: Path, hdul: fits.HDUList) -> None:
    """Parse every header card (and table column definition) now, so damage surfaces here."""
    for i, hdu in enumerate(hdul):
        card = None
        try:
            for card in hdu.header.cards:
                card.value  # noqa: B018 - astropy parses a card's value lazily on access
            if isinstance(hdu, fits.BinTableHDU):
                hdu.columns  # noqa: B018
        except Exception as exc:
            where = f"card {card.keyword!r}" if card is not None else "header"
            raise BadFileError(
                path, f"HDU{i} {where} cannot be parsed ({type(exc).__name__}: {exc})"
            ) from None


def _data_bytes(header: fits.Header) -> int:
    """Bytes of a data unit according to its header (FITS standard §4.4.1)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    dims = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
    bitpix = abs(int(header.get("BITPIX", 8)))
    if header.get("XTENSION") is None and header.get("GROUPS"):
        dims = dims[1:]  # random-groups: NAXIS1 is 0 by definition
    pcount = int(header.get("PCOUNT", 0))
    gcount = int(header.get("GCOUNT", 1))
    return bitpix // 8 * gcount * (pcount + math.prod(dims))


def _check_data_lengths(path: Path, hdul: fits.HDUList, size: int, peek) -> None:
    try:
        spans = [
            (i, hdu.fileinfo()["datLoc"], _data_bytes(hdu.header)) for i, hdu in enumerate(hdul)
        ]
    except Exception as exc:
        raise BadFileError(path, f"malformed FITS header ({type(exc).__name__}: {exc})") from None
    if not spans:
        raise BadFileError(path, "holds no HDU")
    for i, start, nbytes in spans:
        if start + nbytes > size:
            raise BadFileError(
                path,
                f"truncated FITS file: HDU{i} needs {start + nbytes} bytes but the file has {size}",
            )
    # astropy silently drops an extension whose header is cut off: look past the last HDU.
    _, start, nbytes = spans[-1]
    end = start + -(-nbytes // FITS_BLOCK) * FITS_BLOCK
    if size > end and peek(end, 8) == b"XTENSION":
        raise BadFileError(
            path, f"truncated FITS file: HDU{len(spans)} is cut off inside its header"
        )


# --- arrays ----------------------------------------------------------------------------------


def native(arr: np.ndarray, dtype=None) -> np.ndarray:
    """A native-endian copy of ``arr`` (optionally cast to ``dtype``), detached from any memmap."""
    arr = np.asarray(arr)
    target = np.dtype(dtype) if dtype is not None else arr.dtype.newbyteorder("=")
    return np.array(arr, dtype=target, copy=True)


def get_hdu(hdul: fits.HDUList, index: int, path, what: str):
    """HDU ``index`` of an open file, or BadFileError saying which HDU (and its role) is missing."""
    if index >= len(hdul):
        raise BadFileError(path, f"missing HDU{index} ({what}): the file has only {len(hdul)} HDUs")
    return hdul[index]


def read_image(
    hdul: fits.HDUList, index: int, path, what: str, ndim: tuple[int, ...] = (1, 2)
) -> np.ndarray:
    """The data array of image HDU ``index`` (still a view; copy with :func:`native`)."""
    hdu = get_hdu(hdul, index, path, what)
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        raise BadFileError(
            path, f"HDU{index} ({what}) is a {type(hdu).__name__}, expected an image"
        )
    try:
        data = hdu.data
    except Exception as exc:
        raise BadFileError(
            path, f"HDU{index} ({what}) cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    if data is None:
        raise BadFileError(path, f"HDU{index} ({what}) holds no data")
    if data.ndim not in ndim:
        raise BadFileError(
            path,
            f"HDU{index} ({what}) has shape {data.shape}; expected {'/'.join(map(str, ndim))}-D",
        )
    return data


def first_table(hdul: fits.HDUList, path, what: str = "table") -> tuple[int, fits.BinTableHDU]:
    """The first binary-table HDU, or BadFileError."""
    for i, hdu in enumerate(hdul):
        if isinstance(hdu, fits.BinTableHDU):
            return i, hdu
    raise BadFileError(path, f"no binary table HDU found ({what} expected)")


def table_data(hdu: fits.BinTableHDU, index: int, path):
    """The FITS_rec of a table HDU, converting astropy's read errors to BadFileError."""
    try:
        data = hdu.data
    except Exception as exc:
        raise BadFileError(
            path, f"HDU{index} table cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    if data is None:
        raise BadFileError(path, f"HDU{index} table holds no rows")
    return data


def check_values(
    path, flux: np.ndarray, error: np.ndarray | None = None, what: str = "spectrum"
) -> None:
    """BadFileError for a spectrum with no values, no finite flux, zero flux everywhere, or
    no finite error."""
    if np.size(flux) == 0:
        raise BadFileError(path, f"{what}: holds no pixels (shape {np.shape(flux)})")
    finite = np.isfinite(flux)
    if not finite.any():
        raise BadFileError(path, f"{what}: the flux is NaN/inf at every pixel")
    if np.all(flux[finite] == 0):
        raise BadFileError(path, f"{what}: the flux is zero at every pixel")
    if error is not None and not np.isfinite(error).any():
        raise BadFileError(path, f"{what}: the error is NaN/inf at every pixel")


def check_integer(path, arr: np.ndarray, what: str) -> None:
    """BadFileError unless ``arr`` holds integers (PIXMASK bits)."""
    if arr.dtype.kind not in "iu":
        kind = arr.dtype.newbyteorder("=").name
        raise BadFileError(path, f"{what} holds {kind} values; a bitmask must be integers")


def check_shape(path, arr: np.ndarray, expected: tuple[int, ...], what: str) -> None:
    if tuple(arr.shape) != tuple(expected):
        raise BadFileError(path, f"{what} has shape {tuple(arr.shape)}, expected {tuple(expected)}")


# --- header values ---------------------------------------------------------------------------


def header_str(header: fits.Header, *keys: str, default: str | None = None) -> str | None:
    """The first of ``keys`` present with a non-blank value, stripped."""
    for key in keys:
        value = header.get(key)
        if value is None:
            continue
        text = str(value).strip()
        if text:
            return text
    return default


def header_float(header: fits.Header, *keys: str, default: float = float("nan")) -> float:
    """The first of ``keys`` holding a finite number that is not a -9999 sentinel."""
    for key in keys:
        value = header.get(key)
        if value is None or isinstance(value, (bool, str)):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number) and number > SENTINEL_LIMIT:
            return number
    return default


def header_int(header: fits.Header, *keys: str, default: int | None = None) -> int | None:
    for key in keys:
        value = header.get(key)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    return default


def header_key_used(header: fits.Header, *keys: str) -> str | None:
    """Which of ``keys`` :func:`header_float` would take its value from."""
    for key in keys:
        if not math.isnan(header_float(header, key)):
            return key
    return None
