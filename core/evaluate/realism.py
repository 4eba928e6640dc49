"""How much a model spectrum looks like a real one: line depth, line counts, line positions.

All measures take a continuum-normalised flux and a ``good`` mask (True = usable pixel) and
look only at good pixels:

* **mean depth** ⟨1 − f⟩ and the **deep fraction** (pixels more than ``deep`` below 1);
* **minima**: pixels lower than both neighbours and at least ``threshold`` below the highest
  good flux on *each* side within ``half_window`` pixels (a two-sided prominence, so noise
  on a line's wing or a shallow blend bump is not counted twice); reported per 100 Å of good
  pixels;
* **match fraction**: the share of one spectrum's minima that have a minimum of another
  within ± ``tolerance`` pixels.
"""

from __future__ import annotations

import numpy as np

#: A minimum must lie this far (fraction of the continuum) below its neighbourhood.
MIN_THRESHOLD = 0.02
#: Neighbourhood half-width in pixels (an APOGEE line's FWHM is ~3 apStar pixels).
HALF_WINDOW = 5
#: "Deep" pixels sit more than this below the continuum.
DEEP = 0.05
#: A real minimum is matched when a model minimum lies within this many pixels.
MATCH_TOLERANCE = 2
#: For the noise-aware count: minima must also clear this many times the median error.  The
#: prominence compares a pixel with the highest of ~5 neighbours per side, so white noise
#: alone clears 3σ at ~2 % of pixels and 5σ at < 0.01 %.
NOISE_SIGMAS = 5.0


def _good(flux, good) -> np.ndarray:
    flux = np.asarray(flux, dtype=np.float64)
    mask = np.isfinite(flux) if good is None else np.asarray(good, bool) & np.isfinite(flux)
    return mask


def depth_stats(flux, good=None, deep: float = DEEP) -> tuple[float, float]:
    """(mean ⟨1 − f⟩, fraction of pixels with 1 − f > ``deep``) over good pixels; NaN if none."""
    flux = np.asarray(flux, dtype=np.float64)
    use = _good(flux, good)
    if not use.any():
        return float("nan"), float("nan")
    depth = 1.0 - flux[use]
    return float(depth.mean()), float((depth > deep).mean())


def find_minima(flux, good=None, threshold: float = MIN_THRESHOLD,
                half_window: int = HALF_WINDOW) -> np.ndarray:
    """Indices of local minima at least ``threshold`` below the highest good flux on each side
    within ``half_window`` pixels.  A minimum and both its neighbours must be good."""
    flux = np.asarray(flux, dtype=np.float64)
    use = _good(flux, good)
    n = flux.size
    if n < 3:
        return np.zeros(0, dtype=np.int64)
    f = np.where(use, flux, np.nan)
    mid = np.arange(1, n - 1)
    centre = f[1:-1]
    with np.errstate(invalid="ignore"):
        candidate = (use[:-2] & use[1:-1] & use[2:]) & (centre <= f[:-2]) & (centre < f[2:])
    out = []
    for i in mid[candidate]:
        left = f[max(i - half_window, 0):i]
        right = f[i + 1:i + 1 + half_window]
        if not (np.isfinite(left).any() and np.isfinite(right).any()):
            continue
        rise = min(np.nanmax(left), np.nanmax(right)) - f[i]
        if rise >= threshold:
            out.append(i)
    return np.asarray(out, dtype=np.int64)


def noise_threshold(error, good=None, n_sigma: float = NOISE_SIGMAS,
                    floor: float = MIN_THRESHOLD) -> float:
    """max(``floor``, ``n_sigma`` × median error of the good pixels): a minimum threshold that
    pure noise rarely clears, so low-S/N spectra are not credited with noise "lines"."""
    err = np.asarray(error, dtype=np.float64)
    use = _good(err, good) & (err > 0)
    if not use.any():
        return float(floor)
    return float(max(floor, n_sigma * np.median(err[use])))


def good_span_angstrom(wavelength, good) -> float:
    """Wavelength covered by good pixels (sum of their pixel widths), in Å."""
    lam = np.asarray(wavelength, dtype=np.float64)
    if lam.size < 2:
        return 0.0
    width = np.abs(np.gradient(lam))
    return float(width[np.asarray(good, bool)].sum())


def per_100_angstrom(count: int, wavelength, good) -> float:
    """``count`` per 100 Å of good pixels; NaN when no pixel is good."""
    span = good_span_angstrom(wavelength, good)
    return float(count) / span * 100.0 if span > 0 else float("nan")


