"""``stellarscope attention`` (one star's attention maps) and ``stellarscope evaluate
transformer`` (label accuracy and alignment scores)."""

from __future__ import annotations

import json
import sys

import numpy as np


def _threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def register(sub, groups) -> None:
    p = sub.add_parser(
        "attention", help="a spectral transformer's attention over one star's pixels",
        description="Attention of one label's query over a star's pixels: the last decoder "
        "block per head and averaged, and the rollout through all blocks, over every patch of "
        "the spectrum; the top-attended wavelengths with their nearest line; the alignment "
        "score (attention within ±2 Å of the informing elements' lines ÷ chance).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--star", help="APOGEE_ID (or row number) of a star in --store")
    src.add_argument("--file", help="an apStar, aspcapStar or apVisit FITS file")
    p.add_argument("--store", default=None, help="store directory or name (default: demo store)")
    p.add_argument("--model", default=None, help="transformer model directory (default: found)")
    p.add_argument("--label", required=True, help="label whose query to show (FE_H, MG_FE …)")
    p.add_argument("--own-pixels", action="store_true",
                   help="read an apVisit --file on its own rest-frame pixels (no resampling); "
                   "the labels of the resampled reading are printed beside them")
    p.add_argument("--mean", action="store_true",
                   help="add the catalog mean map of --store (computed once, then cached)")
    p.add_argument("--top", type=int, default=10, help="top-attended wavelengths listed (10)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--csv", default=None, help="write the per-pixel maps to this CSV")
    p.add_argument("--png", default=None, help="draw spectrum + attention strip to this PNG")
    p.add_argument("--device", default=None, help="cpu, cuda … (default: CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.set_defaults(func=run_attention)

    e = groups["evaluate"].add_parser(
        "transformer", help="transformer label accuracy and attention alignment",
        description="Label accuracy on held-out stars (bias, 1.4826·MAD, pull width per "
        "label; mock stores are compared with their true labels) and alignment scores: the "
        "attention mass within ±2 Å of the lines of the elements that the line list says "
        "inform a label, ÷ their pixel fraction (1 = chance), last layer and rollout; and per "
        "notable line of the SpectraFM paper when ../shared is present.")
    e.add_argument("--store", default=None, help="store directory or name (default: demo store)")
    e.add_argument("--model", default=None, help="transformer model directory (default: found)")
    e.add_argument("--n-stars", type=int, default=1000, help="held-out stars for accuracy (1000)")
    e.add_argument("--attention-stars", type=int, default=100,
                   help="of those, stars whose attention is scored (100)")
    e.add_argument("--seed", type=int, default=0, help="seed of the star sample")
    e.add_argument("--out", default=None, help="also write the JSON result to this file")
    e.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    e.add_argument("--device", default=None, help="cpu, cuda … (default: CPU)")
    e.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=run_evaluate)


def _predictor(args):
    from .. import models
    from ..inference.transformer import TransformerPredictor

    return TransformerPredictor.load(models.find("transformer", args.model), args.device)


def _store(args):
    from ..paths import resolve_store
    from ..store import SpectraStore

    return SpectraStore.open(resolve_store(args.store))


