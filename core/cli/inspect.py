"""``stellarscope inspect PATH``: summarise a FITS file or a store directory."""

from __future__ import annotations

import json


def register(sub, groups) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise an APOGEE file (apStar, aspcapStar, apVisit, allStar, …) or a store",
        description="For a spectrum file: object, kind, grid, pixels, SNR, masked fraction, "
        "median of the continuum-normalised flux and wavelength range. For a store: kind, "
        "number of stars, grid, dtype, catalog columns and sources (opening a store checks its "
        "parts' row counts). Exits 1 with 'PATH: problem' for a file or store that cannot be "
        "read.",
    )
    p.add_argument("path", metavar="PATH", help="a FITS/HDF5/NPZ file or a store directory")
    p.add_argument("--verify", action="store_true",
                   help="store only: re-read every spectra part and the catalog and compare "
                   "rows, sizes and BLAKE2b checksums with the manifest; exits 1 on a problem")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inspect import format_summary, summarize, verify

    if args.verify:
        summary, report = verify(args.path)
        if args.json:
            print(json.dumps({**summary, "verify": report.to_dict()}, default=str))
        else:
            print(format_summary(summary))
            print(report.format())
        return 0 if report.ok else 1
    summary = summarize(args.path)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(format_summary(summary))
    return 0
