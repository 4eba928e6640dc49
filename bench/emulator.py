"""Emulator accuracy by preset: trained emulators against noiseless mock spectra.

For each model directory: its training record (preset, epochs, wall time, validation error)
and its error against the mock survey's noiseless flux for fresh label vectors inside its
training box.  Writes JSON (default bench/results/emulator.json).  Run:
``python bench/emulator.py [MODEL_DIR ...] [--n-stars 500]``.  The preset comparison in
bench/results/emulator_presets.json came from two 35-minute CPU runs on the default mock survey
(``stellarscope train emulator --preset payne|wide --labels-from truth --max-minutes 35``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fit import emulation_accuracy  # noqa: E402

from core.fit import load_model  # noqa: E402
from core.store.atomic import write_json_atomic  # noqa: E402


def describe(model_dir: Path, n: int, seed: int) -> dict:
    emu = load_model(model_dir).to("cpu")
    rec = emu.config.training
    n_params = sum(p.numel() for p in emu.parameters())
    return {
        "model": str(model_dir), "preset": emu.config.preset, "hidden": list(emu.config.hidden),
        "parameters": int(n_params),
        "training": {k: rec.get(k) for k in ("n_train", "n_val", "epochs_run", "best_epoch",
                                             "seconds", "device", "command")},
        "validation": rec.get("validation"),
        "vs_noiseless_mock": emulation_accuracy(emu, n, seed),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", help="emulator directories (default: the shipped demo)")
    ap.add_argument("--n-stars", type=int, default=500)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "emulator.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from core.models import find

    models = [Path(m) for m in args.models] or [find("emulator")]
    rows = [describe(m, args.n_stars, args.seed) for m in models]
    write_json_atomic(args.out, {"n_stars": args.n_stars, "seed": args.seed, "models": rows})
    for r in rows:
        v, m = r["validation"] or {}, r["vs_noiseless_mock"]
        print(f"{r['preset']:>6} {r['hidden']} {r['parameters'] / 1e6:.2f} M params: "
              f"{r['training']['epochs_run']} epochs (best {r['training']['best_epoch']}) in "
              f"{r['training']['seconds']} s; validation error median "
              f"{v.get('emulator_error_median', float('nan')):.2e}; vs noiseless mock median "
              f"{m['median_abs']:.2e}, rms {m['rms']:.2e}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
