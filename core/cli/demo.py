"""``stellarscope demo``: build the embedded demo (mock survey + shipped models' columns)."""

from __future__ import annotations

import sys


def register(sub, groups) -> None:
    p = sub.add_parser(
        "demo",
        help="build the embedded demo store if it is missing (mock survey + model columns)",
        description="Generate the mock survey under $STELLARSCOPE_HOME/stores/mock-survey if it "
        "is not there yet, and add the shipped demo models' catalog columns. Only missing work "
        "is done.",
    )
    p.add_argument("--store", default=None, help="store directory (default: the demo store)")
    p.add_argument("--n-stars", type=int, default=None, help="stars in the mock survey (20000)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the mock survey (42)")
    p.add_argument("--force", action="store_true", help="rebuild even if the demo is complete")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import DEMO_N_STARS, DEMO_SEED, build_demo

    status = build_demo(
        args.store,
        n_stars=args.n_stars or DEMO_N_STARS,
        seed=DEMO_SEED if args.seed is None else args.seed,
        force=args.force,
        log=lambda m: print(m, file=sys.stderr),
    )
    for s in status.skipped:
        print(f"note: {s}", file=sys.stderr)
    print(f"demo store ready: {status.store}", file=sys.stderr)
    return 0
