"""The spectral emulator as a :class:`~core.inference.predictor.Predictor`: its prediction
for a spectrum is the emulator fit (labels ± σ, RV, χ²_ν, flags) and the best-fit model.

A store run (``stellarscope infer emulator``) is the batched fit of ``stellarscope fit
--all``: the same :func:`core.fit.engine.fit_batch` on the same chunks, writing the same
``FIT_*`` columns (:mod:`core.fit.store`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch

from ..errors import BadDataError
from ..fit.engine import FLAG_NAMES, FitOptions, fit_batch
from ..fit.prepare import on_grid
from ..fit.single import load_model
from ..fit.store import PREFIX, default_chunk
from ..fit.store import _columns as fit_columns
from ..grid import Grid
from ..models.emulator import Emulator
from ..spectrum import Spectrum
from .predictor import Column, Prediction, Predictor, SpectraBatch
from .prepare import choose_device, good_pixels


class EmulatorPredictor(Predictor):
    """A loaded emulator and the fit options every spectrum is fitted with."""

    family = "emulator"
    column_prefix = PREFIX.rstrip("_")

    def __init__(self, emulator: Emulator, options: FitOptions | None = None, model_dir: str = ""):
        self.emulator = emulator.eval()
        self.options = options or FitOptions()
        self.model_dir = model_dir
        self.device = emulator.device
        self.config = {"model_type": "emulator", "label_names": list(emulator.label_names)}

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device | None = None,
             options: FitOptions | None = None, **_ignored) -> EmulatorPredictor:
        """Load an emulator directory (or a Payne ``.npz``); ``device`` None is the CPU."""
        dev = torch.device("cpu") if device is None else choose_device(device)
        return cls(load_model(model_dir, dev), options, str(model_dir))

    # -- what it is ----------------------------------------------------------------------------
    @property
    def grid(self) -> Grid:
        return self.emulator.grid

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.emulator.label_names)

    @property
    def default_batch_size(self) -> int:
        return default_chunk(self.emulator)

    def columns(self) -> list[Column]:
        """The columns of :mod:`core.fit.store`, with the fill values ``fit --all`` uses."""
        table = fit_columns(_NoStars(self.label_names), np.zeros(0, np.int64))
        cols = []
        for name in table.columns:
            if name in (f"{PREFIX}FLAG", f"{PREFIX}NPIX"):
                cols.append(Column(name, "int32", -1))
            elif table[name].dtype == object:
                cols.append(Column(name, "object", ""))
            else:
                cols.append(Column(name, "float64"))
        return cols

    def note(self) -> dict:
        return {"source": "stellarscope infer emulator", "model": str(self.model_dir),
                "model_name": str(self.emulator.config.training.get("name",
                                                                    self.emulator.config.preset)),
                "flags": {str(k): v for k, v in FLAG_NAMES.items()}}

    def check_store(self, store) -> None:
        super().check_store(store)
        if not store.normalized:
            raise BadDataError(
                f"{store.path}: the store's spectra are not continuum-normalised; normalise them "
                f"when ingesting before fitting")

    def summary(self, columns: dict[str, np.ndarray]) -> dict:
        flags = columns[f"{PREFIX}FLAG"]
        chi2 = columns[f"{PREFIX}CHI2"]
        return {"flag_counts": {n: int(((flags & b) != 0).sum()) for b, n in FLAG_NAMES.items()},
                "median_chi2_nu": float(np.nanmedian(chi2)) if np.isfinite(chi2).any() else None}

    # -- running -------------------------------------------------------------------------------
    def fit(self, batch: SpectraBatch, return_model: bool = True):
        """The :class:`~core.fit.engine.BatchFit` of a batch on the emulator's grid."""
        good = good_pixels(batch.flux, batch.error, batch.pixmask, self.options.bad_bits)
        if batch.exclude is not None:
            good &= ~batch.excluded()
        return fit_batch(self.emulator, batch.flux, batch.error, good, self.options,
                         return_model=return_model)

    def predict_batch(self, batch: SpectraBatch) -> Prediction:
        fit = self.fit(batch)
        table: pd.DataFrame = fit_columns(fit, batch.rows)
        columns = {c: table[c].to_numpy() for c in table.columns}
        outputs = {"model": fit.model, "good": fit.used, "chi2_nu": fit.chi2_nu,
                   "n_good": fit.n_pix, "flags": fit.flags, "labels": fit.labels,
                   "labels_err": fit.labels_err, "rv": fit.rv, "rv_err": fit.rv_err}
        return Prediction(columns, outputs)

    def prepare_spectrum(self, spectrum: Spectrum) -> Spectrum:
        """Any spectrum on the emulator's grid, continuum-normalised (as ``fit`` does)."""
        return on_grid(spectrum, self.grid)


class _NoStars:
    """A fit of no star: every per-star array is empty (for the columns' names and types)."""

    def __init__(self, names):
        self.label_names = list(names)
        self.labels = self.labels_err = np.zeros((0, len(self.label_names)))

    def __getattr__(self, name):
        return np.zeros(0)
