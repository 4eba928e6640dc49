"""``stellarscope mock``: generate a deterministic mock APOGEE survey as a store."""

from __future__ import annotations

import json
import sys
import time


def register(sub, groups) -> None:
    p = sub.add_parser(
        "mock",
        help="generate a mock APOGEE survey (labelled 'mock survey') as a store",
        description="Draw stellar labels from realistic populations, synthesise spectra on the "
        "7514-pixel APOGEE grid from the shipped H-band line list, add noise and PIXMASK bits, "
        "and write them through the store exactly like ingested data.",
    )
    p.add_argument("--n-stars", type=int, default=20_000, help="number of stars (default 20000)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--out", default=None,
                   help="store directory (default $STELLARSCOPE_HOME/stores/mock-survey)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="storage precision of flux and error")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing store (only a Stellarscope store is replaced; the "
                   "old one is removed once the new one is complete)")
    p.add_argument("--physics", default="apogee",
                   help="named physics set of the synthesis: apogee (default, the one the "
                   "shipped models were trained on: APOGEE-like line depths and molecular "
                   "forest), classic (the original synthesis, lines far too deep), shifted / "
                   "shifted-apogee (perturbed log gf, extra "
                   "unidentified lines, broader LSF, continuum ripples), apogee2 "
                   "(experimental: OH and CO bands computed from molecular constants); "
                   "recorded in the "
                   "store's manifest")
    p.add_argument("--population", default="dr17", choices=["classic", "dr17"],
                   help="label population: dr17 (default, the one the shipped models were "
                   "trained on; shaped like APOGEE DR17: giant branch, red clump, two "
                   "α sequences, M giants and dwarfs, subgiants, low-α halo; Teff 3000–7000 K, "
                   "log g −0.5 to 5.5); recorded in the store's manifest")
    p.add_argument("--json", action="store_true", help="print figures as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import paths
    from ..errors import StoreError
    from ..mock import generate_mock_survey
    from ..mock.physics import get_physics
    from ..store import check_replaceable

    out = paths.resolve_store(args.out)
    if out.exists() and not args.overwrite:
        raise StoreError(f"{out}: already exists (use --overwrite to replace it)")
    if args.overwrite:
        check_replaceable(out)
    if args.n_stars < 1:
        raise StoreError("--n-stars must be at least 1")
    physics = get_physics(args.physics).name  # unknown names fail before any work
    t0 = time.perf_counter()
    generate_mock_survey(out, n_stars=args.n_stars, seed=args.seed, dtype=args.dtype,
                         progress=not args.json, overwrite=args.overwrite,
                         physics=physics, population=args.population)
    dt = time.perf_counter() - t0
    figures = {"store": str(out), "n_stars": args.n_stars, "seed": args.seed, "physics": physics,
               "population": args.population,
               "seconds": round(dt, 2), "spectra_per_s": round(args.n_stars / dt, 1)}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"mock survey ({physics} physics, {args.population} population): {args.n_stars} stars in {dt:.1f} s "
              f"({figures['spectra_per_s']} spectra/s) -> {out}", file=sys.stderr)
    return 0
