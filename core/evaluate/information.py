"""How precisely a mock spectrum can tell its labels: the floor that no fitter can beat.

A mock star's spectrum comes from known physics, so the information its pixels carry about
each label is computable: with J = ∂flux/∂labels of the noiseless synthesis at the true labels
(central differences) and W = 1/σ² on the good pixels, the Cramér–Rao bound of an unbiased
estimate is σ_CR = √diag((JᵀWJ)⁻¹).  :func:`oracle_fit` fits the observed (noisy) spectrum
with the synthesis itself, the best forward model there is; an emulator's fits can then be
judged against both: an emulator at the accuracy floor recovers labels as the oracle does.

Labels are the emulator's (Teff, log g, [Fe/H], v_micro, [X/Fe] …): fitting all of them
together is what makes log g costly, since its few gravity-sensitive features are shared with
v_micro and the abundances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import BadDataError

#: Central-difference steps (label units); 0.02 (dex, km/s) for any label not named.
STEPS = {"TEFF": 10.0, "LOGG": 0.02}
DEFAULT_STEP = 0.02
#: Teff the oracle's iterates may take (K): the mock synthesiser's range, less its step.
ORACLE_TEFF_RANGE = (2520.0, 11980.0)


def _truth_frame(truth: pd.Series | pd.DataFrame) -> pd.DataFrame:
    frame = truth.to_frame().T if isinstance(truth, pd.Series) else truth
    if len(frame) != 1:
        raise BadDataError(f"expected the labels of one star, got {len(frame)} rows")
    cols = [c for c in frame.columns if c.startswith("TRUE_")]
    if "TRUE_TEFF" not in cols:
        raise BadDataError("the star needs TRUE_* labels (a mock survey's catalog row)")
    return frame[cols].astype(np.float64).reset_index(drop=True)


def synthesis_jacobian(truth, names: list[str], grid, physics) -> tuple[np.ndarray, np.ndarray]:
    """(flux (P,), J (P, L)) of the noiseless synthesis at one star's TRUE_* labels."""
    from ..mock.synth import noiseless_flux

    base = _truth_frame(truth)
    missing = [n for n in names if f"TRUE_{n}" not in base.columns]
    if missing:
        raise BadDataError(f"no TRUE_ column for label(s) {missing}")
    frames = [base]
    for name in names:
        h = STEPS.get(name, DEFAULT_STEP)
        for sign in (+1.0, -1.0):
            p = base.copy()
            p[f"TRUE_{name}"] += sign * h
            frames.append(p)
    flux = noiseless_flux(pd.concat(frames, ignore_index=True), grid, physics=physics)
    flux = flux.astype(np.float64)
    steps = np.array([STEPS.get(n, DEFAULT_STEP) for n in names])
    jac = (flux[1::2] - flux[2::2]).T / (2.0 * steps)
    return flux[0], jac


def cramer_rao(jac: np.ndarray, error: np.ndarray, good: np.ndarray) -> np.ndarray:
    """σ_CR per label from J (P, L), per-pixel σ and the good-pixel mask; NaN for a label the
    spectrum does not constrain (no pixel responds to it)."""
    jac = np.asarray(jac, np.float64)
    ok = np.asarray(good, bool) & np.isfinite(error) & (np.asarray(error) > 0)
    if ok.sum() < jac.shape[1]:
        raise BadDataError(f"{int(ok.sum())} good pixels cannot constrain {jac.shape[1]} labels")
    j = jac[ok]
    w = 1.0 / np.asarray(error, np.float64)[ok] ** 2
    live = np.abs(j).max(0) > 0
    out = np.full(jac.shape[1], np.nan)
    fisher = j[:, live].T @ (j[:, live] * w[:, None])
    out[live] = np.sqrt(np.clip(np.diag(np.linalg.pinv(fisher)), 0.0, None))
    return out


def oracle_fit(flux, error, good, truth, names: list[str], grid, physics,
               iterations: int = 4) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit ``names`` to an observed spectrum with the exact synthesis (Gauss–Newton from the
    true labels; other labels held at their truth).  Returns (labels, σ_CR there, χ²_ν).

    Steps are halved until χ² does not rise, and Teff stays inside the synthesiser's range:
    a cool giant's molecular bands are far from linear, and a full step can overshoot by
    hundreds of kelvin."""
    from ..mock.synth import noiseless_flux

    base = _truth_frame(truth)
    flux, error = np.asarray(flux, np.float64), np.asarray(error, np.float64)
    ok = np.asarray(good, bool) & np.isfinite(flux) & np.isfinite(error) & (error > 0)
    cols = [f"TRUE_{n}" for n in names]
    theta = base[cols].to_numpy()[0].copy()
    w = np.where(ok, 1.0 / np.where(ok, error, 1.0) ** 2, 0.0)
    k_teff = names.index("TEFF") if "TEFF" in names else None

    def at(labels):
        star = base.copy()
        star[cols] = labels
        return star

    def chi2_of(model):
        return float((w * (flux - model) ** 2).sum())

    for _ in range(iterations):
        model, jac = synthesis_jacobian(at(theta), names, grid, physics)
        current = chi2_of(model)
        live = np.abs(jac[ok]).max(0) > 0
        r = np.where(ok, flux - model, 0.0)
        a = jac[:, live].T @ (jac[:, live] * w[:, None])
        b = jac[:, live].T @ (w * r)
        step = np.zeros_like(theta)
        step[live] = np.linalg.lstsq(a, b, rcond=None)[0]
        for _halving in range(6):
            trial = theta + step
            if k_teff is not None:
                trial[k_teff] = np.clip(trial[k_teff], *ORACLE_TEFF_RANGE)
            if chi2_of(noiseless_flux(at(trial), grid, physics=physics)[0]) <= current:
                theta = trial
                break
            step = step / 2.0
    model = noiseless_flux(at(theta), grid, physics=physics)[0].astype(np.float64)
    chi2 = chi2_of(model) / max(int(ok.sum()) - len(names), 1)
    return theta, cramer_rao(jac, error, ok), chi2
