"""Calibrate fit uncertainties: a per-label systematic error floor from reference stars.

The covariance σ of a fit treat pixels as independent, but an emulator's errors are
correlated across pixels and with the labels, so at high S/N the formal σ are too small
(on the mock survey at S/N 100, (fit − truth)/σ has a robust width of 2–3).  Surveys add an
empirical floor in quadrature; here it is measured: fit stars with known labels (a mock's
TRUE_* or a catalog's labels ± errors) and find, per label, the σ_sys that makes

    (fit − reference) / sqrt(σ_fit² + σ_sys² + σ_reference²)

have a robust width of 1.  The floors are stored in the emulator's config
(``architecture.error_floor``) and added by every later fit.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ..errors import BadDataError, BadFileError
from ..labels import clean
from ..models.applicability import PERCENTILES
from ..models.emulator import Emulator
from ..store import SpectraStore
from ..store.atomic import write_json_atomic
from .engine import FitOptions
from .store import PREFIX, fit_store_table


def robust_width(x: np.ndarray) -> float:
    """1.4826 × median absolute deviation: the σ of a Gaussian, robust to outliers."""
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else float("nan")


def systematic_floor(diff, sigma_fit, sigma_ref=None) -> float:
    """The σ_sys ≥ 0 that brings the robust width of the pulls to 1 (0 if already ≤ 1)."""
    diff, sigma_fit = np.asarray(diff, float), np.asarray(sigma_fit, float)
    sigma_ref = np.zeros_like(diff) if sigma_ref is None else np.asarray(sigma_ref, float)
    ok = np.isfinite(diff) & np.isfinite(sigma_fit) & np.isfinite(sigma_ref) & (sigma_fit > 0)
    if ok.sum() < 10:
        raise BadDataError(f"only {int(ok.sum())} usable stars to calibrate; at least 10 needed")
    d, base2 = diff[ok], sigma_fit[ok] ** 2 + sigma_ref[ok] ** 2

    def width(s):
        return robust_width(d / np.sqrt(base2 + s * s))

    if width(0.0) <= 1.0:
        return 0.0
    lo, hi = 0.0, 10 * robust_width(d) + 1e-12
    for _ in range(80):  # the width falls monotonically as σ_sys grows
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if width(mid) > 1.0 else (lo, mid)
    return hi


def reference_labels(store: SpectraStore, names: list[str], rows: np.ndarray, source: str):
    """(values, errors) of the reference labels: a mock's TRUE_* (errors 0) or the catalog's."""
    cat = store.catalog.iloc[rows]
    if source == "auto":
        source = "truth" if all(f"TRUE_{n}" in cat for n in names) else "catalog"
    if source == "truth":
        missing = [n for n in names if f"TRUE_{n}" not in cat]
        if missing:
            raise BadDataError(f"{store.path}: no TRUE_ columns for {missing} (not a mock survey?)")
        return cat[[f"TRUE_{n}" for n in names]].to_numpy(float), np.zeros((len(rows), len(names))), source
    values = np.full((len(rows), len(names)), np.nan)
    errors = np.zeros_like(values)
    for k, n in enumerate(names):
        if n in cat:
            values[:, k] = clean(cat[n].to_numpy(float))  # allStar's −9999 means "no value"
        if f"{n}_ERR" in cat:
            errors[:, k] = np.nan_to_num(cat[f"{n}_ERR"].to_numpy(float), nan=0.0).clip(0)
    return values, errors, source


#: S/N bins of the accuracy table (lower edges; the last bin is open).
SNR_BINS = (0.0, 50.0, 100.0, 200.0)


def held_out_rows(store: SpectraStore, ids_file) -> np.ndarray:
    """Rows of ``store`` whose APOGEE_ID is listed in an emulator's held-out file."""
    from pathlib import Path

    path = Path(ids_file)
    try:
        ids = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except OSError as exc:
        raise BadFileError(path, f"cannot read the held-out star list ({exc.strerror or exc}); "
                                 "emulators trained before this list existed have none") from exc
    rows = np.nonzero(store.catalog["APOGEE_ID"].isin(ids).to_numpy())[0]
    if rows.size == 0:
        raise BadDataError(f"{store.path}: none of the {len(ids)} held-out stars in {path} is "
                           "in this store (was the emulator trained on it?)")
    return rows


