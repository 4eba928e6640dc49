"""The VAE's three loss terms (seed section 5.3), each returned separately for logging.

* reproduction R = Σ_i Σ_j w_ij (x̂_ij − x_ij)², w_ij = 1/(σ_ij² + 0.005²) on good pixels
  (core.chi2), 0 on bad ones — the weights are built per sample, so they can never drift from their spectrum;
* structure K = β · KL(q(z|x) ‖ N(0, I)) summed over the free latents only;
* separability S = γ · B · ½ [log det C_blk − log det C], C the batch covariance of
  z′ = [z, u] and C_blk the same with the free×injected blocks zeroed: B × the Gaussian
  mutual information between free latents and injected labels.

The seed sums every term over the batch; :func:`vae_loss` divides the total by B so the
learning rate does not depend on the batch size (relative weights are unchanged).
"""

from __future__ import annotations

import torch

from ..chi2 import ERROR_FLOOR, pixel_weights  # noqa: F401  (re-exported: the one χ² weighting)


def chi2_per_spectrum(recon: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_j w_j (x̂_j − x_j)² for each spectrum; pixels with weight 0 contribute exactly 0
    whatever their flux (NaN included)."""
    good = weight > 0
    resid = torch.where(good, recon.float() - flux, torch.zeros((), device=flux.device))
    return (weight * resid**2).sum(dim=-1)


def kl_per_spectrum(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over latents: −½ Σ (1 + log σ² − μ² − σ²)."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * (1.0 + logvar - mu**2 - logvar.exp()).sum(dim=-1)


def gaussian_mutual_information(zp: torch.Tensor, n_free: int, jitter: float = 1e-6) -> torch.Tensor:
    """½ [log det C_ff + log det C_ii − log det C] of the batch covariance of ``zp`` (B × D),
    split after the first ``n_free`` columns.  ≥ 0; 0 when the two blocks are uncorrelated.

    Computed in float64 (the difference of log-determinants loses digits in float32); a tiny
    jitter keeps the determinants finite for a degenerate batch.  A batch with no more
    spectra than dimensions gives 0 (training refuses such batch sizes).
    """
    if zp.shape[0] <= zp.shape[1]:
        # fewer spectra than dimensions (a small last validation batch): the covariance is
        # singular and the estimate meaningless, so the batch contributes nothing
        return zp.new_zeros((), dtype=torch.float32)
    x = zp.double()
    x = x - x.mean(dim=0, keepdim=True)
    cov = x.T @ x / (x.shape[0] - 1)
    cov = cov + jitter * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    full = torch.linalg.slogdet(cov).logabsdet
    free = torch.linalg.slogdet(cov[:n_free, :n_free]).logabsdet
    injected = torch.linalg.slogdet(cov[n_free:, n_free:]).logabsdet
    return (0.5 * (free + injected - full)).float()


def vae_loss(out: dict, flux: torch.Tensor, weight: torch.Tensor, beta: float, gamma: float) -> dict:
    """All terms for one batch; ``out`` is the model's forward dict.

    Returns per-spectrum figures (batch sums / B): ``total`` (optimised), ``recon`` (χ²),
    ``kl``, ``mi`` (the unweighted separability, nats), the weighted ``kl_term``/``sep_term``,
    and ``chi2_nu`` (mean reduced χ² over spectra with good pixels).
    """
    b = flux.shape[0]
    chi2 = chi2_per_spectrum(out["recon"], flux, weight)
    kl = kl_per_spectrum(out["mu"], out["logvar"])
    zp = torch.cat([out["z"], out["u"]], dim=-1)
    if gamma:
        mi = gaussian_mutual_information(zp, out["z"].shape[-1])
    else:  # still logged, but kept out of the graph
        with torch.no_grad():
            mi = gaussian_mutual_information(zp, out["z"].shape[-1])
    recon = chi2.sum() / b
    kl_mean = kl.sum() / b
    # S = γ·B·MI is a batch sum; per spectrum it is γ·MI
    total = recon + beta * kl_mean + gamma * mi
    # written without data-dependent branches so a CUDA step never waits on the host
    n_good = (weight > 0).sum(dim=-1)
    has = (n_good > 0).float()
    chi2_nu = (chi2 / n_good.clamp_min(1)).mul(has).sum() / has.sum()
    return {"total": total, "recon": recon, "kl": kl_mean, "mi": mi,
            "kl_term": beta * kl_mean, "sep_term": gamma * mi, "chi2_nu": chi2_nu}


def _rbf_gram(x: torch.Tensor, scales: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """Gaussian kernel matrix with the median-distance bandwidth (held fixed for the
    gradient, so the penalty cannot be lowered by merely rescaling the latents' spread);
    with several ``scales`` the mean of the kernels at bandwidth² = scale × median²."""
    d2 = torch.cdist(x, x).pow(2)
    off = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
    median = off.detach().median().clamp_min(1e-12)
    return sum(torch.exp(-d2 / (s * median)) for s in scales) / len(scales)


def kernel_dependence(a: torch.Tensor, b: torch.Tensor, scales: tuple[float, ...] = (1.0,)
                      ) -> torch.Tensor:
    """Normalised HSIC (kernel CKA with Gaussian kernels) between the rows of ``a`` and
    ``b`` over a batch: 0 for independent variables, 1 for a one-to-one relation.  Unlike
    the Gaussian mutual information it sees non-linear dependence as well.  ``scales``
    multiply the squared median bandwidth of ``a``'s kernel: a narrow one sees a relation
    confined to a few of many latents, which the median bandwidth of all of them blurs."""
    a, b = a.double(), b.double()
    n = a.shape[0]
    h = torch.eye(n, dtype=a.dtype, device=a.device) - 1.0 / n
    k = h @ _rbf_gram(a, tuple(scales)) @ h
    ell = h @ _rbf_gram(b) @ h
    hsic = (k * ell).sum()
    norm = torch.sqrt((k * k).sum() * (ell * ell).sum()).clamp_min(1e-30)
    return (hsic / norm).float()


def with_dependence_penalty(terms: dict, mu: torch.Tensor, y: torch.Tensor, weight: float,
                            scales: tuple[float, ...] = (1.0,)) -> dict:
    """Add λ · kernel_dependence(μ, y) to ``total`` (opt-in: ``train vae --hsic λ``); logs
    ``hsic`` (unweighted) and ``hsic_term``."""
    dep = kernel_dependence(mu.float(), y.float(), scales)
    return {**terms, "total": terms["total"] + weight * dep, "hsic": dep,
            "hsic_term": weight * dep}


def per_latent_dependence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the columns of ``a`` of the normalised HSIC between that column alone and
    the rows of ``b``.  A relation held by one latent among many stands out far above the
    finite-batch floor here (≈0.2 against ≈0.02 for 256 spectra), while the kernel on all
    latents at once barely tells it from noise (≈0.11 against ≈0.09)."""
    a = a.float()
    n = a.shape[0]
    d2 = (a.T[:, :, None] - a.T[:, None, :]).pow(2)  # (columns, n, n)
    # bandwidth² = the mean squared distance (2 × variance) of each latent, held fixed for
    # the gradient; cheaper than the median over n² pairs per latent
    scale = (2.0 * a.detach().var(dim=0)).clamp_min(1e-12)
    k = torch.exp(-d2 / scale[:, None, None])
    b = b.double()
    h = torch.eye(n, dtype=b.dtype, device=b.device) - 1.0 / n
    ell = (h @ _rbf_gram(b) @ h).float()
    # tr(HKH·HLH) = Σ K∘(HLH), and ‖HKH‖² from K's sums: no n³ products per latent
    hsic = (k * ell).sum(dim=(1, 2))
    rows = k.sum(dim=2)
    k_norm2 = (k * k).sum(dim=(1, 2)) - 2.0 / n * (rows * rows).sum(1) + rows.sum(1).pow(2) / n**2
    norm = torch.sqrt(k_norm2.clamp_min(0) * (ell * ell).sum()).clamp_min(1e-30)
    return (hsic / norm).mean()


def with_per_latent_penalty(terms: dict, mu: torch.Tensor, y: torch.Tensor, weight: float
                            ) -> dict:
    """Add λ · per_latent_dependence(μ, y) to ``total`` (``train vae --hsic-per-latent λ``);
    logs ``hsic_latent`` (unweighted) and ``hsic_latent_term``."""
    dep = per_latent_dependence(mu.float(), y.float())
    return {**terms, "total": terms["total"] + weight * dep, "hsic_latent": dep,
            "hsic_latent_term": weight * dep}


#: Smallest prior spread of a label correction δy (z-score units): a star whose catalog
#: error is 0 or missing still gets a proper prior.
OFFSET_PRIOR_FLOOR = 1e-3


def offset_kl(mu: torch.Tensor, logvar: torch.Tensor, prior_sd: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, s²)) of the label corrections, summed over labels, per spectrum
    (mean over the batch): ½ Σ [(σ² + μ²)/s² − 1 − log σ² + log s²]."""
    mu, logvar = mu.float(), logvar.float()
    var_p = prior_sd.float().clamp_min(OFFSET_PRIOR_FLOOR).pow(2)
    kl = 0.5 * ((logvar.exp() + mu**2) / var_p - 1.0 - logvar + var_p.log())
    return kl.sum(dim=-1).mean()


#: Loss terms written to the training log, in column order.
LOG_TERMS = ("total", "recon", "kl", "mi", "kl_term", "sep_term", "chi2_nu")
