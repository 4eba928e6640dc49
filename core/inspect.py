"""One-screen summaries of a FITS file (read through :mod:`core.io`) or a store directory."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .errors import BadFileError

#: Order and labels of the text summary; keys not listed are printed after these.
_LABELS = {
    "path": "path", "what": "what", "kind": "kind", "title": "title", "object": "object",
    "telescope": "telescope", "field": "field", "grid": "grid", "pixels": "pixels",
    "wavelength_range": "wavelength (Å)", "snr": "SNR", "masked_fraction": "masked fraction",
    "file_normalized": "normalised in file", "median_normalized_flux": "median normalised flux",
    "continuum": "continuum", "n_stars": "stars", "n_rows": "rows", "dtype": "dtype",
    "normalized": "normalised", "created": "created", "parts": "parts", "columns": "columns",
    "label_columns": "label columns", "sources": "sources",
}


def _resolve(path) -> Path:
    p = Path(path)
    if not p.exists():
        from .paths import resolve_store

        named = resolve_store(path)  # a bare store name under $STELLARSCOPE_HOME/stores
        p = named if named.is_dir() else p
    return p


def summarize(path) -> dict:
    """Summary of a store (directory or name) or a FITS/HDF5/NPZ file; BadFileError for bad
    files, StoreError for a store whose files disagree with its manifest."""
    p = _resolve(path)
    if p.is_dir():
        return summarize_store(p)
    if not p.exists():
        raise BadFileError(p, "no such file or directory")
    return summarize_file(p)


def verify(path):
    """(summary, :class:`~core.store.VerifyReport`) of a store, every byte re-read.  The
    summary is a short one when the store cannot even be opened."""
    from .errors import StoreError
    from .store import verify_store

    p = _resolve(path)
    if not p.is_dir():
        raise StoreError(f"{p}: --verify checks a store directory, and this is not one")
    report = verify_store(p)
    try:
        summary = summarize_store(p)
    except StoreError as exc:
        summary = {"path": str(p), "what": "store", "problem": str(exc)}
    return summary, report


def summarize_store(path) -> dict:
    from .store import SpectraStore

    store = SpectraStore.open(path)
    m = store.manifest
    cat = store.catalog
    parts = m.get("parts", [])
    summed = sum("blake2b" in part for part in parts)
    return {
        "path": str(store.path),
        "what": "store",
        "kind": store.kind,
        "title": store.title,
        "n_stars": store.n_stars,
        "grid": store.grid.name,
        "pixels": store.grid.n_pix,
        "wavelength_range": _range(store.wavelength),
        "dtype": m.get("dtype"),
        "normalized": store.normalized,
        "created": m.get("created"),
        "parts": len(parts),
        "checksums": "recorded" if summed == len(parts) else
                     f"not recorded for {len(parts) - summed} of {len(parts)} parts",
        "generation": store.generation,
        "columns": [str(c) for c in cat.columns],
        "label_columns": store.label_columns(),
        "sources": [str(s) for s in m.get("sources", [])],
    }


def summarize_file(path) -> dict:
    from .io import CATALOG_KINDS, SPECTRUM_KINDS, detect_kind

    kind = detect_kind(path)
    if kind in SPECTRUM_KINDS:
        return _spectrum_summary(path, kind)
    if kind in CATALOG_KINDS:
        return _catalog_summary(path, kind)
    if kind == "contspec":
        return _contspec_summary(path)
    return _generic_summary(path)


def _spectrum_summary(path, kind: str) -> dict:
    from .io import read_spectrum
    from .preprocess.policy import prepare_file_spectrum

    spec = read_spectrum(path, kind=kind)
    good = spec.good()
    norm = prepare_file_spectrum(spec, source=path)  # as `fit --file` and the app's upload
    flux = norm.flux[norm.good()] if spec.normalized else norm.flux[good]
    out = {
        "path": os.fspath(path),
        "what": "spectrum",
        "kind": kind,
        "object": spec.apogee_id,
        "telescope": spec.meta.get("TELESCOPE"),
        "field": spec.meta.get("FIELD"),
        "grid": spec.grid,
        "pixels": spec.n_pix,
        "wavelength_range": _range(spec.wavelength[good] if good.any() else spec.wavelength),
        "snr": _num(spec.snr()),
        "masked_fraction": round(spec.masked_fraction(), 4),
        "file_normalized": spec.normalized,
        "median_normalized_flux": _num(np.median(flux)) if flux.size else None,
        "continuum": "from the file (ASPCAP)" if spec.normalized else
                     f"{norm.meta.get('CONTINUUM_METHOD')}, Chebyshev degree "
                     f"{norm.meta.get('CONTINUUM_DEGREE')} per chip",
    }
    for key in ("ROW_KIND", "VISITS_IN_FILE", "FRAME", "RV_USED"):
        if spec.meta.get(key) is not None:
            out[key.lower()] = _plain(spec.meta[key])
    return out


def _catalog_summary(path, kind: str) -> dict:
    from .io import read_catalog

    df = read_catalog(path, kind=kind)
    missing = list(df.attrs.get("missing_columns", []))
    return {
        "path": os.fspath(path),
        "what": "catalog",
        "kind": kind,
        "n_rows": len(df),
        "release": df.attrs.get("release"),
        "unique_apogee_ids": int(df["APOGEE_ID"].nunique()) if "APOGEE_ID" in df else None,
        "columns": [c for c in df.columns if c not in missing],
        "missing_columns": missing,
    }


def _contspec_summary(path) -> dict:
    from .io.contspec import map_image

    image = map_image(path)
    n_rows, n_pix = image.shape
    try:
        from .grid import get_grid

        grid = get_grid(n_pix).name
    except KeyError:
        grid = None
    return {"path": os.fspath(path), "what": "image of spectra", "kind": "contspec",
            "n_rows": n_rows, "pixels": n_pix, "grid": grid}


def _generic_summary(path) -> dict:
    from .io import read_generic

    arr = read_generic(path)
    return {
        "path": os.fspath(path), "what": "spectra arrays", "kind": "generic",
        "n_stars": len(arr), "grid": arr.grid, "pixels": int(arr.flux.shape[1]),
        "wavelength_range": _range(arr.wavelength),
        "columns": [str(c) for c in arr.labels.columns],
    }


def _range(wavelength) -> list[float]:
    w = np.asarray(wavelength, dtype=np.float64)
    return [round(float(w.min()), 2), round(float(w.max()), 2)] if w.size else []


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, 4)


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return _num(v)
    return v


def format_summary(summary: dict) -> str:
    """Aligned ``label: value`` lines; long lists are shortened."""
    keys = [k for k in _LABELS if k in summary] + [k for k in summary if k not in _LABELS]
    width = max(len(_LABELS.get(k, k)) for k in keys)
    lines = []
    for k in keys:
        v = summary[k]
        if isinstance(v, list):
            if k == "wavelength_range" and len(v) == 2:
                v = f"{v[0]:.2f} – {v[1]:.2f}"
            else:
                shown = ", ".join(map(str, v[:12]))
                v = f"{shown}{f', … ({len(v)} in all)' if len(v) > 12 else ''}" if v else "—"
        elif v is None:
            v = "—"
        lines.append(f"{_LABELS.get(k, k):<{width}}  {v}")
    return "\n".join(lines)
