"""The spectra store: HDF5 spectra parts + a Parquet catalog + a JSON manifest.

Layout of a store directory::

    manifest.json        format, kind ("mock survey" | "ingested" | "generic"), grid,
                         dtype, parts, n_stars, sources, provenance, column notes, history
    catalog.parquet      one row per star, allStar column names; row i ↔ spectrum i
                         (after updates catalog-NNNNNN.parquet: the one the manifest names)
    spectra-0000.h5      datasets flux, error (N×P float32|float16), pixmask (N×P uint16),
    spectra-0001.h5      wavelength (P float64); chunked by rows
    ...

Appending writes a new part and then a new catalog and manifest, each through a temporary
file and a rename, so existing parts are never modified: a crash leaves the previous
store readable.  Every catalog update writes a new catalog file (``catalog-NNNNNN.parquet``,
generation N) that the manifest names; the manifest is written last and is the one commit
point, so a reader sees either the old catalog or the new one, never a catalog its manifest
does not describe.  Writers of other processes are serialised by a lock file
(:mod:`core.store.lock`) and re-read the store inside it, so none writes over another's
columns.  The manifest records each part's rows, size and BLAKE2b checksum:
:meth:`SpectraStore.open` checks row counts (HDF5 shapes only), :func:`core.store.verify`
re-reads everything.
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
from .lock import DEFAULT_TIMEOUT, store_lock
from .manifest import (
    CATALOG,
    MANIFEST,
    catalog_file,
    catalog_name,
    file_record,
    new_manifest,
    now_iso,
    read_manifest,
)

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


def _fault(stage: str) -> None:
    """Crash-test hook, called between the steps of every write; tests make it raise to
    simulate a process killed at ``stage``.  Does nothing otherwise."""


def check_replaceable(path) -> None:
    """StoreError unless ``path`` is absent, an empty directory or a Stellarscope store.

    Replacing ("overwrite") is allowed only where nothing but a store can be lost.
    """
    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            raise StoreError(f"{p}: is a dangling link; overwrite replaces only a Stellarscope "
                             "store, so nothing was changed")
        return
    if not p.is_dir():
        raise StoreError(f"{p}: is a file, not a Stellarscope store; overwrite replaces only a "
                         "store, so nothing was changed (move it away or choose another output)")
    try:
        if not any(p.iterdir()):
            return
        read_manifest(p)
    except StoreError as exc:
        why = str(exc).removeprefix(f"{p}: ")
        raise StoreError(f"{p}: overwrite replaces only a Stellarscope store and this directory "
                         f"is not one ({why}); nothing was changed (move it away or choose "
                         "another output)") from None
    except OSError as exc:
        raise StoreError(f"{p}: cannot be inspected ({exc.strerror or exc}); nothing was "
                         "changed") from None


def check_parts(path: Path, manifest: dict, n_pix: int) -> None:
    """StoreError naming the first part whose file is missing, unreadable or holds another
    number of rows (or pixels) than the manifest says.  Reads HDF5 shapes only."""
    for p in manifest.get("parts", []):
        f = path / p["file"]
        if not f.is_file():
            raise StoreError(f"{path}: spectra part {p['file']} is missing")
        try:
            with h5py.File(f, "r") as h5:
                shapes = {k: h5[k].shape for k in ("flux", "error", "pixmask")}
        except (OSError, KeyError) as exc:
            raise StoreError(f"{path}: spectra part {p['file']} is unreadable ({exc})") from None
        want = (int(p["rows"]), n_pix)
        for k, shape in shapes.items():
            if tuple(shape) != want:
                raise StoreError(
                    f"{path}: spectra part {p['file']} holds {k} of shape {tuple(shape)} but the "
                    f"manifest says {want[0]} rows × {n_pix} pixels (truncated or replaced file; "
                    f"run 'stellarscope inspect {path} --verify')")
        if "bytes" in p and f.stat().st_size != int(p["bytes"]):
            # a handle still open elsewhere in this process lets HDF5 read a truncated file
            # through its cached layout, shapes and all
            raise StoreError(f"{path}: spectra part {p['file']} is {f.stat().st_size} bytes but "
                             f"the manifest says {int(p['bytes'])} (truncated or replaced file; "
                             f"run 'stellarscope inspect {path} --verify')")


def _catalog_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _same_state(a: dict, b: dict) -> bool:
    """Whether two manifests describe the same catalog and parts (only notes may differ)."""
    keys = ("store_id", "generation", "n_stars", "created")
    return (all(a.get(k) == b.get(k) for k in keys) and catalog_file(a) == catalog_file(b)
            and [p["file"] for p in a.get("parts", [])] == [p["file"] for p in b.get("parts", [])])


def _stat_sig(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class StoreWriter:
    """Builds a new store in a temporary directory; renamed into place on :meth:`commit`.

    Use as a context manager: leaving the block normally commits, an exception
    discards everything and leaves any existing store at ``path`` untouched.  With
    ``overwrite`` an existing *store* (or empty directory) is replaced once the new one is
    complete; anything else at ``path`` is refused with a StoreError before work starts.
    """

    def __init__(self, path, *, grid: Grid | str = "apogee7514", kind: str = "ingested",
                 title: str = "", dtype: str = "float32", normalized: bool = True,
                 provenance: dict | None = None, sources: list | None = None,
                 overwrite: bool = False, compression: str | None = None,
                 rows_per_part: int = 4096):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(f"{self.path}: already exists (pass overwrite=True to replace it)")
        if overwrite:
            check_replaceable(self.path)
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
        self.manifest["store_id"] = uuid.uuid4().hex
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
        self.manifest["parts"].append({"file": name, "rows": int(flux.shape[0]),
                                       **file_record(self.tmp / name)})
        self._n += flux.shape[0]
        self._pending, self._pending_rows = [], 0

    def commit(self) -> Path:
        """Finish the store and move it into place (replacing an old store only now)."""
        if self._closed:
            return self.path
        try:
            return self._commit()
        except BaseException:
            self.abort()  # the old store (if any) is untouched
            raise

    def _commit(self) -> Path:
        self._flush()
        if self._n == 0:
            self.abort()
            raise BadDataError(f"{self.path}: refusing to write an empty store (no rows appended)")
        catalog = pd.concat(self._catalogs, ignore_index=True)
        catalog.to_parquet(self.tmp / CATALOG, index=False)
        self.manifest["catalog"] = {"file": CATALOG, **file_record(self.tmp / CATALOG)}
        self.manifest["n_stars"] = int(self._n)
        self.manifest["history"].append({"when": now_iso(), "action": "create", "rows": self._n})
        write_json_atomic(self.tmp / MANIFEST, self.manifest)
        _fault("new store built")
        if self.path.exists():
            check_replaceable(self.path)  # again: something else may have appeared meanwhile
            if (self.path / MANIFEST).is_file():
                # no writer of the old store is cut off half-way through its update
                with store_lock(self.path):
                    old = self._swap()
            else:
                old = self._swap()
            shutil.rmtree(old, ignore_errors=True)  # only now that the new store is in place
        else:
            os.replace(self.tmp, self.path)
        self._closed = True
        return self.path

    def _swap(self) -> Path:
        old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(self.path, old)
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            os.replace(old, self.path)  # put the old store back
            raise
        return old

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._closed = True


class SpectraStore:
    """Read access (and appends) to a store directory.

    Rows are addressed by global row number (catalog order) or by APOGEE_ID.
    HDF5 files are opened lazily and per thread, so one store can serve a web app.  A store
    follows writes of other processes: when the manifest changes on disk, the next catalog
    access or read picks up the new catalog (and new parts) without reopening.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._part_stamps: dict = {}  # (parts generation, part) → (inode, size, mtime) first seen
        self._parts_token = 0
        self._load()

    def _load(self, m: dict | None = None) -> None:
        """Adopt the manifest on disk (or ``m``), checked; a check that fails because a writer
        committed meanwhile (its old catalog already pruned) is retried on the new manifest."""
        for _ in range(20):
            sig = _stat_sig(self.path / MANIFEST)
            m = m or read_manifest(self.path)
            try:
                self._adopt(m, sig)
                return
            except StoreError:
                again = read_manifest(self.path)
                if _same_state(again, m):
                    raise
                m = again
        raise StoreError(f"{self.path}: the store kept changing while being opened; try again")

    def _adopt(self, m: dict, sig, catalog: pd.DataFrame | None = None,
               check: bool = True) -> None:
        """Make ``m`` the current state (checked against the files unless ``check`` is off)."""
        grid = get_grid(m["grid"]["name"])
        parts = m.get("parts", [])
        offsets = np.concatenate([[0], np.cumsum([p["rows"] for p in parts])]).astype(np.int64)
        n_stars = int(m["n_stars"])
        if offsets[-1] != n_stars:
            raise StoreError(f"{self.path}: manifest rows ({n_stars}) and parts disagree")
        cat_file = catalog_file(m)
        if check:
            check_parts(self.path, m, grid.n_pix)
            cpath = self.path / cat_file
            if not cpath.is_file():
                raise StoreError(f"{self.path}: catalog {cat_file} is missing")
            try:
                rows = _catalog_rows(cpath)
            except Exception as exc:  # pyarrow raises several types for bad files
                raise StoreError(f"{cpath}: unreadable catalog ({exc})") from None
            if rows != n_stars:
                raise StoreError(f"{cpath}: {rows} catalog rows for {n_stars} spectra")
        with self._lock:
            old_parts = [p["file"] for p in getattr(self, "manifest", {}).get("parts", [])]
            if old_parts != [p["file"] for p in parts] or m.get("store_id") != getattr(
                    self, "manifest", {}).get("store_id"):
                self._parts_token += 1  # every thread reopens its HDF5 handles
            self.manifest = m
            self.grid = grid
            self._part_files = [self.path / p["file"] for p in parts]
            self._offsets = offsets
            self.n_stars = n_stars
            self._catalog_file = cat_file
            self._catalog = catalog
            self._id_index = None
            self._sig = sig

    def refresh(self) -> bool:
        """Pick up what another process committed since; True when the catalog changed.

        Cheap when nothing changed (one ``stat``).  While the store directory is being
        replaced the current state is kept.
        """
        sig = _stat_sig(self.path / MANIFEST)
        if sig == self._sig or sig is None:
            return False
        with self._lock:
            if sig == self._sig:
                return False
            try:
                m = read_manifest(self.path)
            except StoreError:
                return False  # mid-replacement: keep serving what we have
            if _same_state(m, self.manifest):
                self.manifest, self._sig = m, sig
                return False
            self._load(m)
            return True

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, path, **kwargs) -> StoreWriter:
        """Start a new store; see :class:`StoreWriter` for the keyword arguments."""
        return StoreWriter(path, **kwargs)

    @classmethod
    def open(cls, path) -> SpectraStore:
        """Open a store; StoreError (naming the file) when a part or the catalog is missing
        or disagrees with the manifest in rows."""
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

    @property
    def generation(self) -> int:
        """How many catalog updates the store has had (0 for a new store)."""
        return int(self.manifest.get("generation", 0))

    @property
    def catalog_path(self) -> Path:
        """The catalog file the current manifest names."""
        return self.path / self._catalog_file

    def __len__(self) -> int:
        return self.n_stars

    def __repr__(self) -> str:
        return f"<SpectraStore {self.path} [{self.kind}] {self.n_stars} stars on {self.grid.name}>"

    # -- catalog ----------------------------------------------------------------------------
    @property
    def catalog(self) -> pd.DataFrame:
        """The whole catalog (cached, reloaded when another process committed a new one);
        row i describes spectrum i."""
        self.refresh()
        cat = self._catalog
        if cat is None:
            with self._lock:
                if self._catalog is None:
                    self._catalog = self._read_catalog()
                cat = self._catalog
        return cat

    def _read_catalog(self) -> pd.DataFrame:
        for _ in range(5):
            path = self.catalog_path
            try:
                cat = pd.read_parquet(path)
            except FileNotFoundError:
                # a writer committed twice since our manifest and pruned its catalog
                m = read_manifest(self.path)
                if catalog_file(m) == self._catalog_file:
                    raise StoreError(f"{path}: catalog is missing") from None
                self._load(m)
                continue
            except Exception as exc:  # pyarrow raises several types for bad files
                raise StoreError(f"{path}: unreadable catalog ({exc})") from exc
            if len(cat) != self.n_stars:
                raise StoreError(f"{path}: {len(cat)} catalog rows for {self.n_stars} spectra")
            return cat
        raise StoreError(f"{self.path}: the catalog kept changing while being read; try again")

    def reload_catalog(self) -> pd.DataFrame:
        """Re-read manifest and catalog from disk now (errors are raised, not deferred)."""
        with self._lock:
            self._load()
            return self.catalog

    def _ids(self) -> dict[str, int]:
        cat = self.catalog
        index = self._id_index
        if index is None:
            ids = cat["APOGEE_ID"].astype(str).to_numpy()
            index = {}
            for i, s in enumerate(ids):
                index.setdefault(s, i)  # first occurrence wins for duplicated stars
            self._id_index = index
        return index

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
        local = self._local
        if getattr(local, "token", None) != self._parts_token:
            for f in getattr(local, "files", {}).values():
                f.close()
            local.files, local.token = {}, self._parts_token
        files = local.files
        path = self._part_files[part]
        try:
            st = os.stat(path)
        except OSError as exc:
            raise StoreError(f"{path}: unreadable spectra part ({exc.strerror or exc})") from exc
        # Parts never change under one manifest generation.  One that did (truncated,
        # rewritten) would go on being read through HDF5's cached layout — the library shares
        # one open file between handles, even a new one — and missing bytes read as zeros.
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        first = self._part_stamps.setdefault((self._parts_token, part), stamp)
        if stamp != first:
            raise StoreError(f"{path}: spectra part changed on disk while the store was open "
                             f"({first[1]} → {st.st_size} bytes; truncated or rewritten?)")
        if part not in files:
            try:
                files[part] = h5py.File(path, "r")
            except OSError as exc:
                raise StoreError(f"{path}: unreadable spectra part ({exc})") from exc
        return files[part]

    def close(self) -> None:
        for f in getattr(self._local, "files", {}).values():
            f.close()
        self._local.files = {}

    def read(self, rows) -> Batch:
        """Spectra of the given global rows (any order, repeats allowed), as float32."""
        self.refresh()
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        offsets, n_stars = self._offsets, self.n_stars
        if rows.size and (rows.min() < 0 or rows.max() >= n_stars):
            bad = rows[(rows < 0) | (rows >= n_stars)][0]
            raise UnknownStarError(int(bad), f"{self.path} (rows 0..{n_stars - 1})")
        n, p = rows.size, self.grid.n_pix
        flux = np.empty((n, p), np.float32)
        error = np.empty((n, p), np.float32)
        pixmask = np.empty((n, p), np.uint16)
        parts = np.searchsorted(offsets, rows, side="right") - 1
        for part in np.unique(parts):
            sel = np.nonzero(parts == part)[0]
            local = rows[sel] - offsets[part]
            order = np.argsort(local, kind="stable")
            uniq, inverse = np.unique(local[order], return_inverse=True)
            h5 = self._h5(int(part))
            try:
                if uniq.size and uniq[-1] - uniq[0] + 1 == uniq.size:
                    sl = slice(int(uniq[0]), int(uniq[-1]) + 1)  # contiguous: one slab read
                    f, e, m = h5["flux"][sl], h5["error"][sl], h5["pixmask"][sl]
                else:
                    f, e, m = h5["flux"][uniq], h5["error"][uniq], h5["pixmask"][uniq]
            except (OSError, KeyError, IndexError, ValueError) as exc:
                raise StoreError(f"{self._part_files[part]}: spectra part cannot be read "
                                 f"({type(exc).__name__}: {exc})") from None
            if f.shape[0] != uniq.size:  # a part changed on disk after the store was opened
                raise StoreError(f"{self._part_files[part]}: spectra part holds fewer rows than "
                                 "the manifest says (truncated file?)")
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
        for s in starts:
            chunk = np.sort(rows[s:s + span])
            b = self.read(chunk)
            perm = rng.permutation(len(chunk))
            for i in range(0, len(perm), batch_size):
                idx = perm[i:i + batch_size]
                yield Batch(b.rows[idx], b.flux[idx], b.error[idx], b.pixmask[idx])

    # -- writing ----------------------------------------------------------------------------
    def _sync_for_write(self) -> None:
        """Inside the write lock: make sure we build on what is on disk now."""
        sig = _stat_sig(self.path / MANIFEST)
        m = read_manifest(self.path)
        if _same_state(m, self.manifest):
            self.manifest, self._sig = m, sig
        else:
            self._load(m)

    def _commit(self, cat: pd.DataFrame, m: dict) -> None:
        """Write ``cat`` as the next catalog generation, then ``m`` (the commit point)."""
        previous = self._catalog_file
        gen = int(m.get("generation", 0)) + 1
        name = catalog_name(gen)
        with atomic_path(self.path / name, ".parquet") as tmp:
            cat.to_parquet(tmp, index=False)
            record = file_record(tmp)
            _fault("catalog written")
        _fault("catalog renamed")
        m = {**m, "generation": gen, "catalog": {"file": name, **record}}
        write_json_atomic(self.path / MANIFEST, m)
        self._adopt(m, _stat_sig(self.path / MANIFEST), catalog=cat, check=False)
        _fault("committed")
        self._prune_catalogs(keep={name, previous})

    def _prune_catalogs(self, keep: set[str]) -> None:
        """Remove catalog generations older than the previous one (a reader that has just
        read the previous manifest still finds its catalog)."""
        for f in self.path.glob("catalog*.parquet"):
            if f.name not in keep:
                f.unlink(missing_ok=True)

    def append(self, flux, error, pixmask, catalog: pd.DataFrame, source: str | None = None, *,
               lock_timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Add rows as a new part; existing files are never modified."""
        flux, error, pixmask = _check_arrays(flux, error, pixmask, self.grid.n_pix)
        new_rows = _check_catalog(catalog, flux.shape[0])
        with store_lock(self.path, lock_timeout):
            self._sync_for_write()
            name = f"spectra-{len(self.manifest['parts']):04d}.h5"
            while (self.path / name).exists():  # a leftover from a crashed append
                name = f"spectra-{uuid.uuid4().hex[:8]}.h5"
            with atomic_path(self.path / name, ".h5") as tmp:
                _write_part(tmp, flux, error, pixmask, self.grid, self.manifest["dtype"], None)
                record = file_record(tmp)
                _fault("part written")
            _fault("part renamed")
            cat = pd.concat([self.catalog, new_rows], ignore_index=True)
            m = dict(self.manifest)
            m["parts"] = list(m["parts"]) + [{"file": name, "rows": int(flux.shape[0]), **record}]
            m["n_stars"] = int(self.n_stars + flux.shape[0])
            m["history"] = list(m.get("history", [])) + [
                {"when": now_iso(), "action": "append", "rows": int(flux.shape[0]),
                 "source": source}
            ]
            if source:
                m["sources"] = list(m.get("sources", [])) + [source]
            self._commit(cat, m)

    def add_columns(self, columns: pd.DataFrame | dict, *, rows=None, fill=None,
                    note: dict | None = None, overwrite: bool = True,
                    lock_timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Add or replace catalog columns, atomically.

        Without ``rows`` every column has one value per catalog row, in row order.  With
        ``rows`` (row indices) every column has one value per given row and only those rows
        change: the other rows keep the values on disk at the time of writing, so writers of
        disjoint rows of the same columns (``fit --all --resume`` and the app's "Fit N
        selected") never undo each other.  A column that does not exist yet gets ``fill``
        (a scalar, or a dict column → value; NaN when not given) in the rows not given.

        ``note`` is recorded in the manifest for every column (e.g. which model made it).
        Safe against other processes writing the same store: inside the store's write lock
        the catalog is re-read from disk and only these columns (rows) are changed.  A writer
        that cannot get the lock within ``lock_timeout`` seconds raises StoreError, writing
        nothing.
        """
        new = pd.DataFrame(columns)
        if "APOGEE_ID" in new.columns:
            raise BadDataError("APOGEE_ID cannot be replaced through add_columns")
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            if len(new) != rows.size:
                raise BadDataError(f"{self.path}: {len(new)} values for {rows.size} rows")
        with store_lock(self.path, lock_timeout):
            self._sync_for_write()
            if rows is None and len(new) != self.n_stars:
                raise BadDataError(f"{self.path}: {len(new)} values for {self.n_stars} catalog rows")
            if rows is not None and rows.size and (rows.min() < 0 or rows.max() >= self.n_stars):
                raise BadDataError(f"{self.path}: rows outside 0…{self.n_stars - 1}")
            cat = self.catalog.copy()
            for col in new.columns:
                if col in cat.columns and not overwrite:
                    raise BadDataError(f"{self.path}: column {col} exists (overwrite=False)")
                values = new[col].to_numpy()
                if rows is None:
                    cat[col] = values
                    continue
                base = (cat[col].to_numpy() if col in cat.columns
                        else _filled(self.n_stars, _fill_of(fill, col), values))
                merged = base.astype(_merged_dtype(base, values), copy=True)
                merged[rows] = values
                cat[col] = merged
            m = dict(self.manifest)
            cols = dict(m.get("columns", {}))
            for col in new.columns:
                cols[col] = {"added": now_iso(), **(note or {})}
            m["columns"] = cols
            self._commit(cat, m)

    def label_columns(self) -> list[str]:
        """Numeric catalog columns that have a matching ``_ERR`` column (TEFF, LOGG, FE_H …)."""
        cat = self.catalog
        cols = set(cat.columns)
        return [c for c in cat.columns
                if f"{c}_ERR" in cols and pd.api.types.is_numeric_dtype(cat[c])]


def _fill_of(fill, col: str):
    if isinstance(fill, dict):
        return fill.get(col, np.nan)
    return np.nan if fill is None else fill


def _filled(n: int, value, like: np.ndarray) -> np.ndarray:
    """``n`` copies of ``value`` in a dtype that also holds ``like``'s values."""
    if like.dtype == object or isinstance(value, str):
        return np.full(n, value, dtype=object)
    return np.full(n, value, dtype=np.result_type(value, like.dtype))  # -1 keeps int32


def _merged_dtype(base: np.ndarray, values: np.ndarray):
    """A dtype for the on-disk column that takes the new values (text stays object)."""
    if base.dtype == object or values.dtype == object or values.dtype.kind in "US":
        return object
    return np.result_type(base.dtype, values.dtype)


def _py(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def open_store(path) -> SpectraStore:
    return SpectraStore.open(path)


def create_store(path, **kwargs) -> StoreWriter:
    return StoreWriter(path, **kwargs)
