"""Attention maps of the spectral transformer, mapped back to wavelength.

For one spectrum (:func:`star_attention`) the predictor cuts the good pixels into its
context-sized patches (the very patches of ``stellarscope infer``) and runs them once on the
explicit attention path.  Every label gets, over all the spectrum's pixels:

* the decoder's cross-attention of its query, per decoder layer and head;
* the **rollout** through all blocks: the decoder layers' head-averaged maps averaged (each
  layer adds its attention output to the label query, which starts with no pixel content),
  then carried back through the encoder as Π (½ A + ½ I) per layer (the residual as the
  identity), so a pixel that fed others through self-attention gets their share.

Within a patch every map sums to 1; each patch is then weighted by its share of the pixels
read, so a whole map sums to 1 (``relative=True`` multiplies by the pixels read: 1 = uniform
attention).  Pixels not read are NaN.

:func:`catalog_mean` averages the relative maps of a seeded sample of a store's stars (all,
dwarfs, giants), cached as ``.npz`` in the model directory, or under
``$STELLARSCOPE_HOME/cache/attention/<weights hash>`` when the model directory is read-only
(shipped models are never written to).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import BadDataError
from ..spectrum import Spectrum
from .predictor import SpectraBatch

#: log g that separates dwarfs (≥) from giants in the catalog mean
DWARF_LOGG = 3.5
GROUPS = ("all", "dwarfs", "giants")
MEAN_STARS = 200
ROLLOUT = "rollout"


@dataclass
class StarAttention:
    """Every attention map of one spectrum, on its pixels (see the module docstring)."""

    label_names: tuple[str, ...]
    wavelength: np.ndarray            # (P,) vacuum Å of the spectrum's pixels
    good: np.ndarray                  # (P,) pixels read
    decoder: np.ndarray               # (L, D, H, P) cross-attention per label, layer, head
    rollout: np.ndarray               # (L, P)
    labels: np.ndarray                # (L,) predicted values (physical units)
    labels_err: np.ndarray            # (L,) σ
    star: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_read(self) -> int:
        return int(self.good.sum())

    @property
    def n_layers(self) -> int:
        return self.decoder.shape[1]

    @property
    def n_heads(self) -> int:
        return self.decoder.shape[2]

    def label_index(self, label: str | int) -> int:
        return label_index(self.label_names, label)

    def map(self, label: str | int, layer: int | str = -1, head: int | None = None,
            relative: bool = True) -> np.ndarray:
        """(P,) map of ``label``: decoder ``layer`` (−1 last, or ``"rollout"``), one ``head``
        or their mean (None); ``relative``: × pixels read (1 = uniform), else sums to 1."""
        j = self.label_index(label)
        out = select(self.decoder[j], self.rollout[j], layer, head)
        return out * self.n_read if relative else out.copy()


def label_index(names, label: str | int) -> int:
    names = tuple(names)
    if isinstance(label, str):
        if label not in names:
            raise ValueError(f"label {label!r} is not one of the model's {names}")
        return names.index(label)
    j = int(label)
    if not -len(names) <= j < len(names):
        raise ValueError(f"label index {j}: the model has {len(names)} labels")
    return j % len(names)


def select(decoder: np.ndarray, rollout: np.ndarray, layer: int | str, head: int | None):
    """One map of one label from its (D, H, P) decoder maps and (P,) rollout."""
    if isinstance(layer, str):
        if layer != ROLLOUT:
            raise ValueError(f"layer {layer!r}: a decoder layer number or 'rollout'")
        if head is not None:
            raise ValueError("the rollout averages the heads: choose no head")
        return rollout
    n_layers, n_heads = decoder.shape[:2]
    if not -n_layers <= int(layer) < n_layers:
        raise ValueError(f"layer {layer}: the model has {n_layers} decoder layers")
    maps = decoder[int(layer)]
    if head is None:
        with np.errstate(invalid="ignore"):
            return maps.mean(axis=0)
    if not -n_heads <= int(head) < n_heads:
        raise ValueError(f"head {head}: the model has {n_heads} heads")
    return maps[int(head)]


def _rollout(enc: list[np.ndarray], dec: list[np.ndarray]) -> np.ndarray:
    """(patches, L, C) rollout from encoder (patches, H, C, C) and decoder (patches, H, L, C)
    maps."""
    roll = np.mean([d.mean(axis=1) for d in dec], axis=0)
    if not enc:
        return roll
    c = enc[0].shape[-1]
    eye = np.eye(c, dtype=np.float32)
    r = None
    for e in enc:  # R = R_E … R_1, each R_e = ½ A_e + ½ I
        step = 0.5 * e.mean(axis=1) + 0.5 * eye
        r = step if r is None else step @ r
    return roll @ r


def star_attention(predictor, spectrum: Spectrum | SpectraBatch) -> StarAttention:
    """All maps of one spectrum: a store star or file spectrum on an APOGEE grid, a
    :class:`SpectraBatch` of one row, or a spectrum on its own wavelengths (an apVisit's
    rest-frame pixels, read without resampling)."""
    from .transformer import patch_arrays

    names = predictor.label_names
    if isinstance(spectrum, Spectrum) and spectrum.grid is None:
        good = predictor.own_good(spectrum)[None]
        flux, error, wave_px = spectrum.flux[None], spectrum.error[None], spectrum.wavelength
        star = spectrum.label
    else:
        batch = spectrum if isinstance(spectrum, SpectraBatch) else \
            SpectraBatch.from_spectrum(predictor.prepare_spectrum(spectrum)).on_grid(
                predictor.grid)
        good = predictor._good(batch)[:1]
        flux, error, wave_px = batch.flux[:1], batch.error[:1], predictor.grid.wavelength
        star = str(batch.catalog["APOGEE_ID"].iloc[0]) if "APOGEE_ID" in batch.catalog else ""
    if not good.any():
        raise BadDataError(f"attention: {star or 'the spectrum'} has no good pixel inside the "
                           f"model's {predictor.wave_range[0]:.0f}–"
                           f"{predictor.wave_range[1]:.0f} Å")
    f, e, w, mask, owner, pix = patch_arrays(flux, error, wave_px, good,
                                             predictor.model.config.context)
    mean, logvar, enc, dec = predictor._run(f, e, w, mask, attention=True)
    labels, labels_err = predictor._combine(mean, logvar, owner, 1)
    roll = _rollout(enc, dec)                              # (n_patch, L, C)
    total = int(good.sum())
    share = (mask.sum(axis=1) / total).astype(np.float32)  # each patch's part of the map
    pos = pix[mask]
    n_pix = good.shape[1]
    n_lab, n_layers, n_heads = len(names), len(dec), dec[0].shape[1]
    out = np.full((n_lab, n_layers, n_heads, n_pix), np.nan, np.float32)
    scaled = np.stack(dec, axis=1) * share[:, None, None, None, None]   # (n, D, H, L, C)
    out[..., pos] = scaled.transpose(3, 1, 2, 0, 4)[..., mask]
    rolled = np.full((n_lab, n_pix), np.nan, np.float32)
    rolled[:, pos] = (roll * share[:, None, None]).transpose(1, 0, 2)[:, mask]
    return StarAttention(tuple(names), np.asarray(wave_px, np.float64), good[0], out, rolled,
                         labels[0], labels_err[0], star)


# -- catalog mean ------------------------------------------------------------------------------

@dataclass
class MeanAttention:
    """Relative attention (1 = uniform) averaged over a store's stars, per group."""

    label_names: tuple[str, ...]
    wavelength: np.ndarray                 # (P,) the model's grid
    decoder: dict[str, np.ndarray]         # group → (L, D, H, P)
    rollout: dict[str, np.ndarray]         # group → (L, P)
    n_stars: dict[str, int]
    path: str = ""
    info: dict = field(default_factory=dict)

    def map(self, label: str | int, layer: int | str = -1, head: int | None = None,
            group: str = "all") -> np.ndarray:
        if group not in self.decoder:
            raise ValueError(f"group {group!r}: one of {GROUPS}")
        j = label_index(self.label_names, label)
        return select(self.decoder[group][j], self.rollout[group][j], layer, head)


