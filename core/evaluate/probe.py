"""Nonlinear probes: how much of some targets a representation predicts beyond controls.

A linear correlation between a VAE's free latents and its injected labels can be ~0 while the
latents still hold the labels (a trend that is not linear, or one spread over many latents).
The probe here asks the stronger question: trained on one half of the stars and scored on the
other (then the other way round), how well does a regressor predict each target from

* (a) the representation alone,
* (b) the controls alone — what the representation may legitimately know (for a VAE: the
  labels it is *not* given, such as VMICRO and [X/Fe]),
* (c) controls + representation,

and what does the representation add: the **excess R²** = R²(c) − R²(b).  A row-shuffled copy
of the representation with the controls gives the same difference for a representation that
knows nothing (it should be ~0; its spread says how far from 0 noise alone goes).

Regressors: a small MLP (default 2×64, ReLU, AdamW, early stopping on an inner 20 % of the
training half; one independent network per target, trained side by side as a batched
ensemble), k-nearest-neighbour regression on standardised features (k picked on the same inner
split; scipy's cKDTree) as a check that needs no training, and ordinary least squares, the
linear probe that a Pearson check corresponds to.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

METHODS = ("mlp", "knn", "linear")
#: feature sets, in the order they are reported
FEATURE_SETS = ("latents", "controls", "controls_latents", "controls_shuffled")


@dataclass(frozen=True)
class ProbeSettings:
    """Knobs of the regressors (the defaults are what ``evaluate vae`` uses)."""

    hidden: tuple[int, ...] = (64, 64)
    max_epochs: int = 400
    patience: int = 25
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    #: fraction of the training half kept aside for early stopping and for choosing k
    inner_fraction: float = 0.2
    knn_ks: tuple[int, ...] = (3, 5, 10, 20, 40, 80)
    seed: int = 0


def r2_score(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: 1 − Σ(y − ŷ)² / Σ(y − ȳ)²."""
    y, pred = np.atleast_2d(y.T).T, np.atleast_2d(pred.T).T
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = train.mean(0)
    sd = train.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)  # constant columns stay 0
    return [(a - mean) / sd for a in (train, *others)]


def _inner_split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return perm[n_val:], perm[:n_val]


# -- the regressors -------------------------------------------------------------------------------

