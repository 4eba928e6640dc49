"""Does a model apply to a star?  Its χ²_ν and latents against the model's training stars.

:func:`reference` gives percentiles (:data:`PERCENTILES`) of the VAE's χ²_ν, of each latent
μ and of the emulator fit's χ²_ν, from (in order)

1. the model's ``config.json`` key ``training.applicability`` (saved at training time), e.g.
   ``{"vae_chi2": [p0.1, p1, p50, p99, p99.9], "latents": [[…], …], "fit_chi2": […]}``;
2. the store's catalog columns this model wrote (``VAE_CHI2``, ``VAE_Z00`` …, ``FIT_CHI2``),
   recognised by the ``model`` the store's manifest records for each column; cached;
3. nothing (None): then no judgement is made.

:func:`judge` turns one star's values into plain-language reasons (empty list = fine).
Without fit percentiles the fit's χ²_ν is judged by the MODEL_MISMATCH rule
(:data:`MISMATCH_CHI2`, as in :class:`core.fit.FitOptions`).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from ..errors import StellarscopeError
from .io import read_config

PERCENTILES = (0.1, 1.0, 50.0, 99.0, 99.9)
#: The fit's MODEL_MISMATCH threshold (core.fit.engine.FitOptions.mismatch_chi2).
MISMATCH_CHI2 = 3.0
STORE_SOURCE = "this store's catalog"
_LATENT = re.compile(r"^VAE_Z(\d+)$")
_cache: dict[tuple, dict | None] = {}
_lock = threading.Lock()


def model_dir_of(model) -> str:
    """The directory a model (predictor, path) was loaded from; '' when unknown."""
    if model is None:
        return ""
    if isinstance(model, (str, Path)):
        return str(model)
    return str(getattr(model, "model_dir", "") or "")


def _saved(model) -> dict | None:
    """``training.applicability`` from the model's config (in memory, else its config.json)."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "training" not in config:
        where = model_dir_of(model)
        try:
            config = read_config(where) if where else None
        except StellarscopeError:
            config = None
    if not isinstance(config, dict):
        return None
    saved = (config.get("training") or {}).get("applicability")
    return _clean(saved) if isinstance(saved, dict) else None


def _clean(saved: dict) -> dict | None:
    out = {"source": "saved with the model"}
    for key in ("vae_chi2", "fit_chi2"):
        if saved.get(key) is not None:
            out[key] = np.asarray(saved[key], dtype=float).reshape(len(PERCENTILES))
    if saved.get("latents") is not None:
        out["latents"] = np.asarray(saved["latents"], dtype=float).reshape(-1, len(PERCENTILES))
    return out if len(out) > 1 else None


def _same_dir(a: str, b: str) -> bool:
    if not a or not b:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def _percentiles(values) -> np.ndarray | None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return np.percentile(v, PERCENTILES) if v.size else None


def from_catalog(catalog, columns_note: dict, model_dir: str) -> dict | None:
    """Percentiles of the catalog columns whose manifest note names ``model_dir``."""
    def mine(col):
        return col in catalog.columns and _same_dir(
            str((columns_note.get(col) or {}).get("model", "")), model_dir)

    out = {"source": STORE_SOURCE}
    if mine("VAE_CHI2"):
        p = _percentiles(catalog["VAE_CHI2"])
        if p is not None:
            out["vae_chi2"] = p
        zs = sorted((int(m.group(1)), c) for c in catalog.columns
                    if (m := _LATENT.match(c)) and mine(c))
        if zs and [k for k, _ in zs] == list(range(len(zs))):
            lat = [_percentiles(catalog[c]) for _, c in zs]
            if all(p is not None for p in lat):
                out["latents"] = np.vstack(lat)
    if mine("FIT_CHI2"):
        p = _percentiles(catalog["FIT_CHI2"])
        if p is not None:
            out["fit_chi2"] = p
    return out if len(out) > 1 else None


