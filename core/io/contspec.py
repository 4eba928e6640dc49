"""astroNN "contspec" trio reader: continuum-normalised flux, error and PIXMASK, N × 7514 each.

The DR16 products (``contspec_dr16_final.fits``, ``…_err.fits``, ``…_mask.fits``) hold one
2-D image each, row k of all three being the same star.  They are large (473,307 rows),
so the arrays are memory-mapped and read in row batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from astropy.io import fits

from ..errors import BadFileError
from ..grid import get_grid
from . import fitsutil as fu

_BITPIX_DTYPE = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


class ContspecBatch(NamedTuple):
    """Native-endian rows of the trio: ``rows`` are their row numbers in the files."""

    rows: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray


def _image_hdu(hdul: fits.HDUList, path) -> tuple[int, fits.PrimaryHDU | fits.ImageHDU]:
    for i, hdu in enumerate(hdul):
        if (
            isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU))
            and int(hdu.header.get("NAXIS", 0)) == 2
        ):
            return i, hdu
    raise BadFileError(path, "no 2-D image HDU (rows × pixels) found")


def map_image(path: str | os.PathLike) -> np.ndarray:
    """The file's first 2-D image as a read-only memmap (FITS big-endian dtype).

    Scaled images (BSCALE/BZERO) and gzip-compressed files cannot be mapped raw and are
    read into memory instead.
    """
    with fu.open_fits(path, memmap=False) as hdul:
        index, hdu = _image_hdu(hdul, path)
        header = hdu.header
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        bitpix = int(header.get("BITPIX", 0))
        scaled = float(header.get("BSCALE", 1.0)) != 1.0 or float(header.get("BZERO", 0.0)) != 0.0
        if scaled or bitpix not in _BITPIX_DTYPE or fu.is_gzipped(path):
            data = fu.read_image(hdul, index, path, "image", ndim=(2,))
            return fu.native(data)
        offset = hdu.fileinfo()["datLoc"]
    if shape[0] == 0 or shape[1] == 0:
        raise BadFileError(path, f"image has shape {shape}: no spectra")
    return np.memmap(
        path, dtype=np.dtype(_BITPIX_DTYPE[bitpix]), mode="r", offset=offset, shape=shape
    )


def _open_trio(flux_path, err_path, mask_path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flux, error, mask = (map_image(p) for p in (flux_path, err_path, mask_path))
    try:
        get_grid(flux.shape[1])
    except KeyError:
        raise BadFileError(
            flux_path, f"rows have {flux.shape[1]} pixels, which is no APOGEE grid (7514 expected)"
        ) from None
    for arr, p, what in ((error, err_path, "error"), (mask, mask_path, "mask")):
        if arr.shape != flux.shape:
            raise BadFileError(
                p,
                f"{what} image has shape {arr.shape} "
                f"but the flux image {flux_path} has {flux.shape}",
            )
    fu.check_integer(mask_path, mask, "mask image")
    return flux, error, mask


def _native_rows(flux, error, mask, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        fu.native(flux[rows], np.float32),
        fu.native(error[rows], np.float32),
        (fu.native(mask[rows], np.int64) & 0xFFFF).astype(np.uint16),
    )


def _row_index(rows, n: int, path) -> np.ndarray:
    idx = (
        np.arange(n)[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64).ravel()
    )
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise BadFileError(path, f"row numbers out of range: the files hold {n} rows")
    return np.where(idx < 0, idx + n, idx)


def read_contspec(
    flux_path: str | os.PathLike,
    err_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    rows: slice | np.ndarray | list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux, error, mask) of the trio, checked to have the same N × n_pix shape.

    ``rows=None`` returns read-only memmaps in the files' big-endian dtypes (nothing is
    read until used); with ``rows`` (slice or indices) native float32 / float32 / uint16
    copies of those rows.
    """
    flux, error, mask = _open_trio(flux_path, err_path, mask_path)
    if rows is None:
        return flux, error, mask
    return _native_rows(flux, error, mask, _row_index(rows, flux.shape[0], flux_path))


def iter_contspec(
    flux_path: str | os.PathLike,
    err_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    batch_size: int = 4096,
    rows: slice | np.ndarray | list[int] | None = None,
) -> Iterator[ContspecBatch]:
    """Stream native-endian batches of at most ``batch_size`` rows (all rows, or ``rows``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    flux, error, mask = _open_trio(flux_path, err_path, mask_path)
    n = flux.shape[0]
    idx = np.arange(n) if rows is None else _row_index(rows, n, flux_path)
    for start in range(0, idx.size, batch_size):
        chunk = idx[start : start + batch_size]
        # Contiguous chunks are read as slices: one sequential read instead of fancy indexing.
        is_run = (
            chunk.size and chunk[-1] - chunk[0] == chunk.size - 1 and np.all(np.diff(chunk) == 1)
        )
        take = slice(int(chunk[0]), int(chunk[-1]) + 1) if is_run else chunk
        yield ContspecBatch(chunk, *_native_rows(flux, error, mask, take))