def match_fraction(reference, candidate, tolerance: int = MATCH_TOLERANCE) -> float:
    """Share of ``reference`` minima with a ``candidate`` minimum within ± ``tolerance`` px."""
    ref = np.asarray(reference, dtype=np.int64)
    cand = np.sort(np.asarray(candidate, dtype=np.int64))
    if ref.size == 0:
        return float("nan")
    if cand.size == 0:
        return 0.0
    pos = np.searchsorted(cand, ref)
    lo = cand[np.clip(pos - 1, 0, cand.size - 1)]
    hi = cand[np.clip(pos, 0, cand.size - 1)]
    nearest = np.minimum(np.abs(ref - lo), np.abs(ref - hi))
    return float((nearest <= tolerance).mean())


def spectrum_metrics(wavelength, flux, good, reference_minima=None, *,
                     threshold: float = MIN_THRESHOLD, half_window: int = HALF_WINDOW,
                     deep: float = DEEP, tolerance: int = MATCH_TOLERANCE) -> dict:
    """Depth, deep fraction, minima per 100 Å (and the minima themselves) of one spectrum; with
    ``reference_minima`` also the share of those matched by this spectrum's minima."""
    mean_depth, deep_frac = depth_stats(flux, good, deep)
    minima = find_minima(flux, good, threshold, half_window)
    out = {
        "mean_depth": mean_depth,
        "deep_fraction": deep_frac,
        "n_minima": int(minima.size),
        "minima_per_100A": per_100_angstrom(minima.size, wavelength, _good(flux, good)),
        "minima": minima,
    }
    if reference_minima is not None:
        out["match_fraction"] = match_fraction(reference_minima, minima, tolerance)
    return out


def chip_metrics(wavelength, flux, good, chips: dict[str, slice], models: dict | None = None,
                 **kwargs) -> dict:
    """Per chip: the metrics of ``flux`` and of each model spectrum in ``models`` (name →
    flux on the same pixels, judged on the same good pixels), models matched against the
    real minima.  Minima indices are dropped from the result (it is meant for reports)."""
    out = {}
    for chip, sl in chips.items():
        lam, g = np.asarray(wavelength)[sl], np.asarray(good, bool)[sl]
        real = spectrum_metrics(lam, np.asarray(flux)[sl], g, **kwargs)
        row = {"real": real}
        for name, model in (models or {}).items():
            row[name] = spectrum_metrics(lam, np.asarray(model)[sl], g, real["minima"], **kwargs)
        for metrics in row.values():
            metrics.pop("minima")
        out[chip] = row
    return out


# --- the synthesiser as the model -----------------------------------------------------------

#: Labels a synthesiser fit varies, their bounds, and the finite-difference step of each.
SYNTH_FIT_LABELS = ("TEFF", "LOGG", "FE_H", "VMICRO", "ALPHA_M")
SYNTH_FIT_BOUNDS = {"TEFF": (3000.0, 7500.0), "LOGG": (-0.5, 5.5), "FE_H": (-2.5, 0.75),
                    "VMICRO": (0.3, 4.0), "ALPHA_M": (-0.3, 0.6)}
_SCALE = {"TEFF": 1000.0, "LOGG": 1.0, "FE_H": 1.0, "VMICRO": 1.0, "ALPHA_M": 1.0}
#: [X/Fe] labels that follow [α/M] in a synthesiser fit.
ALPHA_LABELS = ("O_FE", "MG_FE", "SI_FE", "S_FE", "CA_FE", "TI_FE")


def synth_labels(teff: float, logg: float, fe_h: float, vmicro: float | None = None,
                 alpha_m: float = 0.0):
    """One star's label row for the mock synthesiser (VMICRO from log g when None; the α
    elements at ``alpha_m``, every other [X/Fe] solar)."""
    import pandas as pd

    from ..mock.synth import vmicro_from_logg

    row = {"TEFF": teff, "LOGG": logg, "FE_H": fe_h, "M_H": fe_h,
           "VMICRO": float(vmicro_from_logg(logg)) if vmicro is None else vmicro}
    row.update({name: alpha_m for name in ALPHA_LABELS})
    return pd.DataFrame([row])


