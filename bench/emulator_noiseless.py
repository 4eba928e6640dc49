"""Emulator trained on noiseless vs observed (noisy) mock spectra, same stars and budget.

The Payne learns from noiseless model spectra; ours could learn from the mock's noisy
observations (``--labels-from truth``) or from the same stars re-synthesised without noise
(``--labels-from noiseless``).  Both are scored by fitting stars of an unseen mock (bias,
1.4826·MAD scatter and pull width against the true labels, per S/N bin).  Steps whose outputs
already exist in ``--work`` are reused.  Writes bench/results/emulator_noiseless.json.

    python bench/emulator_noiseless.py --physics apogee --population dr17 --n-train 6000 \\
        --epochs 150 --n-fit 400 --work /tmp/noiseless
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("noiseless", "truth")


def _run(argv: list[str], out: Path | None = None) -> None:
    print("$ stellarscope " + " ".join(argv), file=sys.stderr)
    exe = [sys.executable, "-m", "core.cli.main", *argv]
    with open(out, "w") if out else open(os.devnull, "w") as fh:
        subprocess.run(exe, cwd=ROOT, check=True, stdout=fh if out else None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--physics", default="apogee")
    ap.add_argument("--population", default="dr17")
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-test", type=int, default=1500)
    ap.add_argument("--n-fit", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--preset", default="payne")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/emulator_noiseless.json")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="noiseless-"))
    work.mkdir(parents=True, exist_ok=True)
    mock = ["--physics", args.physics, "--population", args.population, "--overwrite", "--json"]
    for name, n, seed in (("train", args.n_train, 11), ("test", args.n_test, 12)):
        if not (work / name / "manifest.json").exists():
            _run(["mock", "--n-stars", str(n), "--seed", str(seed), "--out", str(work / name),
                  *mock])
    rows = {}
    for src in SOURCES:
        model, summary = work / f"emu-{src}", work / f"train-{src}.json"
        if not (model / "config.json").exists():
            t0 = time.perf_counter()
            _run(["train", "emulator", "--store", str(work / "train"), "--out", str(model),
                  "--preset", args.preset, "--labels-from", src, "--epochs", str(args.epochs),
                  "--no-progress", "--overwrite", "--json"], summary)
            print(f"trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        evaluation = work / f"eval-{src}.json"
        if not evaluation.exists():
            _run(["evaluate", "emulator", "--store", str(work / "test"), "--model", str(model),
                  "--reference", "truth", "--n-stars", str(args.n_fit), "--out",
                  str(work / f"eval-{src}"), "--json"], evaluation)
        trained, record = json.loads(summary.read_text()), json.loads(evaluation.read_text())
        rows[src] = {"train_seconds": round(trained["seconds"], 1),
                     "epochs": trained["epochs"], "n_train": trained["n_train"],
                     "emulator_error_median": trained["pixel_error"]["emulator_error_median"],
                     "emulator_error_p95": trained["pixel_error"]["emulator_error_p95"],
                     "accuracy": record["accuracy"]}
    result = {"what": "emulator trained on noiseless vs observed mock spectra (same stars, "
                      "same budget), fits of an unseen mock against its true labels",
              "physics": args.physics, "population": args.population,
              "n_fit": args.n_fit, "preset": args.preset,
              "scores": "bias, 1.4826·MAD scatter, pull width (formal σ, no floors) per S/N bin",
              "targets_at_snr_100_plus": {"TEFF": 10, "LOGG": 0.02, "FE_H": 0.01, "X_FE": 0.015,
                                          "pull_width": [0.9, 1.1]},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    labels = ("TEFF", "LOGG", "FE_H", "MG_FE")
    print(f"{'source':<10}{'S/N':<9}{'n':>5}" + "".join(f"{n:>22}" for n in labels))
    for src, row in rows.items():
        for acc in row["accuracy"]:
            cells = "".join(f"  {acc[n]['bias']:>+8.3g} {acc[n]['scatter']:>10.3g}"
                            for n in labels)
            print(f"{src:<10}{acc['snr_bin']:<9}{acc['n_stars']:>5}{cells}")
        print(f"{'':<10}emulator error median {row['emulator_error_median']:.4f}, "
              f"training {row['train_seconds']} s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
