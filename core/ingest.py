"""Build a spectra store from real data: allStar + spectra tree, contspec trio, user file or files.

Every mode writes through :meth:`SpectraStore.create` with continuum-normalised spectra:
apStar and apVisit spectra are normalised here (:mod:`core.preprocess.continuum`),
aspcapStar and contspec spectra already are.  Bad pixels are filled the same way in every
mode (flux 1, error :data:`~core.preprocess.masks.LARGE_ERROR`; PIXMASK unchanged).

A file that is missing or unreadable (damaged, not permitted, …) never stops a run: it is
recorded with the reason in the :class:`IngestReport`, which also goes into the manifest's
provenance.  So is a star whose APOGEE_ID was already ingested in the run: the first one is
kept (store lookups by ID find the first row anyway).  Only when nothing at all could be
ingested does the run fail (:class:`NothingIngestedError`).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .errors import BadDataError, BadFileError, StellarscopeError
from .grid import Grid, get_grid
from .io.naming import apogee_id_from_name
from .preprocess.continuum import normalize_arrays
from .preprocess.masks import clean
from .preprocess.selection import Selection, get_selection
from .store import SpectraStore, check_replaceable

FILE_KINDS = {"aspcapstar": ("aspcapStar",), "apstar": ("apStar", "asStar")}
#: Header values that become catalog columns when there is no allStar (``--files``).
HEADER_COLUMNS = ("APOGEE_ID", "SNR", "TELESCOPE", "FIELD", "RA", "DEC")
#: allStar columns worth keeping beyond core.io's defaults, when the file has them (each
#: costs one more pass over the catalog, so only the sky position).
EXTRA_ALLSTAR_COLUMNS = ("RA", "DEC")
ROWS_PER_PART = 8192  # bounds the writer's memory: 8192 × 7514 × 10 bytes ≈ 0.6 GB
MAX_SKIPS_RECORDED = 200
#: Spectra file names FileIndex picks up (gzip-compressed FITS is read as well).
FITS_SUFFIXES = (".fits", ".fits.gz")


class NothingIngestedError(BadDataError):
    """No spectrum could be ingested; ``report`` says why for each input."""

    def __init__(self, report: IngestReport):
        self.report = report
        reasons = ", ".join(f"{n} {r}" for r, n in report.skip_counts().most_common(3))
        super().__init__(f"{report.store}: nothing could be ingested ({reasons or 'no input'})")


@dataclass
class IngestReport:
    """What an ingest run did: counts, the selection funnel and every skipped input."""

    mode: str
    store: str
    n_ingested: int = 0
    n_candidates: int = 0
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, what, reason)
    selection: dict | None = None
    seconds: float = 0.0

    def skip(self, kind: str, what, reason: str) -> None:
        self.skipped.append((kind, str(what), reason))

    def skip_counts(self) -> Counter:
        return Counter(kind for kind, _, _ in self.skipped)

    def to_dict(self, max_skipped: int | None = MAX_SKIPS_RECORDED) -> dict:
        d = asdict(self)
        listed = self.skipped if max_skipped is None else self.skipped[:max_skipped]
        d["skipped"] = [{"kind": k, "what": w, "reason": r} for k, w, r in listed]
        d["n_skipped"] = len(self.skipped)
        d["skip_counts"] = dict(self.skip_counts())
        d["seconds"] = round(self.seconds, 2)
        return d

    def format(self, max_lines: int = 20) -> str:
        """Human-readable summary for the end of a CLI run."""
        lines = [f"ingested {self.n_ingested} of {self.n_candidates} spectra into {self.store} "
                 f"({self.seconds:.1f} s)"]
        if self.selection:
            from .preprocess.selection import CutCount, format_report

            counts = [CutCount(**c) for c in self.selection["counts"]]
            lines.append(f"selection {self.selection['name']!r}:")
            lines += ["  " + s for s in format_report(counts, self.selection["catalog_rows"]).splitlines()]
        if self.skipped:
            summary = ", ".join(f"{n} {k}" for k, n in self.skip_counts().most_common())
            lines.append(f"skipped {len(self.skipped)}: {summary}")
            for kind, what, reason in self.skipped[:max_lines]:
                lines.append(f"  [{kind}] {what}: {reason}")
            if len(self.skipped) > max_lines:
                lines.append(f"  … and {len(self.skipped) - max_lines} more (all counted above; "
                             f"the first {MAX_SKIPS_RECORDED} are in the manifest)")
        return "\n".join(lines)


@dataclass
class ContinuumSettings:
    """How spectra that are not yet normalised are normalised on ingest."""

    method: str = "mask"
    degree: int = 2
    bad_bits: str = "astronn"

    def describe(self) -> dict:
        from .preprocess.contmask import SHIPPED_MASK

        d = asdict(self)
        if self.method == "mask":
            d["mask"] = SHIPPED_MASK.name
        return d


class _Buffer:
    """Collects spectra and their catalog rows; normalises and writes them in batches."""

    def __init__(self, writer, grid: Grid, report: IngestReport, continuum: ContinuumSettings,
                 batch_size: int):
        self.writer, self.grid, self.report = writer, grid, report
        self.continuum, self.batch_size = continuum, batch_size
        self._items: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, dict, str]] = []
        self.first_of: dict[str, str] = {}  # APOGEE_ID → what it was first read from

    def __len__(self) -> int:
        """Spectra waiting to be written."""
        return len(self._items)

    def add(self, flux, error, pixmask, *, normalized: bool | None, row: dict,
            label: str) -> bool:
        """Queue one spectrum: ``normalized`` False → normalise it, True → fill its bad
        pixels, None → store it as it is (a user's un-normalised arrays).  False when its
        APOGEE_ID was already ingested (the skip is recorded)."""
        treatment = {False: "normalize", True: "clean", None: "as is"}[normalized]
        if not self.first_time(row.get("APOGEE_ID"), label):
            return False
        self._items.append((flux, error, pixmask, treatment, row, label))
        if len(self._items) >= self.batch_size:
            self.flush()
        return True

    def first_time(self, apogee_id, label: str) -> bool:
        """False (and the skip recorded) when ``apogee_id`` was already ingested in this run."""
        key = str(apogee_id).strip()
        if key not in self.first_of:
            self.first_of[key] = label
            return True
        self.report.skip("duplicate id", label, f"APOGEE_ID {key} was already ingested from "
                                                f"{self.first_of[key]}; the first is kept")
        return False

    def flush(self) -> None:
        if not self._items:
            return
        items, self._items = self._items, []
        flux = np.stack([i[0] for i in items]).astype(np.float32)
        error = np.stack([i[1] for i in items]).astype(np.float32)
        pixmask = np.stack([i[2] for i in items])
        raw = np.array([i[3] == "normalize" for i in items])
        done = np.array([i[3] == "clean" for i in items])
        keep = np.ones(len(items), dtype=bool)
        if raw.any():
            res = normalize_arrays(flux[raw], error[raw], pixmask[raw], self.grid,
                                   method=self.continuum.method, degree=self.continuum.degree,
                                   bad_bits=self.continuum.bad_bits)
            flux[raw], error[raw] = res.flux, res.error
            failed = np.nonzero(raw)[0][~res.fit_ok.any(axis=1)]
            why = dict(zip(np.nonzero(raw)[0], res.problem, strict=True))  # e.g. flux ≤ 0
            for k in failed:
                self.report.skip("no continuum", items[k][5], why[k] or
                                 "no chip had enough good pixels for a continuum fit")
                self.first_of.pop(str(items[k][4].get("APOGEE_ID")).strip(), None)
            keep[failed] = False
        if done.any():
            c = clean(flux[done], error[done], pixmask[done], bad_bits=self.continuum.bad_bits)
            flux[done], error[done] = c.flux, c.error
        if keep.any():
            rows = pd.DataFrame([items[k][4] for k in np.nonzero(keep)[0]])
            self.writer.append(flux[keep], error[keep], pixmask[keep], rows)
            self.report.n_ingested += int(keep.sum())


def _progress(total: int | None, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="star", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)


def _write_store(out, *, mode: str, kind: str, grid: Grid, dtype: str, overwrite: bool,
                 sources: list, provenance: dict, continuum: ContinuumSettings,
                 batch_size: int, fill: Callable[[_Buffer, IngestReport], None],
                 normalized: bool = True) -> IngestReport:
    """Open a writer, let ``fill`` add spectra, then commit (or abort when nothing came)."""
    report = IngestReport(mode=mode, store=str(out))
    check_output(out, overwrite)
    t0 = time.perf_counter()
    writer = SpectraStore.create(out, grid=grid, kind=kind, dtype=dtype, normalized=normalized,
                                 provenance=provenance, sources=[str(s) for s in sources],
                                 overwrite=overwrite, rows_per_part=ROWS_PER_PART)
    try:
        buffer = _Buffer(writer, grid, report, continuum, batch_size)
        fill(buffer, report)
        buffer.flush()
        report.seconds = time.perf_counter() - t0
        if writer.n_stars == 0:
            raise NothingIngestedError(report)
        writer.manifest["provenance"]["ingest"] = report.to_dict()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return report


def check_output(out, overwrite: bool) -> None:
    """Before any reading: StoreError when ``out`` exists and may not be replaced (only a
    store, or an empty folder, is replaced, and only with ``overwrite``)."""
    from .errors import StoreError

    out = Path(out)
    if out.exists() and not overwrite:
        raise StoreError(f"{out}: already exists (use --overwrite to replace it)")
    if overwrite:
        check_replaceable(out)


def _unreadable_reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        from .io.fitsutil import unreadable

        return unreadable("", exc).problem
    return getattr(exc, "problem", str(exc))


# --- finding spectra files ---------------------------------------------------------------------


def _id_from_filename(path: Path) -> str | None:
    """APOGEE_ID from ``<product>-<release>-<APOGEE_ID>.fits`` (or any 2M/AP id in the name)."""
    found = apogee_id_from_name(path)
    if found:
        return found
    name = path.name
    stem = next((name[: -len(x)] for x in FITS_SUFFIXES if name.lower().endswith(x)), path.stem)
    parts = stem.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[2] else None


class FileIndex:
    """The spectra files under a folder (SDSS ``TELESCOPE/FIELD/`` tree or flat), by APOGEE_ID."""

    def __init__(self, root, file_kind: str):
        key = file_kind.lower()
        if key not in FILE_KINDS:
            raise ValueError(f"file kind must be one of aspcapStar, apStar; got {file_kind!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadFileError(self.root, "spectra directory not found")
        self.file_kind = file_kind
        prefixes = tuple(p.lower() for p in FILE_KINDS[key])
        self.by_id: dict[str, list[Path]] = {}
        for dirpath, _dirs, names in os.walk(self.root, followlinks=True):
            for name in names:
                low = name.lower()
                if not low.startswith(prefixes) or not low.endswith(FITS_SUFFIXES):
                    continue
                path = Path(dirpath) / name
                star = _id_from_filename(path)
                if star:
                    self.by_id.setdefault(star, []).append(path)
        for paths in self.by_id.values():
            paths.sort()

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_id.values())

    def find(self, apogee_id: str, telescope: str | None = None,
             field: str | None = None) -> Path | None:
        """The file of a star, preferring the one under ``telescope/field``."""
        paths = self.by_id.get(str(apogee_id).strip())
        if not paths:
            return None
        if field:
            exact = [p for p in paths if p.parent.name == field
                     and (not telescope or p.parent.parent.name == telescope)]
            if exact:
                return exact[0]
        return paths[0]


# --- allStar + spectra tree ----------------------------------------------------------------------


def _read_allstar_rows(path) -> pd.DataFrame:
    from .io import read_allstar

    df = read_allstar(path)
    if len(df) == 0:
        raise BadFileError(path, "holds no catalog rows (0 stars)")
    for name in EXTRA_ALLSTAR_COLUMNS:
        if name in df.columns:
            continue
        try:
            df[name] = read_allstar(path, columns=[name])[name].to_numpy()
        except BadFileError:
            continue  # this release has no such column
    return df


def _selection_summary(sel: Selection, counts, n_rows: int) -> dict:
    settings = {k: v for k, v in asdict(sel).items() if k not in ("name", "description")}
    return {"name": sel.name, "description": sel.description, "settings": settings,
            "catalog_rows": n_rows, "counts": [asdict(c) for c in counts]}


def ingest_allstar(allstar, spectra_dir, out, *, file_kind: str = "aspcapStar",
                   selection: str | Selection = "none", selection_overrides: dict | None = None,
                   limit: int | None = None, grid: str | Grid = "apogee7514",
                   dtype: str = "float32", overwrite: bool = False,
                   continuum: ContinuumSettings | None = None, batch_size: int = 256,
                   progress: bool = True) -> IngestReport:
    """Store the allStar rows passing ``selection`` whose aspcapStar/apStar file is found.

    Rows are tried in catalog order until ``limit`` stars are ingested.  The catalog holds
    their allStar rows plus ``ALLSTAR_ROW`` and ``SOURCE_FILE``.
    """
    from .io import read_apstar, read_aspcapstar

    g = grid if isinstance(grid, Grid) else get_grid(grid)
    check_output(out, overwrite)
    continuum = continuum or ContinuumSettings()
    kind_key = file_kind.lower()
    index = FileIndex(spectra_dir, file_kind)
    df = _read_allstar_rows(allstar)
    sel = get_selection(selection, **(selection_overrides or {}))
    keep, counts = sel.report(df)
    rows = np.nonzero(keep)[0]
    reader = read_aspcapstar if kind_key == "aspcapstar" else read_apstar
    records = df.to_dict("records")
    provenance = {"mode": "allstar", "allstar": str(allstar), "spectra_dir": str(spectra_dir),
                  "file_kind": file_kind, "files_found": len(index), "limit": limit,
                  "grid": g.name}
    if kind_key == "apstar":
        provenance["continuum"] = continuum.describe()

    def fill(buffer: _Buffer, report: IngestReport) -> None:
        report.selection = _selection_summary(sel, counts, len(df))
        report.n_candidates = int(rows.size)
        used: dict[Path, int] = {}
        with _progress(rows.size, f"ingest {file_kind}", progress) as bar:
            for r in rows:
                if limit is not None and report.n_ingested + len(buffer) >= limit:
                    break
                bar.update(1)
                rec = records[r]
                star = str(rec.get("APOGEE_ID", "")).strip()
                path = index.find(star, _text(rec.get("TELESCOPE")), _text(rec.get("FIELD")))
                if path is None:
                    report.skip("missing file", star,
                                f"no {file_kind} file for this APOGEE_ID under {spectra_dir}")
                    continue
                if path in used:
                    report.skip("duplicate", star,
                                f"{path} was already ingested for allStar row {used[path]}")
                    continue
                try:
                    spec = reader(path, grid=g)
                except (StellarscopeError, OSError) as exc:  # OSError: e.g. permissions
                    report.skip("unreadable", path, _unreadable_reason(exc))
                    continue
                used[path] = int(r)
                row = dict(rec, ALLSTAR_ROW=int(r), SOURCE_FILE=str(path))
                buffer.add(spec.flux, spec.error, spec.pixmask, normalized=spec.normalized,
                           row=row, label=str(path))
                bar.set_postfix(ok=report.n_ingested + len(buffer), skipped=len(report.skipped))

    return _write_store(out, mode="allstar", kind="ingested", grid=g, dtype=dtype,
                        overwrite=overwrite, sources=[allstar, spectra_dir],
                        provenance=provenance, continuum=continuum, batch_size=batch_size,
                        fill=fill)


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


# --- contspec trio -------------------------------------------------------------------------------


def ingest_contspec(flux_path, err_path, mask_path, out, *, allstar=None,
                    selection: str | Selection = "none", selection_overrides: dict | None = None,
                    limit: int | None = None, dtype: str = "float32", overwrite: bool = False,
                    batch_size: int = 4096, progress: bool = True,
                    bad_bits: str = "astronn") -> IngestReport:
    """Stream astroNN's contspec trio (already normalised) into a store.

    With ``allstar`` its rows (one per contspec row, same order) are the catalog and
    ``selection`` applies; without it the stars get IDs ``contspec-<row>``.
    """
    from .io import iter_contspec, read_contspec

    check_output(out, overwrite)
    flux_mm, _, _ = read_contspec(flux_path, err_path, mask_path)
    n_rows, n_pix = flux_mm.shape
    g = get_grid(n_pix)
    sel = get_selection(selection, **(selection_overrides or {}))
    df = None
    counts = []
    if allstar is not None:
        df = _read_allstar_rows(allstar)
        if len(df) != n_rows:
            raise BadFileError(allstar, f"has {len(df)} rows but {flux_path} holds {n_rows} "
                                        "spectra; contspec rows must match allStar rows one to one")
        keep, counts = sel.report(df)
    elif sel.cuts() or sel.dedup_by_id:
        raise BadDataError(f"selection {sel.name!r} needs catalog columns: pass the allStar file")
    else:
        keep = np.ones(n_rows, dtype=bool)
    rows = np.nonzero(keep)[0]
    if limit is not None:
        rows = rows[:limit]
    continuum = ContinuumSettings(bad_bits=bad_bits)
    provenance = {"mode": "contspec", "files": [str(flux_path), str(err_path), str(mask_path)],
                  "allstar": None if allstar is None else str(allstar), "limit": limit,
                  "normalization": "astroNN contspec (already continuum-normalised)"}

    def fill(buffer: _Buffer, report: IngestReport) -> None:
        if df is not None:
            report.selection = _selection_summary(sel, counts, len(df))
        report.n_candidates = int(rows.size)
        with _progress(rows.size, "ingest contspec", progress) as bar:
            for batch in iter_contspec(flux_path, err_path, mask_path, batch_size=batch_size,
                                       rows=rows):
                c = clean(batch.flux, batch.error, batch.mask, bad_bits=bad_bits)
                usable = ~c.bad.all(axis=1)
                for r in batch.rows[~usable]:
                    report.skip("no good pixels", f"row {r}", "every pixel is flagged or NaN")
                if df is not None:
                    ids = df["APOGEE_ID"].to_numpy()[batch.rows]
                    for k in np.nonzero(usable)[0]:
                        usable[k] = buffer.first_time(ids[k], f"row {batch.rows[k]}")
                    cat = df.iloc[batch.rows[usable]].reset_index(drop=True)
                else:
                    cat = pd.DataFrame({"APOGEE_ID": [f"contspec-{r:07d}" for r in batch.rows[usable]]})
                cat["CONTSPEC_ROW"] = batch.rows[usable]
                if usable.any():
                    buffer.writer.append(c.flux[usable], c.error[usable], batch.mask[usable], cat)
                    report.n_ingested += int(usable.sum())
                bar.update(len(batch.rows))

    return _write_store(out, mode="contspec", kind="ingested", grid=g, dtype=dtype,
                        overwrite=overwrite,
                        sources=[flux_path, err_path, mask_path] + ([allstar] if allstar else []),
                        provenance=provenance, continuum=continuum, batch_size=batch_size,
                        fill=fill)


# --- a user's HDF5/NPZ file ------------------------------------------------------------------


def looks_normalized(flux: np.ndarray) -> bool:
    """Whether spectra look continuum-normalised (median flux near 1)."""
    finite = flux[np.isfinite(flux)]
    return bool(finite.size) and 0.5 < float(np.median(finite)) < 1.5


def ingest_generic(path, out, *, normalize: bool | None = None, limit: int | None = None,
                   dtype: str = "float32", overwrite: bool = False,
                   continuum: ContinuumSettings | None = None, batch_size: int = 1024,
                   progress: bool = True) -> IngestReport:
    """Store a user's HDF5/NPZ file of spectra on an APOGEE grid (labels → catalog columns).

    ``normalize=None`` normalises only spectra whose median flux is far from 1.
    """
    from .io import read_generic

    check_output(out, overwrite)
    arrays = read_generic(path)
    if arrays.grid is None:
        raise BadFileError(path, f"its {arrays.flux.shape[1]} wavelengths are not an APOGEE grid; "
                                 "resample the spectra onto one (e.g. apogee7514) first")
    g = get_grid(arrays.grid)
    n = len(arrays) if limit is None else min(limit, len(arrays))
    already = looks_normalized(arrays.flux[:n])
    do_norm = (not already) if normalize is None else bool(normalize)
    continuum = continuum or ContinuumSettings()
    cat = arrays.labels.iloc[:n].reset_index(drop=True).copy()
    if "APOGEE_ID" not in cat.columns:
        ids = arrays.ids[:n] if arrays.ids is not None else [f"{Path(path).stem}-{i:07d}" for i in range(n)]
        cat.insert(0, "APOGEE_ID", [str(i) for i in ids])
    cat["SOURCE_ROW"] = np.arange(n)
    provenance = {"mode": "generic", "file": str(path), "limit": limit,
                  "normalized_on_ingest": do_norm, "looked_normalized": already}
    if do_norm:
        provenance["continuum"] = continuum.describe()
    records = cat.to_dict("records")
    state = False if do_norm else (True if already else None)

    def fill(buffer: _Buffer, report: IngestReport) -> None:
        report.n_candidates = n
        with _progress(n, "ingest generic", progress) as bar:
            for i in range(n):
                buffer.add(arrays.flux[i], arrays.error[i], arrays.mask[i],
                           normalized=state, row=records[i], label=f"row {i}")
                bar.update(1)

    return _write_store(out, mode="generic", kind="generic", grid=g, dtype=dtype,
                        overwrite=overwrite, sources=[path], provenance=provenance,
                        continuum=continuum, batch_size=batch_size, fill=fill,
                        normalized=do_norm or already)


# --- individual files ----------------------------------------------------------------------------


def header_row(spec, path, kind: str) -> dict:
    """Catalog row of a file without an allStar: its header values, kind and path."""
    row = {k: spec.meta.get(k) for k in HEADER_COLUMNS}
    row["APOGEE_ID"] = _text(row["APOGEE_ID"]) or Path(path).stem
    for k in ("SNR", "RA", "DEC"):
        row[k] = np.nan if row[k] is None else float(row[k])
    for k in ("TELESCOPE", "FIELD"):
        row[k] = _text(row[k]) or ""
    row["FILE_KIND"] = kind
    row["SOURCE_FILE"] = str(path)
    return row


def ingest_files(paths: Iterable, out, *, grid: str | Grid = "apogee7514",
                 dtype: str = "float32", overwrite: bool = False,
                 continuum: ContinuumSettings | None = None, batch_size: int = 256,
                 progress: bool = True) -> IngestReport:
    """Store individual apStar / aspcapStar / apVisit files (apVisits shifted to rest frame);
    the catalog is built from each file's header (:data:`HEADER_COLUMNS`)."""
    from .io import SPECTRUM_KINDS, detect_kind, read_spectrum

    paths = [Path(p) for p in paths]
    check_output(out, overwrite)
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    continuum = continuum or ContinuumSettings()
    provenance = {"mode": "files", "grid": g.name, "continuum": continuum.describe()}

    def fill(buffer: _Buffer, report: IngestReport) -> None:
        report.n_candidates = len(paths)
        ingested = []
        with _progress(len(paths), "ingest files", progress) as bar:
            for path in paths:
                bar.update(1)
                try:
                    kind = detect_kind(path)
                    if kind not in SPECTRUM_KINDS:
                        raise BadFileError(path, f"is a {kind} file, not a single star's spectrum")
                    spec = read_spectrum(path, kind=kind, grid=g)
                except (StellarscopeError, OSError) as exc:  # OSError: e.g. permissions
                    what = "missing file" if not path.exists() else "unreadable"
                    report.skip(what, path, _unreadable_reason(exc))
                    continue
                if buffer.add(spec.flux, spec.error, spec.pixmask, normalized=spec.normalized,
                              row=header_row(spec, path, kind), label=str(path)):
                    ingested.append(str(path))
        buffer.writer.manifest["sources"] = ingested

    return _write_store(out, mode="files", kind="ingested", grid=g, dtype=dtype,
                        overwrite=overwrite, sources=[str(p) for p in paths],
                        provenance=provenance, continuum=continuum, batch_size=batch_size,
                        fill=fill)