def cache_dir(model_dir: str | os.PathLike) -> Path:
    """Where a model's attention means are cached: its own directory when writable (and not
    a shipped model), else under ``$STELLARSCOPE_HOME/cache/attention/<weights hash>``."""
    from ..demo import weights_sha256
    from ..paths import SHIPPED_MODELS, home

    d = Path(model_dir).resolve()
    shipped = d.is_relative_to(SHIPPED_MODELS.resolve())
    if not shipped and os.access(d, os.W_OK):
        return d / "attention"
    return home() / "cache" / "attention" / weights_sha256(d)[:16]


def _store_key(store, n_stars: int, seed: int) -> str:
    parts = [str(Path(store.path).resolve()), str(len(store)), store.grid.name,
             str(n_stars), str(seed)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _groups(store, rows: np.ndarray, predicted_logg: np.ndarray | None) -> dict[str, np.ndarray]:
    cat = store.catalog
    logg = cat["LOGG"].to_numpy(np.float64)[rows] if "LOGG" in cat else np.full(len(rows), np.nan)
    logg = np.where(logg > -100, logg, np.nan)   # APOGEE's -9999 is no value
    if predicted_logg is not None:
        logg = np.where(np.isfinite(logg), logg, predicted_logg)
    with np.errstate(invalid="ignore"):
        return {"all": np.ones(len(rows), bool), "dwarfs": logg >= DWARF_LOGG,
                "giants": logg < DWARF_LOGG}


def catalog_mean(predictor, store, n_stars: int = MEAN_STARS, seed: int = 0,
                 progress: bool = False, use_cache: bool = True) -> MeanAttention:
    """Mean relative attention of ``n_stars`` random stars of ``store`` (cached; see the
    module docstring).  Stars without a good pixel are skipped."""
    cache = cache_dir(predictor.model_dir) / f"mean-{_store_key(store, n_stars, seed)}.npz"
    if use_cache and cache.is_file():
        try:
            return load_mean(cache)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is recomputed
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(store), size=min(n_stars, len(store)), replace=False))
    names = predictor.label_names
    sums, counts, pred_logg = None, None, np.full(len(rows), np.nan)
    it = rows
    if progress:
        from tqdm import tqdm

        it = tqdm(rows, desc="attention catalog mean", unit="star")
    per_star = []
    for k, r in enumerate(it):
        batch = SpectraBatch.from_store(store, store.read(np.array([r]))).on_grid(predictor.grid)
        try:
            att = star_attention(predictor, batch)
        except BadDataError:
            per_star.append(None)
            continue
        if "LOGG" in names:
            pred_logg[k] = att.labels[names.index("LOGG")]
        per_star.append((np.nan_to_num(att.decoder) * att.n_read,
                         np.nan_to_num(att.rollout) * att.n_read, att.good))
    groups = _groups(store, rows, pred_logg)
    decoder, rollout, n = {}, {}, {}
    for g, sel in groups.items():
        sums = counts = rsum = None
        used = 0
        for k, item in enumerate(per_star):
            if item is None or not sel[k]:
                continue
            d, ro, good = item
            sums = d if sums is None else sums + d
            rsum = ro if rsum is None else rsum + ro
            counts = good.astype(np.float32) if counts is None else counts + good
            used += 1
        n[g] = used
        p = predictor.grid.n_pix
        if used == 0:
            decoder[g] = np.full((len(names), *per_shape(predictor), p), np.nan, np.float32)
            rollout[g] = np.full((len(names), p), np.nan, np.float32)
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            decoder[g] = np.where(counts > 0, sums / counts, np.nan).astype(np.float32)
            rollout[g] = np.where(counts > 0, rsum / counts, np.nan).astype(np.float32)
    info = {"store": str(store.path), "n_sample": int(len(rows)), "seed": seed,
            "dwarf_logg": DWARF_LOGG, "model": str(predictor.model_dir)}
    mean = MeanAttention(tuple(names), predictor.grid.wavelength.astype(np.float64), decoder,
                         rollout, n, str(cache), info)
    save_mean(mean, cache)
    return mean