def run_attention(args) -> int:
    from ..errors import BadDataError
    from ..evaluate.transformer import alignment
    from ..inference.attention import (
        apvisit_rest_pixels,
        catalog_mean,
        compare_readings,
        star_attention,
        top_attended,
    )

    _threads(args)
    pred = _predictor(args)
    if args.label not in pred.label_names:
        raise BadDataError(f"--label {args.label}: the model predicts "
                           f"{', '.join(pred.label_names)}")
    store = None
    if args.file:
        if args.own_pixels:
            spectrum = apvisit_rest_pixels(args.file)
        else:
            from ..preprocess.policy import prepare_file_spectrum

            spectrum = prepare_file_spectrum(args.file)
    else:
        store = _store(args)
        star = int(args.star) if args.star.strip().isdigit() else args.star
        spectrum = store.spectrum(str(store.catalog["APOGEE_ID"].iloc[store.row_of(star)]))
    if args.mean and store is None:
        store = _store(args)
    att = star_attention(pred, spectrum)
    j = att.label_index(args.label)
    last = att.map(args.label, -1)
    top = top_attended(att.wavelength, last, args.top)
    align = alignment(att, [args.label])[args.label]
    mean = catalog_mean(pred, store) if args.mean else None
    result = {"star": att.star or spectrum.label, "label": args.label,
              "value": float(att.labels[j]), "sigma": float(att.labels_err[j]),
              "pixels_read": att.n_read, "alignment_last": align["last"],
              "alignment_rollout": align["rollout"], "elements": align["elements"],
              "window_fraction": align["window_fraction"],
              "top": top.to_dict("records"), "units": "relative attention (1 = uniform)"}
    both = None
    if args.file and args.own_pixels:
        # the same file resampled onto the grid (what the app and `fit --file` read): do the
        # labels of the two readings agree within their σ?
        from ..preprocess.policy import prepare_file_spectrum

        grid = pred.predict_spectrum(prepare_file_spectrum(args.file))
        both = compare_readings(pred.label_names, grid["labels"], grid["labels_err"],
                                att.labels, att.labels_err)
        result["resampled"] = {r.label: {"value": r.a, "sigma": r.a_err, "own_pixels": r.b,
                                         "own_pixels_sigma": r.b_err, "z": r.z}
                               for r in both.itertuples()}
    if args.csv:
        _write_csv(args.csv, att, args.label, mean)
    if args.png:
        _write_png(args.png, spectrum, att, args.label)
    if args.json:
        print(json.dumps(result, default=float))
        return 0
    print(f"{result['star']}: {args.label} = {result['value']:.4g} ± {result['sigma']:.3g} "
          f"from {att.n_read} pixels; alignment {align['last']:.2f}× chance (last layer), "
          f"{align['rollout']:.2f}× (rollout) for lines of {','.join(align['elements'])}")
    print(f"{'λ (Å)':>10s} {'attention':>9s}  nearest line")
    for r in top.itertuples():
        print(f"{r.wavelength:10.2f} {r.attention:9.2f}  {r.line} ({r.element}) "
              f"{r.line_wavelength:.2f} Å, {r.distance:+.2f} Å")
    if both is not None:
        print(f"{'label':>8s} {'resampled grid':>22s} {'own pixels':>22s} {'Δ/σ':>6s}")
        for r in both.itertuples():
            print(f"{r.label:>8s} {r.a:12.4g} ± {r.a_err:<7.3g} {r.b:12.4g} ± {r.b_err:<7.3g} "
                  f"{r.z:+6.2f}")
        z = np.abs(both["z"].to_numpy())
        print(f"largest |Δ|/σ {np.nanmax(z):.2f}: " + (
            "the two readings agree within 1σ for every label" if np.all(z < 1) else
            f"{int((~(z < 1)).sum())} label(s) differ by more than 1σ"))
    return 0


def _write_csv(path, att, label, mean) -> None:
    import pandas as pd

    from ..store.atomic import atomic_path

    cols = {"wavelength": att.wavelength, "read": att.good}
    for d in range(att.n_layers):
        cols[f"layer{d}_mean"] = att.map(label, d)
        for h in range(att.n_heads):
            cols[f"layer{d}_head{h}"] = att.map(label, d, h)
    cols["rollout"] = att.map(label, "rollout")
    if mean is not None and len(mean.wavelength) == len(att.wavelength):
        cols["catalog_mean_last"] = mean.map(label, -1)
        cols["catalog_mean_rollout"] = mean.map(label, "rollout")
    with atomic_path(path, ".csv") as tmp:
        pd.DataFrame(cols).to_csv(tmp, index=False, float_format="%.6g")


def _write_png(path, spectrum, att, label) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..store.atomic import atomic_path

    fig, (a, b) = plt.subplots(2, 1, figsize=(14, 5), sharex=True,
                               gridspec_kw={"height_ratios": [3, 1]})
    a.plot(spectrum.wavelength, np.where(spectrum.good(), spectrum.flux, np.nan), lw=0.6,
           color="k")
    a.set_ylabel("flux")
    a.set_title(f"{att.star or spectrum.label}: attention of the {label} query (last layer)")
    m = att.map(label, -1)
    b.imshow(np.nan_to_num(m)[None, :], aspect="auto", cmap="magma",
             extent=(att.wavelength[0], att.wavelength[-1], 0, 1))
    b.plot(att.wavelength, m / max(np.nanmax(m), 1e-9), color="c", lw=0.6)
    b.set_yticks([])
    b.set_xlabel("vacuum wavelength (Å)")
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def run_evaluate(args) -> int:
    from ..evaluate.transformer import evaluate, report
    from ..store.atomic import write_json_atomic

    _threads(args)
    pred = _predictor(args)
    store = _store(args)
    result = evaluate(pred, store, args.n_stars, args.attention_stars, args.seed,
                      progress=not (args.no_progress or args.json))
    if args.out:
        write_json_atomic(args.out, result)
    if args.json:
        print(json.dumps(result, default=float))
    else:
        print("\n".join(report(result)), file=sys.stdout)
    return 0