def reference(model, store=None) -> dict | None:
    """Training-distribution percentiles for ``model`` (a loaded predictor or a model dir).

    Keys (each present only when known): ``vae_chi2`` and ``fit_chi2`` (5 values, at
    :data:`PERCENTILES`), ``latents`` (n_latent × 5), ``source`` (where they came from).
    None when neither the model nor the store knows.
    """
    if model is None:
        return None
    saved = _saved(model)
    if saved is not None:
        return saved
    where = model_dir_of(model)
    if store is None or not where:
        return None
    notes = (store.manifest or {}).get("columns", {})
    # what wrote the columns, and when: rewritten columns (other weights) are recomputed
    stamp = tuple(sorted((c, str((n or {}).get("added", "")), str((n or {}).get("model", "")))
                         for c, n in notes.items()
                         if c in ("VAE_CHI2", "FIT_CHI2") or _LATENT.match(c)))
    # every catalog write is a new catalog file, recorded in the manifest
    catalog = str((store.manifest or {}).get("catalog", ""))
    key = (str(Path(where).resolve()), str(store.path), catalog, stamp)
    with _lock:
        if key in _cache:
            return _cache[key]
    ref = from_catalog(store.catalog, notes, where)
    with _lock:
        _cache[key] = ref
    return ref


def fmt(v: float, signed: bool = False) -> str:
    """Short human number: 913, 11.2, 1.9, −3.9 (a true minus sign)."""
    a = abs(v)
    text = (f"{v:+.0f}" if a >= 100 else f"{v:+.1f}" if a >= 1 else f"{v:+.2g}")
    if not signed:
        text = text.lstrip("+")
    return text.replace("-", "−")


def judge(ref: dict | None, *, vae_chi2=None, latents=None, fit_chi2=None) -> list[str]:
    """Plain-language reasons why these values lie outside ``ref`` (empty = inside, or no
    reference).  The fit's χ²_ν is judged by MODEL_MISMATCH when ``ref`` has no fit
    percentiles."""
    ref = ref or {}
    reasons = []
    # percentiles of a store's columns describe the stars it ran on, not necessarily training
    trained = ref.get("source") != STORE_SOURCE
    stars = "the stars it was trained on" if trained else "this store's stars"
    span = "the training range" if trained else "the range of this store's stars"
    top = PERCENTILES.index(99.9)
    if vae_chi2 is not None and np.isfinite(vae_chi2) and "vae_chi2" in ref:
        hi = float(ref["vae_chi2"][top])
        if vae_chi2 > hi:
            reasons.append(f"VAE χ²_ν {fmt(vae_chi2)} is above the 99.9th percentile of "
                           f"{stars} ({fmt(hi)}): the VAE does not describe "
                           "this star")
    if latents is not None and "latents" in ref:
        mu = np.asarray(latents, dtype=float).reshape(-1)
        lat = ref["latents"]
        for k in range(min(mu.size, len(lat))):
            lo, hi = float(lat[k][0]), float(lat[k][top])
            if np.isfinite(mu[k]) and not lo <= mu[k] <= hi:
                reasons.append(f"latent z{k:02d} = {fmt(mu[k], signed=True)} lies beyond "
                               f"{span} ({fmt(lo)}…{fmt(hi)})")
    if fit_chi2 is not None and np.isfinite(fit_chi2):
        if "fit_chi2" in ref:
            hi = float(ref["fit_chi2"][top])
            if fit_chi2 > hi:
                reasons.append(f"fit χ²_ν {fmt(fit_chi2)} is above the 99.9th percentile of "
                               f"the fits of {stars} ({fmt(hi)}): the emulator does not "
                               "describe this star")
        elif fit_chi2 > MISMATCH_CHI2:
            reasons.append(f"fit χ²_ν {fmt(fit_chi2)} is above {fmt(MISMATCH_CHI2)} "
                           "(MODEL_MISMATCH): the emulator does not describe this star")
    return reasons


def summary(reasons: list[str], limit: int = 4) -> str:
    """The reasons as one line for a warning box: the first ``limit``, then how many more."""
    shown = "; ".join(reasons[:limit])
    more = len(reasons) - limit
    return shown + (f"; and {more} more value{'s' if more > 1 else ''} out of range"
                    if more > 0 else "")
