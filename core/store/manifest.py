"""The store manifest: what the store holds and where it came from."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from pathlib import Path

from ..errors import StoreError

FORMAT_NAME = "stellarscope-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CATALOG = "catalog.parquet"

#: What a store's ``kind`` may say; the UI shows it verbatim.
KINDS = ("mock survey", "ingested", "generic")


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def new_manifest(*, grid, kind: str, title: str, dtype: str, normalized: bool,
                 provenance: dict | None, sources: list | None) -> dict:
    if kind not in KINDS:
        raise ValueError(f"store kind must be one of {KINDS}, got {kind!r}")
    from .. import __version__

    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": kind,
        "title": title,
        "created": now_iso(),
        "stellarscope_version": __version__,
        "python": platform.python_version(),
        "grid": {
            "name": grid.name,
            "n_pix": grid.n_pix,
            "chips_apstar": [list(c) for c in grid.chips],
            "wavelength": "vacuum Angstrom, log10(lambda) = 4.179 + 6e-6 * apStar pixel",
        },
        "dtype": dtype,
        "normalized": bool(normalized),
        "n_stars": 0,
        "generation": 0,
        "parts": [],
        "sources": list(sources or []),
        "provenance": dict(provenance or {}),
        "columns": {},
        "history": [],
    }


def read_manifest(store_dir: Path) -> dict:
    path = Path(store_dir) / MANIFEST
    if not Path(store_dir).is_dir():
        raise StoreError(f"{store_dir}: no such store directory")
    if not path.is_file():
        raise StoreError(f"{store_dir}: not a Stellarscope store (no {MANIFEST})")
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable manifest ({exc})") from exc
    if m.get("format") != FORMAT_NAME:
        raise StoreError(f"{path}: not a Stellarscope store manifest (format={m.get('format')!r})")
    if int(m.get("version", 0)) > FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {m['version']} is newer than this Stellarscope "
            f"understands ({FORMAT_VERSION}); upgrade stellarscope"
        )
    return m


def file_blake2b(path: str | os.PathLike) -> str:
    """Hex BLAKE2b digest of a file's bytes (streamed: constant memory)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "blake2b").hexdigest()


def file_record(path: Path) -> dict:
    """What the manifest records of a file it vouches for: size and checksum."""
    return {"bytes": int(path.stat().st_size), "blake2b": file_blake2b(path)}


def catalog_file(manifest: dict) -> str:
    """The catalog file a manifest belongs to (stores before generations: catalog.parquet)."""
    entry = manifest.get("catalog")
    return entry["file"] if isinstance(entry, dict) and entry.get("file") else CATALOG


def catalog_name(generation: int) -> str:
    """Catalog file of a generation: each update writes a new one, so the manifest (written
    last) is the one commit point and a reader never sees a catalog it does not name."""
    return CATALOG if generation == 0 else f"catalog-{generation:06d}.parquet"
