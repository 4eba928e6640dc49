"""Line-list markers: which lines get a label, and what the label says.

The same thinning rule runs in the browser on every zoom (``LABEL_JS``) and in Python for the
first drawing (:func:`pick_labels`), so zooming costs no server round trip.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

KIND_COLORS = {"atomic": "#5b3a8e", "molecular": "#a0522d", "bandhead": "#e07b00",
               "hydrogen": "#1764ab"}
MAX_LABELS = 60
LABEL_SEP = 0.012  # minimum label separation, as a fraction of the visible range

LABEL_JS = """
const d = all.data, xs = d.x, n = xs.length;
const a = xr.start, b = xr.end, minsep = (b - a) * sep;
const idx = [];
for (let i = 0; i < n; i++) { if (xs[i] >= a && xs[i] <= b) idx.push(i); }
idx.sort((i, j) => d.rank[j] - d.rank[i]);
const kept = [];
for (const i of idx) {
  if (kept.length >= maxn) break;
  let ok = true;
  for (const k of kept) { if (Math.abs(xs[k] - xs[i]) < minsep) { ok = false; break; } }
  if (ok) kept.push(i);
}
const out = {x: [], text: [], color: []};
for (const i of kept) { out.x.push(xs[i]); out.text.push(d.text[i]); out.color.push(d.color[i]); }
shown.data = out;
"""


def pick_labels(x: np.ndarray, rank: np.ndarray, start: float, end: float,
                sep: float = LABEL_SEP, maxn: int = MAX_LABELS) -> np.ndarray:
    """Indices of the labels to draw: strongest first, none closer than ``sep`` of the range."""
    x = np.asarray(x, dtype=np.float64)
    inside = np.flatnonzero((x >= start) & (x <= end))
    order = inside[np.argsort(-np.asarray(rank)[inside], kind="stable")]
    minsep = (end - start) * sep
    kept: list[int] = []
    for i in order:
        if len(kept) >= maxn:
            break
        if all(abs(x[k] - x[i]) >= minsep for k in kept):
            kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def line_rank(lines: pd.DataFrame) -> np.ndarray:
    """How much a line deserves a label: hydrogen and band heads first, then strong atomic lines.

    Atomic strength ~ log gf − θ·χ with θ = 5040/T at a typical giant's T ≈ 4500 K.
    """
    kind = lines["kind"].to_numpy()
    loggf = lines["log_gf"].to_numpy(dtype=np.float64)
    chi = lines["excitation_potential"].to_numpy(dtype=np.float64)
    atomic = np.where(np.isfinite(loggf), loggf - (5040.0 / 4500.0) * chi, -6.0) + 6.0
    rank = np.where(kind == "hydrogen", 20.0, np.where(kind == "bandhead", 15.0, atomic))
    return np.where(kind == "molecular", np.minimum(rank, 0.5), rank)


def line_label(row) -> str:
    """Short marker label: the species, or the Brackett line's name (Br11)."""
    if row["kind"] == "hydrogen":
        found = re.search(r"\((Br\s*\d+)\)", str(row["note"]))
        if found:
            return found.group(1).replace(" ", "")
    return str(row["species"])


def filter_lines(lines: pd.DataFrame | None, kinds=None, elements=None) -> pd.DataFrame | None:
    """The lines of the given kinds and elements (all when None or empty)."""
    if lines is None:
        return None
    sel = np.ones(len(lines), dtype=bool)
    if kinds is not None:
        sel &= lines["kind"].isin(list(kinds)).to_numpy()
    if elements:
        sel &= lines["element"].isin(list(elements)).to_numpy()
    return lines[sel]


def marker_columns(lines: pd.DataFrame, fit_labels=None) -> dict:
    """Columns of the markers' source (hover text included); ``fit_labels`` (one per line) say
    which label a click would fit."""
    colors = [KIND_COLORS.get(k, "#555") for k in lines["kind"]]
    n = len(lines)
    return {
        "x": lines["wavelength_vac"].to_numpy(dtype=np.float64), "color": colors,
        "species": lines["species"].astype(str).to_list(),
        "element": lines["element"].astype(str).to_list(),
        "chi": [f"{v:.2f}" for v in lines["excitation_potential"]],
        "loggf": ["—" if not np.isfinite(v) else f"{v:.2f}" for v in lines["log_gf"]],
        "informs": lines["informs"].astype(str).to_list() if "informs" in lines else [""] * n,
        "note": lines["note"].astype(str).to_list() if "note" in lines else [""] * n,
        "kind": lines["kind"].astype(str).to_list(),
        "label": list(fit_labels) if fit_labels is not None else [""] * n,
    }


def label_columns(lines: pd.DataFrame) -> dict:
    """Every candidate label with its rank; the shown ones are picked per zoom."""
    return {"x": lines["wavelength_vac"].to_numpy(dtype=np.float64),
            "text": [line_label(r) for _, r in lines.iterrows()],
            "color": [KIND_COLORS.get(k, "#555") for k in lines["kind"]],
            "rank": line_rank(lines)}