def normalised_synth(labels, grid, physics: str = "classic", method: str = "mask") -> np.ndarray:
    """The noiseless synthetic spectrum of one star, continuum-normalised like a real file
    (``method`` of :func:`core.preprocess.continuum.normalize_arrays`), on ``grid``."""
    from ..mock.synth import noiseless_flux
    from ..preprocess.continuum import normalize_arrays

    model = noiseless_flux(labels, grid, physics=physics)[0].astype(np.float64)
    norm = normalize_arrays(model, np.full_like(model, 0.01), None, grid, method=method)
    return np.asarray(norm.flux, dtype=np.float64)


def fit_with_synth(flux, error, good, grid, physics: str = "classic", start: dict | None = None,
                   method: str = "mask", starts: tuple[dict, ...] = (), max_nfev: int = 60,
                   free: tuple[str, ...] = SYNTH_FIT_LABELS, loss: str = "linear",
                   f_scale: float = 3.0) -> dict:
    """Least-squares fit of one normalised spectrum with the synthesiser as forward model.

    Varies the ``free`` labels among Teff, log g, [Fe/H], vmicro and [α/M] (bounded,
    :data:`SYNTH_FIT_BOUNDS`; a fixed VMICRO follows the log g relation, a fixed [α/M] is 0)
    from ``start`` and each of ``starts``, keeps the best; the RV is taken as given (the
    spectrum is in the rest frame).  σ includes :data:`core.chi2.ERROR_FLOOR`.
    ``loss="soft_l1"`` (scipy's robust loss: residuals beyond ``f_scale`` σ count linearly)
    limits the pull of lines the model lacks or misplaces.  Returns the labels, χ²_ν, the
    model and how many syntheses it took.
    """
    from scipy.optimize import least_squares

    from ..chi2 import pixel_weights, reduced_chi2
    from ..mock.synth import vmicro_from_logg

    unknown = set(free) - set(SYNTH_FIT_LABELS)
    if unknown or not free:
        raise ValueError(f"free labels must be a non-empty subset of {SYNTH_FIT_LABELS}")
    free = tuple(k for k in SYNTH_FIT_LABELS if k in free)
    flux = np.asarray(flux, dtype=np.float64)
    w = np.sqrt(pixel_weights(np.asarray(error, np.float64), np.asarray(good, bool)))
    use = w > 0
    scale = np.array([_SCALE[k] for k in free])
    lo = np.array([SYNTH_FIT_BOUNDS[k][0] for k in free]) / scale
    hi = np.array([SYNTH_FIT_BOUNDS[k][1] for k in free]) / scale
    calls = {"n": 0}

    def labels_of(p):
        v = {**fixed, "ALPHA_M": 0.0, **dict(zip(free, p * scale, strict=True))}
        if "VMICRO" not in free:
            v["VMICRO"] = float(vmicro_from_logg(v["LOGG"]))
        return v, synth_labels(v["TEFF"], v["LOGG"], v["FE_H"], v["VMICRO"], v["ALPHA_M"])

    def resid(p):
        calls["n"] += 1
        model = normalised_synth(labels_of(p)[1], grid, physics, method)
        return ((flux - model) * w)[use]

    best = None
    for s in (start or {}, *starts):
        s = {"TEFF": 4500.0, "LOGG": 2.5, "FE_H": 0.0, "ALPHA_M": 0.0, **s}
        s.setdefault("VMICRO", float(vmicro_from_logg(s["LOGG"])))
        fixed = {k: float(s[k]) for k in SYNTH_FIT_LABELS if k not in free}
        p0 = np.clip([s[k] / _SCALE[k] for k in free], lo + 1e-6, hi - 1e-6)
        res = least_squares(resid, p0, bounds=(lo, hi), diff_step=0.01, x_scale=1.0,
                            max_nfev=max_nfev, method="trf", loss=loss, f_scale=f_scale)
        if best is None or res.cost < best[0].cost:
            best = (res, dict(fixed))
    res, fixed = best
    values, row = labels_of(res.x)
    model = normalised_synth(row, grid, physics, method)
    chi2, n = reduced_chi2(flux, error, model, good, n_params=len(free))
    at_bound = [k for k, x, a, b in zip(free, res.x, lo, hi, strict=True)
                if x <= a + 1e-4 or x >= b - 1e-4]
    return {"labels": {k: float(v) for k, v in values.items()}, "free": list(free),
            "chi2_nu": float(chi2), "n_pix": int(n), "model": model, "n_synth": calls["n"],
            "at_bound": at_bound, "success": bool(res.success)}
