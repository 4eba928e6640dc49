"""The one spectrum type every reader returns and every model consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import BadDataError
from .grid import DEFAULT_BAD_BITS, Grid, bad_pixels, get_grid


@dataclass
class Spectrum:
    """One star's spectrum.

    ``flux``/``error`` are float32 and ``pixmask`` holds APOGEE PIXMASK bits (uint16),
    all on the same pixels as ``wavelength`` (vacuum Å, float64).  ``grid`` names the
    APOGEE grid the pixels lie on (``apogee7514`` …) or is None for an arbitrary
    wavelength array (an apVisit before resampling).  ``meta`` carries APOGEE_ID,
    SNR, TELESCOPE, FIELD, RA, DEC, the source file and reader details;
    ``normalized`` says whether the flux is continuum-normalised; ``model`` holds
    a best-fit model spectrum when the file provides one (aspcapStar).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    pixmask: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    grid: str | None = None
    normalized: bool = False
    model: np.ndarray | None = None

    def __post_init__(self):
        self.wavelength = np.asarray(self.wavelength, dtype=np.float64)
        self.flux = np.asarray(self.flux, dtype=np.float32)
        self.error = np.asarray(self.error, dtype=np.float32)
        self.pixmask = np.asarray(self.pixmask).astype(np.int64, copy=False) & 0xFFFF
        self.pixmask = self.pixmask.astype(np.uint16)
        n = self.wavelength.shape
        for name in ("flux", "error", "pixmask"):
            if getattr(self, name).shape != n:
                raise BadDataError(
                    f"{self.label}: {name} has shape {getattr(self, name).shape}, "
                    f"wavelength has {n}"
                )
        if self.model is not None:
            self.model = np.asarray(self.model, dtype=np.float32)
            if self.model.shape != n:
                raise BadDataError(f"{self.label}: model has shape {self.model.shape}, expected {n}")
        if self.grid is not None:
            g = get_grid(self.grid)
            if g.n_pix != n[0]:
                raise BadDataError(f"{self.label}: grid {g.name} has {g.n_pix} pixels, got {n[0]}")
            self.grid = g.name

    # -- identity -------------------------------------------------------------------------
    @property
    def apogee_id(self) -> str | None:
        return self.meta.get("APOGEE_ID")

    @property
    def label(self) -> str:
        """What to call this spectrum in messages: its ID, else its source file."""
        return str(self.meta.get("APOGEE_ID") or self.meta.get("SOURCE") or "spectrum")

    @property
    def n_pix(self) -> int:
        return int(self.wavelength.size)

    @property
    def grid_obj(self) -> Grid | None:
        return get_grid(self.grid) if self.grid else None

    # -- quality --------------------------------------------------------------------------
    def bad(self, bad_bits=DEFAULT_BAD_BITS) -> np.ndarray:
        """Pixels not to trust: flagged bad, non-finite flux/error, or error ≤ 0."""
        return (
            bad_pixels(self.pixmask, bad_bits)
            | ~np.isfinite(self.flux)
            | ~np.isfinite(self.error)
            | (self.error <= 0)
        )

    def good(self, bad_bits=DEFAULT_BAD_BITS) -> np.ndarray:
        return ~self.bad(bad_bits)

    def masked_fraction(self, bad_bits=DEFAULT_BAD_BITS) -> float:
        return float(self.bad(bad_bits).mean()) if self.n_pix else 1.0

    def snr(self) -> float:
        """Header SNR when known, else the median flux/error over good pixels."""
        if self.meta.get("SNR") is not None and np.isfinite(self.meta["SNR"]):
            return float(self.meta["SNR"])
        g = self.good()
        return float(np.median(self.flux[g] / self.error[g])) if g.any() else float("nan")

    def check_usable(self, bad_bits=DEFAULT_BAD_BITS) -> Spectrum:
        """Raise :class:`BadDataError` for spectra that no model can use."""
        g = self.good(bad_bits)
        if not g.any():
            raise BadDataError(f"{self.label}: every pixel is masked, NaN/inf or has no error")
        if np.all(self.flux[g] == 0):
            raise BadDataError(f"{self.label}: the flux is zero at every good pixel")
        return self

    def copy(self, **changes) -> Spectrum:
        changes.setdefault("meta", dict(self.meta))
        new = replace(self, **changes)
        for name in ("wavelength", "flux", "error", "pixmask"):
            if name not in changes:
                setattr(new, name, getattr(self, name).copy())
        return new
