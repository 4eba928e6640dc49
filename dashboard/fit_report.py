"""What the Fit view writes about a fit: its table, one-line summaries and downloads."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd

from core.fit.interactive import digits
from core.labels import display_name


def fmt(v, ndigits: int = 3) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.{ndigits}f}"


def result_table(result) -> pd.DataFrame:
    """Fit ± σ beside the catalog (and the truth of a mock star), with bound flags."""
    t = result.table()
    names = list(t["label"])

    def col(key):
        return [fmt(v, digits(n)) for n, v in zip(names, t[key], strict=True)]

    out = pd.DataFrame({"label": names, "name": [display_name(n) for n in names],
                        "fit": col("fit"), "± σ": col("fit_err"), "catalog": col("catalog"),
                        "cat. ±": col("catalog_err")})
    if np.isfinite(t["truth"].to_numpy(dtype=float)).any():
        out["truth"] = col("truth")
    out["bound"] = np.where(t["at_bound"], "at bound", "")
    return out


def summary_text(result, calibrated: bool) -> str:
    flags = "; ".join(result.flag_descriptions) or "none"  # core.fit.flags.describe_flags
    return (f"**χ²_ν = {result.chi2_nu:.3f}** on {result.n_pix} pixels · "
            f"{result.rv_text()} · flags: {flags} · "
            f"{result.n_iter} iterations"
            + (" · σ include the emulator's calibrated systematic floor" if calibrated else ""))


def element_text(res, full_value: float) -> str:
    d = digits(res.label)
    bound = " (at the training-range bound)" if res.at_bound else ""
    return (f"**{res.element}** in {len(res.windows)} windows ({res.n_pix} px): "
            f"{res.label} = {fmt(res.value, d)} ± {fmt(res.error, d)}{bound} "
            f"({display_name(res.label)}), χ²_ν {res.chi2_nu:.2f} · full fit {fmt(full_value, d)}")


def model_outputs(result) -> dict[str, str]:
    """The fit's labels for the Star view's side table."""
    return {f"fit {display_name(k)}": f"{fmt(v, digits(k))} ± {fmt(result.errors[k], digits(k))}"
            for k, v in result.labels.items()}


def mask_table(spectrum, user_mask: np.ndarray, used: np.ndarray | None) -> pd.DataFrame:
    used = np.zeros(spectrum.n_pix, bool) if used is None else used
    return pd.DataFrame({"wavelength_vac": spectrum.wavelength,
                         "pipeline_bad": spectrum.bad().astype(int),
                         "user_masked": user_mask.astype(int),
                         "used_in_fit": used.astype(int)})


def selection_refusal(rows, limit: int, store_path) -> str:
    """Why a selection cannot be fitted here ('' when it can)."""
    if rows is None or len(rows) == 0:
        return ("Brush stars in the **Catalog** tab first; *Fit selection* fits them all and "
                "adds FIT_* columns to the catalog.")
    if len(rows) > limit:
        return (f"{len(rows):,} stars are selected; the app fits up to {limit:,}. Narrow the "
                f"selection, or run `stellarscope fit --all --store {store_path}`.")
    return ""


def selection_summary(summary: dict) -> str:
    flags = ", ".join(f"{n} {c}" for n, c in summary["flag_counts"].items() if c) or "none"
    return (f"Fitted {summary['stars']:,} selected stars in {summary['seconds']} s; wrote FIT_* "
            f"columns (median χ²_ν {summary['median_chi2_nu']:.3g}; flags: {flags}). Plot them "
            "in the **Catalog** tab.")


def csv_bytes(table: pd.DataFrame) -> io.BytesIO:
    return io.BytesIO(table.to_csv(index=False).encode())


def json_bytes(doc: dict) -> io.BytesIO:
    return io.BytesIO(json.dumps(doc, indent=2).encode())


def fit_document(result, model_dir: str, continuum: str, fit_rv: bool, mask_ranges,
                 element_result=None) -> dict:
    """The Fit JSON download: the fit, the model, the options and the drawn mask."""
    out = result.to_dict()
    out["model_dir"] = model_dir
    out["options"] = {"continuum": continuum, "fit_rv": fit_rv}
    out["user_mask_ranges"] = mask_ranges
    if element_result is not None:
        out["element"] = element_result.to_dict()
    return out
