"""Training speed and memory of both model families: training spectra/s and peak RSS.

    .venv/bin/python bench/train.py                  # CPU, 2,000-spectrum synthetic store
    .venv/bin/python bench/train.py --device cuda
    .venv/bin/python bench/train.py --tree /tmp/old --label before --pool   # another checkout

Each repeat trains, for ``--epochs`` epochs on a synthetic store:

* ``emulator``: The Payne's 2×300 emulator (``core.train.emulator.train_emulator``);
* ``vae``: the compact VAE (``core.train.vae.train_vae``, no latent decorrelation), on
  ``--n-vae`` of the store's spectra.

Every repeat runs in a fresh subprocess (the store is written by another one first), so its
peak RSS (``VmHWM`` at its end: imports, data, model, optimiser, all epochs) is its own and
not inherited from another measurement; ``--tree DIR`` runs the code of another checkout.
Training spectra/s is the training spectra seen divided by the run's wall time (validation
included, data loading excluded); where the run writes a training_log.csv, the median of its
per-epoch ``train_spectra_per_s`` (optimiser steps only) is reported too.  Results are merged
into bench/results/train.json under ``--label``/device (``--pool`` adds the repeats to those
already there: medians over several calls, for a machine whose load varies).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mb  # bench/ is the script directory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "train.json"
FAMILIES = ("emulator", "vae")


def _epoch_rates(run_dir: Path) -> list[float]:
    log = run_dir / "training_log.csv"
    if not log.is_file():
        return []
    import pandas as pd

    return [float(v) for v in pd.read_csv(log)["train_spectra_per_s"]]


def train_once(args, store_path: Path, out: Path) -> dict:
    """One training run of ``args.child`` in this process."""
    if args.child == "emulator":
        from core.train.emulator import TrainSettings, train_emulator

        s = TrainSettings(preset="payne", epochs=args.epochs, batch_size=args.batch_size,
                          seed=args.seed, device=args.device)
        rec = train_emulator(str(store_path), out, s, progress=False)
        n_train, epochs, seconds = rec["n_train"], rec["epochs_run"], rec["seconds"]
    else:
        from core.train.vae import VAETrainSettings, train_vae

        s = VAETrainSettings(store=str(store_path), out=str(out), epochs=args.epochs,
                             batch_size=args.batch_size, seed=args.seed, device=args.device,
                             max_rows=args.n_vae, decorrelate=False, progress=False,
                             checkpoint_every=args.epochs)
        rec = train_vae(s)
        n_train, epochs, seconds = rec["n_train"], args.epochs, rec["seconds"]
    return {"rate": n_train * epochs / seconds, "n_train": int(n_train), "seconds": seconds,
            "epoch_rates": _epoch_rates(out)}


def child(args) -> None:
    """Run in a fresh interpreter on ``--tree``'s code; prints one JSON line."""
    sys.path.insert(0, str(Path(args.tree).resolve()))
    import torch

    import core

    if not Path(core.__file__).resolve().is_relative_to(Path(args.tree).resolve()):
        raise SystemExit(f"core imported from {core.__file__}, not from {args.tree}")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if args.child == "build":
        from core.train.synthetic import synthetic_store

        synthetic_store(work / "store", n=args.n, seed=0)
        out = {}
    else:
        run_dir = work / f"{args.child}-{args.seed}"
        out = train_once(args, work / "store", run_dir)
        out["peak_rss_mb"] = peak_rss_mb()
        out["torch"] = torch.__version__
    print("RESULT " + json.dumps(out), flush=True)


def _spawn(args, what: str, work: Path, seed: int = 0) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", what, "--tree", args.tree,
           "--work", str(work), "--n", str(args.n), "--n-vae", str(args.n_vae),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--seed", str(seed)]
    if args.device:
        cmd += ["--device", args.device]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only --tree's code
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{what} failed on {args.tree}:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def bench_family(family: str, args, work: Path) -> dict:
    runs, per_epoch, rss = [], [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        rec = _spawn(args, family, work, seed=r)
        runs.append(rec["rate"])
        per_epoch += rec["epoch_rates"]
        rss.append(rec["peak_rss_mb"])
        print(f"  {family} repeat {r}: {rec['rate']:.0f} training spectra/s over the run "
              f"({rec['seconds']:.1f} s of {time.perf_counter() - t0:.1f} s wall incl. start), "
              f"peak RSS {rec['peak_rss_mb']:.0f} MB", flush=True)
    out = {"spectra_per_s_run_median": float(statistics.median(runs)), "runs": runs,
           "peak_rss_mb": rss, "median_peak_rss_mb": float(statistics.median(rss)),
           "n_train": rec["n_train"], "epochs": args.epochs, "batch_size": args.batch_size,
           "torch": rec["torch"]}
    if per_epoch:
        out["epoch_runs"] = per_epoch
        out["train_spectra_per_s_epoch_median"] = float(statistics.median(per_epoch))
    return out


def _pool(new: dict, prev: dict) -> dict:
    """Add an earlier call's repeats (same sizes) to this one's and take medians again."""
    if not all(prev.get(k) == new[k] for k in ("n_train", "epochs", "batch_size")):
        return new
    for k in ("runs", "epoch_runs", "peak_rss_mb"):
        if k in new or k in prev:
            new[k] = prev.get(k, []) + new.get(k, [])
    new["spectra_per_s_run_median"] = float(statistics.median(new["runs"]))
    if new["peak_rss_mb"]:
        new["median_peak_rss_mb"] = float(statistics.median(new["peak_rss_mb"]))
    if new.get("epoch_runs"):
        new["train_spectra_per_s_epoch_median"] = float(statistics.median(new["epoch_runs"]))
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="spectra in the synthetic store")
    ap.add_argument("--n-vae", type=int, default=1000, help="of them used to train the VAE")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--tree", default=str(ROOT), help="the checkout whose code is measured")
    ap.add_argument("--label", default="current", help="key of this run in the JSON")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--pool", action="store_true",
                    help="add these repeats to an earlier run's under the same label")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = Path(args.out)
    old = json.loads(path.read_text()) if path.is_file() else {}
    key = f"{args.label}/{device}"
    prev = old.get(key, {})
    result = {"when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
              "device": device, "threads": args.threads, "machine": platform.machine(),
              "tree": str(Path(args.tree).resolve()), "n_spectra": args.n}
    with tempfile.TemporaryDirectory() as tmp:
        _spawn(args, "build", Path(tmp))
        for family in args.families.split(","):
            print(f"{family} training on {args.n} synthetic spectra, {args.epochs} epochs × "
                  f"{args.repeats} (fresh process each)", flush=True)
            fig = bench_family(family, args, Path(tmp))
            result[family] = _pool(fig, prev.get(family, {})) if args.pool else fig
    for family in FAMILIES:  # a call for one family keeps the other's figures
        if family not in result and family in prev:
            result[family] = prev[family]
    result["torch"] = next(result[f]["torch"] for f in FAMILIES if f in result)
    old[key] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(old, indent=2) + "\n")
    os.replace(tmp, path)  # an interrupted run leaves the earlier results whole
    for family in FAMILIES:
        fig = result.get(family)
        if fig:
            epoch = fig.get("train_spectra_per_s_epoch_median")
            print(f"{family}: median {fig['spectra_per_s_run_median']:.0f} training spectra/s "
                  f"over {len(fig['runs'])} runs (run wall time)"
                  f"{'; per epoch ' + format(epoch, '.0f') if epoch else ''}; peak RSS median "
                  f"{fig.get('median_peak_rss_mb', float('nan')):.0f} MB")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
