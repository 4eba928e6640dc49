"""``stellarscope ingest``: build a store from real APOGEE data (see :mod:`core.ingest`)."""

from __future__ import annotations

import json
import sys

EXAMPLES = """\
modes (pick one):
  --allstar allStar.fits --spectra-dir DIR   allStar rows + their aspcapStar/apStar files
  --contspec FLUX ERR MASK [--allstar F]     astroNN's continuum-normalised trio
  --generic FILE.h5|FILE.npz                 your own arrays on an APOGEE grid
  --files a.fits b.fits …                    individual apStar/aspcapStar/apVisit files

examples:
  stellarscope ingest --allstar allStar-dr17-synspec_rev1.fits --spectra-dir aspcap/ \\
      --selection spectrafm --out stores/dr17
  stellarscope ingest --files apStar-dr17-2M17335483-2753043.fits --out stores/two
"""


def register(sub, groups) -> None:
    import argparse

    p = sub.add_parser(
        "ingest",
        help="build a store from allStar + spectra files, a contspec trio, an HDF5/NPZ file "
        "or individual FITS files",
        description="Read real APOGEE data through core.io, continuum-normalise apStar/apVisit "
        "spectra, and write a store. Missing or unreadable files (damaged, not permitted) and "
        "repeated APOGEE_IDs (the first is kept) are skipped and reported; the run fails only "
        "when nothing could be ingested. .fits.gz files are read too.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("inputs")
    src.add_argument("--allstar", metavar="FITS", help="allStar catalog (DR14/16/17)")
    src.add_argument("--spectra-dir", metavar="DIR",
                     help="folder of spectra files: TELESCOPE/FIELD/… tree or flat")
    src.add_argument("--file-kind", choices=["aspcapStar", "apStar"], default="aspcapStar",
                     type=_file_kind, help="which files --spectra-dir holds (default aspcapStar)")
    src.add_argument("--contspec", nargs=3, metavar=("FLUX", "ERR", "MASK"),
                     help="astroNN contspec flux, error and mask FITS files")
    src.add_argument("--generic", metavar="FILE", help="an HDF5 or NPZ file of spectra")
    src.add_argument("--files", nargs="+", metavar="FITS", help="individual spectrum files")
    sel = p.add_argument_group("selection (allStar modes)")
    sel.add_argument("--selection", choices=["vae", "spectrafm", "none"], default="none",
                     help="quality cuts on the allStar rows (default none)")
    sel.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a selection threshold, e.g. --set snr_min=100 "
                     "(--set teff_max=none drops that cut); repeatable")
    sel.add_argument("--limit", type=int, default=None, metavar="N",
                     help="stop after N stars")
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="STORE_DIR",
                     help="store directory (or a store name under $STELLARSCOPE_HOME/stores)")
    out.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                     help="storage precision of flux and error (default float32)")
    out.add_argument("--grid", default="apogee7514",
                     help="store grid for FITS spectra: apogee7514 (default), apogee7214, "
                     "apstar8575")
    out.add_argument("--overwrite", action="store_true",
                     help="replace an existing store (only a Stellarscope store is replaced; "
                     "the old one is removed once the new one is complete)")
    norm = p.add_argument_group("continuum normalisation (apStar, apVisit, --generic)")
    norm.add_argument("--continuum", choices=["mask", "clip"], default="mask",
                      help="fit over the shipped continuum mask (default) or by clipping")
    norm.add_argument("--degree", type=int, default=2, help="Chebyshev degree per chip (2)")
    norm.add_argument("--normalize", choices=["auto", "yes", "no"], default="auto",
                      help="--generic only: normalise on ingest (auto: when the median flux "
                      "is far from 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=run)


def _file_kind(text: str) -> str:
    for name in ("aspcapStar", "apStar"):
        if text.lower() == name.lower():
            return name
    return text


def parse_overrides(items: list[str]) -> dict:
    """``KEY=VALUE`` strings → selection overrides (numbers, true/false, none)."""
    from ..errors import BadDataError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadDataError(f"--set expects KEY=VALUE, got {item!r}")
        v = value.strip().lower()
        if v in ("none", "null", "off"):
            out[key.strip()] = None
        elif v in ("true", "yes"):
            out[key.strip()] = True
        elif v in ("false", "no"):
            out[key.strip()] = False
        else:
            try:
                out[key.strip()] = float(value)
            except ValueError:
                raise BadDataError(f"--set {key.strip()}: {value!r} is not a number, "
                                   "true/false or none") from None
    return out


def _mode(args) -> str:
    from ..errors import BadDataError

    chosen = [m for m, on in (("contspec", args.contspec), ("generic", args.generic),
                              ("files", args.files), ("allstar", args.spectra_dir)) if on]
    if len(chosen) > 1:
        raise BadDataError(f"choose one input mode, got {' and '.join('--' + m for m in chosen)}")
    if not chosen:
        if args.allstar:
            raise BadDataError("--allstar needs --spectra-dir (or --contspec)")
        raise BadDataError("nothing to ingest: give --allstar with --spectra-dir, --contspec, "
                           "--generic or --files")
    if chosen[0] == "allstar" and not args.allstar:
        raise BadDataError("--spectra-dir needs --allstar (the catalog of the stars to ingest)")
    if chosen[0] in ("generic", "files") and args.allstar:
        raise BadDataError(f"--allstar cannot be combined with --{chosen[0]}")
    return chosen[0]


def run(args) -> int:
    from .. import ingest, paths
    from ..errors import BadDataError

    mode = _mode(args)
    out = paths.resolve_store(args.out)
    ingest.check_output(out, args.overwrite)
    if args.limit is not None and args.limit < 1:
        raise BadDataError("--limit must be at least 1")
    overrides = parse_overrides(args.set)
    if (overrides or args.selection != "none") and mode in ("generic", "files"):
        raise BadDataError(f"--selection/--set apply to allStar rows, not to --{mode}")
    continuum = ingest.ContinuumSettings(method=args.continuum, degree=args.degree)
    common = {"out": out, "dtype": args.dtype, "overwrite": args.overwrite,
              "progress": not (args.no_progress or args.json)}
    try:
        if mode == "allstar":
            report = ingest.ingest_allstar(
                args.allstar, args.spectra_dir, file_kind=args.file_kind,
                selection=args.selection, selection_overrides=overrides, limit=args.limit,
                grid=args.grid, continuum=continuum, **common)
        elif mode == "contspec":
            report = ingest.ingest_contspec(
                *args.contspec, allstar=args.allstar, selection=args.selection,
                selection_overrides=overrides, limit=args.limit, **common)
        elif mode == "generic":
            normalize = {"auto": None, "yes": True, "no": False}[args.normalize]
            report = ingest.ingest_generic(args.generic, normalize=normalize, limit=args.limit,
                                           continuum=continuum, **common)
        else:
            report = ingest.ingest_files(args.files, grid=args.grid, continuum=continuum,
                                         **common)
    except ingest.NothingIngestedError as exc:
        _show(exc.report, args.json)
        print(f"stellarscope: error: {exc}", file=sys.stderr)
        return 1
    _show(report, args.json)
    return 0


def _show(report, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(max_skipped=None), default=str))
    else:
        print(report.format(), file=sys.stderr)
