"""Fit many spectra at once: RV pre-estimate, multi-start, bounded LM, uncertainties.

Arrays in, arrays out; :mod:`core.fit.single` and :mod:`core.fit.store` wrap this for
one :class:`~core.spectrum.Spectrum` and for a whole store.  Every star is fitted for its
labels (scaled to the emulator's training box, so the bounds are ±0.5), RV and, when asked,
per-chip continuum coefficients.  Starting points come from the emulator's bank of training
label vectors: the ones whose spectra best match the data (after removing the cross-
correlation RV) seed a few short LM runs, and the best of those is run to convergence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import chi2 as C
from ..grid import KMS_PER_PIXEL
from ..models.emulator import Emulator
from ..preprocess.masks import LARGE_ERROR
from .flags import (  # noqa: F401  (re-exported: the bits have always been importable here)
    FLAG_DESCRIPTIONS,
    FLAG_LABEL_AT_BOUND,
    FLAG_MODEL_MISMATCH,
    FLAG_NAMES,
    FLAG_NO_RV_SIGNAL,
    FLAG_NOT_CONVERGED,
    FLAG_RV_AT_BOUND,
    FLAG_RV_AT_SEARCH_EDGE,
    FLAG_TOO_FEW_PIXELS,
    decode_flags,
    describe_flags,
)
from .forward import ForwardModel, rv_to_shift
from .rv import cross_correlation
from .solver import levenberg_marquardt

#: A scaled label within this of ±0.5 counts as sitting on the training-range bound.
BOUND_TOL = 1e-3


@dataclass
class FitOptions:
    """How to fit.  Defaults suit continuum-normalised APOGEE spectra."""

    fit_rv: bool = True
    rv: float | None = None            # fixed RV (fit_rv False) or known start; None → CCF
    rv_search: float = 600.0           # ± km/s searched by the cross-correlation
    rv_window: float = 30.0            # LM may move RV this far from its pre-estimate
    continuum_degree: int | None = None  # per-chip Chebyshev correction; None = off
    n_starts: int = 3
    explore_iter: int = 4              # LM steps for every start before keeping the best
    max_iter: int = 60
    ftol: float = 1e-7
    model_error: bool = True           # add the emulator's validation error to σ
    error_floor: bool = True           # add the emulator's calibrated per-label floor to σ
    bad_bits: str | tuple = "astronn"
    min_pixels: int = 50
    pixel_floor: float = C.ERROR_FLOOR  # per-pixel σ floor in quadrature (core.chi2)
    # a CCF peak less than this many robust σ above the other lags is noise (pure-noise
    # spectra reach ~5, mock stars at S/N 5 ≥ 17): flagged NO_RV_SIGNAL, RV NaN
    rv_min_significance: float = 8.0
    # χ²_ν above this flags MODEL_MISMATCH and multiplies σ by √χ²_ν; None = never
    mismatch_chi2: float | None = 3.0

    def __post_init__(self):
        if self.continuum_degree is not None and not 0 <= int(self.continuum_degree) <= 5:
            raise ValueError(f"continuum_degree must be 0…5 or None, got {self.continuum_degree}")
        if self.n_starts < 1:
            raise ValueError("n_starts must be ≥ 1")


@dataclass
class BatchFit:
    """Per-star results of :func:`fit_batch` (numpy, physical units)."""

    label_names: list[str]
    labels: np.ndarray          # (B, L)
    labels_err: np.ndarray      # (B, L); NaN for labels held fixed
    rv: np.ndarray              # (B,)
    rv_err: np.ndarray          # (B,); NaN when RV was held fixed
    continuum: np.ndarray       # (B, n_cont)
    chi2: np.ndarray            # (B,)
    n_pix: np.ndarray           # (B,) pixels in χ²
    n_free: int
    flags: np.ndarray           # (B,) FIT_FLAG bits
    label_at_bound: np.ndarray  # (B, L) bool
    converged: np.ndarray       # (B,) bool
    n_iter: np.ndarray          # (B,)
    rv_start: np.ndarray        # (B,) cross-correlation estimate
    free: list[str] = field(default_factory=list)
    model: np.ndarray | None = None  # (B, P) best-fit model, observed frame
    used: np.ndarray | None = None   # (B, P) pixels that entered χ²
    sigma_scale: np.ndarray | None = None  # (B,) √χ²_ν where MODEL_MISMATCH widened σ, else 1
    rv_model: np.ndarray | None = None     # (B,) RV the model was evaluated at (0 when unknown)

    @property
    def dof(self) -> np.ndarray:
        return np.maximum(self.n_pix - self.n_free, 1)

    @property
    def chi2_nu(self) -> np.ndarray:
        return C.reduced(self.chi2, self.n_pix, self.n_free)


@dataclass
class Start:
    """Known starting point(s): physical labels (B, L), RV (B,), continuum (B, n_cont)."""

    labels: np.ndarray
    rv: np.ndarray | None = None
    continuum: np.ndarray | None = None


def fit_batch(emulator: Emulator, flux, error, good, options: FitOptions | None = None, *,
              start: Start | None = None, free_labels: list[str] | None = None,
              free_continuum: bool = True, return_model: bool = False,
              progress: Callable[[float, str], None] | None = None) -> BatchFit:
    """Fit (B, P) arrays on the emulator's grid; ``good`` marks pixels to use.

    ``free_labels`` restricts the labels fitted (the rest stay at ``start``), and
    ``free_continuum=False`` holds the continuum coefficients; ``start`` replaces the
    automatic RV pre-estimate and multi-start by one given point.  ``progress(fraction,
    message)`` is called as the fit advances.
    """
    report = progress or (lambda fraction, message: None)
    opts = options or FitOptions()
    dev = emulator.device
    fwd = ForwardModel(emulator, opts.continuum_degree)
    n_lab = emulator.n_labels
    flux_t = torch.as_tensor(np.asarray(flux, np.float32), device=dev)
    err_t = torch.as_tensor(np.asarray(error, np.float32), device=dev)
    good_t = torch.as_tensor(np.asarray(good, bool), device=dev)
    # pixels filled by normalisation (flux 1 ± LARGE_ERROR) carry no data
    good_t &= torch.isfinite(flux_t) & torch.isfinite(err_t) & (err_t > 0) & (err_t < LARGE_ERROR)
    flux_t = torch.where(good_t, flux_t, torch.ones_like(flux_t))
    err_t = torch.where(good_t, err_t, torch.ones_like(err_t))
    # the one χ² (core.chi2): reported σ, pixel floor and emulator error in quadrature
    model_err = emulator.pixel_error.to(dev) if opts.model_error else None
    weight = C.pixel_weights(err_t, good_t, opts.pixel_floor, model_err).sqrt()
    n_star = flux_t.shape[0]

    free_lab = _free_label_index(emulator, free_labels)
    free = list(free_lab)
    if opts.fit_rv:
        free.append(fwd.rv_index)
    if free_continuum:
        free += list(range(n_lab + 1, fwd.n_params))
    free_t = torch.tensor(free, dtype=torch.long, device=dev)

    with torch.no_grad():
        report(0.02, "cross-correlating for the RV and ranking start points")
        p_start, rv_start, rv_info = _starting_points(emulator, fwd, flux_t, good_t, weight,
                                                      opts, start)
        n_starts = p_start.shape[0] // n_star
        star_of = torch.arange(n_star, device=dev).repeat_interleave(n_starts)
        rv_lo, rv_hi = _rv_bounds(rv_start, opts, pinned=rv_info[0])
        used = good_t & fwd.inside(rv_lo) & fwd.inside(rv_hi)
        weight = weight * used
        lower, upper = _box(fwd, rv_lo, rv_hi, dev)

        def residuals_for(template, owner):
            def residuals(p_free, rows, jac):
                p = template[rows].clone()
                p[:, free_t] = p_free
                model, jmat = fwd.evaluate(p, free_t, jac)
                s = owner[rows]
                w = weight[s]
                r = (flux_t[s] - model) * w
                return r, (-jmat * w.unsqueeze(-1) if jac else None)
            return residuals

        lo_rows, hi_rows = lower[star_of][:, free_t], upper[star_of][:, free_t]
        first_iter = opts.explore_iter if n_starts > 1 else opts.max_iter
        report(0.1, f"fitting from {n_starts} start(s)")
        lm = levenberg_marquardt(residuals_for(p_start, star_of), p_start[:, free_t], lo_rows,
                                 hi_rows, max_iter=first_iter, ftol=opts.ftol,
                                 on_iteration=_stage(report, 0.1, 0.4 if n_starts > 1 else 0.95,
                                                     first_iter, "fitting"))
        if n_starts > 1:
            best = lm.chi2.view(n_star, n_starts).argmin(-1)
            pick = torch.arange(n_star, device=dev) * n_starts + best
            template = p_start[pick].clone()
            template[:, free_t] = lm.p[pick]
            owner = torch.arange(n_star, device=dev)
            explored = lm.n_iter[pick]
            lm = levenberg_marquardt(residuals_for(template, owner), lm.p[pick],
                                     lower[:, free_t], upper[:, free_t], max_iter=opts.max_iter,
                                     ftol=opts.ftol, lam0=lm.lam[pick],
                                     on_iteration=_stage(report, 0.4, 0.95, opts.max_iter,
                                                         "refining the best start"))
            lm.n_iter += explored
            p_start = template
        p_best = p_start.clone()
        p_best[:, free_t] = lm.p
        model, _ = fwd.evaluate(p_best, free_t, jacobian=False)
        r = (flux_t - model) * weight
        chi2 = (r * r).sum(-1)
    report(1.0, "done")
    return _collect(emulator, fwd, p_best, lm, free, free_lab, chi2, used, rv_start, rv_info,
                    lower, upper, opts, model if return_model else None)


def _stage(report, start: float, end: float, n_iter: int, message: str):
    """LM iteration callback mapping iterations onto [start, end] of the progress bar."""
    def on_iteration(i, n_active):
        report(start + (end - start) * min(1.0, (i + 1) / max(n_iter, 1)),
               f"{message}: iteration {i + 1}, {n_active} still moving")
    return on_iteration


def _free_label_index(emulator: Emulator, free_labels) -> list[int]:
    if free_labels is None:
        return list(range(emulator.n_labels))
    names = emulator.label_names
    unknown = [n for n in free_labels if n not in names]
    if unknown:
        raise KeyError(f"labels {unknown} are not emulated by this model (it has {names})")
    return sorted(names.index(n) for n in free_labels)


def _rv_bounds(rv_start: torch.Tensor, opts: FitOptions, pinned: torch.Tensor | None = None):
    """LM bounds of the RV: its window around the start; ``pinned`` stars (no RV signal) are
    held at their start, as are all when the RV is not fitted."""
    if not opts.fit_rv:
        return rv_start, rv_start
    limit = opts.rv_search + opts.rv_window
    lo = (rv_start - opts.rv_window).clamp(min=-limit)
    hi = (rv_start + opts.rv_window).clamp(max=limit)
    if pinned is not None:
        lo, hi = torch.where(pinned, rv_start, lo), torch.where(pinned, rv_start, hi)
    return lo, hi


def _box(fwd: ForwardModel, rv_lo, rv_hi, dev):
    n = rv_lo.shape[0]
    lower = torch.full((n, fwd.n_params), -0.5, device=dev)
    upper = torch.full((n, fwd.n_params), 0.5, device=dev)
    lower[:, fwd.rv_index], upper[:, fwd.rv_index] = rv_lo, rv_hi
    if fwd.n_cont:  # continuum coefficients: a ±50 % correction is already a bad normalisation
        lower[:, fwd.n_labels + 1:], upper[:, fwd.n_labels + 1:] = -0.5, 0.5
    return lower, upper


def _starting_points(emulator, fwd, flux, good, weight, opts, start: Start | None):
    """Parameter vectors (B·S, K), S starts per star, each star's RV pre-estimate, and
    (no_signal, at_edge): (B,) bools from the cross-correlation (False when none was run).

    A star whose CCF peak is not significant starts (and stays) at RV 0: the spectra we fit
    are rest-frame ones unless said otherwise, and a noise peak is no better a guess.
    """
    n, dev = flux.shape[0], flux.device
    no_signal = torch.zeros(n, dtype=torch.bool, device=dev)
    at_edge = torch.zeros(n, dtype=torch.bool, device=dev)
    if start is not None:
        p = torch.zeros(n, fwd.n_params, device=dev)
        p[:, : fwd.n_labels] = emulator.scale(torch.as_tensor(np.asarray(start.labels), dtype=torch.float32, device=dev))
        rv = np.zeros(n) if start.rv is None else np.broadcast_to(np.asarray(start.rv, float), (n,)).copy()
        p[:, fwd.rv_index] = torch.as_tensor(rv, dtype=torch.float32, device=dev)
        if fwd.n_cont and start.continuum is not None and np.size(start.continuum):
            p[:, fwd.n_labels + 1:] = torch.as_tensor(np.asarray(start.continuum), dtype=torch.float32, device=dev)
        return p, p[:, fwd.rv_index].clone(), (no_signal, at_edge)
    bank, bank_flux = _bank(emulator)
    search = opts.fit_rv and opts.rv is None
    if not search:
        rv = torch.full((n,), float(opts.rv or 0.0), device=dev)
    else:
        centre = emulator(bank.median(0).values.unsqueeze(0))[0]
        ccf = cross_correlation(flux, good, centre, fwd.grid, opts.rv_search)
        rv = torch.where(ccf.significance < opts.rv_min_significance, 0.0, ccf.rv)
    order = _rank_bank(fwd, flux, weight, rv, bank_flux)
    if search:  # refine with the best-matching template, and judge the peak with it
        ccf = cross_correlation(flux, good, bank_flux[order[:, 0]], fwd.grid, opts.rv_search)
        no_signal = ~(ccf.significance >= opts.rv_min_significance)
        at_edge = ~no_signal & (ccf.at_edge | (ccf.rv.abs() >= opts.rv_search - KMS_PER_PIXEL))
        rv = torch.where(no_signal, 0.0, ccf.rv)
    n_starts = min(opts.n_starts, bank.shape[0])
    chosen = order[:, :n_starts].reshape(-1)
    p = torch.zeros(n * n_starts, fwd.n_params, device=dev)
    p[:, : fwd.n_labels] = bank[chosen]
    p[:, fwd.rv_index] = rv.repeat_interleave(n_starts)
    return p, rv, (no_signal, at_edge)


def _bank(emulator: Emulator) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled bank labels and their spectra, cached until the weights or the bank change."""
    key = (emulator.device, emulator.start_bank.data_ptr(), emulator.start_bank._version,
           tuple(p._version for p in emulator.parameters()))
    cached = getattr(emulator, "_fit_bank_cache", None)
    if cached is None or cached[0] != key:
        bank = _bank_scaled(emulator)
        cached = (key, bank, emulator(bank))
        emulator._fit_bank_cache = cached
    return cached[1], cached[2]