def accuracy_table(diff: np.ndarray, pulls: np.ndarray, snr: np.ndarray | None,
                   names: list[str]) -> list[dict]:
    """Bias, robust scatter (1.4826·MAD) and pull width per label, for all stars and per S/N
    bin: how well fits recover the reference labels."""
    out = []
    edges = list(SNR_BINS) + [np.inf]
    bins = [("all", np.ones(len(diff), bool))]
    if snr is not None:
        bins += [(f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">={lo:g}",
                  (snr >= lo) & (snr < hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    for label, sel in bins:
        if not sel.any():
            continue
        row = {"snr_bin": label, "n_stars": int(sel.sum())}
        for k, name in enumerate(names):
            d = diff[sel, k]
            ok = np.isfinite(d)
            row[name] = {"bias": float(np.median(d[ok])) if ok.any() else None,
                         "scatter": robust_width(d) if ok.any() else None,
                         "pull_width": robust_width(pulls[sel, k]) if ok.any() else None}
        out.append(row)
    return out


def calibrate_errors(emulator: Emulator, store: SpectraStore, *, n_stars: int = 300,
                     reference: str = "auto", options: FitOptions | None = None, seed: int = 0,
                     chunk: int = 64, progress: bool = False,
                     rows: np.ndarray | None = None) -> dict:
    """Fit ``n_stars`` random stars of ``store`` (of ``rows`` if given) and measure each
    label's systematic floor and the accuracy of the fits against the reference.

    Floors already stored with the emulator are left out of these fits, so the measurement
    starts from the formal σ.  Returns a JSON-ready record (floors, pull widths before and
    after, bias and scatter per label and S/N bin, stars used, reference).
    """
    if reference not in ("auto", "truth", "catalog"):
        raise ValueError(f"reference must be auto, truth or catalog, got {reference!r}")
    opts = dataclasses.replace(options or FitOptions(), error_floor=False)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(store)) if rows is None else np.asarray(rows)
    rows = np.sort(rng.choice(pool, size=min(n_stars, len(pool)), replace=False))
    names = emulator.label_names
    ref, ref_err, source = reference_labels(store, names, rows, reference)
    table = fit_store_table(store, emulator, opts, rows=rows, chunk=chunk, progress=progress)
    fitted = table[[f"{PREFIX}{n}" for n in names]].to_numpy(float)
    sigma = table[[f"{PREFIX}{n}_ERR" for n in names]].to_numpy(float)
    floor, before, after = {}, {}, {}
    for k, name in enumerate(names):
        diff = fitted[:, k] - ref[:, k]
        if np.isfinite(diff).sum() < 10:
            continue  # too few reference values for this label
        floor[name] = systematic_floor(diff, sigma[:, k], ref_err[:, k])
        before[name] = robust_width(diff / np.sqrt(sigma[:, k] ** 2 + ref_err[:, k] ** 2))
        after[name] = robust_width(
            diff / np.sqrt(sigma[:, k] ** 2 + ref_err[:, k] ** 2 + floor[name] ** 2))
    snr = store.catalog["SNR"].to_numpy(float)[rows] if "SNR" in store.catalog else None
    chi2 = (table[f"{PREFIX}CHI2"].to_numpy(float) if f"{PREFIX}CHI2" in table
            else np.array([]))
    chi2 = chi2[np.isfinite(chi2)]
    diff = fitted - ref
    pulls = diff / np.sqrt(sigma**2 + ref_err**2)
    return {"error_floor": floor, "pull_width_before": before, "pull_width_after": after,
            "accuracy": accuracy_table(diff, pulls, snr, names),
            # the fits' χ²_ν distribution: what "this model applies" looks like (the app warns
            # beyond its 99.9th percentile, core.models.applicability)
            "fit_chi2_percentiles": ([float(v) for v in np.percentile(chi2, PERCENTILES)]
                                     if chi2.size >= 10 else None),
            "n_stars": int(len(rows)), "reference": source, "store": str(store.path),
            "median_snr": float(np.nanmedian(snr)) if snr is not None else None}


def save_error_floor(model_dir, record: dict) -> None:
    """Write a calibration into a saved emulator's config.json (atomically)."""
    from ..models.io import CONFIG_FILE

    path = model_dir / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
        arch = config["architecture"]
    except (OSError, ValueError, KeyError) as exc:
        raise BadFileError(path, f"not a saved emulator config ({exc})") from exc
    arch["error_floor"] = {k: float(v) for k, v in record["error_floor"].items()}
    training = config.setdefault("training", {})
    training["error_calibration"] = {k: v for k, v in record.items() if k != "error_floor"}
    if record.get("fit_chi2_percentiles"):
        training.setdefault("applicability", {})["fit_chi2"] = record["fit_chi2_percentiles"]
    write_json_atomic(path, config)