def per_shape(predictor) -> tuple[int, int]:
    c = predictor.model.config
    return c.decoder_layers, c.heads


def save_mean(mean: MeanAttention, path: Path) -> None:
    """Write the mean maps atomically (plain arrays; read back without pickles)."""
    from ..store.atomic import atomic_path

    arrays = {"wavelength": mean.wavelength}
    for g in mean.decoder:
        arrays[f"decoder_{g}"] = mean.decoder[g]
        arrays[f"rollout_{g}"] = mean.rollout[g]
    meta = {"label_names": list(mean.label_names), "n_stars": mean.n_stars, "info": mean.info}
    arrays["meta"] = np.array(json.dumps(meta))
    try:
        with atomic_path(path, ".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
    except OSError:
        pass  # an unwritable cache only costs a recomputation next time


def load_mean(path: Path) -> MeanAttention:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        groups = [g for g in GROUPS if f"decoder_{g}" in z]
        return MeanAttention(tuple(meta["label_names"]), z["wavelength"],
                             {g: z[f"decoder_{g}"] for g in groups},
                             {g: z[f"rollout_{g}"] for g in groups},
                             {k: int(v) for k, v in meta["n_stars"].items()}, str(path),
                             meta.get("info", {}))


# -- reading a map -----------------------------------------------------------------------------

def top_attended(wavelength: np.ndarray, weights: np.ndarray, n: int = 10,
                 min_separation: float = 2.0, lines=None) -> pd.DataFrame:
    """The ``n`` most attended pixels, no two closer than ``min_separation`` Å, each with the
    nearest line of the line list: wavelength, attention, line (species), element,
    line_wavelength, distance (Å, pixel − line)."""
    from ..linelist import load_linelist

    lines = load_linelist() if lines is None else lines
    w = np.asarray(weights, np.float64)
    lam = np.asarray(wavelength, np.float64)
    order = np.argsort(np.where(np.isfinite(w), -w, np.inf), kind="stable")
    picked: list[int] = []
    for i in order:
        if len(picked) >= n or not np.isfinite(w[i]):
            break
        if all(abs(lam[i] - lam[k]) >= min_separation for k in picked):
            picked.append(int(i))
    at = lam[picked]
    lw = lines["wavelength_vac"].to_numpy(np.float64)
    j = np.clip(np.searchsorted(lw, at), 1, len(lw) - 1)
    j = np.where(np.abs(at - lw[j - 1]) <= np.abs(at - lw[j]), j - 1, j)
    return pd.DataFrame({"wavelength": at, "attention": w[picked],
                         "line": lines["species"].to_numpy()[j],
                         "element": lines["element"].to_numpy()[j],
                         "line_wavelength": lw[j], "distance": at - lw[j]})


def apvisit_rest_pixels(path, source=None) -> Spectrum:
    """An apVisit on its own pixels, wavelengths shifted to the rest frame with the same
    radial velocity the resampling reader uses, not resampled; continuum-normalised the
    one way for spectra on their own wavelengths (:mod:`core.preprocess.policy`)."""
    from ..grid import doppler_factor
    from ..io.apvisit import read_apvisit
    from ..preprocess.policy import prepare_file_spectrum

    rest = read_apvisit(path, frame="rest")
    obs = read_apvisit(path, frame="observed")
    factor = float(doppler_factor(rest.meta["RV_USED"]))
    meta = {**obs.meta, "FRAME": "rest (own pixels)", "RV_USED": rest.meta["RV_USED"],
            "RV_SOURCE": rest.meta.get("RV_SOURCE")}
    own = obs.copy(wavelength=obs.wavelength / factor, meta=meta)
    return prepare_file_spectrum(own, source=source or path)


def resample_own_pixels(spectrum: Spectrum, grid="apogee7514") -> Spectrum:
    """A spectrum on its own wavelengths resampled onto an APOGEE grid the way the apVisit
    reader resamples (linear in the apStar pixel, chip by chip, flux as it is): the
    reference an own-pixel prediction is compared with."""
    from ..grid import APSTAR_NPIX, apstar_pixel, get_grid
    from ..io.resample import BADPIX, resample_linear

    target = get_grid(grid)
    w = spectrum.wavelength
    cuts = np.flatnonzero(np.diff(w) > 20 * np.median(np.diff(w))) + 1   # chip gaps
    flux = np.zeros(APSTAR_NPIX)
    err = np.full(APSTAR_NPIX, np.inf)
    mask = np.full(APSTAR_NPIX, BADPIX, np.int64)
    for part in np.split(np.arange(w.size), cuts):
        res = resample_linear(apstar_pixel(w[part]), spectrum.flux[part], spectrum.error[part],
                              spectrum.pixmask[part], APSTAR_NPIX)
        flux = np.where(res.covered, res.flux, flux)
        err = np.where(res.covered, res.error, err)
        mask = np.where(res.covered, res.pixmask, mask)
    return Spectrum(target.wavelength, target.from_apstar(flux), target.from_apstar(err),
                    target.from_apstar(mask) & 0xFFFF, dict(spectrum.meta), grid=target.name,
                    normalized=spectrum.normalized)


# -- an uploaded file's own pixels -------------------------------------------------------------

#: meta key of a file's resampled spectrum under which its own rest-frame pixels travel
#: (a :class:`Spectrum` on the file's wavelengths; only apVisits have pixels of their own)
OWN_PIXELS = "OWN_PIXELS"
#: meta key saying why an apVisit's own pixels could not be read (its resampled reading stands)
OWN_PIXELS_PROBLEM = "OWN_PIXELS_PROBLEM"


def with_own_pixels(spectrum: Spectrum, path, source=None) -> Spectrum:
    """``spectrum`` (a file read and resampled onto a grid) with the file's own rest-frame
    pixels under ``meta[OWN_PIXELS]`` when the file is an apVisit (:func:`apvisit_rest_pixels`),
    so a later reading needs neither the file nor a second parse.  An apStar or aspcapStar is
    already on the grid: returned as it is.  An apVisit whose own pixels cannot be read keeps
    its resampled reading, with the reason under ``meta[OWN_PIXELS_PROBLEM]``."""
    from ..errors import StellarscopeError

    if spectrum.meta.get("READER") != "apvisit":
        return spectrum
    try:
        own = apvisit_rest_pixels(path, source=source)
    except (StellarscopeError, OSError, ValueError) as exc:
        # the file's problem, not its (perhaps temporary) path
        problem = getattr(exc, "problem", None) or str(exc)
        return spectrum.copy(meta={**spectrum.meta, OWN_PIXELS_PROBLEM: problem})
    return spectrum.copy(meta={**spectrum.meta, OWN_PIXELS: own})


def own_pixels(spectrum: Spectrum | None) -> Spectrum | None:
    """The own-pixel reading that :func:`with_own_pixels` attached to ``spectrum``, or None."""
    own = None if spectrum is None else spectrum.meta.get(OWN_PIXELS)
    return own if isinstance(own, Spectrum) else None


def compare_readings(names, a_labels, a_err, b_labels, b_err) -> pd.DataFrame:
    """Two readings of one star side by side, per label: value and σ of each and their
    difference in units of the combined σ, ``z = (b − a) / √(σ_a² + σ_b²)`` (|z| < 1: they
    agree within their σ)."""
    a, b = np.asarray(a_labels, np.float64), np.asarray(b_labels, np.float64)
    sa, sb = np.asarray(a_err, np.float64), np.asarray(b_err, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (b - a) / np.hypot(sa, sb)
    return pd.DataFrame({"label": list(names), "a": a, "a_err": sa, "b": b, "b_err": sb,
                         "z": z})