def _bank_scaled(emulator: Emulator) -> torch.Tensor:
    bank = emulator.start_bank
    if bank.numel() == 0:  # no training labels kept: the box centre and a spread around it
        g = torch.Generator().manual_seed(0)
        bank = emulator.unscale(torch.rand(64, emulator.n_labels, generator=g, dtype=torch.float64) * 0.8 - 0.4)
        bank[0] = emulator.unscale(torch.zeros(emulator.n_labels, dtype=torch.float64))
    scaled = emulator.scale(bank.to(emulator.device, torch.float64)).clamp(-0.5, 0.5)
    return scaled.to(torch.float32)


def _rank_bank(fwd: ForwardModel, flux, weight, rv, bank_flux) -> torch.Tensor:
    """Bank entries ordered by χ² against each star moved to its rest frame (nearest pixel)."""
    shift = torch.round(rv_to_shift(rv)).unsqueeze(-1)
    src = fwd.local + shift
    valid = (src >= 0) & (src <= fwd.chip_len - 1)
    idx = (src.clamp(min=0) .minimum(fwd.chip_len - 1)).long() + fwd.chip_offset
    rows = torch.arange(flux.shape[0], device=flux.device).unsqueeze(-1)
    d = flux[rows, idx]
    w2 = (weight[rows, idx] * valid).square()
    chi2 = (w2 * d * d).sum(-1, keepdim=True) - 2 * (w2 * d) @ bank_flux.T + w2 @ bank_flux.square().T
    return chi2.argsort(-1)


