"""Numbers behind a fit explored by hand: slider ranges, the emulator spectrum at chosen labels,
pulls, a drawn mask, the element windows a fit can use, and the command that repeats a fit.

No UI here: the dashboard's Fit view calls these (and :mod:`core.fit.single`) and only draws.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..chi2 import reduced_chi2
from ..labels import is_missing
from ..models.emulator import Emulator
from .forward import ForwardModel
from .single import element_label

RV_LIMIT = 300.0  # km/s: the RV slider's range
CONTINUUM_CHOICES = {"off": None, "degree 0": 0, "degree 1": 1, "degree 2": 2}


def emulator_of(model) -> Emulator | None:
    """The :class:`Emulator` inside a loaded model (an ``EmulatorPredictor`` or the emulator
    itself); None for None."""
    if model is None or isinstance(model, Emulator):
        return model
    for attr in ("emulator", "model"):
        inner = getattr(model, attr, None)
        if isinstance(inner, Emulator):
            return inner
    raise TypeError(f"{type(model).__name__} holds no emulator")


def digits(name: str) -> int:
    """Decimals a label is shown with: whole kelvins, milli-dex."""
    return 0 if name == "TEFF" else 3


@dataclass(frozen=True)
class SliderSpec:
    name: str
    start: float
    end: float
    step: float
    digits: int


def slider_specs(emulator: Emulator) -> list[SliderSpec]:
    """One slider per label over the emulator's training range (200 steps), then the RV."""
    lo, hi = emulator.bounds
    out = [SliderSpec(n, float(a), float(b), float((b - a) / 200), digits(n))
           for n, a, b in zip(emulator.label_names, lo, hi, strict=True)]
    return [*out, SliderSpec("RV", -RV_LIMIT, RV_LIMIT, 0.5, 1)]


def clip_labels(emulator: Emulator, labels: dict[str, float]) -> dict[str, float]:
    """Every label of the emulator, inside its training range (missing ones at mid-range)."""
    lo, hi = emulator.bounds
    return {n: float(np.clip(labels.get(n, (a + b) / 2), a, b))
            for n, a, b in zip(emulator.label_names, lo, hi, strict=True)}


def catalog_start(meta: dict, label_names) -> dict[str, float]:
    """The catalog values of ``label_names`` that a spectrum's metadata holds (no sentinels)."""
    out = {}
    for name in label_names:
        v = meta.get(name)
        if isinstance(v, (int, float, np.number)) and not is_missing(v):
            out[name] = float(v)
    return out


class LabelExplorer:
    """The observed-frame emulator spectrum at hand-chosen labels and RV (the Fit view's
    sliders), with a fit's continuum correction when it had one."""

    def __init__(self, emulator: Emulator, continuum_degree: int | None = None,
                 continuum: np.ndarray | None = None):
        self.emulator = emulator
        self.forward = ForwardModel(emulator, continuum_degree)
        self.continuum = None if continuum_degree is None else continuum

    def spectrum(self, labels: dict[str, float], rv: float = 0.0) -> np.ndarray:
        emu, fwd = self.emulator, self.forward
        p = torch.zeros(1, fwd.n_params)
        values = np.array([labels[n] for n in emu.label_names], dtype=np.float64)
        p[0, :emu.n_labels] = torch.tensor(emu.scale(values), dtype=torch.float32)
        p[0, fwd.rv_index] = float(rv)
        if fwd.n_cont and self.continuum is not None:
            p[0, emu.n_labels + 1:] = torch.tensor(self.continuum, dtype=torch.float32)
        with torch.no_grad():
            return fwd.evaluate(p.to(emu.device), jacobian=False)[0][0].cpu().numpy()


    def chi2_nu(self, spectrum, model: np.ndarray, use: np.ndarray) -> float:
        """χ²_ν of ``model`` over the ``use`` pixels with the fitter's σ (core.chi2: error
        floor and the emulator's own error in quadrature), so slider and fit χ² compare."""
        err = getattr(self.emulator, "pixel_error", None)
        err = None if err is None else err.detach().cpu().numpy()
        return reduced_chi2(spectrum.flux, spectrum.error, model, use, model_error=err)[0]


def pulls(spectrum, model: np.ndarray, use: np.ndarray) -> np.ndarray:
    """(data − model)/σ where ``use`` is True, NaN elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(use, (spectrum.flux - model) / spectrum.error, np.nan)


def set_range(mask: np.ndarray, wavelength: np.ndarray, x0: float, x1: float,
              masked: bool = True) -> int:
    """Set ``mask`` to ``masked`` between two wavelengths (either order), in place; returns
    how many pixels changed."""
    lo, hi = sorted((float(x0), float(x1)))
    sel = (wavelength >= lo) & (wavelength <= hi)
    changed = int((mask[sel] != masked).sum())
    mask[sel] = masked
    return changed


def fittable_elements(emulator: Emulator, windows: pd.DataFrame | None) -> list[str]:
    """Elements that have line windows and a label in the emulator (sorted)."""
    if windows is None:
        return []
    out = []
    for el in sorted(windows["element"].astype(str).unique()):
        try:
            element_label(emulator, el)
        except KeyError:
            continue
        out.append(el)
    return out


def element_lines(lines: pd.DataFrame | None, emulator: Emulator, elements
                  ) -> tuple[pd.DataFrame | None, list[str]]:
    """The atomic lines of ``elements`` and, per line, the label a fit of it would change."""
    if lines is None or not elements:
        return None, []
    sub = lines[(lines["kind"] == "atomic") & lines["element"].isin(list(elements))]
    return sub, [element_label(emulator, e) for e in sub["element"]]


def window_span(windows, pad_fraction: float = 0.1, min_width: float = 10.0
                ) -> tuple[float, float]:
    """A wavelength range framing (start, end) windows with a margin."""
    lo = min(a for a, _ in windows)
    hi = max(b for _, b in windows)
    pad = pad_fraction * max(hi - lo, min_width)
    return lo - pad, hi + pad


def fit_command(*, model_dir: str = "", store: str | None = None, star: str = "",
                file: str = "", continuum: str = "off", fit_rv: bool = True,
                element: str = "", mask_file: str = "") -> str:
    """The ``stellarscope fit`` command line that repeats a fit made by hand."""
    parts = ["stellarscope", "fit"]
    if model_dir:
        parts += ["--model", model_dir]
    if store and star:
        parts += ["--store", str(store), "--star", star]
    else:
        parts += ["--file", Path(file or "FILE.fits").name]
    degree = CONTINUUM_CHOICES[continuum]
    if degree is not None:
        parts += ["--continuum", str(degree)]
    if not fit_rv:
        parts += ["--rv", "0"]
    if element:
        parts += ["--element", element]
    if mask_file:
        parts += ["--mask", mask_file]
    return " ".join(shlex.quote(p) for p in parts)
