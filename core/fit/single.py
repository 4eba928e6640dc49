"""Fit one :class:`~core.spectrum.Spectrum`: all labels + RV, or one element in its windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import BadDataError
from ..grid import doppler_factor
from ..labels import is_missing
from ..models.emulator import Emulator, load_emulator
from ..spectrum import Spectrum
from .engine import FitOptions, Start, fit_batch
from .flags import FLAG_RV_AT_BOUND
from .prepare import fit_arrays_of
from .result import ElementFit, FitResult


def load_model(path_or_model, device=None) -> Emulator:
    """An emulator from a model directory or a Payne npz (or one already loaded)."""
    if isinstance(path_or_model, Emulator):
        return path_or_model
    path = Path(path_or_model)
    if path.suffix == ".npz":
        from ..models.payne_format import import_payne

        return import_payne(path).to(device or "cpu")
    return load_emulator(path, device)


def _catalog_values(meta: dict, names: list[str]) -> dict[str, float]:
    out = {}
    for name in names:
        for key in (name, f"{name}_ERR", f"TRUE_{name}"):
            v = meta.get(key)
            if isinstance(v, (int, float, np.number)) and not is_missing(v):
                out[key] = float(v)
    # apStar/aspcapStar spectra and stores are in the rest frame, where the fitted RV is a
    # residual near 0; a survey's VHELIO is comparable only for an observed-frame spectrum
    if meta.get("FRAME") == "observed":
        for key in ("VHELIO_AVG", "TRUE_RV"):
            if isinstance(meta.get(key), (int, float, np.number)):
                out[key] = float(meta[key])
    return out


def fit_spectrum(spectrum: Spectrum, model, options: FitOptions | None = None, *,
                 mask: np.ndarray | None = None, progress=None) -> FitResult:
    """Fit every label, the RV (and a continuum correction if asked) to one spectrum.

    ``mask`` (True = exclude) adds user-masked pixels on the model's grid;
    ``progress(fraction, message)`` follows the fit.
    """
    emu = load_model(model)
    opts = options or FitOptions()
    spec, flux, error, good = fit_arrays_of(spectrum, emu.grid, opts.bad_bits, mask)
    need = max(opts.min_pixels, emu.n_labels + 2)
    if good.sum() < need:
        raise BadDataError(
            f"{spec.label}: only {int(good.sum())} usable pixels; at least {need} are needed"
        )
    fit = fit_batch(emu, flux[None], error[None], good[None], opts, return_model=True,
                    progress=progress)
    names = fit.label_names
    at_bound = [n for n, b in zip(names, fit.label_at_bound[0], strict=True) if b]
    if fit.flags[0] & FLAG_RV_AT_BOUND:
        at_bound.append("RV")
    return FitResult(
        star=spec.label, label_names=names,
        labels={n: float(v) for n, v in zip(names, fit.labels[0], strict=True)},
        errors={n: float(v) for n, v in zip(names, fit.labels_err[0], strict=True)},
        rv=float(fit.rv[0]), rv_err=float(fit.rv_err[0]), rv_start=float(fit.rv_start[0]),
        chi2=float(fit.chi2[0]), n_pix=int(fit.n_pix[0]), dof=int(fit.dof[0]),
        flags=int(fit.flags[0]), at_bound=at_bound, converged=bool(fit.converged[0]),
        n_iter=int(fit.n_iter[0]), continuum=list(fit.continuum[0]),
        wavelength=emu.grid.wavelength, flux=np.where(good, spec.flux, np.nan),
        error=np.where(good, spec.error, np.nan), model=fit.model[0], used=fit.used[0],
        catalog=_catalog_values(spec.meta, names),
        model_name=str(emu.config.training.get("name", emu.config.preset)),
        sigma_scale=float(fit.sigma_scale[0]), rv_model=float(fit.rv_model[0]),
    )


def element_label(model: Emulator, element: str) -> str:
    """The label holding ``element``'s abundance: X_FE, else X_H; Fe itself is FE_H (or M_H)."""
    el = element.strip().upper()
    names = model.label_names
    options = ["FE_H", "M_H"] if el == "FE" else [f"{el}_FE", f"{el}_H"]
    for name in options:
        if name in names:
            return name
    raise KeyError(f"the model has no label for element {element!r} (looked for {options})")


def element_windows(element: str, windows=None) -> list[tuple[float, float]]:
    """(start, end) vacuum Å windows of ``element``, from a table or the project line list."""
    if windows is None:
        from ..linelist import load_element_windows

        windows = load_element_windows()
    if isinstance(windows, pd.DataFrame):
        sel = windows[windows["element"].astype(str).str.upper() == element.strip().upper()]
        out = list(zip(sel["start_vac"].astype(float), sel["end_vac"].astype(float), strict=True))
    else:
        out = [(float(a), float(b)) for a, b in windows]
    if not out:
        raise KeyError(f"no line windows known for element {element!r}")
    return out


def fit_element(spectrum: Spectrum, model, element: str, base: FitResult, *, windows=None,
                options: FitOptions | None = None, mask: np.ndarray | None = None) -> ElementFit:
    """Fit one element's abundance inside its windows with the other labels held at ``base``."""
    emu = load_model(model)
    label = element_label(emu, element)
    spans = element_windows(element, windows)
    opts = options or FitOptions()
    spec, flux, error, good = fit_arrays_of(spectrum, emu.grid, opts.bad_bits, mask)
    rv = base.frame_rv  # the fitted RV, or the rest frame the base fit assumed
    lam_rest = emu.grid.wavelength / float(doppler_factor(rv))
    inside = np.zeros(emu.n_pix, bool)
    for a, b in spans:
        inside |= (lam_rest >= a) & (lam_rest <= b)
    good = good & inside
    if good.sum() < 3:
        raise BadDataError(
            f"{spec.label}: only {int(good.sum())} usable pixels inside the {element} windows"
        )
    n_cont = len(base.continuum)
    degree = n_cont // len(emu.grid.chips) - 1 if n_cont else None  # as in the base fit
    elem_opts = FitOptions(**{**opts.__dict__, "fit_rv": False, "n_starts": 1, "min_pixels": 3,
                              "continuum_degree": degree})
    start = Start(labels=emu.label_vector(base.labels)[None], rv=np.array([rv]),
                  continuum=np.asarray(base.continuum)[None])
    fit = fit_batch(emu, flux[None], error[None], good[None], elem_opts, start=start,
                    free_labels=[label], free_continuum=False, return_model=True)
    k = emu.label_names.index(label)
    return ElementFit(
        element=element, label=label, value=float(fit.labels[0, k]),
        error=float(fit.labels_err[0, k]), chi2=float(fit.chi2[0]), n_pix=int(fit.n_pix[0]),
        at_bound=bool(fit.label_at_bound[0, k]), windows=spans, model=fit.model[0],
        used=fit.used[0], flags=int(fit.flags[0]), sigma_scale=float(fit.sigma_scale[0]),
    )
