"""Take the linear label trend out of a trained VAE's latent means (exactly, see
:meth:`core.models.vae.SpectrumVAE.absorb_label_trend`).

The separability loss is a Gaussian mutual information: it sees only the covariance between
free latents and injected labels.  Training with it reduces that covariance but, with labels
re-drawn from their errors on every pass, never quite to zero (the encoder gains by passing
on what it reads of the true labels).  Regressing μ on the z-scored labels over the training
rows and absorbing the fit removes the remaining linear dependence without changing any
reconstruction.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..models.vae import SpectrumVAE


def _max_abs_corr(mu: np.ndarray, y: np.ndarray) -> float:
    mu = mu - mu.mean(0)
    y = y - y.mean(0)
    sd = np.outer(np.sqrt((mu**2).mean(0)), np.sqrt((y**2).mean(0)))
    c = (mu.T @ y / len(mu)) / np.where(sd > 0, sd, np.inf)
    return float(np.abs(c).max())


@torch.no_grad()
def latent_means(model: SpectrumVAE, batches: Iterable[dict], max_rows: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """μ and z-scored labels of up to ``max_rows`` spectra from prepared batches."""
    model.eval()
    mus, ys, n = [], [], 0
    for b in batches:
        y = model.scale_labels(b["labels"])
        mu, _ = model.encode(b["flux"], b["weight"] > 0, y)
        mus.append(mu.float().cpu().numpy())
        ys.append(y.float().cpu().numpy())
        n += len(mu)
        if n >= max_rows:
            break
    return np.concatenate(mus)[:max_rows], np.concatenate(ys)[:max_rows]


def decorrelate_latents(model: SpectrumVAE, batches: Iterable[dict], max_rows: int = 20_000
                        ) -> dict:
    """Fit μ ≈ A·y + c on the batches and absorb it into ``model`` (in place); returns the
    largest |corr(μ_k, y_l)| before and after on those rows."""
    mu, y = latent_means(model, batches, max_rows)
    if len(mu) <= y.shape[1] + 1:
        raise ValueError(f"need more than {y.shape[1] + 1} spectra to fit the label trend")
    design = np.column_stack([y, np.ones(len(y))]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, mu.astype(np.float64), rcond=None)
    weight, bias = coef[:-1].T, coef[-1]
    before = _max_abs_corr(mu, y)
    model.absorb_label_trend(torch.from_numpy(weight).float(), torch.from_numpy(bias).float())
    after = _max_abs_corr(mu - design @ coef, y)
    return {"method": "least-squares label trend absorbed into encoder and decoder",
            "n_rows": int(len(mu)), "max_abs_corr_before": before, "max_abs_corr_after": after}
