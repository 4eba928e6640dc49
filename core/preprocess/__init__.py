"""Preprocessing: bad pixels, continuum normalisation and catalog quality cuts."""

from .continuum import Normalized, normalize, normalize_arrays
from .contmask import derive_continuum_mask, load_continuum_mask
from .masks import LARGE_ERROR, apply_error_floor, clean
from .selection import SELECTIONS, Selection, get_selection

__all__ = [
    "LARGE_ERROR", "SELECTIONS", "Normalized", "Selection", "apply_error_floor", "clean",
    "derive_continuum_mask", "get_selection", "load_continuum_mask", "normalize",
    "normalize_arrays",
]
