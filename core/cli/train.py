"""``stellarscope train FAMILY``: one command for every model family's training.

Options every family shares (schedule, checkpoints, resume, init-from, device …) are defined
here; each family's task adds its own with ``add_arguments``.  Multi-GPU training runs the
same command under torchrun, e.g.
``torchrun --nproc_per_node 4 -m core.cli.main train vae --store S --out M``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys


def _add_shared(p: argparse.ArgumentParser) -> None:
    from ..train.loop import SCHEDULES

    p.add_argument("--store", default=None, help="store directory or name (default: demo store)")
    p.add_argument("--out", required=True, help="run / model directory")
    p.add_argument("--epochs", type=int, default=None, help="epochs in total")
    p.add_argument("--batch-size", type=int, default=None, help="spectra per step and process")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="learning-rate schedule after the linear warm-up (default cosine)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps")
    p.add_argument("--min-lr-factor", type=float, default=None,
                   help="final / floor learning rate as a fraction of --lr")
    p.add_argument("--lr-decay", type=float, default=None,
                   help="per-epoch factor of the exponential schedule (0.95)")
    p.add_argument("--clip", type=float, default=None, help="gradient-norm clip (0 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed of weights, order and noise")
    p.add_argument("--patience", type=int, default=None, help="stop after this many epochs "
                   "without a better validation loss (default: run the whole schedule; the "
                   "best validation weights are kept either way)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock budget: stop after the epoch that passes it (the schedule "
                   "still spans --epochs, so set both)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="keep a copy of the checkpoint every N epochs (last.pt is written "
                   "after every epoch)")
    p.add_argument("--weights-dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="dtype of the saved model's weights (float32)")
    p.add_argument("--no-amp", dest="amp", action="store_const", const=False, default=None,
                   help="no bf16 autocast on CUDA")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--init-from", default=None,
                   help="start from a saved model dir, run dir or checkpoint (fresh optimiser)")
    p.add_argument("--overwrite", action="store_true", help="replace a run or model in --out")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N (default: CUDA when available, else CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub, groups) -> None:
    from ..models.families import FAMILIES

    for fam in FAMILIES.values():
        if not fam.task:
            continue
        task = fam.part("task")
        p = groups["train"].add_parser(
            fam.name, help=f"train a {fam.title} on a store",
            description=f"Train a {fam.title} on a store. {(task.__doc__ or '').strip()} The run "
            "directory gets the best model (config.json + model.safetensors), a checkpoint "
            "after every epoch (--resume continues it exactly), training_log.csv and "
            "loss_curves.png. Under torchrun the same command trains with DDP (NCCL on "
            "GPUs, gloo on CPU).")
        _add_shared(p)
        task.add_arguments(p)
        p.set_defaults(func=run_train, family=fam.name)


def run_train(args) -> int:
    from pathlib import Path

    from ..models.families import get_family
    from ..paths import resolve_store
    from ..train.trainer import train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    task = get_family(args.family).part("task")
    fields = {f.name for f in dataclasses.fields(task.settings_class)}
    skip = {"store", "out", "progress", "command"}
    given = {k: v for k, v in vars(args).items() if k in fields and k not in skip
             and v is not None}
    given["progress"] = not (args.no_progress or args.json)
    given["command"] = "stellarscope " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if "name" in fields:
        given["name"] = Path(args.out).name
    store = str(resolve_store(args.store))
    if args.store is not None:  # a resumed run keeps its own store unless one is named
        given["store"] = store
    settings = task.settings_class(**{"store": store, "out": args.out, **given})
    summary = train(task(settings), resume=args.resume, overwrite=args.overwrite, given=given)
    if summary["rank"] != 0:  # under torchrun only the first process reports
        return 0
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    best = summary["best"]
    lines = [f"trained {summary['epochs']} epochs -> {summary['out']}; best epoch "
             f"{best['epoch']} (validation loss {best['val_total']:.5g}); "
             f"{summary.get('train_spectra_per_s', 0):.0f} training spectra/s on "
             f"{summary['device']}"]
    if "stopped" in summary:
        lines.append(f"stopped early: {summary['stopped']}")
    print("\n".join(lines + task.report(summary)))
    return 0
