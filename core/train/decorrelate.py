"""Take the label trend out of a trained VAE's latent means, exactly (see
:meth:`core.models.vae.SpectrumVAE.absorb_label_trend`).

The separability loss is a Gaussian mutual information: it sees only the covariance between
free latents and injected labels.  Training with it reduces that covariance but, with labels
re-drawn from their errors on every pass, never to zero (the encoder gains by passing on
what it reads of the true labels), and a latent may still follow a label non-linearly (one
that tracks the red clump peaks in the middle of the Teff range), which makes its Pearson
correlation on another sample of stars swing either way.  Regressing μ on polynomial terms
of the z-scored labels over the training rows and absorbing the fit removes that trend
without changing any reconstruction.
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
        mus.append(mu.double().cpu().numpy())
        ys.append(y.double().cpu().numpy())
        n += len(mu)
        if n >= max_rows:
            break
    return np.concatenate(mus)[:max_rows], np.concatenate(ys)[:max_rows]


def decorrelate_latents(model: SpectrumVAE, batches: Iterable[dict], max_rows: int = 20_000
                        ) -> dict:
    """Fit μ ≈ A·φ(y) + c on the batches and absorb it into ``model`` (in place); returns the
    largest |corr(μ_k, y_l)| before and after on those rows, and the R² of the trend."""
    mu, y = latent_means(model, batches, max_rows)
    feats = model.trend_features(torch.from_numpy(y)).double().numpy()
    if len(mu) <= 2 * (feats.shape[1] + 1):
        raise ValueError(f"need more than {2 * (feats.shape[1] + 1)} spectra to fit the "
                         "label trend")
    design = np.column_stack([feats, np.ones(len(y))])
    coef, *_ = np.linalg.lstsq(design, mu, rcond=None)
    resid = mu - design @ coef
    model.absorb_label_trend(torch.from_numpy(coef[:-1].T.copy()).float(),
                             torch.from_numpy(coef[-1].copy()).float())
    r2 = 1.0 - resid.var(0) / np.where(mu.var(0) > 0, mu.var(0), 1.0)
    return {"method": "polynomial label trend of μ absorbed into encoder and decoder",
            "degree": model.config.label_trend_degree, "n_rows": int(len(mu)),
            "max_abs_corr_before": _max_abs_corr(mu, y),
            "max_abs_corr_after": _max_abs_corr(resid, y),
            "trend_r2_max": float(r2.max()), "trend_r2_median": float(np.median(r2))}