def _collect(emulator, fwd, p_best, lm, free, free_lab, chi2, used, rv_start, rv_info, lower,
             upper, opts, model) -> BatchFit:
    n_lab = emulator.n_labels
    n = p_best.shape[0]
    span = torch.as_tensor(np.asarray(emulator.bounds[1] - emulator.bounds[0]), dtype=torch.float64)
    cov = _covariance(lm.jtj)
    sig = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2).clamp(min=0)).cpu()
    labels_err = torch.full((n, n_lab), float("nan"), dtype=torch.float64)
    for col, idx in enumerate(free):
        if idx < n_lab:
            labels_err[:, idx] = sig[:, col] * span[idx]
    rv_err = torch.full((n,), float("nan"), dtype=torch.float64)
    if fwd.rv_index in free:
        rv_err = sig[:, free.index(fwd.rv_index)]
    p = p_best.double().cpu()
    scaled = p[:, :n_lab]
    at_bound = torch.zeros(n, n_lab, dtype=torch.bool)
    if free_lab:
        at_bound[:, free_lab] = (scaled[:, free_lab].abs() >= 0.5 - BOUND_TOL)
    rv = p[:, fwd.rv_index]
    rv_model = rv.clone()
    no_signal, at_edge = (t.cpu() for t in rv_info)
    lo, hi = lower[:, fwd.rv_index].double().cpu(), upper[:, fwd.rv_index].double().cpu()
    rv_at_bound = torch.zeros(n, dtype=torch.bool)
    if opts.fit_rv:
        rv_at_bound = ((rv - lo <= 1e-3) | (hi - rv <= 1e-3)) & ~no_signal
        at_edge = at_edge | (~no_signal & (rv.abs() > opts.rv_search))
    n_pix = used.sum(-1).cpu()
    chi2 = chi2.double().cpu()
    chi2_nu = C.reduced(chi2, n_pix, len(free))  # NaN where no degree of freedom is left
    mismatch = torch.zeros(n, dtype=torch.bool)
    if opts.mismatch_chi2 is not None:
        mismatch = chi2_nu > float(opts.mismatch_chi2)
    scale = torch.where(mismatch, chi2_nu.sqrt(), torch.ones_like(chi2_nu))
    labels_err = labels_err * scale.unsqueeze(-1)
    rv_err = rv_err * scale
    flags = (at_bound.any(-1).long() * FLAG_LABEL_AT_BOUND
             + rv_at_bound.long() * FLAG_RV_AT_BOUND
             + (~lm.converged.cpu()).long() * FLAG_NOT_CONVERGED
             + at_edge.long() * FLAG_RV_AT_SEARCH_EDGE
             + no_signal.long() * FLAG_NO_RV_SIGNAL
             + mismatch.long() * FLAG_MODEL_MISMATCH)
    # too few pixels: no number from this fit means anything, and no other flag either
    few = n_pix < max(opts.min_pixels, len(free) + 1)
    flags = torch.where(few, torch.full_like(flags, FLAG_TOO_FEW_PIXELS), flags)
    labels = emulator.unscale(scaled).numpy()
    labels_err = labels_err.numpy()
    if opts.error_floor and emulator.config.error_floor:
        floor = np.array([emulator.config.error_floor.get(n, 0.0) for n in emulator.label_names])
        labels_err = np.sqrt(labels_err ** 2 + floor ** 2)
    rv, rv_err, chi2 = rv.numpy().copy(), rv_err.numpy().copy(), chi2.numpy().copy()
    rv_start = rv_start.double().cpu().numpy().copy()
    unknown = no_signal.numpy() | few.numpy()
    rv[unknown], rv_err[unknown] = np.nan, np.nan
    rv_start[no_signal.numpy()] = np.nan  # the CCF found no peak to report
    if few.any():
        f = few.numpy()
        labels[f], labels_err[f], chi2[f] = np.nan, np.nan, np.nan
    names = emulator.label_names
    return BatchFit(
        label_names=names, labels=labels, labels_err=labels_err, rv=rv, rv_err=rv_err,
        continuum=p[:, n_lab + 1:].numpy(), chi2=chi2,
        n_pix=n_pix.numpy(), n_free=len(free), flags=flags.numpy(),
        label_at_bound=at_bound.numpy(), converged=lm.converged.cpu().numpy(),
        n_iter=lm.n_iter.cpu().numpy(), rv_start=rv_start,
        free=[names[i] for i in free_lab] + (["RV"] if opts.fit_rv else []),
        model=None if model is None else model.cpu().numpy(), used=used.cpu().numpy(),
        sigma_scale=scale.numpy(), rv_model=rv_model.numpy(),
    )


def _covariance(jtj: torch.Tensor) -> torch.Tensor:
    """(JᵀJ)⁻¹ per star; the pseudo-inverse where JᵀJ is singular (a label with no effect)."""
    jtj = jtj.cpu()
    try:
        return torch.linalg.inv(jtj)
    except RuntimeError:
        return torch.linalg.pinv(jtj, hermitian=True)
