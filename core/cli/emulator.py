"""Emulator commands: ``evaluate emulator``, ``fit``, ``export-payne``, ``import-payne``
(``train emulator`` is in :mod:`core.cli.train`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def register(sub, groups) -> None:
    _register_evaluate(groups["evaluate"])
    _register_fit(sub)
    p = sub.add_parser("export-payne", help="write an emulator as The Payne's network npz",
                       description="Export a 2-hidden-layer leaky-ReLU emulator to The Payne's "
                       "npz format (w_array_0..2, b_array_0..2, x_min, x_max).")
    p.add_argument("model", help="emulator model directory")
    p.add_argument("out", help="output .npz file")
    p.set_defaults(func=run_export)
    p = sub.add_parser("import-payne", help="turn The Payne's network npz into an emulator",
                       description="Import a Payne network npz as a Stellarscope emulator model "
                       "directory (safetensors + config.json); pickles are never loaded.")
    p.add_argument("npz", help="Payne network file (.npz)")
    p.add_argument("model", help="output model directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.set_defaults(func=run_import)


def _register_evaluate(evaluate) -> None:
    p = evaluate.add_parser(
        "emulator", help="calibrate fit uncertainties on stars with known labels",
        description="Fit random stars of a store whose labels are known (a mock's TRUE_* "
        "columns, else the catalog's labels ± errors), report the width of (fit − reference)/σ "
        "per label and the systematic floor σ_sys that makes it 1; --save stores the floors "
        "with the emulator so every later fit adds them to its σ (--save-as DIR into a "
        "calibrated copy: shipped and read-only models are never changed). The record is "
        "written to --out (default $STELLARSCOPE_HOME/evaluations/MODEL-TIME).")
    p.add_argument("--model", default=None, help="emulator directory or name (default: the newest emulator under "
                   "$STELLARSCOPE_HOME/models, else the shipped demo)")
    p.add_argument("--store", default=None, help="store directory or name (default: demo store)")
    p.add_argument("--n-stars", type=int, default=300, help="stars to fit (default 300)")
    p.add_argument("--reference", choices=["auto", "truth", "catalog"], default="auto",
                   help="reference labels (default: TRUE_* when the store has them)")
    p.add_argument("--seed", type=int, default=0, help="which random stars")
    p.add_argument("--held-out", action="store_true",
                   help="fit only the stars the emulator held out from training (its "
                   "held_out_ids.txt): an honest comparison on the store it was trained on")
    save = p.add_mutually_exclusive_group()
    save.add_argument("--save", action="store_true",
                      help="write the floors into the model (your own, writable models only)")
    save.add_argument("--save-as", default=None, metavar="DIR",
                      help="write a calibrated copy of the model to the new directory DIR")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write calibration.json (default: "
                        "$STELLARSCOPE_HOME/evaluations/MODEL-TIME)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=run_evaluate)


def _register_fit(sub) -> None:
    p = sub.add_parser("fit", help="fit labels ± σ and RV with an emulator",
                       description="Fit one star (from a store or an APOGEE FITS file) or every "
                       "star of a store (--all, writing FIT_* catalog columns).")
    p.add_argument("--model", default=None, help="emulator directory or Payne .npz "
                   "(default: the newest emulator under $STELLARSCOPE_HOME/models, else the "
                   "shipped demo)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--star", help="APOGEE_ID (or row number) in --store")
    src.add_argument("--file", help="apStar, aspcapStar or apVisit FITS file")
    src.add_argument("--all", action="store_true", help="fit every star of --store")
    p.add_argument("--store", default=None, help="store directory or name (default: demo store)")
    p.add_argument("--element", default=None, help="also fit this element in its windows (e.g. Mg)")
    p.add_argument("--continuum", type=int, default=None, metavar="DEG",
                   help="fit a per-chip Chebyshev continuum correction of this degree")
    p.add_argument("--rv", type=float, default=None, help="hold the RV fixed at this value (km/s)")
    p.add_argument("--mask", default=None, metavar="CSV",
                   help="exclude these wavelengths: the Fit view's mask export, or a CSV of "
                   "start,end ranges in vacuum Å")
    p.add_argument("--starts", type=int, default=3, help="multi-start count (default 3)")
    p.add_argument("--chunk", type=int, default=None, help="stars per batch with --all")
    p.add_argument("--limit", type=int, default=None,
                   help="with --all, fit only the first N stars (the rest keep their values)")
    p.add_argument("--resume", action="store_true",
                   help="with --all, fit only stars without FIT_* results yet")
    p.add_argument("--checkpoint", type=int, default=50_000, metavar="N",
                   help="with --all, write results every N stars (default 50000)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_fit)


# -- handlers -----------------------------------------------------------------------------------


def _model_path(arg) -> Path:
    """The emulator named on the command line (a model directory, a name under the models
    home or a Payne .npz file), else the one core.models.find picks."""
    from ..models import find

    if arg is not None and Path(arg).expanduser().is_file():
        return Path(arg).expanduser()  # a Payne .npz: load_model reads it
    return find("emulator", arg)


def _check_out(out: Path, overwrite: bool) -> None:
    from ..errors import BadFileError

    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BadFileError(out, "already exists (use --overwrite to replace it)")


def _options(args):
    from ..fit import FitOptions

    return FitOptions(fit_rv=args.rv is None, rv=args.rv, continuum_degree=args.continuum,
                      n_starts=args.starts)


def run_fit(args) -> int:
    from ..device import choose_device
    from ..errors import BadDataError
    from ..fit import fit_element, fit_spectrum, load_model
    from ..paths import resolve_store
    from ..store import SpectraStore

    model_path = _model_path(args.model)
    emulator = load_model(model_path, choose_device(args.device))
    opts = _options(args)
    mask = None
    if args.mask:
        from ..fit.usermask import read_user_mask

        mask = read_user_mask(args.mask, emulator.grid.wavelength)
    if args.all:
        import numpy as np

        from ..fit.store import fit_store, unfitted_rows

        store = SpectraStore.open(resolve_store(args.store))
        rows = unfitted_rows(store) if args.resume else np.arange(len(store))
        if args.limit is not None:
            rows = rows[:args.limit]
        summary = fit_store(store, emulator, opts, rows=rows, chunk=args.chunk,
                            progress=not args.json, model_path=str(model_path),
                            checkpoint_stars=args.checkpoint, mask=mask)
        if args.json:
            print(json.dumps(summary))
        else:
            if summary["stars"] == 0:
                print(f"nothing to fit in {store.path}", file=sys.stderr)
                return 0
            print(f"fitted {summary['stars']} stars in {summary['seconds']} s "
                  f"({summary['stars_per_second']} stars/s on {summary['device']}); "
                  f"median χ²_ν {summary['median_chi2_nu']:.3g}; wrote "
                  f"{len(summary['columns'])} FIT_* columns to {store.path}", file=sys.stderr)
        return 0
    if args.file:
        from ..preprocess.policy import prepare_file_spectrum

        # the one file policy: the app's upload reads and normalises a file the same way
        spectrum = prepare_file_spectrum(args.file)
    else:
        store = SpectraStore.open(resolve_store(args.store))
        star = args.star
        if not store.has_star(star) and star.isdigit():  # a row number
            star = int(star)
        spectrum = store.spectrum(star)
    result = fit_spectrum(spectrum, emulator, opts, mask=mask)
    element = None
    if args.element:
        try:
            element = fit_element(spectrum, emulator, args.element, result, options=opts,
                                  mask=mask)
        except KeyError as exc:
            raise BadDataError(str(exc.args[0])) from None
    if args.json:
        out = result.to_dict()
        out["model_dir"] = str(model_path)
        if element is not None:
            out["element"] = element.to_dict()
        print(json.dumps(out))
    else:
        print(_format(result, element))
    return 0


def _format(result, element) -> str:
    lines = [f"{result.star}: χ²_ν = {result.chi2_nu:.3f} on {result.n_pix} pixels, "
             f"{result.rv_text()}"]
    if result.sigma_scale > 1:
        lines.append(f"σ inflated ×{result.sigma_scale:.2f} (= √χ²_ν): the model does not "
                     f"describe this spectrum well")
    table = result.table()
    lines.append(f"{'label':<10}{'fit':>12}{'±':>10}{'catalog':>12}{'±':>10}")
    for row in table.itertuples():
        cat = "" if row.catalog != row.catalog else f"{row.catalog:12.3f}"
        cerr = "" if row.catalog_err != row.catalog_err else f"{row.catalog_err:10.3f}"
        mark = "  at bound" if row.at_bound else ""
        lines.append(f"{row.label:<10}{row.fit:12.3f}{row.fit_err:10.3f}{cat:>12}{cerr:>10}{mark}")
    if result.flag_names:
        lines.append("flags:")
        lines += [f"  {line}" for line in result.flag_descriptions]
    if element is not None:
        lines.append(f"{element.element} in {len(element.windows)} windows: {element.label} = "
                     f"{element.value:.3f} ± {element.error:.3f} (χ²_ν {element.chi2_nu:.2f}, "
                     f"{element.n_pix} px)")
    return "\n".join(lines)


def run_evaluate(args) -> int:
    from ..device import choose_device
    from ..errors import BadFileError
    from ..evaluate.output import (
        check_copy_target,
        check_output_dir,
        copy_model,
        not_writable_reason,
        output_dir,
    )
    from ..fit import load_model
    from ..fit.calibrate import calibrate_errors, save_error_floor
    from ..paths import resolve_store
    from ..store import SpectraStore
    from ..store.atomic import write_json_atomic

    model_path = _model_path(args.model)
    if not model_path.is_dir():
        raise BadFileError(model_path, "calibration needs a saved emulator directory")
    # refuse before the long fits, not after them
    if args.save and (reason := not_writable_reason(model_path)):
        raise BadFileError(model_path, f"{reason}; --save would change it. Use --save-as DIR "
                                       f"to write a calibrated copy instead")
    if args.save_as:
        check_copy_target(args.save_as)
    if args.out:
        check_output_dir(args.out)
    emulator = load_model(model_path, choose_device(args.device))
    store = SpectraStore.open(resolve_store(args.store))
    rows = None
    if args.held_out:
        from ..fit.calibrate import held_out_rows
        from ..train.emulator import HELD_OUT_FILE

        rows = held_out_rows(store, model_path / HELD_OUT_FILE)
    record = calibrate_errors(emulator, store, n_stars=args.n_stars, reference=args.reference,
                              seed=args.seed, progress=not args.json, rows=rows)
    record["held_out"] = bool(args.held_out)
    target = model_path if args.save else (copy_model(model_path, args.save_as)
                                           if args.save_as else None)
    if target is not None:
        save_error_floor(target, record)
    out = output_dir(args.out, model_path)
    record["model"], record["saved"] = str(model_path), target is not None
    record["saved_to"] = None if target is None else str(target)
    write_json_atomic(out / "calibration.json", record)
    record["out_dir"] = str(out)
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"{record['n_stars']} stars of {store.path} against {record['reference']} labels:")
    print(f"{'label':<8}{'pull width':>12}{'σ_sys':>12}{'after':>8}")
    for name, floor in record["error_floor"].items():
        print(f"{name:<8}{record['pull_width_before'][name]:>12.2f}{floor:>12.4g}"
              f"{record['pull_width_after'][name]:>8.2f}")
    names = list(record["error_floor"])
    print("\naccuracy against the reference (bias / 1.4826·MAD scatter / pull width):")
    print(f"{'S/N':<10}{'stars':>6}" + "".join(f"{n:>30}" for n in names))
    for row in record["accuracy"]:
        cells = "".join(
            f" {_fmt(row[n]['bias']):>9}{_fmt(row[n]['scatter']):>10}{_fmt(row[n]['pull_width']):>10}"
            for n in names)
        print(f"{row['snr_bin']:<10}{row['n_stars']:>6}{cells}")
    if target is None:
        print("(--save stores these floors with the model, --save-as DIR in a calibrated copy)")
    else:
        print(f"floors saved with the model in {target}")
    print(f"record written to {out / 'calibration.json'}")
    return 0


def _fmt(v) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.3g}"


def run_export(args) -> int:
    from ..fit import load_model
    from ..models.payne_format import export_payne

    out = export_payne(load_model(_model_path(args.model)), args.out)
    print(f"wrote The Payne network file {out}", file=sys.stderr)
    return 0


def run_import(args) -> int:
    from ..models.emulator import save_emulator
    from ..models.payne_format import import_payne

    out = Path(args.model)
    _check_out(out, args.overwrite)
    model = import_payne(args.npz)
    save_emulator(model, out, extra={"name": out.name})
    print(f"imported {model.n_labels}-label Payne network on {model.grid.name} -> {out}",
          file=sys.stderr)
    return 0
