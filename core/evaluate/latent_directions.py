"""What each free latent of a VAE does, in words a user can read.

For every free latent k, at a reference point (z = 0, the prior mean, and the training
catalog's mean labels, unless another point is given):

* **what it changes** — the flux change over ±1σ of the prior, ``Δ_k = ½ (f(z + e_k) −
  f(z − e_k))`` (a finite difference through the decoder, so any model with ``decode`` works),
  its RMS over the pixels (the order of the sliders), the wavelengths it moves most, the
  line-list lines it moves most (with their species and element) and each element's share
  of Δ_k² at its lines;
* **what it knows** — a nonlinear R² of every label column from that one latent (k-nearest
  neighbour regression fitted on one half of the stars, scored on the other, both ways:
  :func:`core.evaluate.probe.cross_fit_r2`), for the labels the VAE is not given (VMICRO,
  [X/Fe] … — what a free latent may legitimately hold) and, marked apart, for the injected
  ones (a leak).

:func:`directions_for` computes this once per (weights, store generation) and caches it as
JSON under ``$STELLARSCOPE_HOME/cache/latent-directions`` — never in the model directory,
which may be read-only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..labels import LABELS, clean, display_name
from ..paths import home
from ..store.atomic import write_json_atomic
from .probe import cross_fit_r2, split_halves

#: Bumped when the content of the cached result changes meaning.
VERSION = 1
#: Lines whose Δ is interpolated at their wavelength; lines closer than this many pixels to an
#: already listed one are blends of the same feature and are not listed again.
LINE_SEPARATION_PIX = 3
#: A pixel belongs to a line when its centre lies within this many pixels of the line.
LINE_HALF_WIDTH_PIX = 1.0
#: Stars used for the R² (a seeded random subset of a larger store).
MAX_STARS = 10_000
#: Stars encoded when the catalog holds no latents of this model.
MAX_ENCODED = 3_000
#: A column missing for more than this fraction of the stars is not probed.
MAX_MISSING = 0.2
#: Restatements of an injected label (no fair "other label" for it).
RESTATES = {"FE_H": ("M_H",), "M_H": ("FE_H",)}


# -- what a latent changes ------------------------------------------------------------------------

def flux_changes(decode, n_latent: int, z0, labels0, step: float = 1.0) -> np.ndarray:
    """(n_latent, n_pix): ½ (f(z0 + step·e_k) − f(z0 − step·e_k)), one batched decode."""
    z0 = np.asarray(z0, np.float32).reshape(-1)
    eye = np.eye(n_latent, dtype=np.float32) * np.float32(step)
    flux = np.asarray(decode(np.vstack([z0 + eye, z0 - eye]),
                             np.asarray(labels0, np.float32)), np.float64)
    return 0.5 * (flux[:n_latent] - flux[n_latent:])


def _line_table(linelist: pd.DataFrame, wave: np.ndarray) -> pd.DataFrame:
    ll = linelist[(linelist["wavelength_vac"] >= wave[0])
                  & (linelist["wavelength_vac"] <= wave[-1])].reset_index(drop=True)
    pos = np.interp(ll["wavelength_vac"].to_numpy(), wave, np.arange(wave.size))
    return ll.assign(pix=pos)


def top_lines(change: np.ndarray, wave: np.ndarray, lines: pd.DataFrame, n: int = 3
              ) -> list[dict]:
    """The ``n`` lines at which ``change`` (n_pix,) is largest in size, blends listed once.

    ``lines`` is :func:`_line_table` output.  Δ is interpolated at each line's wavelength,
    so of two lines in one pixel the closer one to the moved pixels wins.
    """
    finite = np.isfinite(change)
    if not finite.any() or lines.empty:
        return []
    delta = np.interp(lines["pix"].to_numpy(), np.arange(wave.size), np.where(finite, change, 0))
    order = np.argsort(-np.abs(delta), kind="stable")
    out, taken = [], []
    for i in order:
        if len(out) >= n or delta[i] == 0:
            break
        p = lines["pix"].iat[i]
        if any(abs(p - t) < LINE_SEPARATION_PIX for t in taken):
            continue
        taken.append(p)
        out.append({"wavelength": round(float(lines["wavelength_vac"].iat[i]), 2),
                    "species": str(lines["species"].iat[i]),
                    "element": str(lines["element"].iat[i]),
                    "delta": float(delta[i])})
    return out


def element_shares(change: np.ndarray, lines: pd.DataFrame, n_pix: int) -> dict[str, float]:
    """Each element's share of Σ Δ² that lies within a pixel of its lines, largest first."""
    power = np.where(np.isfinite(change), change, 0.0) ** 2
    total = power.sum()
    if total <= 0 or lines.empty:
        return {}
    shares = {}
    for element, grp in lines.groupby("element"):
        if not element:
            continue
        centre = np.rint(grp["pix"].to_numpy()).astype(int)
        reach = int(np.ceil(LINE_HALF_WIDTH_PIX))
        idx = np.unique(np.clip((centre[:, None] + np.arange(-reach, reach + 1)).ravel(),
                                0, n_pix - 1))
        shares[str(element)] = float(power[idx].sum() / total)
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def describe_changes(changes: np.ndarray, wave: np.ndarray, linelist: pd.DataFrame | None,
                     n_lines: int = 3, n_pixels: int = 3) -> list[dict]:
    """Per latent: RMS and max |Δ|, the wavelengths moved most, top lines, element shares."""
    lines = _line_table(linelist, wave) if linelist is not None else pd.DataFrame()
    out = []
    for k, ch in enumerate(changes):
        a = np.abs(np.where(np.isfinite(ch), ch, 0.0))
        top_pix = []
        for i in np.argsort(-a, kind="stable"):  # the strongest pixels of distinct features
            if len(top_pix) >= n_pixels or a[i] == 0:
                break
            if all(abs(i - j) >= LINE_SEPARATION_PIX for j in top_pix):
                top_pix.append(int(i))
        out.append({
            "latent": k,
            "rms": float(np.sqrt(np.mean(a**2))),
            "max_abs": float(a.max()) if a.size else 0.0,
            "top_pixels": [round(float(wave[i]), 2) for i in top_pix],
            "lines": top_lines(ch, wave, lines, n_lines) if not lines.empty else [],
            "elements": ({e: round(s, 4) for e, s in list(
                element_shares(ch, lines, wave.size).items())[:4]} if not lines.empty else {}),
        })
    return out


