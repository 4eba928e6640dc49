"""Which VAE objective keeps the injected labels out of the free latents (issue 11, item 2)?

    .venv/bin/python bench/vae_independence.py --train-store /tmp/m3 --eval-store /tmp/m8 \\
        --work /tmp/vae-indep

Trains one VAE per objective on the same store, with the same architecture, seed, epochs and
wall-clock cap, then runs ``evaluate vae`` on an independent store (a mock seed none of them
saw) and tabulates: probe excess R² and partial R² per injected label (MLP, controls = the
store's other labels), median reconstruction χ²_ν and the swap slope (core.evaluate.swap).
Runs and evaluations already under ``--work`` are reused (delete them to redo one), so an
interrupted bench resumes.  Results go to bench/results/vae_independence.json.

Make the stores with ``stellarscope mock --n-stars 6000 --seed 3 --out …`` (training) and
``--n-stars 4000 --seed 8`` (evaluation).  Each training and evaluation runs in its own
process (``stellarscope train vae`` / ``evaluate vae``), as a user would run them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "vae_independence.json"

#: Shared settings of every run (the demo VAE's, on a smaller store).
COMMON = ["--beta", "10", "--gamma", "1000", "--lr", "2e-3", "--batch-size", "256"]
#: name → (description, extra ``train vae`` options)
OBJECTIVES = {
    "plain": ("seed objective (χ² + β·KL + γ·Gaussian MI)", []),
    "hsic": ("+ normalised-HSIC penalty λ=1e5 between μ and the labels", ["--hsic", "1e5"]),
    "hsic-3e5": ("+ normalised-HSIC penalty λ=3e5 between μ and the labels",
                 ["--hsic", "3e5"]),
    "hsic-2e5": ("+ normalised-HSIC penalty λ=2e5 between μ and the labels",
                 ["--hsic", "2e5"]),
    "hsic-3e5-seed1": ("hsic-3e5 again with --seed 1 (run-to-run spread)",
                       ["--hsic", "3e5", "--seed", "1"]),
    "hsic-1e6": ("+ normalised-HSIC penalty λ=1e6 between μ and the labels",
                 ["--hsic", "1e6"]),
    "hsic-controls": ("+ HSIC λ=1e5 between μ and the label residuals after a quadratic fit "
                      "on the controls (TRUE_* on a mock)",
                      ["--hsic", "1e5", "--hsic-controls", "auto"]),
    "adversary-measured": ("+ adversary λ=3e4 on μ + measured VMICRO/[X/Fe]",
                           ["--adversary", "30000", "--adversary-controls", "measured"]),
    "adversary": ("+ adversary λ=3e4 on μ + controls (TRUE_* on a mock)",
                  ["--adversary", "30000"]),
    "hsic-controls-3e5": ("+ HSIC λ=3e5 between μ and the label residuals after a quadratic "
                          "fit on the controls (TRUE_* on a mock)",
                          ["--hsic", "3e5", "--hsic-controls", "auto"]),
    "hsic-joint-3e5": ("+ HSIC λ=3e5 between [μ, controls] and the label residuals after a "
                       "quadratic fit on the controls (TRUE_* on a mock)",
                       ["--hsic", "3e5", "--hsic-controls", "auto", "--hsic-joint"]),
    "hsic-3e5-ms": ("hsic-3e5 with the latent kernel at 0.1× and 1× the median bandwidth²",
                    ["--hsic", "3e5", "--hsic-scales", "0.1,1"]),
    "hsic-3e5-pl-3e5": ("hsic-3e5 + per-latent HSIC λ=3e5 (mean over latents of the HSIC "
                        "between one latent mean and the labels)",
                        ["--hsic", "3e5", "--hsic-per-latent", "3e5"]),
    "hsic-3e5-pl-1e6": ("hsic-3e5 + per-latent HSIC λ=1e6",
                        ["--hsic", "3e5", "--hsic-per-latent", "1e6"]),
    "pl-1e6": ("per-latent HSIC λ=1e6 alone", ["--hsic-per-latent", "1e6"]),
    "offsets": ("label-correction latents δy (prior N(0, catalog error²), decoder gets y + δy), "
                "no re-draw", ["--label-offsets", "--no-label-redraw"]),
    "offsets-hsic-3e5": ("offsets + HSIC λ=3e5 between μ and the labels",
                         ["--label-offsets", "--no-label-redraw", "--hsic", "3e5"]),
    "hsic-3e5-wide": ("hsic-3e5 with a wider decoder (256, 256 hidden instead of 64, 128): "
                      "room to model the labels' effect without the latents' help",
                      ["--hsic", "3e5", "--decoder-widths", "256,256"]),
    "wide": ("plain with the wider decoder (256, 256): does decoder capacity set the leak?",
             ["--decoder-widths", "256,256"]),
    "hsic-3e5-beta3": ("hsic-3e5 with β=3 (less prior pull on the latent means, whose "
                       "label-dependent shrinkage can give the labels away)",
                       ["--hsic", "3e5", "--beta", "3"]),
    "true-noredraw": ("diagnostic: plain without re-draw on a copy of the stores whose "
                      "TEFF/LOGG/FE_H are the TRUE_* values (exact injected labels)",
                      ["--no-label-redraw"]),
    "true-noredraw-hsic-3e5": ("diagnostic: hsic-3e5 without re-draw on the exact-label copies",
                               ["--hsic", "3e5", "--no-label-redraw"]),
    "noredraw": ("plain, decoding with the catalog labels as they are (no re-draw from "
                 "their errors)", ["--no-label-redraw"]),
    "noredraw-hsic-3e5": ("hsic-3e5 without the label re-draw",
                          ["--hsic", "3e5", "--no-label-redraw"]),
    "cm-3e4": ("hsic-3e5 + conditional-moment penalty λ=3e4 (core.train.conditional: the "
               "share of μ's variance and spread that label terms explain beyond the controls)",
               ["--hsic", "3e5", "--cond-moments", "3e4"]),
    "cm-1e5": ("hsic-3e5 + conditional-moment penalty λ=1e5",
               ["--hsic", "3e5", "--cond-moments", "1e5"]),
    "cm-2e5": ("hsic-3e5 + conditional-moment penalty λ=2e5",
               ["--hsic", "3e5", "--cond-moments", "2e5"]),
    "cm-1e5-nohsic": ("conditional-moment penalty λ=1e5 alone (no HSIC)",
                      ["--cond-moments", "1e5"]),
    "cm-3e5-nohsic": ("conditional-moment penalty λ=3e5 alone (no HSIC)",
                      ["--cond-moments", "3e5"]),
    "cm-2e5-wide": ("cm-2e5 with a wider decoder (128, 256): room for the cool stars' "
                    "molecular bands without label-warped latents",
                    ["--hsic", "3e5", "--cond-moments", "2e5", "--decoder-widths", "128,256"]),
}


def _cli(*args: str, threads: int) -> list[str]:
    return [sys.executable, "-c", "import sys; from core.cli.main import main; "
            "sys.argv[0] = 'stellarscope'; sys.exit(main())", *args, "--threads", str(threads)]


def _run(cmd: list[str], log: Path, env: dict) -> None:
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)


def train(name: str, extra: list[str], args, env) -> dict:
    out = args.work / "runs" / name
    summary = args.work / f"train-{name}.json"
    if not summary.is_file():
        t0 = time.perf_counter()
        cmd = _cli("train", "vae", "--store", args.train_store, "--out", str(out), "--epochs",
                   str(args.epochs), "--max-minutes", str(args.max_minutes), *COMMON, *extra,
                   "--no-progress", "--json", "--overwrite", threads=args.threads)
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"training {name} failed:\n{res.stderr[-3000:]}")
        s = json.loads(res.stdout)
        s["wall_seconds"] = time.perf_counter() - t0
        summary.write_text(json.dumps(s, default=str))
    return json.loads(summary.read_text())


def evaluate(name: str, args, env) -> dict:
    out = args.work / "eval" / name
    summary = out / "summary.json"
    if not summary.is_file():
        cmd = _cli("evaluate", "vae", "--store", args.eval_store, "--model",
                   str(args.work / "runs" / name), "--out", str(out), "--no-progress",
                   threads=args.threads)
        _run(cmd, args.work / f"eval-{name}.log", env)
    return json.loads(summary.read_text())


def row(name: str, t: dict, e: dict, tag: str) -> dict:
    labels = list(e["probe_excess_r2"])
    return {
        "objective": name, "round": tag, "description": OBJECTIVES[name][0],
        "options": " ".join(COMMON + OBJECTIVES[name][1]),
        "epochs": t["epochs"], "minutes": round(t.get("seconds", 0) / 60, 2),
        "best_epoch": t["best"]["epoch"],
        **{f"excess_r2_{k}": round(e["probe_excess_r2"][k], 3) for k in labels},
        **{f"partial_r2_{k}": round(e["probe_partial_r2"][k], 3) for k in labels},
        **{f"r2_latents_{k}": round(e["probe_r2_latents"][k], 3) for k in labels},
        "median_chi2_nu": round(e["median_chi2_nu"], 3),
        **{f"swap_slope_{k}": round(v, 3) for k, v in (e.get("swap_slope") or {}).items()},
        "val_chi2_nu_training_store": round(t["best"]["val_chi2_nu"], 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-store", required=True)
    p.add_argument("--eval-store", required=True)
    p.add_argument("--work", type=Path, required=True, help="runs and evaluations (reused)")
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--max-minutes", type=float, default=9.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="",
                   help="label of this round; rows of other rounds already in the results "
                   "file are kept (rows of the same round are replaced)")
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "STELLARSCOPE_HOME": str(args.work / "home")}
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.objectives.split(","):
        t = train(name, OBJECTIVES[name][1], args, env)
        e = evaluate(name, args, env)
        rows.append({**row(name, t, e, args.tag), "epochs_cap": args.epochs,
                     "max_minutes": args.max_minutes, "train_store": args.train_store,
                     "eval_store": args.eval_store})
        print(json.dumps(rows[-1]), flush=True)
    note = None
    if RESULTS.is_file():  # keep the other rounds (and the note on them)
        previous = json.loads(RESULTS.read_text())
        note = previous.get("note")
        rows = [r for r in previous.get("rows", []) if r.get("round", "") != args.tag] + rows
    result = {
        "benchmark": "VAE objectives vs label leakage into the free latents "
                     "(bench/vae_independence.py)",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {args.threads} torch thread(s) per run, shared CPU",
        "train_store": args.train_store, "eval_store": args.eval_store,
        "epochs_cap": args.epochs, "max_minutes": args.max_minutes,
        "targets": {"excess_r2_max": 0.05, "median_chi2_nu_max": 1.15,
                    "swap_slope": [0.95, 1.05]},
        "figures": "excess/partial R²: MLP probe of evaluate vae (controls = the evaluation "
                   "store's TRUE_* VMICRO and [X/Fe]); χ²_ν: median over the evaluation "
                   "store; swap slope: core.evaluate.swap",
        **({"note": note} if note else {}),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
