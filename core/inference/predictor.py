"""The Predictor interface: what every model family offers the app, the CLI and the runner.

A predictor maps a :class:`SpectraBatch` (spectra on its grid + their catalog rows) to a
:class:`Prediction`: the catalog ``columns`` it declares (one value per spectrum) and named
``outputs`` — by convention

* ``model`` (B, P) model flux on the predictor's grid, ``good`` (B, P) pixels in χ²;
* ``chi2_nu``, ``n_good``, ``flags`` (B,);
* ``labels`` / ``labels_err`` (B, L) in :attr:`Predictor.label_names` order;
* ``latents`` / ``latents_err`` (B, K); later families may add more (attention maps …).

:meth:`Predictor.predict_spectrum` runs one spectrum through the very same
:meth:`~Predictor.predict_batch`, so what the app shows for a star equals its catalog row.
A whole store goes through :func:`core.inference.runner.run_store`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from ..errors import BadDataError
from ..grid import Grid, get_grid
from ..spectrum import Spectrum
from .prepare import regrid


@dataclass(frozen=True)
class Column:
    """A catalog column a predictor writes: dtype and the value of rows it did not reach."""

    name: str
    dtype: str = "float32"
    fill: float | int = float("nan")


@dataclass
class SpectraBatch:
    """Spectra on one grid with their catalog rows; ``exclude`` (P,) or (B, P) leaves
    pixels out of every fit (a user mask, True = exclude)."""

    rows: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    pixmask: np.ndarray
    catalog: pd.DataFrame
    grid: str
    exclude: np.ndarray | None = None
    #: what :meth:`Predictor.prepare` computed for this batch (on the read-ahead thread)
    prepared: dict | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_store(cls, store, batch) -> SpectraBatch:
        """A :class:`core.store.Batch` of ``store`` with its catalog rows."""
        cat = store.catalog.iloc[batch.rows].reset_index(drop=True)
        return cls(batch.rows, batch.flux, batch.error, batch.pixmask, cat, store.grid.name)

    @classmethod
    def from_spectrum(cls, spectrum: Spectrum, exclude=None) -> SpectraBatch:
        if spectrum.grid is None:
            raise BadDataError(f"{spectrum.label}: spectrum is not on a named APOGEE grid")
        meta = {k: v for k, v in spectrum.meta.items() if np.ndim(v) == 0}
        row = int(meta.get("ROW", 0)) if isinstance(meta.get("ROW"), (int, np.integer)) else 0
        return cls(np.array([row]), spectrum.flux[None].astype(np.float32),
                   spectrum.error[None].astype(np.float32),
                   spectrum.pixmask[None].astype(np.uint16), pd.DataFrame([meta]),
                   spectrum.grid, None if exclude is None else np.asarray(exclude, bool))

    def on_grid(self, grid: Grid) -> SpectraBatch:
        """The batch on ``grid`` (another APOGEE grid: pixels it lacks come back flagged)."""
        if grid.name == self.grid:
            return self
        flux, error, mask = regrid(self.flux, self.error, self.pixmask, get_grid(self.grid), grid)
        return SpectraBatch(self.rows, flux, error, mask, self.catalog, grid.name, self.exclude)

    def excluded(self) -> np.ndarray:
        """(B, P) True where the user mask leaves a pixel out."""
        if self.exclude is None:
            return np.zeros(self.flux.shape, bool)
        return np.broadcast_to(np.asarray(self.exclude, bool), self.flux.shape)


@dataclass
class Prediction:
    columns: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


class Predictor(ABC):
    """A loaded model of one family, numpy in and out, physical label units."""

    #: Registry name of the family (``stellarscope infer <family>``).
    family: ClassVar[str] = ""
    #: Prefix of its catalog columns ("VAE" → VAE_CHI2 …).
    column_prefix: ClassVar[str] = ""

    model_dir: str = ""
    device: torch.device = torch.device("cpu")
    config: dict

    @classmethod
    @abstractmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device | None = None,
             **options) -> Predictor:
        """Build the predictor from a saved model directory; ``device`` None is the CPU."""

    # -- what it is ----------------------------------------------------------------------------
    @property
    @abstractmethod
    def grid(self) -> Grid:
        """The grid its spectra must be on (the runner converts other APOGEE grids)."""

    @property
    def label_names(self) -> tuple[str, ...]:
        return ()

    @abstractmethod
    def columns(self) -> list[Column]:
        """The catalog columns a store run writes, in order."""

    @property
    def default_batch_size(self) -> int:
        return 1024

    def note(self) -> dict:
        """Provenance recorded in the store manifest for every column written."""
        return {"model": str(self.model_dir), "family": self.family}

    def check_store(self, store) -> None:
        """Raise a clear error when this predictor cannot run over ``store``."""
        if store.grid.name != self.grid.name and not np.isin(
                store.grid.wavelength, self.grid.wavelength).any():
            raise BadDataError(f"{store.path}: the store's {store.grid.name} grid shares no "
                               f"pixel with the model's {self.grid.name} grid")

    def summary(self, columns: dict[str, np.ndarray]) -> dict:
        """Family-specific figures of a finished run (flag counts, median χ² …)."""
        return {}

    # -- running -------------------------------------------------------------------------------
    def prepare(self, batch: SpectraBatch) -> SpectraBatch:
        """Numpy work that needs no model (masks, weights …), put in ``batch.prepared``.

        The runner calls it on its read-ahead thread, so it overlaps the previous batch's
        model work; :meth:`predict_batch` must also accept a batch not prepared.
        """
        return batch

    @abstractmethod
    def predict_batch(self, batch: SpectraBatch) -> Prediction:
        """Columns and outputs for every spectrum of ``batch`` (already on :attr:`grid`)."""

    def prepare_spectrum(self, spectrum: Spectrum) -> Spectrum:
        """The spectrum on this predictor's grid (overridden to resample / normalise)."""
        if spectrum.grid is None or spectrum.n_pix != get_grid(spectrum.grid).n_pix:
            raise BadDataError(f"{spectrum.label}: this model works on the {self.grid.name} "
                               f"grid; the spectrum is on {spectrum.grid or 'its own wavelengths'}")
        return spectrum

    def on_focus(self, spectrum: Spectrum, catalog_row: dict | None = None) -> dict | None:
        """What the app shows by itself for the star on screen, or None (the default: the
        family shows only in its own views, e.g. a fit made on demand).

        ``{"models": {overlay name: flux on the spectrum's pixels}, "outputs": {side-table
        name: value}, "extra": {…}}``; ``catalog_row`` is the store's row of an uploaded star
        the store also holds.  Raise a StellarscopeError when the model does not apply.
        """
        return None

    def predict_spectrum(self, spectrum: Spectrum, exclude=None) -> dict:
        """One spectrum through :meth:`predict_batch`: its outputs (no batch axis) and, under
        ``"columns"``, the values its catalog row gets from a store run."""
        spec = self.prepare_spectrum(spectrum)
        batch = SpectraBatch.from_spectrum(spec, exclude).on_grid(self.grid)
        pred = self.predict_batch(self.prepare(batch))
        out = {k: np.asarray(v)[0] for k, v in pred.outputs.items()}
        out["columns"] = {k: _scalar(np.asarray(v)[0]) for k, v in pred.columns.items()}
        out["spectrum"] = spec
        return out


def _scalar(v):
    return v.item() if isinstance(v, np.generic) else v