def slider_order(directions: list[dict]) -> list[int]:
    """Latent indices, the one that changes the spectrum most first (ties: by index)."""
    return [d["latent"] for d in sorted(directions, key=lambda d: (-d["rms"], d["latent"]))]


# -- what a latent knows --------------------------------------------------------------------------

def label_columns(catalog: pd.DataFrame, injected) -> tuple[list[str], list[str]]:
    """(other labels, injected labels) as catalog columns: every label of
    :data:`core.labels.LABELS` present, as its ``TRUE_*`` version where the store has one
    (a mock's noiseless truth); restatements of an injected label are left out."""
    skip = {r for n in injected for r in RESTATES.get(n, ())}
    other, inj = [], []
    for label in LABELS:
        col = f"TRUE_{label}" if f"TRUE_{label}" in catalog.columns else label
        if col not in catalog.columns:
            continue
        if label in injected:
            inj.append(col)
        elif label not in skip:
            other.append(col)
    return other, inj


def per_latent_r2(latents: np.ndarray, targets: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n_latent, n_targets) R² of each target from each single latent (cross-fitted k-NN)."""
    n = len(latents)
    if n < 40:
        raise ValueError(f"per-latent R² needs at least 40 stars, got {n}")
    halves = split_halves(np.random.default_rng(seed), n)
    return np.stack([cross_fit_r2(latents[:, [k]], targets, halves, "knn").mean(0)
                     for k in range(latents.shape[1])])


def correlations(latents: np.ndarray, catalog: pd.DataFrame, injected, seed: int = 0) -> dict:
    """Per-latent R² against every usable label column of ``catalog`` (rows = latents' rows)."""
    other, inj = label_columns(catalog, injected)
    cols, dropped = [], {}
    values = {}
    for c in other + inj:
        v = clean(pd.to_numeric(catalog[c], errors="coerce").to_numpy(np.float64))
        miss = float(np.isnan(v).mean())
        if miss > MAX_MISSING or np.nanstd(v) == 0:
            dropped[c] = f"missing for {miss:.0%} of the stars" if miss > MAX_MISSING else \
                "constant"
            continue
        cols.append(c)
        values[c] = v
    if not cols:
        return {"columns": [], "injected": [], "r2": [], "dropped": dropped, "n_stars": 0}
    y = np.column_stack([values[c] for c in cols])
    keep = np.isfinite(y).all(1) & np.isfinite(latents).all(1)
    r2 = per_latent_r2(latents[keep], y[keep], seed)
    return {"columns": cols, "injected": [c for c in cols if c in inj],
            "names": [display_name(c.removeprefix("TRUE_")) for c in cols],
            "r2": np.round(np.clip(r2, -1, 1), 4).tolist(), "dropped": dropped,
            "n_stars": int(keep.sum()), "method": "k-NN, fitted on one half, scored on the "
                                                  "other, both ways (mean)"}


# -- the latents of a store's stars -----------------------------------------------------------------

def weights_hash(model_dir) -> str | None:
    """SHA-256 of the model's weight files, or None without a model directory."""
    if not model_dir or not Path(model_dir).is_dir():
        return None
    from ..demo import weights_sha256

    return weights_sha256(Path(model_dir))


def _sample_rows(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def store_latents(vae, store, digest: str | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                         str]:
    """(rows, latents μ, where from): the catalog's ``VAE_Z*`` columns when its manifest says
    this model wrote them, else a seeded sample encoded here."""
    k = int(vae.n_latent)
    cat = store.catalog
    zcols = [f"VAE_Z{i:02d}" for i in range(k)]
    notes = store.manifest.get("columns", {})
    note = notes.get(zcols[0], {}) if all(c in cat.columns for c in zcols) else None
    model_dir = getattr(vae, "model_dir", "")
    same = note is not None and (
        (digest is not None and note.get("model_sha256") == digest)
        or (bool(model_dir) and bool(note.get("model"))
            and os.path.realpath(note["model"]) == os.path.realpath(model_dir)))
    if same:
        rows = _sample_rows(len(cat), MAX_STARS, seed)
        return rows, cat[zcols].to_numpy(np.float64)[rows], "the catalog's VAE_Z columns"
    rows = _sample_rows(len(cat), MAX_ENCODED, seed)
    if hasattr(vae, "predict_batch") and hasattr(vae, "prepare"):
        from ..inference.predictor import SpectraBatch

        parts = []
        for i in range(0, rows.size, 512):
            b = SpectraBatch.from_store(store, store.read(rows[i:i + 512]))
            parts.append(vae.predict_batch(vae.prepare(b)).outputs["latents"])
        mu = np.concatenate(parts).astype(np.float64)
    else:  # a predictor with only encode(): one star at a time
        names = list(vae.label_names)
        mu = np.full((rows.size, k), np.nan)
        for j, r in enumerate(rows):
            y = pd.to_numeric(cat[names].iloc[r], errors="coerce").to_numpy(np.float64)
            if np.isfinite(y).all():
                mu[j] = vae.encode(store.spectrum(int(r)), labels=y)["mu"]
    return rows, mu, f"{rows.size} stars encoded"


# -- all of it, cached ---------------------------------------------------------------------------

def compute(vae, store=None, *, wave=None, linelist=None, z0=None, labels0=None,
            seed: int = 0, digest: str | None = None) -> dict:
    """The directions of every free latent (see the module docstring), as a JSON-able dict."""
    k = int(vae.n_latent)
    if wave is None:
        wave = vae.grid.wavelength
    wave = np.asarray(wave, np.float64)
    if linelist is None:
        from ..linelist import load_linelist

        linelist = load_linelist()
    z0 = np.zeros(k, np.float32) if z0 is None else np.asarray(z0, np.float32)
    labels0 = np.asarray(vae.label_mean if labels0 is None else labels0, np.float32)
    dirs = describe_changes(flux_changes(vae.decode, k, z0, labels0), wave, linelist)
    result = {"format": "stellarscope-latent-directions", "version": VERSION,
              "model": str(getattr(vae, "model_dir", "") or ""), "weights_sha256": digest,
              "point": {"z": z0.tolist(), "labels": dict(zip(vae.label_names,
                                                             labels0.tolist(), strict=True))},
              "step_sigma": 1.0, "order": slider_order(dirs), "directions": dirs,
              "correlations": None, "correlations_problem": ""}
    if store is None:
        result["correlations_problem"] = "no store open"
        return result
    result["store"] = {"path": str(store.path), "store_id": store.manifest.get("store_id"),
                       "generation": store.generation}
    try:
        rows, mu, source = store_latents(vae, store, digest, seed)
        corr = correlations(mu, store.catalog.iloc[rows].reset_index(drop=True),
                            tuple(vae.label_names), seed)
        corr["latents_from"] = source
        # the spread of the stars' latents: what "inside the training distribution" means here
        finite = np.isfinite(mu).all(1)
        if finite.sum() >= 40:
            lo, hi = np.percentile(mu[finite], [0.1, 99.9], axis=0)
            corr["latent_p001"], corr["latent_p999"] = lo.round(3).tolist(), hi.round(3).tolist()
        result["correlations"] = corr
    except (ValueError, KeyError, OSError) as exc:  # shown to the user beside the table
        result["correlations_problem"] = f"{type(exc).__name__}: {exc}"
    return result


def cache_dir() -> Path:
    return home() / "cache" / "latent-directions"


def cache_path(digest: str, store=None) -> Path:
    """``<weights hash>-<store id>-g<generation>.json`` under :func:`cache_dir`."""
    tail = "nostore"
    if store is not None:
        tail = f"{str(store.manifest.get('store_id') or 'anon')[:12]}-g{store.generation}"
    return cache_dir() / f"v{VERSION}-{digest[:20]}-{tail}.json"


def directions_for(vae, store=None, *, use_cache: bool = True, seed: int = 0) -> dict:
    """:func:`compute` for ``vae`` and ``store``, read from or written to the cache when the
    model has a weights file (a new store generation or new weights miss the cache)."""
    digest = weights_hash(getattr(vae, "model_dir", ""))
    path = cache_path(digest, store) if digest and use_cache else None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("version") == VERSION and cached.get("weights_sha256") == digest:
                cached["cached"] = str(path)
                return cached
        except (OSError, ValueError):
            pass  # an unreadable cache file is recomputed and replaced
    result = compute(vae, store, seed=seed, digest=digest)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, result)
        except OSError:
            pass  # a read-only home: the result is still shown, only not kept
    return result
