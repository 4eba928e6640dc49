"""``stellarscope evaluate vae`` (``infer vae`` is in :mod:`core.cli.infer`, ``train vae`` in
:mod:`core.cli.train`)."""

from __future__ import annotations

import argparse
import json


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N (default: CUDA when available, else CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub, groups) -> None:
    e = groups["evaluate"].add_parser(
        "vae", help="VAE diagnostics: χ²_ν histogram, residuals, latent correlations",
        description="Evaluate a VAE on the held-out stars of a store and write the seed's "
        "diagnostics (χ²_ν histogram, per-pixel residuals, 31×31 and 31×3 correlation CSV + "
        "heatmaps, corner-plot data by label bins) with a summary.json, and a nonlinear probe: "
        "the excess R² with which an MLP predicts each injected label from the free latents "
        "beyond what the other labels (controls) predict, with a shuffled-latent baseline.")
    e.add_argument("--store", default=None, help="store directory or name (default: demo store)")
    e.add_argument("--model", default=None, help="model directory (default: the shipped demo VAE)")
    e.add_argument("--out", default=None,
                   help="output directory (default $STELLARSCOPE_HOME/evaluations/MODEL-TIME; "
                        "the model directory is never written)")
    e.add_argument("--rows", choices=["held-out", "validation", "all"], default="held-out",
                   help="held-out (default): the model's validation split on its training "
                        "store, every labelled star on another store; validation: the split "
                        "on any store; all: every labelled row")
    e.add_argument("--max-spectra", type=int, default=None,
                   help="evaluate a random subset (default: every held-out star)")
    e.add_argument("--batch-size", type=int, default=1024, help="spectra per batch (1024)")
    e.add_argument("--seed", type=int, default=0,
                   help="seed of subsets, sampled z′ and the probe's halves")
    e.add_argument("--no-probe", dest="probe", action="store_false",
                   help="skip the nonlinear latent probe (MLP / k-NN / linear R² of each "
                        "injected label from the free latents beyond the controls)")
    e.add_argument("--probe-max-stars", type=int, default=20_000,
                   help="probe a random subset of this many evaluated stars (20000; 0 = all)")
    e.add_argument("--no-swap", dest="swap", action="store_false",
                   help="skip the swap check (decode star A's latents with star B's labels "
                        "and read the labels back: slope of read vs injected, 1 is ideal)")
    e.add_argument("--swap-max-stars", type=int, default=4000,
                   help="stars used by the swap check (4000: half train its label reader, "
                        "half are decoded in random pairs)")
    e.add_argument("--probe-controls", default=None, metavar="COL,COL",
                   help="catalog columns the latents may legitimately encode (default: the "
                        "labels the model is not given, TRUE_* versions on a mock)")
    _common(e)
    e.set_defaults(func=run_evaluate)


def _threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _model_dir(args) -> str:
    from ..models import find

    return str(find("vae", args.model))


def _emit(args, figures: dict, text: str) -> None:
    if args.json:
        print(json.dumps(figures, default=str))
    else:
        print(text)


def run_evaluate(args) -> int:
    from ..evaluate.vae import evaluate_vae

    _threads(args)
    controls = ([c.strip() for c in args.probe_controls.split(",") if c.strip()]
                if args.probe_controls is not None else None)
    s = evaluate_vae(args.store, _model_dir(args), out_dir=args.out, rows=args.rows,
                     batch_size=args.batch_size, device=args.device,
                     max_spectra=args.max_spectra, seed=args.seed,
                     progress=not (args.no_progress or args.json), probe=args.probe,
                     probe_control_columns=controls,
                     probe_max_stars=args.probe_max_stars or None, swap=args.swap,
                     swap_max_stars=args.swap_max_stars)
    text = (f"{s['n_spectra']} {s['rows']} spectra: median χ²_ν {s['median_chi2_nu']:.3f}, "
            f"max |corr(free latent, label)| {s['max_abs_corr']:.3f} "
            f"({' vs '.join(s['max_abs_corr_at'])}); figures in {s['out_dir']}")
    if s.get("probe_excess_r2"):
        p = s["probe"]
        text += (f"\nprobe ({p['n_stars']} stars, halves {p['halves']}, controls: "
                 f"{', '.join(p['controls']) or 'none'}): MLP R² from latents / controls / "
                 "controls+latents → excess (shuffled baseline)")
        for t, v in p["mlp"].items():
            text += (f"\n  {t:8s} {v['r2_latents']:.3f} / {v['r2_controls']:.3f} / "
                     f"{v['r2_controls_latents']:.3f} → {v['excess_r2']:+.3f} "
                     f"({v['shuffled_excess_r2']:+.3f}), partial R² {v['partial_r2']:.2f}; "
                     "k-NN excess over shuffled "
                     f"{p['knn'][t]['excess_over_shuffled_r2']:+.3f}")
    elif s.get("probe"):
        text += f"\nprobe skipped: {s['probe']['skipped']}"
    if s.get("swap_slope"):
        w = s["swap"]
        text += (f"\nswap check ({w['n_pairs']} pairs; 1 = decoded spectra follow their "
                 "labels): slope " + ", ".join(
                     f"{t} {v:.3f} (reader R² {w['reader_r2'][t]:.3f})"
                     for t, v in s["swap_slope"].items()))
    elif s.get("swap"):
        text += f"\nswap check skipped: {s['swap']['skipped']}"
    _emit(args, s, text)
    return 0
