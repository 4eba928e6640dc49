"""Training speed through the shared loop: emulator training spectra/s on a small store.

    .venv/bin/python bench/train.py                  # CPU, 2,000-spectrum synthetic store
    .venv/bin/python bench/train.py --device cuda

Each repeat trains The Payne's 2×300 emulator for ``--epochs`` epochs with
``core.train.emulator.train_emulator`` and divides the training spectra seen by the run's
wall time (validation included, data loading excluded).  Where the run writes a
training_log.csv, the median of its per-epoch ``train_spectra_per_s`` (optimiser steps only)
is reported too.  Results are merged into bench/results/train.json under ``--label``
(``--pool`` adds the repeats to those already there: medians over several calls, for a
machine whose load varies).  The figures before the shared loop came from running this
script against the tree before it (``git archive fc2453b``), interleaved with the new one.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.store.atomic import write_json_atomic  # noqa: E402
from core.train.emulator import TrainSettings, train_emulator  # noqa: E402
from core.train.synthetic import synthetic_store  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "train.json"


def bench_emulator(store, args) -> dict:
    runs, per_epoch = [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            s = TrainSettings(preset="payne", epochs=args.epochs, batch_size=args.batch_size,
                              seed=r, device=args.device)
            t0 = time.perf_counter()
            rec = train_emulator(store, Path(tmp) / "emu", s, progress=False)
            wall = time.perf_counter() - t0
            log = Path(tmp) / "emu" / "training_log.csv"
            if log.is_file():
                import pandas as pd

                per_epoch += list(pd.read_csv(log)["train_spectra_per_s"])
        runs.append(rec["n_train"] * rec["epochs_run"] / rec["seconds"])
        print(f"  repeat {r}: {runs[-1]:.0f} training spectra/s over the run "
              f"({rec['seconds']:.1f} s of {wall:.1f} s wall incl. reading)", flush=True)
    out = {"spectra_per_s_run_median": float(np.median(runs)), "runs": runs,
           "n_train": int(rec["n_train"]), "epochs": args.epochs, "batch_size": args.batch_size}
    if per_epoch:
        out["epoch_runs"] = [float(v) for v in per_epoch]
        out["train_spectra_per_s_epoch_median"] = float(np.median(per_epoch))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="spectra in the synthetic store")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--label", default="current", help="key of this run in the JSON")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--pool", action="store_true",
                    help="add these repeats to an earlier run's under the same label")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "store", n=args.n, seed=0)
        print(f"emulator training on {args.n} synthetic spectra, {args.epochs} epochs × "
              f"{args.repeats}", flush=True)
        emu = bench_emulator(store, args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = {"when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
              "device": device, "threads": args.threads, "machine": platform.machine(),
              "torch": torch.__version__, "n_spectra": args.n, "emulator": emu}
    path = Path(args.out)
    old = json.loads(path.read_text()) if path.is_file() else {}
    key = f"{args.label}/{device}"
    prev = old.get(key, {}).get("emulator", {})
    same = all(prev.get(k) == emu[k] for k in ("n_train", "epochs", "batch_size"))
    if args.pool and same:  # a shared machine's load varies: pool the repeats of several calls
        for k in ("runs", "epoch_runs"):
            if k in emu or k in prev:
                emu[k] = prev.get(k, []) + emu.get(k, [])
        emu["spectra_per_s_run_median"] = float(np.median(emu["runs"]))
        if emu.get("epoch_runs"):
            emu["train_spectra_per_s_epoch_median"] = float(np.median(emu["epoch_runs"]))
    old[key] = result
    write_json_atomic(path, old)
    print(f"emulator: median {emu['spectra_per_s_run_median']:.0f} training spectra/s over "
          f"{len(emu['runs'])} runs "
          f"(run wall time){'; per epoch ' + format(emu['train_spectra_per_s_epoch_median'], '.0f') if 'train_spectra_per_s_epoch_median' in emu else ''}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
