"""How good a spectral transformer is: label accuracy and where its attention looks.

* **Label accuracy** on stars the model was not trained on (a seeded sample): per label the
  bias (median of prediction − reference), the scatter (1.4826·MAD) and the pull width
  (1.4826·MAD of the difference over √(σ_pred² + σ_ref²); 1 = honest σ).  The reference is
  the mock's true label (``TRUE_<LABEL>``) when the store has one, else the catalog label.
* **Alignment score** per label: the attention mass within ±2 Å of the lines of the elements
  that the line list (``assets/linelists``, its ``informs`` column) says inform that label,
  divided by the fraction of the pixels read that lie in those windows; 1 = chance, and
  1 ÷ that fraction is the ceiling (all attention inside the windows).  The median over
  stars, for the last decoder layer (heads averaged, and each head) and the rollout.
* The same ratio for each of the fourteen notable lines of the SpectraFM paper
  (``../shared/data/reference/notable_spectral_lines.csv``, read only when present).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..labels import is_missing
from ..linelist import load_linelist
from ..paths import PROJECT_ROOT

#: half-width of a line's window (Å)
HALF_WIDTH = 2.0
NOTABLE_LINES = (PROJECT_ROOT.parent / "shared" / "data" / "reference"
                 / "notable_spectral_lines.csv")
MAPS = ("last", "rollout")


# -- windows -----------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def informing_elements(label: str) -> tuple[str, ...]:
    """Elements with at least one line that the line list says informs ``label``."""
    lines = load_linelist()
    hit = lines["informs"].str.split(";").apply(lambda xs: label in xs)
    return tuple(sorted(set(lines.loc[hit, "element"])))


@lru_cache(maxsize=64)
def label_line_wavelengths(label: str) -> np.ndarray:
    """Vacuum wavelengths of every line of the elements that inform ``label``."""
    lines = load_linelist()
    els = informing_elements(label)
    return np.sort(lines.loc[lines["element"].isin(els), "wavelength_vac"].to_numpy(np.float64))


def near(wavelength: np.ndarray, centres: np.ndarray, half: float = HALF_WIDTH) -> np.ndarray:
    """True where a pixel lies within ``half`` Å of any of ``centres``."""
    w = np.asarray(wavelength, np.float64)
    c = np.sort(np.asarray(centres, np.float64))
    if c.size == 0:
        return np.zeros(w.shape, bool)
    i = np.clip(np.searchsorted(c, w), 1, max(c.size - 1, 1))
    d = np.minimum(np.abs(w - c[i - 1]), np.abs(w - c[np.minimum(i, c.size - 1)]))
    return d <= half


def score(weights: np.ndarray, good: np.ndarray, window: np.ndarray) -> float:
    """Attention mass inside ``window`` over the fraction of the pixels read inside it (NaN
    when no pixel read is inside it)."""
    inside = window & good
    frac = inside.sum() / max(int(good.sum()), 1)
    if frac == 0:
        return float("nan")
    w = np.nan_to_num(np.where(good, weights, 0.0))
    total = w.sum()
    return float(w[inside].sum() / total / frac) if total > 0 else float("nan")


def load_notable_lines(path: Path = NOTABLE_LINES) -> pd.DataFrame | None:
    """The SpectraFM paper's notable lines (Wavelength, Element, AttentionFocus), or None when
    ../shared is absent."""
    if not Path(path).is_file():
        return None
    df = pd.read_csv(path)
    return df.rename(columns={"Wavelength": "wavelength", "Element": "element",
                              "AttentionFocus": "focus"})


def alignment(att, labels=None, notable: pd.DataFrame | None = None) -> dict:
    """Alignment scores of one :class:`~core.inference.attention.StarAttention`:
    ``{label: {"last": s, "rollout": s, "window_fraction": f, "notable": {λ: s}}}``."""
    out = {}
    wave, good = att.wavelength, att.good
    for label in labels or att.label_names:
        window = near(wave, label_line_wavelengths(label))
        entry = {"elements": list(informing_elements(label)),
                 "window_fraction": float((window & good).sum() / max(att.n_read, 1))}
        for kind in MAPS:
            m = att.map(label, -1 if kind == "last" else "rollout", relative=False)
            entry[kind] = score(m, good, window)
        entry["heads"] = [score(att.map(label, -1, h, relative=False), good, window)
                          for h in range(att.decoder.shape[2])]
        if notable is not None:
            m = att.map(label, -1, relative=False)
            entry["notable"] = {f"{r.wavelength:g}": score(m, good, near(wave, [r.wavelength]))
                                for r in notable.itertuples()}
            entry["notable_all"] = score(m, good, near(wave, notable["wavelength"].to_numpy()))
        out[label] = entry
    return out


# -- the evaluation ----------------------------------------------------------------------------

def training_rows(predictor, store) -> np.ndarray:
    """Rows of ``store`` the model was trained on: the training recipe (labelled rows, the
    first ``--max-rows``, the star split) on the training store, or on any store where it
    finds the very training stars (their recorded fingerprint); else none."""
    from ..train import data as D
    from ..train.transformer import ids_sha256

    cfg = predictor.config.get("training", {})
    settings = cfg.get("settings", {})
    trained_on = cfg.get("store")
    same = bool(trained_on) and Path(trained_on).resolve() == Path(store.path).resolve()
    if not same and not cfg.get("train_ids_sha256"):
        return np.zeros(0, np.int64)
    labels, _ = D.label_arrays(store.catalog, list(predictor.label_names), where=str(store.path))
    labels[is_missing(labels)] = np.nan
    rows = np.nonzero(np.isfinite(labels).any(axis=1))[0].astype(np.int64)
    if settings.get("max_rows"):
        rows = rows[: settings["max_rows"]]
    split = D.split_rows(store.catalog, rows, settings.get("val_fraction", 0.1),
                         settings.get("split_seed", 0))
    if same or ids_sha256(store.catalog, split.train) == cfg["train_ids_sha256"]:
        return split.train     # the training store, here or a copy of it (the same stars)
    return np.zeros(0, np.int64)


def reference(catalog: pd.DataFrame, label: str, rows: np.ndarray):
    """(values, errors, source) of the reference label for ``rows``."""
    if f"TRUE_{label}" in catalog:
        ref = catalog[f"TRUE_{label}"].to_numpy(np.float64)[rows]
        return ref, np.zeros_like(ref), "true (mock)"
    if label not in catalog:
        return np.full(len(rows), np.nan), np.full(len(rows), np.nan), "absent"
    ref = catalog[label].to_numpy(np.float64)[rows]
    err = (catalog[f"{label}_ERR"].to_numpy(np.float64)[rows] if f"{label}_ERR" in catalog
           else np.zeros_like(ref))
    ref = np.where(is_missing(ref), np.nan, ref)
    err = np.where(is_missing(err) | ~np.isfinite(err), 0.0, err)
    return ref, err, "catalog"


def accuracy(pred: np.ndarray, err: np.ndarray, ref: np.ndarray, ref_err: np.ndarray) -> dict:
    ok = np.isfinite(pred) & np.isfinite(ref)
    if not ok.any():
        return {"n": 0, "bias": float("nan"), "scatter": float("nan"), "pull_width": float("nan")}
    d = pred[ok] - ref[ok]
    pull = d / np.sqrt(err[ok] ** 2 + ref_err[ok] ** 2)
    mad = 1.4826 * np.median(np.abs(d - np.median(d)))
    pull_w = 1.4826 * np.median(np.abs(pull - np.median(pull)))
    return {"n": int(ok.sum()), "bias": float(np.median(d)), "scatter": float(mad),
            "pull_width": float(pull_w)}


def evaluate(predictor, store, n_stars: int = 1000, attention_stars: int = 100, seed: int = 0,
             progress: bool = False) -> dict:
    """Label accuracy on up to ``n_stars`` held-out stars and alignment on the first
    ``attention_stars`` of them (see the module docstring)."""
    from ..inference.attention import star_attention
    from ..inference.predictor import SpectraBatch

    train = training_rows(predictor, store)
    held = np.setdiff1d(np.arange(len(store)), train)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(held, size=min(n_stars, held.size), replace=False))
    names = list(predictor.label_names)
    preds, errs = [], []
    chunks = [rows[k:k + 64] for k in range(0, rows.size, 64)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=rows.size, desc="transformer labels", unit="star")
    for chunk in chunks:
        batch = SpectraBatch.from_store(store, store.read(chunk)).on_grid(predictor.grid)
        out = predictor.predict_batch(batch).outputs
        preds.append(out["labels"])
        errs.append(out["labels_err"])
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    pred = np.concatenate(preds) if preds else np.zeros((0, len(names)))
    err = np.concatenate(errs) if errs else np.zeros((0, len(names)))
    acc = {}
    for j, name in enumerate(names):
        ref, ref_err, source = reference(store.catalog, name, rows)
        acc[name] = {**accuracy(pred[:, j], err[:, j], ref, ref_err), "reference": source}

    notable = load_notable_lines()
    att_rows = rows[:attention_stars]
    per_star = []
    it = att_rows
    if progress:
        from tqdm import tqdm

        it = tqdm(att_rows, desc="attention alignment", unit="star")
    for r in it:
        batch = SpectraBatch.from_store(store, store.read(np.array([r]))).on_grid(predictor.grid)
        per_star.append(alignment(star_attention(predictor, batch), names, notable))
    align = {}
    for name in names:
        entry = {"elements": per_star[0][name]["elements"] if per_star else []}
        for key in (*MAPS, "window_fraction"):
            entry[key] = _median([s[name][key] for s in per_star])
        entry["heads"] = [_median([s[name]["heads"][h] for s in per_star])
                          for h in range(len(per_star[0][name]["heads"]))] if per_star else []
        if notable is not None:
            entry["notable"] = {lam: _median([s[name]["notable"][lam] for s in per_star])
                                for lam in per_star[0][name]["notable"]} if per_star else {}
            entry["notable_all"] = _median([s[name]["notable_all"] for s in per_star])
        align[name] = entry
    return {"model": str(predictor.model_dir), "store": str(store.path),
            "n_held_out_stars": int(rows.size), "n_attention_stars": int(att_rows.size),
            "trained_on_this_store": bool(train.size), "half_width_A": HALF_WIDTH,
            "accuracy": acc, "alignment": align,
            "notable_lines": None if notable is None else notable.to_dict("records"),
            "notable_note": None if notable is not None else
            f"{NOTABLE_LINES} is absent: the notable-line scores are skipped"}


def _median(values) -> float:
    v = np.asarray([x for x in values if x is not None], np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def report(result: dict) -> list[str]:
    """The evaluation as text tables."""
    out = [f"held-out stars: {result['n_held_out_stars']} (alignment on "
           f"{result['n_attention_stars']}); model {result['model']}", "",
           f"{'label':8s} {'bias':>10s} {'1.4826·MAD':>11s} {'pull width':>10s}  reference"]
    for name, a in result["accuracy"].items():
        out.append(f"{name:8s} {a['bias']:10.4g} {a['scatter']:11.4g} {a['pull_width']:10.3g}  "
                   f"{a['reference']} (n={a['n']})")
    out += ["", f"alignment (attention within ±{result['half_width_A']:g} Å of the lines of the "
            "informing elements, ÷ their pixel fraction; 1 = chance; the ceiling, every bit of "
            "attention inside the windows, is 1 ÷ that fraction)",
            f"{'label':8s} {'last layer':>10s} {'rollout':>8s} {'best head':>11s} "
            f"{'window %':>9s} {'ceiling':>8s}  elements"]
    for name, a in result["alignment"].items():
        ceiling = 1.0 / a["window_fraction"] if a["window_fraction"] > 0 else float("nan")
        heads = np.asarray(a.get("heads") or [np.nan], float)
        best = (f"{np.nanmax(heads):6.2f} (h{int(np.nanargmax(heads))})"
                if np.isfinite(heads).any() else f"{'–':>11s}")
        out.append(f"{name:8s} {a['last']:10.2f} {a['rollout']:8.2f} {best:>11s} "
                   f"{100 * a['window_fraction']:8.1f}% {ceiling:8.2f}  "
                   f"{','.join(a['elements'])}")
    if result["notable_lines"] is None:
        out += ["", result["notable_note"]]
    else:
        names = list(result["alignment"])
        out += ["", "notable lines (SpectraFM paper), last layer, ÷ chance:",
                f"{'λ (Å)':>8s} {'el':4s} " + " ".join(f"{n:>7s}" for n in names) + "  paper focus"]
        for r in result["notable_lines"]:
            lam = f"{r['wavelength']:g}"
            vals = " ".join(f"{result['alignment'][n]['notable'].get(lam, np.nan):7.2f}"
                            for n in names)
            out.append(f"{r['wavelength']:8g} {r['element']:4s} {vals}  {r['focus']}")
        out.append(f"{'all 14':>8s} {'':4s} " + " ".join(
            f"{result['alignment'][n]['notable_all']:7.2f}" for n in names))
    return out
