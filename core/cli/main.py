"""``stellarscope`` command line: one parser built from the command modules below."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import StellarscopeError

#: Modules that each define ``register(subparsers, groups)``.
COMMAND_MODULES = [
    "core.cli.mock",
    "core.cli.demo",
    "core.cli.ingest",
    "core.cli.inspect",
    "core.cli.serve",
    "core.cli.vae",
    "core.cli.emulator",
    "core.cli.train",
    "core.cli.infer",
    "core.cli.attention",
]

#: Verbs that take a model kind as a second word (``stellarscope train vae``).
GROUPS = {
    "train": "train a model on a store",
    "infer": "run a model over a whole store and write catalog columns",
    "evaluate": "diagnostics of a trained model on a store",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stellarscope",
        description="Stellarscope: an interactive machine-learning lab for APOGEE-like spectra.",
    )
    parser.add_argument("--version", action="version", version=f"stellarscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = {}
    for verb, help_text in GROUPS.items():
        gp = sub.add_parser(verb, help=help_text, description=help_text)
        groups[verb] = gp.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except StellarscopeError as exc:
        print(f"stellarscope: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stellarscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
