"""Fitting spectra with an emulator: labels ± σ, RV, χ²; one star, one element or a whole store."""

from .engine import BatchFit, FitOptions, Start, fit_batch
from .flags import FLAG_NAMES, decode_flags, describe_flags
from .prepare import on_grid
from .result import ElementFit, FitResult
from .single import element_label, element_windows, fit_element, fit_spectrum, load_model
from .store import fit_store, fit_store_table, write_fit_columns

__all__ = [
    "FLAG_NAMES", "BatchFit", "ElementFit", "FitOptions", "FitResult", "Start", "decode_flags",
    "describe_flags", "element_label", "element_windows", "fit_batch", "fit_element", "fit_spectrum", "fit_store",
    "fit_store_table", "load_model", "on_grid", "write_fit_columns",
]
