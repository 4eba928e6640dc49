"""Batched, bounded Levenberg–Marquardt on weighted residuals.

Every row of the batch is an independent least-squares problem.  Bounds are handled by
projection with an active set: a parameter sitting on a bound whose gradient points
outward is held fixed for that step, the others take the damped Gauss–Newton step, and
the trial point is clipped into the box.  Marquardt's diagonal scaling makes the damping
independent of the parameters' units.  Rows stop independently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: residuals(p_rows, rows, jacobian) → (r (n, P), J (n, P, K) or None) for the given batch rows.
ResidualFn = Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class LMResult:
    p: torch.Tensor          # (B, K) best parameters
    chi2: torch.Tensor       # (B,) Σ r² at p
    jtj: torch.Tensor        # (B, K, K) JᵀJ at p (float64)
    converged: torch.Tensor  # (B,) bool
    n_iter: torch.Tensor     # (B,) iterations taken
    lam: torch.Tensor        # (B,) final damping


def _normal_equations(r: torch.Tensor, jac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    jt = jac.transpose(1, 2)
    a = torch.bmm(jt, jac).double()
    g = torch.bmm(jt, r.unsqueeze(-1)).squeeze(-1).double()
    return a, g


def levenberg_marquardt(residuals: ResidualFn, p0: torch.Tensor, lower: torch.Tensor,
                        upper: torch.Tensor, *, max_iter: int = 50, ftol: float = 1e-7,
                        xtol: float = 1e-7, lam0: float | torch.Tensor = 1e-3,
                        on_iteration: Callable[[int, int], None] | None = None) -> LMResult:
    """Minimise Σ r² for every row of ``p0`` (B, K) inside [lower, upper] (B, K).

    ``on_iteration(i, n_active)`` is called after every iteration (for progress displays).
    """
    p = torch.minimum(torch.maximum(p0.clone(), lower), upper)
    n, k = p.shape
    all_rows = torch.arange(n, device=p.device)
    r, jac = residuals(p, all_rows, True)
    chi2 = (r * r).sum(-1)
    a, g = _normal_equations(r, jac)
    lam = torch.as_tensor(lam0, dtype=torch.float64, device=p.device).expand(n).clone()
    active = torch.ones(n, dtype=torch.bool, device=p.device)
    converged = torch.zeros(n, dtype=torch.bool, device=p.device)
    n_iter = torch.zeros(n, dtype=torch.long, device=p.device)
    eye = torch.eye(k, dtype=torch.float64, device=p.device)
    span = (upper - lower).double().clamp(min=1e-30)
    for it in range(max_iter):
        rows = torch.nonzero(active).squeeze(-1)
        if rows.numel() == 0:
            break
        pr, ar, gr, lr_ = p[rows].double(), a[rows], g[rows], lam[rows]
        lo, hi = lower[rows].double(), upper[rows].double()
        # Held: on a bound with the descent direction (−g) pointing out of the box, or pinned.
        held = ((pr <= lo) & (gr > 0)) | ((pr >= hi) & (gr < 0)) | (hi <= lo)
        diag = torch.diagonal(ar, dim1=1, dim2=2).clamp(min=1e-12)
        m = ar + lr_[:, None, None] * torch.diag_embed(diag)
        keep = (~held).double()
        m = m * keep.unsqueeze(1) * keep.unsqueeze(2) + eye * held.double().unsqueeze(1)
        rhs = -gr * keep
        step = torch.linalg.solve(m, rhs.unsqueeze(-1)).squeeze(-1)
        trial = torch.minimum(torch.maximum(pr + step, lo), hi).to(p.dtype)
        r_try, _ = residuals(trial, rows, False)
        chi2_try = (r_try * r_try).sum(-1)
        better = torch.isfinite(chi2_try) & (chi2_try < chi2[rows])
        moved = ((trial.double() - pr).abs() / span[rows]).amax(-1)
        gain = (chi2[rows] - chi2_try) / chi2_try.clamp(min=1e-30)
        n_iter[rows] += 1
        acc = rows[better]
        if acc.numel():
            p[acc] = trial[better]
            r_acc, j_acc = residuals(p[acc], acc, True)
            chi2[acc] = (r_acc * r_acc).sum(-1)
            a[acc], g[acc] = _normal_equations(r_acc, j_acc)
        lam[rows] = torch.where(better, (lr_ * 0.3).clamp(min=1e-9), lr_ * 10.0)
        done = (better & ((gain <= ftol) | (moved <= xtol))) | (~better & (moved <= xtol))
        done |= lam[rows] > 1e10
        converged[rows[done]] = True
        active[rows[done]] = False
        if on_iteration is not None:
            on_iteration(it, int(active.sum()))
    return LMResult(p=p, chi2=chi2, jtj=a, converged=converged, n_iter=n_iter, lam=lam)
