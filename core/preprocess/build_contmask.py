"""Rebuild the shipped continuum mask: ``python -m core.preprocess.build_contmask FILE …``.

Give apStar or apVisit files, one per star; see :mod:`core.preprocess.contmask` for the
method and ``assets/continuum/README.md`` for how the shipped mask was made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..grid import APOGEE_7514, Grid
from .contmask import (
    AVOID_BITS,
    DEFAULT_N_BINS,
    DEFAULT_N_TARGET,
    EMISSION_SIGMA,
    SHIPPED_MASK,
    derive_continuum_mask,
    save_continuum_mask,
)

DEFAULT_NOTE = ("Derived by core.preprocess.contmask from two real SDSS DR17 stars (a cool bulge "
                "giant apStar and a warmer apVisit shifted to the rest frame); see README.md "
                "beside this file.")


def _star_rows(paths: list[str], grid: Grid):
    """One row per file: an apStar's combined spectrum (its PIXMASK OR-ed with every visit's,
    since DR17 leaves the combined rows' masks incomplete) or an apVisit in the rest frame."""
    from ..io import detect_kind, read_spectrum

    rows, inputs = [], []
    for path in paths:
        kind = detect_kind(path)
        spec = read_spectrum(path, kind=kind, grid=grid)
        pixmask = spec.pixmask.astype(np.int64)
        if kind == "apstar":
            for v in range(int(spec.meta.get("VISITS_IN_FILE") or 0)):
                pixmask |= read_spectrum(path, kind=kind, grid=grid, visit=v).pixmask
        rows.append((spec.flux, spec.error, pixmask))
        inputs.append({"file": Path(path).name, "kind": kind, "APOGEE_ID": spec.apogee_id,
                       "SNR": spec.meta.get("SNR")})
    flux, error, pixmask = (np.stack([r[j] for r in rows]) for j in range(3))
    return flux, error, pixmask, inputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m core.preprocess.build_contmask",
        description="Derive a continuum-pixel mask from apStar/apVisit files (one per star).",
    )
    ap.add_argument("files", nargs="+", help="apStar or apVisit FITS files, one per star")
    ap.add_argument("--out", default=str(SHIPPED_MASK), help="output JSON (default: the asset)")
    ap.add_argument("--n-target", type=int, default=DEFAULT_N_TARGET)
    ap.add_argument("--n-bins", type=int, default=DEFAULT_N_BINS)
    ap.add_argument("--note", default=DEFAULT_NOTE, help="text stored in the JSON")
    args = ap.parse_args(argv)
    flux, error, pixmask, inputs = _star_rows(args.files, APOGEE_7514)
    params = {"n_target": args.n_target, "n_bins": args.n_bins, "iterations": 3,
              "smooth_half": 1, "avoid_bits": list(AVOID_BITS), "emission_sigma": EMISSION_SIGMA,
              "start": "asymmetric clipping (core.preprocess.continuum, method='clip')"}
    mask = derive_continuum_mask(flux, error, pixmask, APOGEE_7514,
                                 n_target=args.n_target, n_bins=args.n_bins)
    out = save_continuum_mask(mask, APOGEE_7514, args.out, note=args.note, inputs=inputs,
                              parameters=params)
    print(f"{int(mask.sum())} continuum pixels -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
