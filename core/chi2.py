"""The one χ² of Stellarscope: used by training losses, inference columns, fits and views.

A pixel counts when it is good (not masked, finite flux and error, error > 0).  Its σ is the
quadrature sum of the reported error, the :data:`ERROR_FLOOR` (so a pixel at S/N 1000 does not
outweigh a hundred others: no model is better than ~0.5 % per pixel) and, for an emulator,
its per-pixel model error.  χ²_ν divides by the number of good pixels minus the number of
fitted parameters.
"""

from __future__ import annotations

import numpy as np
import torch

#: Per-pixel error floor added in quadrature (fraction of the continuum).
ERROR_FLOOR = 0.005


def pixel_weights(error, good, floor: float = ERROR_FLOOR, model_error=None):
    """Inverse variances 1/(σ² + floor² + model_error²) on good pixels, 0 elsewhere.

    Works on numpy arrays (float32 result) and on torch tensors (same dtype and device).
    Non-finite errors on good pixels are treated as 1 (the caller masks them normally).
    """
    if isinstance(error, torch.Tensor):
        err = torch.nan_to_num(error, nan=1.0, posinf=1.0, neginf=1.0)
        var = err.square() + floor**2
        if model_error is not None:
            var = var + torch.as_tensor(model_error, dtype=var.dtype, device=var.device).square()
        good = torch.as_tensor(good, device=var.device, dtype=torch.bool)
        return torch.where(good, 1.0 / var, torch.zeros((), dtype=var.dtype, device=var.device))
    err = np.nan_to_num(np.asarray(error, dtype=np.float32), nan=1.0, posinf=1.0, neginf=1.0)
    var = err * err + np.float32(floor) ** 2
    if model_error is not None:
        var = var + np.asarray(model_error, dtype=np.float32) ** 2
    return np.where(np.asarray(good, bool), 1.0 / var, np.float32(0.0)).astype(np.float32)


def good_pixels(flux, error, bad=None) -> np.ndarray:
    """Pixels a χ² may use: finite flux and error, error > 0, and not ``bad``."""
    flux = np.asarray(flux)
    error = np.asarray(error)
    good = np.isfinite(flux) & np.isfinite(error) & (error > 0)
    if bad is not None:
        good &= ~np.asarray(bad, bool)
    return good


def chi2_sum(flux, model, weight):
    """Σ w (flux − model)² over pixels with w > 0, and their count (last axis)."""
    if isinstance(flux, torch.Tensor):
        good = weight > 0
        r = torch.where(good, flux - model, torch.zeros((), dtype=flux.dtype, device=flux.device))
        return (weight * r.square()).sum(-1), good.sum(-1)
    flux, model, weight = (np.asarray(a, dtype=np.float64) for a in (flux, model, weight))
    good = weight > 0
    r = np.where(good, flux - model, 0.0)
    return (weight * r * r).sum(-1), good.sum(-1)


def reduced(chi2, n_good, n_params: int = 0):
    """χ²_ν = χ² / (n_good − n_params); NaN where no degree of freedom is left."""
    if isinstance(chi2, torch.Tensor):
        dof = (n_good - n_params).to(chi2.dtype)
        return torch.where(dof > 0, chi2 / dof.clamp_min(1), torch.full_like(chi2, float("nan")))
    dof = np.asarray(n_good, dtype=np.float64) - n_params
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dof > 0, np.asarray(chi2, np.float64) / np.maximum(dof, 1), np.nan)


def reduced_chi2(flux, error, model, good, n_params: int = 0, floor: float = ERROR_FLOOR,
                 model_error=None) -> tuple[float, int]:
    """(χ²_ν, n_good) of one spectrum against a model: the number every view shows."""
    w = pixel_weights(error, good, floor, model_error)
    chi2, n = chi2_sum(flux, model, w)
    return float(reduced(chi2, n, n_params)), int(n)
