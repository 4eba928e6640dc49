"""Full consistency check of a store: every part re-read and re-hashed against the manifest.

:meth:`SpectraStore.open` checks only HDF5 shapes (cheap); :func:`verify_store` reads every
byte, so it also finds flipped bits and parts whose data cannot be decompressed.  Stores
written before checksums were recorded are checked for rows and readability, and the report
says that their checksums are not recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py

from ..errors import StoreError
from .manifest import catalog_file, file_blake2b, read_manifest

_ROWS_PER_READ = 1024


@dataclass
class VerifyReport:
    """What :func:`verify_store` found: ``problems`` is empty for a sound store."""

    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parts_checked: int = 0
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "seconds": round(self.seconds, 3)}

    def format(self) -> str:
        head = (f"verify: {'OK' if self.ok else f'{len(self.problems)} problem(s)'} — "
                f"{self.parts_checked} part(s), {self.bytes_read / 2**20:.1f} MiB read in "
                f"{self.seconds:.1f} s")
        lines = [head] + [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def verify_store(path, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Re-read every part and the catalog of the store at ``path`` and compare them with the
    manifest (rows, pixels, sizes, BLAKE2b checksums).  ``progress`` gets bytes as they are
    hashed.  Problems are collected, not raised (except for an unreadable manifest)."""
    t0 = time.perf_counter()
    path = Path(path)
    report = VerifyReport(str(path))
    try:
        m = read_manifest(path)
    except StoreError as exc:
        report.problems.append(str(exc))
        report.seconds = time.perf_counter() - t0
        return report
    from ..grid import get_grid

    n_pix = get_grid(m["grid"]["name"]).n_pix
    parts = m.get("parts", [])
    unsummed = [p["file"] for p in parts if "blake2b" not in p]
    total = 0
    for p in parts:
        total += _check_part(path, p, n_pix, report, progress)
    if total != int(m.get("n_stars", -1)):
        report.problems.append(f"manifest says {m.get('n_stars')} stars but its parts list "
                               f"{total} rows")
    _check_catalog(path, m, report)
    if unsummed:
        report.notes.append(f"checksums are not recorded for {len(unsummed)} part(s) (a store "
                            "written before checksums): rows and readability were checked")
    report.seconds = time.perf_counter() - t0
    return report


def _check_part(root: Path, p: dict, n_pix: int, report: VerifyReport, progress) -> int:
    f = root / p["file"]
    rows = int(p["rows"])
    report.parts_checked += 1
    if not f.is_file():
        report.problems.append(f"spectra part {p['file']} is missing")
        return rows
    size = f.stat().st_size
    if "bytes" in p and size != int(p["bytes"]):
        report.problems.append(f"spectra part {p['file']} has {size} bytes but the manifest "
                               f"recorded {p['bytes']}")
    if "blake2b" in p:
        digest = file_blake2b(f)
        report.bytes_read += size
        if progress:
            progress(size)
        if digest != p["blake2b"]:
            report.problems.append(f"spectra part {p['file']}: checksum mismatch (the file "
                                   "changed since it was written)")
    try:
        with h5py.File(f, "r") as h5:
            for key in ("flux", "error", "pixmask"):
                ds = h5[key]
                if tuple(ds.shape) != (rows, n_pix):
                    report.problems.append(
                        f"spectra part {p['file']}: {key} has shape {tuple(ds.shape)}, the "
                        f"manifest says {rows} rows × {n_pix} pixels")
                    continue
                for start in range(0, rows, _ROWS_PER_READ):
                    ds[start:start + _ROWS_PER_READ]  # every chunk decompresses
            if "blake2b" not in p:
                report.bytes_read += size
                if progress:
                    progress(size)
    except (OSError, KeyError, ValueError) as exc:
        report.problems.append(f"spectra part {p['file']} cannot be read "
                               f"({type(exc).__name__}: {exc})")
    return rows


def _check_catalog(root: Path, m: dict, report: VerifyReport) -> None:
    import pandas as pd

    name = catalog_file(m)
    f = root / name
    if not f.is_file():
        report.problems.append(f"catalog {name} is missing")
        return
    rec = m.get("catalog") if isinstance(m.get("catalog"), dict) else {}
    if rec.get("blake2b") and file_blake2b(f) != rec["blake2b"]:
        report.problems.append(f"catalog {name}: checksum mismatch (the file changed since it "
                               "was written)")
    elif not rec.get("blake2b"):
        report.notes.append(f"no checksum is recorded for catalog {name}")
    try:
        cat = pd.read_parquet(f)
    except Exception as exc:  # pyarrow raises several types for bad files
        report.problems.append(f"catalog {name} cannot be read ({exc})")
        return
    report.bytes_read += f.stat().st_size
    if len(cat) != int(m.get("n_stars", -1)):
        report.problems.append(f"catalog {name} has {len(cat)} rows for {m.get('n_stars')} "
                               "spectra")
    if "APOGEE_ID" not in cat.columns:
        report.problems.append(f"catalog {name} has no APOGEE_ID column")
    else:
        dup = int(cat["APOGEE_ID"].astype(str).duplicated().sum())
        if dup:
            report.notes.append(f"{dup} catalog row(s) repeat an earlier APOGEE_ID (lookups by "
                                "ID find the first)")
