"""An adversarial label predictor on the VAE's free latents (``train vae --adversary λ``).

A small MLP head learns to predict the injected (z-scored) labels from the latent means μ —
optionally together with *controls*, the catalog's other labels, which the latents may
legitimately encode (VMICRO, [X/Fe] …: they correlate with the injected labels through the
stellar populations).  The encoder is trained against it by gradient reversal: its loss
gets ``λ · w(t) · R²_adv``, the head's R² on the batch, so the gradient reaching μ is −λ·w
times the head's own (MSE) gradient.  The head itself is trained on detached μ with its own
optimiser, one or more steps per batch, so it never shares the VAE's optimiser, scheduler or
saved weights (the saved model is exactly a :class:`~core.models.vae.SpectrumVAE`).

Two guards keep the game from wandering off:

* R² is clipped at 0 — an encoder cannot gain by making the head worse than predicting the
  mean (that would mean *misleading* latents, which still carry the labels);
* with controls a second head predicts the labels from the controls alone, and the encoder
  pays only for the excess R²(controls + μ) − R²(controls): the very figure the probe in
  ``evaluate vae`` measures.  It cannot be pushed below zero, so latents that encode VMICRO
  are not pushed to forget it merely because VMICRO predicts log g.

``w(t)`` ramps linearly from 0 to 1 over the first ``warmup_epochs`` of training steps: the
head needs something to read before its gradient means anything.

Measured (bench/vae_independence.py, 6,000-star mock seed 3, evaluated on seed 8): at
λ = 3,000 and 30,000, with TRUE_* or measured controls, the adversary did **not** lower the
probe's excess R² (40 epochs: Teff +0.39, as plain) and cost χ²_ν (0.99 vs 0.93), though
its own excess on the training store fell from 0.20 to 0.08.  The kernel penalty
(``--hsic 3e5``) took the Teff excess to +0.16 at χ²_ν 1.14.  The option stays, off by default, for further work (a
stronger or slower-moving head, or a decoder whose latents enter label-modulated).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..labels import LABELS, clean

#: Label columns that restate an injected label and so are no fair control for it.
RESTATES = {"FE_H": ("M_H",), "M_H": ("FE_H",)}
#: A control column missing for more than this fraction of the training rows is not used.
MAX_MISSING = 0.2


#: Which control columns the adversary sees (``train vae --adversary-controls``).
CONTROL_MODES = ("auto", "measured", "none")


def control_columns(catalog: pd.DataFrame, injected: Sequence[str], rows: np.ndarray,
                    mode: str = "auto") -> list[str]:
    """The catalog's label columns the model is not given (nor one restating an injected
    label), present for ≥ 80 % of ``rows``.  ``auto`` takes a mock's ``TRUE_*`` version where
    the store has one — the same controls as the probe of ``evaluate vae`` — and the measured
    column otherwise (real data); ``measured`` always the measured one; ``none`` none."""
    if mode not in CONTROL_MODES:
        raise ValueError(f"adversary controls must be one of {CONTROL_MODES}, got {mode!r}")
    if mode == "none":
        return []
    skip = set(injected) | {r for n in injected for r in RESTATES.get(n, ())}
    names = []
    for label in LABELS:
        if label in skip:
            continue
        col = f"TRUE_{label}" if mode == "auto" and f"TRUE_{label}" in catalog.columns else label
        if col not in catalog.columns:
            continue
        v = clean(pd.to_numeric(catalog[col], errors="coerce").to_numpy()[rows])
        if len(v) and float(np.isnan(v).mean()) <= MAX_MISSING:
            names.append(col)
    return names


def control_array(catalog: pd.DataFrame, names: Sequence[str], train_rows: np.ndarray
                  ) -> np.ndarray:
    """All rows' controls z-scored with the training rows' mean/std; missing values → 0
    (the mean), so a star with a missing control is still used."""
    if not names:
        return np.zeros((len(catalog), 0), np.float32)
    x = np.column_stack([clean(pd.to_numeric(catalog[c], errors="coerce").to_numpy())
                         for c in names]).astype(np.float64)
    mean = np.nanmean(x[train_rows], axis=0)
    sd = np.nanstd(x[train_rows], axis=0)
    x = (x - mean) / np.where(sd > 0, sd, 1.0)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _mlp(n_in: int, n_out: int, hidden: Sequence[int]) -> nn.Sequential:
    widths = [n_in, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.GELU()]
    layers.append(nn.Linear(widths[-1], n_out))
    return nn.Sequential(*layers)


def batch_r2(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """R² per label on one batch (1 − MSE / variance of the batch), clipped at 0."""
    var = y.var(dim=0, unbiased=False).clamp_min(1e-6)
    return (1.0 - ((pred - y) ** 2).mean(dim=0) / var).clamp_min(0.0)


class LabelAdversary:
    """The head(s), their optimiser and the warm-up clock; see the module docstring."""

    def __init__(self, n_latent: int, n_labels: int, n_controls: int, *, weight: float,
                 warmup_steps: int, hidden: Sequence[int] = (64, 64), lr: float = 2e-3,
                 steps: int = 2, device: torch.device | str = "cpu", seed: int = 0):
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed + 7919)  # the heads' initialisation does not shift the VAE's
        self.head = _mlp(n_latent + n_controls, n_labels, hidden).to(device)
        self.floor = _mlp(n_controls, n_labels, hidden).to(device) if n_controls else None
        torch.random.set_rng_state(gen_state)
        params = list(self.head.parameters())
        if self.floor is not None:
            params += list(self.floor.parameters())
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        self.weight, self.warmup_steps, self.steps = float(weight), int(warmup_steps), int(steps)
        self.n_controls = n_controls
        self.step = 0

    def ramp(self) -> float:
        """w(t): 0 → 1 linearly over the warm-up steps."""
        if self.warmup_steps <= 0:
            return 1.0
        return min(1.0, self.step / self.warmup_steps)

    def _inputs(self, mu: torch.Tensor, controls: torch.Tensor | None) -> torch.Tensor:
        return mu if controls is None or not self.n_controls else torch.cat([mu, controls], -1)

    def train_heads(self, mu: torch.Tensor, controls: torch.Tensor | None, y: torch.Tensor
                    ) -> None:
        """``steps`` optimiser steps of the heads on detached μ (minimising their MSE)."""
        x = self._inputs(mu.detach().float(), controls).detach()
        y = y.detach().float()
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            for _ in range(self.steps):
                loss = ((self.head(x) - y) ** 2).mean()
                if self.floor is not None:
                    loss = loss + ((self.floor(controls.float()) - y) ** 2).mean()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()

    def penalty(self, mu: torch.Tensor, controls: torch.Tensor | None, y: torch.Tensor,
                training: bool) -> dict:
        """The encoder's term.  In training it first updates the heads and advances the
        warm-up clock; in validation it uses the full weight λ, so epochs compare fairly."""
        if training:
            self.train_heads(mu, controls, y)
            self.step += 1
        for p in self.params:  # the encoder's term must not move the heads
            p.requires_grad_(False)
        try:
            with torch.autocast(device_type=mu.device.type, enabled=False):
                y = y.float()
                r2 = batch_r2(self.head(self._inputs(mu.float(), controls)), y)
                if self.floor is not None:
                    r2_floor = batch_r2(self.floor(controls.float()), y).detach()
                else:
                    r2_floor = torch.zeros_like(r2)
        finally:
            for p in self.params:
                p.requires_grad_(True)
        excess = (r2 - r2_floor).clamp_min(0.0).mean()
        w = self.weight * (self.ramp() if training else 1.0)
        return {"adv_r2": r2.mean().detach(), "adv_excess": excess.detach(),
                "adv_term": w * excess}


def label_residuals(y: np.ndarray, controls: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """z-scored labels minus what a quadratic least-squares fit on the controls predicts of
    them (fitted on the training rows): the part of each label the controls do not explain,
    the target of the control-conditioned HSIC (``train vae --hsic λ --hsic-controls auto``).
    Rows with a missing label give NaN."""
    c = controls.astype(np.float64)
    iu = np.triu_indices(c.shape[1])
    feats = np.column_stack([np.ones(len(c)), c, (c[:, :, None] * c[:, None, :])[:, iu[0], iu[1]]])
    fit = train_rows[np.isfinite(y[train_rows]).all(1)]
    coef, *_ = np.linalg.lstsq(feats[fit], y[fit], rcond=None)
    return (y - feats @ coef).astype(np.float32)
