"""Radial-velocity pre-estimate: cross-correlate the data with an emulator template.

On the log-linear grid a velocity is a pixel shift, so the cross-correlation over integer
lags per chip (via FFT), summed over chips, peaks at the shift; a parabola through the
peak and its neighbours gives the sub-pixel value.  Only good pixels take part.  How far
the peak stands above the CCF at other lags tells a real RV from noise.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..grid import KMS_PER_PIXEL, Grid
from .forward import shift_to_rv


def _centred(x: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    n = good.sum(-1, keepdim=True).clamp(min=1)
    mean = (x * good).sum(-1, keepdim=True) / n
    return (x - mean) * good


class CrossCorrelation(NamedTuple):
    """What :func:`cross_correlation` found for each spectrum of a batch."""

    rv: torch.Tensor            # (B,) km/s at the peak (sub-pixel)
    peak: torch.Tensor          # (B,) correlation at the peak (−1…1)
    significance: torch.Tensor  # (B,) peak height over the CCF's robust scatter across lags
    at_edge: torch.Tensor       # (B,) bool: the peak is on the outermost searched lag


def cross_correlation(flux: torch.Tensor, good: torch.Tensor, template: torch.Tensor,
                      grid: Grid, max_rv: float = 600.0) -> CrossCorrelation:
    """Cross-correlate each spectrum with its rest-frame template over ±``max_rv``.

    ``flux``/``good`` are (B, P) on ``grid``; ``template`` is (B, P) or (P,).
    ``significance`` is (peak − median) / (1.4826·MAD) of the CCF over all lags: a real
    star's peak stands tens of σ above the correlation of noise with the template, a flat
    or pure-noise spectrum's highest lag only a few (0 when the CCF is identically zero).
    """
    max_lag = max(1, int(round(max_rv / KMS_PER_PIXEL)))
    goodf = good.to(flux.dtype)
    template = template.expand_as(flux)
    ccf = None
    norm_d = torch.zeros(flux.shape[0], device=flux.device, dtype=flux.dtype)
    norm_t = torch.zeros_like(norm_d)
    for sl in grid.chip_slices():
        g = goodf[:, sl]
        d = _centred(1.0 - flux[:, sl], g)
        t = _centred(1.0 - template[:, sl], torch.ones_like(g))
        n = d.shape[-1]
        lag = min(max_lag, n - 2)
        size = 1 << (n + lag).bit_length()
        spec = torch.fft.rfft(d, size) * torch.fft.rfft(t, size).conj()
        full = torch.fft.irfft(spec, size)  # full[k] = Σ_i d[i] t[i − k], circular
        part = torch.cat([full[:, size - lag:], full[:, : lag + 1]], dim=-1)
        if part.shape[-1] < 2 * max_lag + 1:  # a short chip: pad the missing lags with zeros
            pad = (2 * max_lag + 1 - part.shape[-1]) // 2
            part = torch.nn.functional.pad(part, (pad, pad))
        ccf = part if ccf is None else ccf + part
        norm_d += (d * d).sum(-1)
        norm_t += (t * t * g).sum(-1)
    ccf = ccf / torch.sqrt(norm_d * norm_t).clamp(min=1e-30).unsqueeze(-1)
    peak = ccf.argmax(-1)
    inner = peak.clamp(1, ccf.shape[-1] - 2)
    rows = torch.arange(ccf.shape[0], device=ccf.device)
    y0, y1, y2 = ccf[rows, inner - 1], ccf[rows, inner], ccf[rows, inner + 1]
    denom = y0 - 2 * y1 + y2
    offset = torch.where(denom < 0, 0.5 * (y0 - y2) / denom.clamp(max=-1e-30), torch.zeros_like(y1))
    offset = torch.where(peak == inner, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))
    shift = (peak - max_lag).to(flux.dtype) + offset
    height = ccf[rows, peak]
    median = ccf.median(-1).values
    scatter = 1.4826 * (ccf - median.unsqueeze(-1)).abs().median(-1).values
    excess = height - median
    significance = torch.where(scatter > 0, excess / scatter.clamp(min=1e-30),
                               torch.where(excess > 0, torch.full_like(excess, float("inf")),
                                           torch.zeros_like(excess)))
    at_edge = (peak == 0) | (peak == ccf.shape[-1] - 1)
    return CrossCorrelation(shift_to_rv(shift.double()).to(flux.dtype), height, significance,
                            at_edge)


def cross_correlate_rv(flux: torch.Tensor, good: torch.Tensor, template: torch.Tensor,
                       grid: Grid, max_rv: float = 600.0) -> tuple[torch.Tensor, torch.Tensor]:
    """RV (km/s) and peak correlation (−1…1) of each spectrum against its rest-frame template
    (see :func:`cross_correlation` for the significance of the peak)."""
    res = cross_correlation(flux, good, template, grid, max_rv)
    return res.rv, res.peak
