"""``stellarscope inspect PATH``: summarise a FITS file or a store directory."""

from __future__ import annotations

import json


def register(sub, groups) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise an APOGEE file (apStar, aspcapStar, apVisit, allStar, …) or a store",
        description="For a spectrum file: object, kind, grid, pixels, SNR, masked fraction, "
        "median of the continuum-normalised flux and wavelength range. For a store: kind, "
        "number of stars, grid, dtype, catalog columns and sources. Exits 1 with "
        "'PATH: problem' for a file that cannot be read.",
    )
    p.add_argument("path", metavar="PATH", help="a FITS/HDF5/NPZ file or a store directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inspect import format_summary, summarize

    summary = summarize(args.path)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(format_summary(summary))
    return 0
