"""Curve of growth and precomputed line-profile templates on the apStar pixel grid.

A line's equivalent width comes from a curve of growth of Voigt profiles,
F(η₀, a) = ∫ (1 − exp(−η₀ H(a, u))) du (in Doppler widths), tabulated once.  Its observed
shape is the APOGEE line-spread function (Gaussian in log λ, R ≈ 22 500, ≈ 3.2 px FWHM)
convolved with a Lorentzian whose width stands in for the saturated core and damping wings;
a few such Voigt templates per line, sampled once on the pixel grid, are mixed per star.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse
from scipy.ndimage import map_coordinates
from scipy.special import voigt_profile, wofz

from ..grid import APSTAR_NPIX, C_KMS, KMS_PER_PIXEL, apstar_pixel

RESOLUTION = 22_500.0
#: Gaussian σ of the line-spread function in pixels (FWHM = c/R ≈ 3.2 px).
LSF_SIGMA_PX = C_KMS / RESOLUTION / KMS_PER_PIXEL / (2.0 * np.sqrt(2.0 * np.log(2.0)))

LOG_ETA = np.arange(-4.0, 9.0001, 0.1)
LOG_A = np.arange(-4.0, 2.5001, 0.25)
SQRT_PI = np.sqrt(np.pi)


@lru_cache(maxsize=1)
def cog_table() -> np.ndarray:
    """log10 F(η₀, a) on the (LOG_ETA, LOG_A) grid (computed once, ~1 s)."""
    u = np.concatenate([np.linspace(0.0, 6.0, 481), np.logspace(np.log10(6.02), 9.0, 900)])
    du = np.diff(u)
    table = np.empty((LOG_ETA.size, LOG_A.size))
    for j, la in enumerate(LOG_A):
        h = wofz(u + 1j * 10.0**la).real
        # beyond the sampled range the Lorentz wing a/(√π u²) integrates to a/(√π u_max)
        for i, le in enumerate(LOG_ETA):
            y = -np.expm1(-(10.0**le) * h)
            area = np.sum(0.5 * (y[1:] + y[:-1]) * du) + 10.0**le * 10.0**la / (SQRT_PI * u[-1])
            table[i, j] = np.log10(2.0 * area)
    return table


def curve_of_growth(log_eta: np.ndarray, log_a: np.ndarray) -> np.ndarray:
    """F(η₀, a) (equivalent width in Doppler widths for unit depth), bilinear in log-log.

    Below the table the linear limit √π η₀ holds exactly; above it the damping limit
    F ∝ √η₀ continues the last row.
    """
    le = np.asarray(log_eta, dtype=np.float64)
    x = (np.clip(le, LOG_ETA[0], LOG_ETA[-1]) - LOG_ETA[0]) / (LOG_ETA[1] - LOG_ETA[0])
    y = (np.clip(np.asarray(log_a, dtype=np.float64), LOG_A[0], LOG_A[-1]) - LOG_A[0]) / (
        LOG_A[1] - LOG_A[0])
    logf = map_coordinates(cog_table(), [x.ravel(), y.ravel()], order=1, mode="nearest")
    logf = logf.reshape(le.shape)
    logf = np.where(le < LOG_ETA[0], np.log10(SQRT_PI) + le, logf)
    logf = np.where(le > LOG_ETA[-1], logf + 0.5 * (le - LOG_ETA[-1]), logf)
    return 10.0**logf


@dataclass(frozen=True)
class TemplateSet:
    """Lorentzian widths (px) of one family of templates, the Gaussian σ and the half-support."""

    gammas: tuple[float, ...]
    sigma: float
    max_half_width: int


#: Atomic lines may be strongly damped in dwarfs; molecular lines never are; hydrogen lines
#: are Stark-broadened and carry a thermal Doppler core comparable to the line-spread function.
ATOMIC = TemplateSet((0.0, 0.7, 2.0, 5.0, 12.0), float(np.hypot(LSF_SIGMA_PX, 0.35)), 120)
MOLECULAR = TemplateSet((0.0, 0.7, 2.0), float(np.hypot(LSF_SIGMA_PX, 0.3)), 40)
HYDROGEN = TemplateSet((3.0, 8.0, 20.0, 50.0), float(np.hypot(LSF_SIGMA_PX, 1.6)), 600)
GAMMA_SCALE = 0.5  # px: the interpolation coordinate is log(1 + γ / GAMMA_SCALE)


def _coord(gamma):
    return np.log1p(np.asarray(gamma, dtype=np.float64) / GAMMA_SCALE)


def template_weights(gamma: np.ndarray, tset: TemplateSet) -> np.ndarray:
    """Piecewise-linear (hat-function) weights (…, K) of the K templates for widths ``gamma``."""
    knots = _coord(tset.gammas)
    g = np.clip(_coord(gamma), knots[0], knots[-1])
    w = np.empty(g.shape + (knots.size,))
    for k in range(knots.size):
        rise = (g - knots[k - 1]) / (knots[k] - knots[k - 1]) if k > 0 else np.ones_like(g)
        fall = (knots[k + 1] - g) / (knots[k + 1] - knots[k]) if k < knots.size - 1 else np.ones_like(g)
        w[..., k] = np.clip(np.minimum(rise, fall), 0.0, 1.0)
    return w


def build_templates(wavelength_vac: np.ndarray, tset: TemplateSet):
    """Sparse (apStar pixels × lines·K) matrix of unit-area Voigt templates, and their peaks.

    Column l·K + k holds template k of line l; ``peaks`` (L, K) is each template's largest
    sampled value, so the peak of a mixture Σ w_k T_k is Σ w_k peak_k.
    """
    centre = apstar_pixel(np.asarray(wavelength_vac, dtype=np.float64))
    k_n = len(tset.gammas)
    rows, cols, vals = [], [], []
    peaks = np.zeros((centre.size, k_n))
    for k, gamma in enumerate(tset.gammas):
        half = int(min(tset.max_half_width, np.ceil(5.0 * tset.sigma + 30.0 * gamma)))
        offs = np.arange(-half, half + 1)
        pix = np.rint(centre)[:, None].astype(np.int64) + offs[None, :]
        x = pix - centre[:, None]
        prof = voigt_profile(x, tset.sigma, gamma) if gamma > 0 else (
            np.exp(-0.5 * (x / tset.sigma) ** 2) / (tset.sigma * np.sqrt(2 * np.pi)))
        peaks[:, k] = prof.max(axis=1)
        ok = (pix >= 0) & (pix < APSTAR_NPIX)
        line_idx = np.broadcast_to(np.arange(centre.size)[:, None], pix.shape)
        rows.append(pix[ok])
        cols.append((line_idx * k_n + k)[ok])
        vals.append(prof[ok])
    matrix = sparse.csr_matrix(
        (np.concatenate(vals).astype(np.float32),
         (np.concatenate(rows), np.concatenate(cols))),
        shape=(APSTAR_NPIX, centre.size * k_n),
    )
    return matrix, peaks
