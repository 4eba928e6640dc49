"""The observed-spectrum model: emulator → Doppler shift → optional per-chip continuum.

Parameter vector per spectrum (all float32 on the fit's device)::

    [ scaled labels (L) | RV in km/s | continuum coefficients (n_chips × (degree + 1)) ]

The emulator gives flux at rest-frame grid pixels.  On the log-linear apStar grid a
velocity is a uniform pixel shift s, so the model at observed pixel a is the rest-frame
model at a − s, linearly interpolated inside the same chip (as The Payne does).  The
continuum factor is 1 + Σ_k c_k T_k(x) per chip, T_k Chebyshev polynomials of the chip
coordinate x ∈ [−1, 1].  Jacobians are exact: the emulator's comes from forward-mode
differentiation, the shift and the continuum add their chain-rule factors.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..grid import APSTAR_CDELT1, C_KMS
from ..models.emulator import Emulator

LN10 = math.log(10.0)


def rv_to_shift(rv: torch.Tensor) -> torch.Tensor:
    """Radial velocity (km/s, relativistic) → shift in apStar pixels."""
    beta = rv / C_KMS
    return 0.5 * (torch.log1p(beta) - torch.log1p(-beta)) / (LN10 * APSTAR_CDELT1)


def shift_to_rv(shift):
    """apStar pixel shift → radial velocity (km/s); numpy or torch."""
    d2 = 10.0 ** (2.0 * APSTAR_CDELT1 * shift)
    return C_KMS * (d2 - 1.0) / (d2 + 1.0)


class ForwardModel:
    """Evaluates model spectra and Jacobians for batches of parameter vectors."""

    def __init__(self, emulator: Emulator, continuum_degree: int | None = None):
        self.emulator = emulator
        self.grid = emulator.grid
        self.n_labels = emulator.n_labels
        self.continuum_degree = continuum_degree
        self.n_chips = len(self.grid.chips)
        self.n_cont = 0 if continuum_degree is None else self.n_chips * (continuum_degree + 1)
        self.n_params = self.n_labels + 1 + self.n_cont
        self.rv_index = self.n_labels
        dev = emulator.device
        chip = self.grid.chip_of(np.arange(self.grid.n_pix))
        lengths = np.array([b - a for a, b in self.grid.chips])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        local = np.arange(self.grid.n_pix) - offsets[chip]
        self.local = torch.tensor(local, dtype=torch.float32, device=dev)
        self.chip_len = torch.tensor(lengths[chip], dtype=torch.float32, device=dev)
        self.chip_offset = torch.tensor(offsets[chip], dtype=torch.long, device=dev)
        self.basis = self._continuum_basis(chip, local, lengths).to(dev)

    def _continuum_basis(self, chip, local, lengths) -> torch.Tensor:
        """(P, n_cont) Chebyshev basis, zero outside each coefficient's chip."""
        if self.continuum_degree is None:
            return torch.zeros(self.grid.n_pix, 0)
        x = 2.0 * local / np.maximum(lengths[chip] - 1, 1) - 1.0
        cheb = np.polynomial.chebyshev.chebvander(x, self.continuum_degree)  # (P, deg+1)
        deg1 = self.continuum_degree + 1
        out = np.zeros((self.grid.n_pix, self.n_cont), np.float32)
        for c in range(self.n_chips):
            rows = chip == c
            out[rows, c * deg1:(c + 1) * deg1] = cheb[rows]
        return torch.from_numpy(out)

    # -- parameter layout -------------------------------------------------------------------
    def labels_of(self, p: torch.Tensor) -> torch.Tensor:
        return p[..., : self.n_labels]

    def rv_of(self, p: torch.Tensor) -> torch.Tensor:
        return p[..., self.rv_index]

    def cont_of(self, p: torch.Tensor) -> torch.Tensor:
        return p[..., self.n_labels + 1:]

    # -- geometry ---------------------------------------------------------------------------
    def inside(self, rv: torch.Tensor) -> torch.Tensor:
        """(B, P) True where the shifted position of a pixel stays inside its chip."""
        u = self.local - rv_to_shift(rv).unsqueeze(-1)
        return (u >= 0) & (u <= self.chip_len - 1)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, p: torch.Tensor, free: torch.Tensor | None = None, jacobian: bool = True):
        """Model flux (B, P) and, if asked, d model / d p[free] (B, P, F).

        ``free`` lists the parameter indices to differentiate against (all when None).
        """
        k = self.n_params
        free = torch.arange(k, device=p.device) if free is None else free
        labels = self.labels_of(p)
        free_labels = free[free < self.n_labels]
        if jacobian and free_labels.numel():
            rest, d_rest = self.emulator.forward_with_jacobian(labels, free_labels)
        else:
            rest, d_rest = self.emulator(labels), None
        rv = self.rv_of(p)
        shift = rv_to_shift(rv)
        u = (self.local - shift.unsqueeze(-1)).clamp(min=0.0)
        u = torch.minimum(u, self.chip_len - 1)
        j = torch.minimum(torch.floor(u), self.chip_len - 2).clamp(min=0)
        frac = u - j
        left = j.long() + self.chip_offset
        right = left + 1
        rows = torch.arange(p.shape[0], device=p.device).unsqueeze(-1)
        f_left, f_right = rest[rows, left], rest[rows, right]
        shifted = f_left + (f_right - f_left) * frac
        cont = None
        if self.n_cont:
            cont = 1.0 + self.cont_of(p) @ self.basis.T
            model = shifted * cont
        else:
            model = shifted
        if not jacobian:
            return model, None
        cols = []
        if d_rest is not None:
            d_left = d_rest[rows, left]
            d_lab = d_left + (d_rest[rows, right] - d_left) * frac.unsqueeze(-1)
            cols.append(d_lab if cont is None else d_lab * cont.unsqueeze(-1))
        if bool((free == self.rv_index).any()):
            raw = self.local - shift.unsqueeze(-1)
            interior = (raw > 0) & (raw < self.chip_len - 1)  # clamped pixels do not move
            beta = rv / C_KMS
            dshift = 1.0 / ((1.0 - beta * beta) * LN10 * APSTAR_CDELT1 * C_KMS)
            d_rv = -(f_right - f_left) * interior * dshift.unsqueeze(-1)
            cols.append((d_rv if cont is None else d_rv * cont).unsqueeze(-1))
        free_cont = free[free > self.rv_index] - (self.n_labels + 1)
        if free_cont.numel():
            cols.append(shifted.unsqueeze(-1) * self.basis[:, free_cont].unsqueeze(0))
        return model, torch.cat(cols, dim=-1)
