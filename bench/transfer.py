"""Transfer to shifted physics: how the spectral transformer and the emulator fitter cope with
spectra whose physics differs from the one they were trained on (issue 12, item 3).

The shifted mock physics (``stellarscope mock --physics shifted-apogee``: the default
``apogee`` physics with perturbed log gf, extra unidentified lines, a broader line-spread
function and continuum ripples) stands in for "synthetic grid vs real observations".  Four
rows, all scored on the same held-out shifted stars:

  a. the transformer pre-trained on the default mock, applied as is;
  b. the same architecture trained from scratch on N shifted stars;
  c. the pre-trained transformer fine-tuned on the same N shifted stars;
  d. the emulator fitter (trained on the default physics) fitting the held-out stars.

(b) and (c) hold out --val-fraction of the N stars for validation: the trainer keeps the
weights of the best validation epoch and stops early on it; every choice of recipe is made on
those validation stars (their scores are in the JSON as ``validation``), never on the test
stars.  The fine-tuning recipe (--finetune-args, lr 1e-4, batches of 16, early stopping on
the whole-spectrum validation total) rehearses default-physics stars (a fresh default mock,
--n-rehearse stars; --rehearse-fraction 0.75 of every batch) so the model does not forget.  Prints bias, 1.4826·MAD scatter and pull
width per label, writes bench/results/transfer.json.

    OMP_NUM_THREADS=1 python bench/transfer.py --pretrained assets/models/transformer-demo \\
        --n-train 200 --n-test 300 --threads 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.cli.main import main as cli  # noqa: E402
from core.fit.calibrate import robust_width  # noqa: E402
from core.store import SpectraStore  # noqa: E402
from core.train.data import split_rows  # noqa: E402

LABELS = ("TEFF", "LOGG", "FE_H")
#: the physics the pre-trained model knows (the mock's default) and its shifted version
BASE_PHYSICS, SHIFTED_PHYSICS = "apogee", "shifted-apogee"
#: the fine-tuning recipe of row (c), chosen on the validation stars (see the module doc)
FINETUNE_ARGS = "--lr 1e-4 --warmup-steps 10 --batch-size 16 --patience 30 --val-whole"
SCRATCH_ARGS = "--lr 1e-3 --warmup-steps 20 --batch-size 16 --patience 30 --val-draws 8"


def _run(argv: list[str]) -> None:
    print("$ stellarscope " + " ".join(argv), file=sys.stderr)
    rc = cli(argv)
    if rc != 0:
        raise SystemExit(f"stellarscope {argv[0]} failed with exit code {rc}")


def score(store_path: Path, prefix: str, labels=LABELS, cat=None) -> dict:
    """Bias, robust scatter and pull width of ``prefix``_LABEL against TRUE_LABEL (in ``cat``,
    default the store's catalog)."""
    if cat is None:
        cat = SpectraStore.open(store_path).catalog
    out = {}
    for name in labels:
        col, err = f"{prefix}_{name}", f"{prefix}_{name}_ERR"
        if col not in cat:
            out[name] = None
            continue
        d = cat[col].to_numpy(float) - cat[f"TRUE_{name}"].to_numpy(float)
        ok = np.isfinite(d)
        sig = cat[err].to_numpy(float) if err in cat else np.full_like(d, np.nan)
        out[name] = {"bias": float(np.median(d[ok])), "scatter": robust_width(d[ok]),
                     "pull_width": robust_width(d[ok] / sig[ok]), "n": int(ok.sum())}
    return out


def infer_transformer(test: Path, model: Path, labels, threads: int,
                      validation: tuple[Path, np.ndarray] | None = None) -> dict:
    """Run a transformer over the held-out store and score its TF_* columns; with
    ``validation`` = (training store, validation rows) also score those stars."""
    t0 = time.perf_counter()
    _run(["infer", "transformer", "--store", str(test), "--model", str(model),
          "--threads", str(threads), "--no-progress"])
    out = {"scores": score(test, "TF", labels),
           "infer_seconds": round(time.perf_counter() - t0, 1)}
    if validation is not None:
        out["validation"] = score_rows(*validation, model, labels)
    return out


def score_rows(store_path: Path, rows: np.ndarray, model: Path, labels) -> dict:
    """Predict a few rows in process (the runner's numbers) and score them."""
    from core.inference.predictor import SpectraBatch
    from core.inference.transformer import TransformerPredictor

    store = SpectraStore.open(store_path)
    pred = TransformerPredictor.load(model)
    cols = pred.predict_batch(SpectraBatch.from_store(store, store.read(np.asarray(rows)))).columns
    cat = store.catalog.iloc[np.asarray(rows)].reset_index(drop=True)
    for k, v in cols.items():
        cat[k] = np.asarray(v)
    return score(store_path, "TF", labels, cat)


def train(store: Path, out: Path, epochs: int, init_from: Path | None, args, labels,
          extra: str) -> dict:
    argv = ["train", "transformer", "--store", str(store), "--out", str(out), "--epochs",
            str(epochs), "--labels", ",".join(labels), "--seed", str(args.seed), "--threads",
            str(args.threads), "--val-fraction", str(args.val_fraction), "--no-progress",
            "--overwrite", *shlex.split(extra)]
    if init_from is not None:
        argv += ["--init-from", str(init_from)]
    t0 = time.perf_counter()
    _run(argv)
    config = json.loads((out / "config.json").read_text())
    return {"train_seconds": round(time.perf_counter() - t0, 1), "epochs": epochs,
            "args": extra, "best": config["training"]["best"],
            "n_train": config["training"]["n_train"], "n_val": config["training"]["n_val"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pretrained", type=Path, default=ROOT / "assets/models/transformer-demo")
    ap.add_argument("--emulator", type=Path, default=ROOT / "assets/models/emulator-demo")
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=300,
                    help="epochs of the from-scratch run (most stop early)")
    ap.add_argument("--finetune-epochs", type=int, default=120,
                    help="epochs of the fine-tuning schedule (it stops early on validation)")
    ap.add_argument("--finetune-args", default=FINETUNE_ARGS,
                    help=f"train options of row (c) (default: {FINETUNE_ARGS!r} and rehearsal)")
    ap.add_argument("--scratch-args", default=SCRATCH_ARGS,
                    help=f"train options of row (b) (default: {SCRATCH_ARGS!r})")
    ap.add_argument("--no-rehearse", action="store_true",
                    help="fine-tune without default-physics rehearsal stars")
    ap.add_argument("--n-rehearse", type=int, default=4000,
                    help="stars of the default-physics rehearsal mock")
    ap.add_argument("--rehearse-fraction", type=float, default=0.75,
                    help="part of every fine-tuning batch drawn from the rehearsal mock")
    ap.add_argument("--val-fraction", type=float, default=0.2,
                    help="part of the N training stars used for validation (early stopping)")
    ap.add_argument("--physics", default=SHIFTED_PHYSICS,
                    help=f"physics of the shifted stores ({SHIFTED_PHYSICS}: the shifted "
                    f"version of {BASE_PHYSICS}, the default mock the demo model knows)")
    ap.add_argument("--rows", default="a,b,c,d", help="rows to run (a,b,c,d)")
    ap.add_argument("--tag", default="", help="suffix of the (b)/(c) model directories")
    ap.add_argument("--fit-stars", type=int, default=None,
                    help="held-out stars the emulator fits (default: all of them)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="keep the stores and models here")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/transfer.json")
    args = ap.parse_args(argv)
    if not (args.pretrained / "config.json").exists():
        raise SystemExit(f"{args.pretrained}: no pre-trained transformer (train one on the "
                         "default mock first, or pass --pretrained DIR)")
    work = args.work or Path(tempfile.mkdtemp(prefix="transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    tag = "" if args.physics == SHIFTED_PHYSICS else f"-{args.physics}"
    train_store, test_store = work / f"shifted-train{tag}", work / f"shifted-test{tag}"
    rehearse_store = work / f"{BASE_PHYSICS}-rehearse"
    stores = [(train_store, args.physics, args.n_train, 1001 + args.seed),
              (test_store, args.physics, args.n_test, 2002 + args.seed)]
    if not args.no_rehearse:
        # a fresh default-physics mock (not the pre-training stars, but the same physics and
        # population): the pre-training store itself may be absent here
        stores.append((rehearse_store, BASE_PHYSICS, args.n_rehearse, 3003 + args.seed))
    for path, physics, n, seed in stores:
        if not (path / "manifest.json").exists():
            _run(["mock", "--physics", physics, "--population", "dr17", "--n-stars", str(n),
                  "--seed", str(seed), "--out", str(path), "--overwrite", "--json"])
    cat = SpectraStore.open(train_store).catalog
    val_rows = split_rows(cat, np.arange(len(cat)), args.val_fraction, 0).validation
    validation = (train_store, val_rows)

    # every row learns the pre-trained model's labels (fine-tuning keeps its heads)
    config = json.loads((args.pretrained / "config.json").read_text())
    labels = list(config["architecture"]["label_names"])
    todo = set(args.rows.split(","))
    rows = {}
    if "a" in todo:
        rows["a_pretrained_as_is"] = infer_transformer(test_store, args.pretrained, labels,
                                                       args.threads, validation)
    scratch, tuned = work / f"scratch{args.tag}", work / f"finetuned{args.tag}"
    if "b" in todo:
        fit_b = train(train_store, scratch, args.epochs, None, args, labels, args.scratch_args)
        rows["b_from_scratch"] = {**infer_transformer(test_store, scratch, labels, args.threads,
                                                      validation), **fit_b}
    if "c" in todo:
        extra = args.finetune_args
        if not args.no_rehearse:
            extra += (f" --rehearse-store {rehearse_store} --rehearse-fraction "
                      f"{args.rehearse_fraction}")
        fit_c = train(train_store, tuned, args.finetune_epochs, args.pretrained, args, labels,
                      extra)
        rows["c_pretrained_finetuned"] = {**infer_transformer(test_store, tuned, labels,
                                                              args.threads, validation), **fit_c}
    if "d" in todo:
        t0 = time.perf_counter()
        n_fit = args.fit_stars or args.n_test
        _run(["fit", "--all", "--store", str(test_store), "--model", str(args.emulator),
              "--limit", str(n_fit)])
        rows["d_emulator_fit"] = {"scores": score(test_store, "FIT", labels),
                                  "fit_seconds": round(time.perf_counter() - t0, 1)}

    beats = None
    if {"a", "b", "c"} <= todo:
        c = rows["c_pretrained_finetuned"]["scores"]
        beats = {name: all(c[name]["scatter"] < rows[r]["scores"][name]["scatter"]
                           for r in ("a_pretrained_as_is", "b_from_scratch"))
                 for name in labels}
    record = {"what": "transfer of the spectral transformer to shifted mock physics",
              "physics": args.physics, "pretrained": str(args.pretrained),
              "emulator": str(args.emulator), "n_train": args.n_train, "n_test": args.n_test,
              "val_fraction": args.val_fraction, "n_rehearse": 0 if args.no_rehearse
              else args.n_rehearse, "labels": labels,
              "scores": "bias, 1.4826·MAD scatter, pull width of (prediction − TRUE_*) on the "
              "held-out test stars; 'validation': the same on the validation part of the "
              "training stars (used for every choice)",
              "rows": rows, "c_beats_a_and_b_in_scatter": beats}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for chunk in (labels[:4], labels[4:]):
        print(f"\n{'row':<26}" + "".join(f"{n:>28}" for n in chunk))
        for name, row in rows.items():
            cells = "".join(
                f"  {s['bias']:>8.3g} {s['scatter']:>8.3g} {s['pull_width']:>8.3g}"
                if (s := row["scores"][n]) else f"{'—':>28}" for n in chunk)
            print(f"{name:<26}{cells}")
    if beats is not None:
        print("(bias, scatter, pull width) — (c) beats (a) and (b) in scatter: "
              + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in beats.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
