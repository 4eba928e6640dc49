"""Radial-velocity pre-estimate: cross-correlate the data with an emulator template.

On the log-linear grid a velocity is a pixel shift, so the cross-correlation over integer
lags per chip (via FFT), summed over chips, peaks at the shift; a parabola through the
peak and its neighbours gives the sub-pixel value.  Only good pixels take part.
"""

from __future__ import annotations

import torch

from ..grid import KMS_PER_PIXEL, Grid
from .forward import shift_to_rv


def _centred(x: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    n = good.sum(-1, keepdim=True).clamp(min=1)
    mean = (x * good).sum(-1, keepdim=True) / n
    return (x - mean) * good


def cross_correlate_rv(flux: torch.Tensor, good: torch.Tensor, template: torch.Tensor,
                       grid: Grid, max_rv: float = 600.0) -> tuple[torch.Tensor, torch.Tensor]:
    """RV (km/s) and peak correlation (−1…1) of each spectrum against its rest-frame template.

    ``flux``/``good`` are (B, P) on ``grid``; ``template`` is (B, P) or (P,).
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
    return shift_to_rv(shift.double()).to(flux.dtype), ccf[rows, peak]
