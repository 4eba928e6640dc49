"""FIT_FLAG bits: what can be wrong with a fit, as bits (catalog), names (JSON) and sentences
(views and the terminal).

A flagged fit is never presented as a clean one: TOO_FEW_PIXELS and NO_RV_SIGNAL leave NaN
where no honest number exists, and MODEL_MISMATCH widens the σ by √χ²_ν.
"""

from __future__ import annotations

import numpy as np

FLAG_LABEL_AT_BOUND = 1
FLAG_RV_AT_BOUND = 2
FLAG_NOT_CONVERGED = 4
FLAG_TOO_FEW_PIXELS = 8
FLAG_RV_AT_SEARCH_EDGE = 16
FLAG_NO_RV_SIGNAL = 32
FLAG_MODEL_MISMATCH = 64

FLAG_NAMES = {
    FLAG_LABEL_AT_BOUND: "LABEL_AT_BOUND",
    FLAG_RV_AT_BOUND: "RV_AT_BOUND",
    FLAG_NOT_CONVERGED: "NOT_CONVERGED",
    FLAG_TOO_FEW_PIXELS: "TOO_FEW_PIXELS",
    FLAG_RV_AT_SEARCH_EDGE: "RV_AT_SEARCH_EDGE",
    FLAG_NO_RV_SIGNAL: "NO_RV_SIGNAL",
    FLAG_MODEL_MISMATCH: "MODEL_MISMATCH",
}

FLAG_DESCRIPTIONS = {
    FLAG_LABEL_AT_BOUND: "a label sits on the edge of the emulator's training range "
                         "(the star may lie outside it)",
    FLAG_RV_AT_BOUND: "the RV hit the limit of its fit window around the cross-correlation "
                      "estimate",
    FLAG_NOT_CONVERGED: "the fit stopped before converging",
    FLAG_TOO_FEW_PIXELS: "too few usable pixels: no labels, RV or χ² (NaN)",
    FLAG_RV_AT_SEARCH_EDGE: "the RV is at the edge of the cross-correlation search; the true "
                            "RV may lie beyond it",
    FLAG_NO_RV_SIGNAL: "no significant cross-correlation peak: the RV is unknown (NaN) and "
                       "the labels assume the rest frame",
    FLAG_MODEL_MISMATCH: "χ²_ν far above 1: the emulator does not describe this spectrum; σ "
                         "are inflated by √χ²_ν",
}


def decode_flags(value: int) -> list[str]:
    """Names of the bits set in ``value`` (lowest bit first)."""
    return [name for bit, name in FLAG_NAMES.items() if int(value) & bit]


def describe_flags(bits: int) -> list[str]:
    """One readable line per bit set: ``"NO_RV_SIGNAL: no significant …"``; [] for 0."""
    return [f"{FLAG_NAMES[bit]}: {FLAG_DESCRIPTIONS[bit]}" for bit in FLAG_NAMES
            if int(bits) & bit]


def flag_names_column(flags) -> np.ndarray:
    """Comma-separated flag names for every value of ``flags`` ('' when clean; the catalog's
    FIT_FLAG_NAMES column)."""
    flags = np.asarray(flags, dtype=np.int64)
    out = np.full(flags.shape, "", dtype=object)
    for value in np.unique(flags):
        if value > 0:
            out[flags == value] = ",".join(decode_flags(int(value)))
    return out
