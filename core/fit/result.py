"""What a fit returns: best labels ± σ, RV, χ², flags, and the spectra to plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import chi2 as C
from .flags import decode_flags, describe_flags


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class FitResult:
    """One star's full fit.  Arrays are on the model's grid (observed frame)."""

    star: str
    label_names: list[str]
    labels: dict[str, float]
    errors: dict[str, float]
    rv: float
    rv_err: float
    rv_start: float
    chi2: float
    n_pix: int
    dof: int
    flags: int
    at_bound: list[str]
    converged: bool
    n_iter: int
    continuum: list[float]
    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    model: np.ndarray
    used: np.ndarray
    catalog: dict[str, float] = field(default_factory=dict)
    model_name: str = ""
    sigma_scale: float = 1.0        # √χ²_ν when MODEL_MISMATCH widened the σ, else 1
    rv_model: float = float("nan")  # RV the model spectrum is shifted by (0 if RV unknown)

    @property
    def chi2_nu(self) -> float:
        return float(C.reduced(self.chi2, self.dof))  # dof = pixels − free parameters

    @property
    def flag_names(self) -> list[str]:
        return decode_flags(self.flags)

    @property
    def flag_descriptions(self) -> list[str]:
        """One readable sentence per flag (for views and the terminal)."""
        return describe_flags(self.flags)

    @property
    def frame_rv(self) -> float:
        """The RV the fitted model is in: the fitted RV, else the one assumed (0)."""
        for v in (self.rv, self.rv_model):
            if math.isfinite(v):
                return float(v)
        return 0.0

    def rv_text(self) -> str:
        """The RV in words, for the CLI and the Fit view: a value, or why there is none."""
        if math.isfinite(self.rv):
            return (f"RV = {self.rv:.2f} ± {self.rv_err:.2f} km/s in the spectrum's frame "
                    f"(cross-correlation {self.rv_start:.1f})")
        return "RV unknown (no cross-correlation peak; labels fitted in the rest frame)"

    @property
    def residual(self) -> np.ndarray:
        return np.where(self.used, self.flux - self.model, np.nan)

    def table(self) -> pd.DataFrame:
        """One row per label: fit ± σ beside the catalog value ± error (and a mock's truth)."""
        rows = []
        for name in self.label_names:
            rows.append({
                "label": name,
                "fit": self.labels[name],
                "fit_err": self.errors[name],
                "catalog": self.catalog.get(name, np.nan),
                "catalog_err": self.catalog.get(f"{name}_ERR", np.nan),
                "truth": self.catalog.get(f"TRUE_{name}", np.nan),
                "at_bound": name in self.at_bound,
            })
        rows.append({"label": "RV", "fit": self.rv, "fit_err": self.rv_err,
                     "catalog": self.catalog.get("VHELIO_AVG", np.nan), "catalog_err": np.nan,
                     "truth": self.catalog.get("TRUE_RV", np.nan), "at_bound": "RV" in self.at_bound})
        return pd.DataFrame(rows)

    def to_dict(self, spectra: bool = False) -> dict:
        """JSON-ready summary (``spectra`` adds wavelength/flux/model/mask arrays)."""
        out = {
            "star": self.star,
            "model": self.model_name,
            "labels": {k: _num(v) for k, v in self.labels.items()},
            "errors": {k: _num(v) for k, v in self.errors.items()},
            "rv": _num(self.rv),
            "rv_err": _num(self.rv_err),
            "rv_start": _num(self.rv_start),
            "chi2": _num(self.chi2),
            "chi2_nu": _num(self.chi2_nu),
            "n_pix": int(self.n_pix),
            "dof": int(self.dof),
            "flags": int(self.flags),
            "flag_names": self.flag_names,
            "flag_descriptions": self.flag_descriptions,
            "sigma_scale": _num(self.sigma_scale),
            "at_bound": list(self.at_bound),
            "converged": bool(self.converged),
            "n_iter": int(self.n_iter),
            "continuum": [float(c) for c in self.continuum],
            "catalog": {k: _num(v) for k, v in self.catalog.items()},
        }
        if spectra:
            out["spectra"] = {
                "wavelength": self.wavelength.tolist(),
                "flux": [_num(v) for v in self.flux],
                "model": [_num(v) for v in self.model],
                "used": self.used.astype(bool).tolist(),
            }
        return out


@dataclass
class ElementFit:
    """One [X/Fe] (or [X/H]) fitted inside its element windows, the rest held fixed."""

    element: str
    label: str
    value: float
    error: float
    chi2: float
    n_pix: int
    at_bound: bool
    windows: list[tuple[float, float]]
    model: np.ndarray
    used: np.ndarray
    flags: int = 0
    sigma_scale: float = 1.0

    @property
    def chi2_nu(self) -> float:
        return float(C.reduced(self.chi2, self.n_pix, 1))  # one free abundance

    @property
    def flag_names(self) -> list[str]:
        return decode_flags(self.flags)

    def to_dict(self) -> dict:
        return {
            "element": self.element, "label": self.label, "value": _num(self.value),
            "error": _num(self.error), "chi2": _num(self.chi2), "chi2_nu": _num(self.chi2_nu),
            "n_pix": int(self.n_pix), "at_bound": bool(self.at_bound),
            "flags": int(self.flags), "flag_names": self.flag_names,
            "flag_descriptions": describe_flags(self.flags),
            "sigma_scale": _num(self.sigma_scale),
            "windows": [[float(a), float(b)] for a, b in self.windows],
        }
