"""The spectra store: HDF5 spectra parts + a Parquet catalog + a JSON manifest.

Layout of a store directory::

    manifest.json        format, kind ("mock survey" | "ingested" | "generic"), grid,
                         dtype, parts, n_stars, sources, provenance, column notes, history
    catalog.parquet      one row per star, allStar column names; row i ↔ spectrum i
    spectra-0000.h5      datasets flux, error (N×P float32|float16), pixmask (N×P uint16),
    spectra-0001.h5      wavelength (P float64); chunked by rows
    ...

Appending writes a new part and then a new catalog and manifest, each through a temporary
file and a rename, so existing parts are never modified: a crash leaves the previous
store readable.  The manifest is written last and is the commit point.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..errors import BadDataError, StoreError, UnknownStarError
from ..grid import Grid, get_grid
from ..spectrum import Spectrum
from .atomic import atomic_path, write_json_atomic
from .manifest import CATALOG, MANIFEST, new_manifest, now_iso, read_manifest

ROW_CHUNK = 16
_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class Batch:
    """Rows of a store: spectra arrays (float32, uint16) and their global row numbers."""

    rows: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    pixmask: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def _check_arrays(flux, error, pixmask, n_pix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flux = np.asarray(flux, dtype=np.float32)
    error = np.asarray(error, dtype=np.float32)
    pixmask = np.asarray(pixmask)
    if flux.ndim == 1:
        flux, error, pixmask = flux[None], error[None], pixmask[None]
    for name, a in (("flux", flux), ("error", error), ("pixmask", pixmask)):
        if a.ndim != 2 or a.shape[1] != n_pix:
            raise BadDataError(f"{name} must have shape (N, {n_pix}) for this grid, got {a.shape}")
    if not (flux.shape[0] == error.shape[0] == pixmask.shape[0]):
        raise BadDataError(
            f"flux, error and pixmask disagree in rows: {flux.shape[0]}, {error.shape[0]}, "
            f"{pixmask.shape[0]}"
        )
    if pixmask.dtype.kind not in "iu":
        raise BadDataError(f"pixmask must hold integer PIXMASK bits, got dtype {pixmask.dtype}")
    return flux, error, (pixmask.astype(np.int64) & 0xFFFF).astype(np.uint16)


def _check_catalog(catalog: pd.DataFrame, n: int) -> pd.DataFrame:
    if not isinstance(catalog, pd.DataFrame):
        raise BadDataError(f"catalog rows must be a pandas DataFrame, got {type(catalog).__name__}")
    if len(catalog) != n:
        raise BadDataError(f"catalog has {len(catalog)} rows for {n} spectra")
    if "APOGEE_ID" not in catalog.columns:
        raise BadDataError("catalog rows need an APOGEE_ID column")
    cat = catalog.reset_index(drop=True).copy()
    cat["APOGEE_ID"] = cat["APOGEE_ID"].astype(str).str.strip()
    return cat


def _write_part(path: Path, flux, error, pixmask, grid: Grid, dtype: str, compression) -> None:
    n = flux.shape[0]
    chunks = (max(1, min(ROW_CHUNK, n)), grid.n_pix)
    kw = {"chunks": chunks}
    if compression:
        kw["compression"] = compression
    with h5py.File(path, "w") as h5:
        h5.attrs["grid"] = grid.name
        h5.attrs["n_rows"] = n
        h5.create_dataset("wavelength", data=grid.wavelength)
        h5.create_dataset("flux", data=flux.astype(_DTYPES[dtype]), **kw)
        h5.create_dataset("error", data=error.astype(_DTYPES[dtype]), **kw)
        h5.create_dataset("pixmask", data=pixmask, **kw)


class StoreWriter:
    """Builds a new store in a temporary directory; renamed into place on :meth:`commit`.

    Use as a context manager: leaving the block normally commits, an exception
    discards everything and leaves any existing store at ``path`` untouched.
    """

    def __init__(self, path, *, grid: Grid | str = "apogee7514", kind: str = "ingested",
                 title: str = "", dtype: str = "float32", normalized: bool = True,
                 provenance: dict | None = None, sources: list | None = None,
                 overwrite: bool = False, compression: str | None = None,
                 rows_per_part: int = 4096):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(f"{self.path}: already exists (pass overwrite=True to replace it)")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.grid = get_grid(grid) if not isinstance(grid, Grid) else grid
        self.dtype = dtype
        self.compression = compression
        self.rows_per_part = int(rows_per_part)
        self.overwrite = overwrite
        self.manifest = new_manifest(grid=self.grid, kind=kind, title=title or self.path.name,
                                     dtype=dtype, normalized=normalized,
                                     provenance=provenance, sources=sources)
        self.tmp = self.path.parent / f".{self.path.name}.building-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self._catalogs: list[pd.DataFrame] = []
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._n = 0
        self._closed = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    @property
    def n_stars(self) -> int:
        return self._n + self._pending_rows

    def append(self, flux, error, pixmask, catalog: pd.DataFrame) -> None:
        """Add rows: spectra (N×P) and their catalog rows (N, with APOGEE_ID)."""
        flux, error, pixmask = _check_arrays(flux, error, pixmask, self.grid.n_pix)
        catalog = _check_catalog(catalog, flux.shape[0])
        self._catalogs.append(catalog)
        self._pending.append((flux, error, pixmask))
        self._pending_rows += flux.shape[0]
        if self._pending_rows >= self.rows_per_part:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        flux = np.concatenate([p[0] for p in self._pending])
        error = np.concatenate([p[1] for p in self._pending])
        pixmask = np.concatenate([p[2] for p in self._pending])
        name = f"spectra-{len(self.manifest['parts']):04d}.h5"
        _write_part(self.tmp / name, flux, error, pixmask, self.grid, self.dtype, self.compression)
        self.manifest["parts"].append({"file": name, "rows": int(flux.shape[0])})
        self._n += flux.shape[0]
        self._pending, self._pending_rows = [], 0

    def commit(self) -> Path:
        if self._closed:
            return self.path
        self._flush()
        if self._n == 0:
            self.abort()
            raise BadDataError(f"{self.path}: refusing to write an empty store (no rows appended)")
        catalog = pd.concat(self._catalogs, ignore_index=True)
        catalog.to_parquet(self.tmp / CATALOG, index=False)
        self.manifest["n_stars"] = int(self._n)
        self.manifest["history"].append({"when": now_iso(), "action": "create", "rows": self._n})
        write_json_atomic(self.tmp / MANIFEST, self.manifest)
        old = None
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._closed = True
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._closed = True


class SpectraStore:
    """Read access (and appends) to a store directory.

    Rows are addressed by global row number (catalog order) or by APOGEE_ID.
    HDF5 files are opened lazily and per thread, so one store can serve a web app.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.grid = get_grid(self.manifest["grid"]["name"])
        parts = self.manifest.get("parts", [])
        for p in parts:
            if not (self.path / p["file"]).is_file():
                raise StoreError(f"{self.path}: spectra part {p['file']} is missing")
        self._part_files = [self.path / p["file"] for p in parts]
        self._offsets = np.concatenate([[0], np.cumsum([p["rows"] for p in parts])]).astype(np.int64)
        self.n_stars = int(self.manifest["n_stars"])
        if self._offsets[-1] != self.n_stars:
            raise StoreError(f"{self.path}: manifest rows ({self.n_stars}) and parts disagree")
        self._catalog: pd.DataFrame | None = None
        self._id_index: dict[str, int] | None = None
        self._local = threading.local()

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, path, **kwargs) -> StoreWriter:
        """Start a new store; see :class:`StoreWriter` for the keyword arguments."""
        return StoreWriter(path, **kwargs)

    @classmethod
    def open(cls, path) -> SpectraStore:
        return cls(path)

    # -- metadata ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def is_mock(self) -> bool:
        return self.kind == "mock survey"

    @property
    def title(self) -> str:
        return self.manifest.get("title") or self.path.name

    @property
    def wavelength(self) -> np.ndarray:
        return self.grid.wavelength

    @property
    def normalized(self) -> bool:
        return bool(self.manifest.get("normalized", True))

    def __len__(self) -> int:
        return self.n_stars

    def __repr__(self) -> str:
        return f"<SpectraStore {self.path} [{self.kind}] {self.n_stars} stars on {self.grid.name}>"

    # -- catalog ----------------------------------------------------------------------------
    @property
    def catalog(self) -> pd.DataFrame:
        """The whole catalog (cached); row i describes spectrum i."""
        if self._catalog is None:
            path = self.path / CATALOG
            try:
                cat = pd.read_parquet(path)
            except Exception as exc:  # pyarrow raises several types for bad files
                raise StoreError(f"{path}: unreadable catalog ({exc})") from exc
            if len(cat) != self.n_stars:
                raise StoreError(f"{path}: {len(cat)} catalog rows for {self.n_stars} spectra")
            self._catalog = cat
        return self._catalog

    def reload_catalog(self) -> pd.DataFrame:
        self.manifest = read_manifest(self.path)
        self._catalog, self._id_index = None, None
        return self.catalog

    def _ids(self) -> dict[str, int]:
        if self._id_index is None:
            ids = self.catalog["APOGEE_ID"].astype(str).to_numpy()
            index: dict[str, int] = {}
            for i, s in enumerate(ids):
                index.setdefault(s, i)  # first occurrence wins for duplicated stars
            self._id_index = index
        return self._id_index

    def row_of(self, star) -> int:
        """Global row of an APOGEE_ID (or a row number, checked)."""
        if isinstance(star, (int, np.integer)):
            row = int(star)
            if not 0 <= row < self.n_stars:
                raise UnknownStarError(row, f"{self.path} (rows 0..{self.n_stars - 1})")
            return row
        key = str(star).strip()
        try:
            return self._ids()[key]
        except KeyError:
            raise UnknownStarError(key, str(self.path)) from None

    def rows_of(self, stars: Sequence) -> np.ndarray:
        return np.array([self.row_of(s) for s in stars], dtype=np.int64)

    def has_star(self, star) -> bool:
        try:
            self.row_of(star)
            return True
        except UnknownStarError:
            return False

    # -- spectra ----------------------------------------------------------------------------
    def _h5(self, part: int) -> h5py.File:
        files = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = {}
        if part not in files:
            try:
                files[part] = h5py.File(self._part_files[part], "r")
            except OSError as exc:
                raise StoreError(f"{self._part_files[part]}: unreadable spectra part ({exc})") from exc
        return files[part]

    def close(self) -> None:
        for f in getattr(self._local, "files", {}).values():
            f.close()
        self._local.files = {}

    def read(self, rows) -> Batch:
        """Spectra of the given global rows (any order, repeats allowed), as float32."""
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_stars):
            bad = rows[(rows < 0) | (rows >= self.n_stars)][0]
            raise UnknownStarError(int(bad), f"{self.path} (rows 0..{self.n_stars - 1})")
        n, p = rows.size, self.grid.n_pix
        flux = np.empty((n, p), np.float32)
        error = np.empty((n, p), np.float32)
        pixmask = np.empty((n, p), np.uint16)
        parts = np.searchsorted(self._offsets, rows, side="right") - 1
        for part in np.unique(parts):
            sel = np.nonzero(parts == part)[0]
            local = rows[sel] - self._offsets[part]
            order = np.argsort(local, kind="stable")
            uniq, inverse = np.unique(local[order], return_inverse=True)
            h5 = self._h5(int(part))
            if uniq.size and uniq[-1] - uniq[0] + 1 == uniq.size:
                sl = slice(int(uniq[0]), int(uniq[-1]) + 1)  # contiguous: one slab read
                f, e, m = h5["flux"][sl], h5["error"][sl], h5["pixmask"][sl]
            else:
                f, e, m = h5["flux"][uniq], h5["error"][uniq], h5["pixmask"][uniq]
            dest = sel[order]
            flux[dest] = f[inverse]
            error[dest] = e[inverse]
            pixmask[dest] = m[inverse]
        return Batch(rows, flux, error, pixmask)

    def read_all(self) -> Batch:
        return self.read(np.arange(self.n_stars))

    def spectrum(self, star) -> Spectrum:
        """One star as a :class:`Spectrum` with its catalog row in ``meta``."""
        row = self.row_of(star)
        b = self.read([row])
        meta = {k: _py(v) for k, v in self.catalog.iloc[row].items()}
        meta.update({"ROW": row, "SOURCE": str(self.path), "STORE_KIND": self.kind})
        return Spectrum(self.wavelength, b.flux[0], b.error[0], b.pixmask[0], meta=meta,
                        grid=self.grid.name, normalized=self.normalized)

    def iter_batches(self, batch_size: int = 1024, rows=None, shuffle: bool = False,
                     seed: int | None = None, block: int = 8) -> Iterator[Batch]:
        """Stream the store (or ``rows``) in batches with constant memory.

        With ``shuffle`` the rows are visited in random order: contiguous blocks of
        ``block × batch_size`` rows are read in random order and shuffled inside, so disk
        reads stay sequential.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")
        rows = np.arange(self.n_stars) if rows is None else np.asarray(rows, dtype=np.int64)
        if not shuffle:
            for start in range(0, rows.size, batch_size):
                yield self.read(rows[start:start + batch_size])
            return
        rng = np.random.default_rng(seed)
        span = batch_size * block
        starts = rng.permutation(np.arange(0, rows.size, span))
        carry = np.empty(0, np.int64)
        for s in starts:
            chunk = np.sort(rows[s:s + span])
            b = self.read(chunk)
            perm = rng.permutation(len(chunk))
            for i in range(0, len(perm), batch_size):
                idx = perm[i:i + batch_size]
                yield Batch(b.rows[idx], b.flux[idx], b.error[idx], b.pixmask[idx])
        del carry

    # -- writing ----------------------------------------------------------------------------
    def append(self, flux, error, pixmask, catalog: pd.DataFrame, source: str | None = None) -> None:
        """Add rows as a new part; existing files are never modified."""
        flux, error, pixmask = _check_arrays(flux, error, pixmask, self.grid.n_pix)
        new_rows = _check_catalog(catalog, flux.shape[0])
        name = f"spectra-{len(self.manifest['parts']):04d}.h5"
        while (self.path / name).exists():  # a leftover from a crashed append
            name = f"spectra-{uuid.uuid4().hex[:8]}.h5"
        with atomic_path(self.path / name, ".h5") as tmp:
            _write_part(tmp, flux, error, pixmask, self.grid, self.manifest["dtype"], None)
        cat = pd.concat([self.catalog, new_rows], ignore_index=True)
        with atomic_path(self.path / CATALOG, ".parquet") as tmp:
            cat.to_parquet(tmp, index=False)
        m = dict(self.manifest)
        m["parts"] = list(m["parts"]) + [{"file": name, "rows": int(flux.shape[0])}]
        m["n_stars"] = int(self.n_stars + flux.shape[0])
        m["history"] = list(m.get("history", [])) + [
            {"when": now_iso(), "action": "append", "rows": int(flux.shape[0]), "source": source}
        ]
        if source:
            m["sources"] = list(m.get("sources", [])) + [source]
        write_json_atomic(self.path / MANIFEST, m)
        self.__init__(self.path)

    def add_columns(self, columns: pd.DataFrame | dict, *, note: dict | None = None,
                    overwrite: bool = True) -> None:
        """Add or replace catalog columns (one value per row, in row order), atomically.

        ``note`` is recorded in the manifest for every column (e.g. which model made it).
        """
        new = pd.DataFrame(columns)
        if len(new) != self.n_stars:
            raise BadDataError(f"{self.path}: {len(new)} values for {self.n_stars} catalog rows")
        cat = self.catalog.copy()
        for col in new.columns:
            if col == "APOGEE_ID":
                raise BadDataError("APOGEE_ID cannot be replaced through add_columns")
            if col in cat.columns and not overwrite:
                raise BadDataError(f"{self.path}: column {col} exists (overwrite=False)")
            cat[col] = new[col].to_numpy()
        with atomic_path(self.path / CATALOG, ".parquet") as tmp:
            cat.to_parquet(tmp, index=False)
        m = dict(self.manifest)
        cols = dict(m.get("columns", {}))
        for col in new.columns:
            cols[col] = {"added": now_iso(), **(note or {})}
        m["columns"] = cols
        write_json_atomic(self.path / MANIFEST, m)
        self.manifest, self._catalog = m, cat

    def label_columns(self) -> list[str]:
        """Numeric catalog columns that have a matching ``_ERR`` column (TEFF, LOGG, FE_H …)."""
        cols = set(self.catalog.columns)
        return [c for c in self.catalog.columns
                if f"{c}_ERR" in cols and pd.api.types.is_numeric_dtype(self.catalog[c])]


def _py(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def open_store(path) -> SpectraStore:
    return SpectraStore.open(path)


def create_store(path, **kwargs) -> StoreWriter:
    return StoreWriter(path, **kwargs)
