"""The one device choice and precision policy of every model: training, inference, fitting."""

from __future__ import annotations

import contextlib

import torch

from .errors import StellarscopeError


def choose_device(preference: str | torch.device | None = "auto") -> torch.device:
    """``auto`` / None: CUDA when available, else CPU; otherwise the named device."""
    if preference in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(preference)
    except RuntimeError as exc:
        raise StellarscopeError(f"unknown device {preference!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StellarscopeError(f"device {preference!r} requested but CUDA is not available")
    return dev


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op context elsewhere (the CPU runs float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
