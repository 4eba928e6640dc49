"""``stellarscope train vae`` / ``infer vae`` / ``evaluate vae``.

Multi-GPU training runs the same command under torchrun, e.g.
``torchrun --nproc_per_node 4 -m core.cli.main train vae --store S --out M``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N (default: CUDA when available, else CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub, groups) -> None:
    from ..models.vae import PRESETS
    from ..train.loop import SCHEDULES

    t = groups["train"].add_parser(
        "vae", help="train the spectrum VAE (three-term loss with injected labels)",
        description="Train a conditional VAE on a store's spectra and TEFF/LOGG/FE_H labels. "
        "The run directory gets the best model (config.json + model.safetensors), resume "
        "checkpoints, training_log.csv and loss_curves.png. Under torchrun the same command "
        "trains with DDP (NCCL on GPUs, gloo on CPU).")
    t.add_argument("--store", default=None, help="store directory or name (default: demo store)")
    t.add_argument("--out", required=True, help="run / model directory")
    t.add_argument("--epochs", type=int, default=None, help="epochs in total (default 40)")
    t.add_argument("--beta", type=float, default=None,
                   help="weight β of the KL term (default 10; the seed started at 1)")
    t.add_argument("--gamma", type=float, default=None,
                   help="weight γ of the separability term (default 1000; the seed started at 1)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    t.add_argument("--batch-size", type=int, default=None, help="spectra per step and rank (256)")
    t.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="learning-rate schedule after warm-up (default cosine)")
    t.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (50)")
    t.add_argument("--min-lr-factor", type=float, default=None,
                   help="final / floor learning rate as a fraction of --lr (0.05)")
    t.add_argument("--lr-decay", type=float, default=None,
                   help="per-epoch factor of the exponential schedule (0.95)")
    t.add_argument("--clip", type=float, default=None, help="gradient-norm clip (1.0; 0 = off)")
    t.add_argument("--val-fraction", type=float, default=None,
                   help="fraction of stars held out for validation (0.1)")
    t.add_argument("--split-seed", type=int, default=None, help="seed of the star split (0)")
    t.add_argument("--seed", type=int, default=None, help="seed of weights, order and noise (0)")
    t.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="architecture preset (compact; seed = the seed's 7517→…→58 widths)")
    t.add_argument("--encoder-widths", type=_widths, default=None,
                   help="hidden widths of the encoder, e.g. 256,64 (decoder mirrors them)")
    t.add_argument("--decoder-widths", type=_widths, default=None, help="decoder widths")
    t.add_argument("--n-latent", type=int, default=None, help="free latents (28)")
    t.add_argument("--bad-bits", default=None, help="PIXMASK bad set: astronn or pipeline")
    t.add_argument("--max-rows", type=int, default=None, help="use only the first N labelled rows")
    t.add_argument("--checkpoint-every", type=int, default=None,
                   help="keep a copy of the checkpoint every N epochs (10)")
    t.add_argument("--weights-dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="dtype of the saved model's weights (float32)")
    t.add_argument("--no-amp", dest="amp", action="store_const", const=False, default=None,
                   help="no bf16 autocast on CUDA")
    t.add_argument("--cache-gb", type=float, default=None,
                   help="hold the data in (device) memory when it needs less than this (4)")
    t.add_argument("--no-decorrelate", dest="decorrelate", action="store_const", const=False,
                   default=None, help="save the model without absorbing the linear label trend "
                   "of the latent means (reconstructions are the same either way)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--init-from", default=None,
                   help="start from a saved model dir or checkpoint (new β/γ/lr, fresh optimiser)")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    _common(t)
    t.set_defaults(func=run_train)

    i = groups["infer"].add_parser(
        "vae", help="run the VAE over a whole store and write VAE_* catalog columns",
        description="Stream every spectrum of the store through the VAE and write latent means "
        "VAE_Z00…, sigmas VAE_S00…, VAE_CHI2 (reduced χ² of the reconstruction), "
        "VAE_RESID_RMS and VAE_FLAG to the catalog.")
    i.add_argument("--store", default=None, help="store directory or name (default: demo store)")
    i.add_argument("--model", default=None, help="model directory (default: the shipped demo VAE)")
    i.add_argument("--batch-size", type=int, default=1024, help="spectra per batch (1024)")
    i.add_argument("--amp", action="store_true",
                   help="bf16 autocast on CUDA (default: float32, exact latents)")
    _common(i)
    i.set_defaults(func=run_infer)

    e = groups["evaluate"].add_parser(
        "vae", help="VAE diagnostics: χ²_ν histogram, residuals, latent correlations",
        description="Evaluate a VAE on the held-out stars of a store and write the seed's "
        "diagnostics (χ²_ν histogram, per-pixel residuals, 31×31 and 31×3 correlation CSV + "
        "heatmaps, corner-plot data by label bins) with a summary.json.")
    e.add_argument("--store", default=None, help="store directory or name (default: demo store)")
    e.add_argument("--model", default=None, help="model directory (default: the shipped demo VAE)")
    e.add_argument("--out", default=None, help="output directory (default MODEL/eval-STORE)")
    e.add_argument("--rows", choices=["validation", "all"], default="validation",
                   help="held-out stars of the model's split (default) or every labelled row")
    e.add_argument("--max-spectra", type=int, default=None, help="evaluate a random subset")
    e.add_argument("--batch-size", type=int, default=1024, help="spectra per batch (1024)")
    e.add_argument("--seed", type=int, default=0, help="seed of subsets and sampled z′")
    _common(e)
    e.set_defaults(func=run_evaluate)


_TRAIN_FIELDS = ("epochs", "beta", "gamma", "lr", "batch_size", "schedule", "warmup_steps",
                 "min_lr_factor", "lr_decay", "clip", "val_fraction", "split_seed", "seed",
                 "preset", "encoder_widths", "decoder_widths", "n_latent", "bad_bits",
                 "max_rows", "checkpoint_every", "weights_dtype", "amp", "cache_gb",
                 "init_from", "device", "decorrelate")


def _threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _model_dir(args):
    from ..errors import BadFileError
    from ..paths import SHIPPED_MODELS

    if args.model:
        return args.model
    demo = SHIPPED_MODELS / "vae-demo"
    if not (demo / "config.json").is_file():
        raise BadFileError(demo, "no shipped demo VAE; pass --model")
    return str(demo)


def _emit(args, figures: dict, text: str) -> None:
    if args.json:
        print(json.dumps(figures, default=str))
    else:
        print(text)


def run_train(args) -> int:
    from ..paths import resolve_store
    from ..train.vae import VAETrainSettings, train_vae

    _threads(args)
    given = {k: getattr(args, k) for k in _TRAIN_FIELDS if getattr(args, k) is not None}
    given["progress"] = not (args.no_progress or args.json)
    given["command"] = "stellarscope " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    store = str(resolve_store(args.store))
    if args.store is not None:  # a resumed run keeps its own store unless one is named
        given["store"] = store
    settings = VAETrainSettings(**{"store": store, "out": args.out, **given})
    summary = train_vae(settings, resume=args.resume, overwrite=args.overwrite, given=given)
    if summary["rank"] != 0:  # under torchrun only the first process reports
        return 0
    best = summary["best"]
    _emit(args, summary, f"trained {summary['epochs']} epochs -> {summary['out']}; best epoch "
          f"{best['epoch']} (validation loss {best['val_total']:.5g}, χ²_ν "
          f"{best.get('val_chi2_nu', float('nan')):.3f}); "
          f"{summary.get('train_spectra_per_s', 0):.0f} training spectra/s on {summary['device']}")
    return 0


def run_infer(args) -> int:
    from ..inference.vae import infer_store

    _threads(args)
    figures = infer_store(args.store, _model_dir(args), batch_size=args.batch_size,
                          device=args.device, progress=not (args.no_progress or args.json),
                          amp=args.amp)
    _emit(args, figures, f"VAE columns written to {figures['store']}: {figures['n_spectra']} "
          f"spectra, {figures['spectra_per_s']} spectra/s on {figures['device']}, median χ²_ν "
          f"{figures['median_chi2_nu']}, flagged {figures['n_flag_nonfinite']} non-finite / "
          f"{figures['n_flag_unusable']} unusable")
    return 0


def run_evaluate(args) -> int:
    from ..evaluate.vae import evaluate_vae

    _threads(args)
    s = evaluate_vae(args.store, _model_dir(args), out_dir=args.out, rows=args.rows,
                     batch_size=args.batch_size, device=args.device,
                     max_spectra=args.max_spectra, seed=args.seed,
                     progress=not (args.no_progress or args.json))
    _emit(args, s, f"{s['n_spectra']} {s['rows']} spectra: median χ²_ν {s['median_chi2_nu']:.3f}, "
          f"max |corr(free latent, label)| {s['max_abs_corr']:.3f} "
          f"({' vs '.join(s['max_abs_corr_at'])}); figures in {s['out_dir']}")
    return 0