def mlp_regress(x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray,
                settings: ProbeSettings = ProbeSettings()) -> np.ndarray:
    """Predict each column of ``y_fit`` at ``x_new`` with its own MLP.

    The T networks (one per target) share nothing but the input; they are held as stacked
    weight tensors and trained in one loop (AdamW is element-wise, so summing their losses
    trains each exactly as alone).  Each keeps the weights of its best inner-validation epoch
    (or the training mean if no epoch beats it) and stops counting after ``patience`` epochs
    without improvement.
    """
    y_fit = np.atleast_2d(y_fit.T).T
    if x_fit.shape[1] == 0:  # nothing to learn from: the training mean
        return np.broadcast_to(y_fit.mean(0), (len(x_new), y_fit.shape[1])).copy()
    rng = np.random.default_rng(settings.seed)
    gen = torch.Generator().manual_seed(int(settings.seed))
    x_fit, x_new = _standardise(x_fit, x_new)
    y_mean, y_sd = y_fit.mean(0), np.where(y_fit.std(0) > 1e-12, y_fit.std(0), 1.0)
    y_std = (y_fit - y_mean) / y_sd
    tr, va = _inner_split(len(x_fit), settings.inner_fraction, rng)
    xt = torch.as_tensor(x_fit[tr], dtype=torch.float32)
    yt = torch.as_tensor(y_std[tr], dtype=torch.float32).T.unsqueeze(-1)  # (T, n, 1)
    xv = torch.as_tensor(x_fit[va], dtype=torch.float32)
    yv = torch.as_tensor(y_std[va], dtype=torch.float32).T.unsqueeze(-1)

    n_nets = y_fit.shape[1]
    widths = [x_fit.shape[1], *settings.hidden, 1]
    params = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        bound = 1.0 / a**0.5  # torch.nn.Linear's default initialisation
        w = (torch.rand(n_nets, a, b, generator=gen) * 2 - 1) * bound
        bias = (torch.rand(n_nets, 1, b, generator=gen) * 2 - 1) * bound
        params += [w.requires_grad_(), bias.requires_grad_()]

    def forward(x: torch.Tensor, ps) -> torch.Tensor:
        h = x.expand(n_nets, *x.shape)
        for i in range(0, len(ps), 2):
            h = torch.baddbmm(ps[i + 1], h, ps[i])
            if i + 2 < len(ps):
                h = torch.relu(h)
        return h  # (T, n, 1)

    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    # the starting "best" predicts the training mean (a zero last layer): a network that
    # never beats it on the inner split falls back to it instead of scoring below R² = 0
    best = [p.detach().clone() for p in params]
    best[-2].zero_()
    best[-1].zero_()
    best_loss = (yv**2).mean(dim=(1, 2))
    since = torch.zeros(n_nets, dtype=torch.long)
    n = len(xt)
    bs = min(settings.batch_size, n)
    for _ in range(settings.max_epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - bs + 1, bs):
            idx = order[i:i + bs]
            loss = ((forward(xt[idx], params) - yt[:, idx]) ** 2).mean(dim=(1, 2)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = ((forward(xv, params) - yv) ** 2).mean(dim=(1, 2))
            better = val < best_loss
            since = torch.where(better, torch.zeros_like(since), since + 1)
            best_loss = torch.where(better, val, best_loss)
            for b_, p in zip(best, params, strict=True):
                b_[better] = p[better]
        if bool((since > settings.patience).all()):
            break
    with torch.no_grad():
        pred = forward(torch.as_tensor(x_new, dtype=torch.float32), best)[..., 0].T.numpy()
    return pred.astype(np.float64) * y_sd + y_mean


def knn_regress(x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray,
                settings: ProbeSettings = ProbeSettings()) -> np.ndarray:
    """Mean of the k nearest training neighbours (standardised features), k per target
    chosen on the inner split from ``settings.knn_ks``."""
    y_fit = np.atleast_2d(y_fit.T).T
    if x_fit.shape[1] == 0:
        return np.broadcast_to(y_fit.mean(0), (len(x_new), y_fit.shape[1])).copy()
    x_fit, x_new = _standardise(x_fit, x_new)
    rng = np.random.default_rng(settings.seed)
    tr, va = _inner_split(len(x_fit), settings.inner_fraction, rng)
    ks = [k for k in settings.knn_ks if k <= len(tr)] or [len(tr)]
    _, idx = cKDTree(x_fit[tr]).query(x_fit[va], k=max(ks))
    idx = idx.reshape(len(va), -1)
    neigh = y_fit[tr][idx]  # (n_val, kmax, T)
    cum = np.cumsum(neigh, axis=1)
    errs = np.stack([((cum[:, k - 1] / k - y_fit[va]) ** 2).mean(0) for k in ks])  # (K, T)
    k_best = [ks[i] for i in errs.argmin(0)]
    _, idx = cKDTree(x_fit).query(x_new, k=max(k_best))
    idx = idx.reshape(len(x_new), -1)
    neigh = y_fit[idx]
    return np.column_stack([neigh[:, :k, t].mean(1) for t, k in enumerate(k_best)])


def linear_regress(x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray,
                   settings: ProbeSettings = ProbeSettings()) -> np.ndarray:
    """Ordinary least squares with an intercept."""
    y_fit = np.atleast_2d(y_fit.T).T
    design = np.column_stack([x_fit, np.ones(len(x_fit))])
    coef, *_ = np.linalg.lstsq(design, y_fit, rcond=None)
    return np.column_stack([x_new, np.ones(len(x_new))]) @ coef


REGRESSORS = {"mlp": mlp_regress, "knn": knn_regress, "linear": linear_regress}


# -- the probe ----------------------------------------------------------------------------------

def split_halves(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two random halves of ``range(n)`` (sorted): fit on one, score on the other."""
    perm = rng.permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def cross_fit_r2(x: np.ndarray, y: np.ndarray, halves: Sequence[np.ndarray], method: str,
                 settings: ProbeSettings = ProbeSettings()) -> np.ndarray:
    """R² per target and half (2 × T): fitted on one half, scored on the other, both ways."""
    regress = REGRESSORS[method]
    a, b = halves
    return np.stack([r2_score(y[score], regress(x[fit], y[fit], x[score], settings))
                     for fit, score in ((a, b), (b, a))])


def latent_probe(latents: np.ndarray, targets: np.ndarray, controls: np.ndarray | None = None,
                 *, target_names: Sequence[str], control_names: Sequence[str] = (),
                 methods: Sequence[str] = METHODS, seed: int = 0,
                 settings: ProbeSettings | None = None) -> dict:
    """Excess R² of ``latents`` (N × K) for each target column (N × T) beyond ``controls``
    (N × C, may be empty), by each regressor in ``methods``; see the module docstring.

    Rows with a non-finite value anywhere are left out (counted in ``n_dropped``).  The
    stars are split at random into two halves (``seed``); every R² is the mean of the two
    directions, and ``excess_r2_halves`` gives both, so their spread is visible.
    """
    settings = settings or ProbeSettings(seed=seed)
    unknown = set(methods) - set(REGRESSORS)
    if unknown:
        raise ValueError(f"unknown probe methods {sorted(unknown)} (known: {list(REGRESSORS)})")
    latents = np.asarray(latents, np.float64)
    targets = np.atleast_2d(np.asarray(targets, np.float64).T).T
    controls = (np.zeros((len(latents), 0)) if controls is None
                else np.atleast_2d(np.asarray(controls, np.float64).T).T)
    if not (len(latents) == len(targets) == len(controls)):
        raise ValueError("latents, targets and controls need the same number of rows")
    if len(target_names) != targets.shape[1] or len(control_names) != controls.shape[1]:
        raise ValueError("target_names / control_names do not match the columns")
    keep = (np.isfinite(latents).all(1) & np.isfinite(targets).all(1)
            & np.isfinite(controls).all(1))
    latents, targets, controls = latents[keep], targets[keep], controls[keep]
    n = len(latents)
    if n < 40:
        raise ValueError(f"the probe needs at least 40 stars with finite values, got {n}")
    rng = np.random.default_rng(seed)
    halves = split_halves(rng, n)
    shuffled = latents[rng.permutation(n)]  # same values, association with the stars broken
    features = {"latents": latents, "controls": controls,
                "controls_latents": np.column_stack([controls, latents]),
                "controls_shuffled": np.column_stack([controls, shuffled])}
    t0 = time.perf_counter()
    result: dict = {}
    for method in methods:
        r2 = {k: cross_fit_r2(x, targets, halves, method, settings) for k, x in features.items()}
        excess = r2["controls_latents"] - r2["controls"]
        shuffled_excess = r2["controls_shuffled"] - r2["controls"]
        result[method] = {
            name: {**{f"r2_{k}": float(v[:, t].mean()) for k, v in r2.items()},
                   "excess_r2": float(excess[:, t].mean()),
                   "excess_r2_halves": [float(v) for v in excess[:, t]],
                   # the share of what the controls leave unexplained that the latents explain
                   "partial_r2": float((excess[:, t] / np.maximum(
                       1.0 - r2["controls"][:, t], 1e-6)).mean()),
                   "shuffled_excess_r2": float(shuffled_excess[:, t].mean()),
                   "excess_over_shuffled_r2": float((excess - shuffled_excess)[:, t].mean())}
            for t, name in enumerate(target_names)}
    return {
        "n_stars": int(n), "n_dropped": int((~keep).sum()),
        "halves": [int(len(h)) for h in halves],
        "targets": list(target_names), "controls": list(control_names),
        "n_latents": int(latents.shape[1]),
        "scoring": "fitted on one random half of the stars, scored on the other, both ways; "
                   "R² is the mean of the two directions",
        "figure_of_merit": "excess_r2 = R²(controls + latents) − R²(controls); partial_r2 = "
                           "excess_r2 / (1 − R²(controls)), the share of what the controls "
                           "leave unexplained that the latents explain",
        "baseline": "shuffled_excess_r2: the same with the latents row-shuffled (~0 for a "
                    "representation that knows nothing; k-NN loses accuracy with every added "
                    "dimension, so its baseline is negative and excess_over_shuffled_r2 = "
                    "R²(controls + latents) − R²(controls + shuffled) is its fairer figure)",
        "methods": list(methods),
        "mlp_settings": {"hidden": list(settings.hidden), "early_stopping": "inner "
                f"{settings.inner_fraction:.0%} of the training half, patience "
                f"{settings.patience} epochs"} if "mlp" in methods else None,
        **result,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def probe_table(probe: dict) -> list[dict]:
    """The probe's figures as rows (method, target, figure, value) for a CSV."""
    rows = []
    for method in probe["methods"]:
        for target, figs in probe[method].items():
            for key, value in figs.items():
                if key == "excess_r2_halves":
                    for i, v in enumerate(value):
                        rows.append({"method": method, "target": target,
                                     "figure": f"excess_r2_half{i}", "value": v})
                else:
                    rows.append({"method": method, "target": target, "figure": key,
                                 "value": value})
    return rows
