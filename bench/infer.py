"""Inference speed through the shared runner, for every model family: spectra/s end to end.

    .venv/bin/python bench/infer.py --label after              # CPU, small sizes
    .venv/bin/python bench/infer.py --label after --device cuda --n-vae 200000 --n-fit 20000

Builds a synthetic store (``core.train.synthetic``), a small untrained VAE with real
scalings and a small emulator on the same labels, then times, ``--repeats`` times each:

* ``vae_infer_store``: the VAE's whole-store inference as ``stellarscope infer vae`` runs it
  (``core.inference.vae.infer_store``; columns not written);
* ``vae_runner`` / ``emulator_runner``: the generic runner (``core.inference.runner``) with
  each family's predictor (only when the runner exists: the "before" run predates it);
* ``emulator_fit_store``: the batched fit as ``stellarscope fit --all`` runs it.

Medians go to bench/results/infer.json under ``--label`` and the device, so "before" and
"after" figures sit side by side.  On a shared machine, alternate runs of the old tree
(``git archive``) and this one with ``--accumulate`` so both see the same load.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import models  # noqa: E402
from core.models.emulator import Emulator, EmulatorConfig  # noqa: E402
from core.models.vae import SpectrumVAE, VAEConfig  # noqa: E402
from core.store import SpectraStore  # noqa: E402
from core.train.synthetic import synthetic_store  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "infer.json"
HAS_RUNNER = importlib.util.find_spec("core.inference.runner") is not None


def build(tmp: Path, n: int) -> tuple[SpectraStore, Path, Path]:
    """The store, a VAE directory and an emulator directory."""
    store = synthetic_store(tmp / "store", n=n, seed=3)
    torch.manual_seed(0)
    vae = SpectrumVAE(VAEConfig())
    labels = store.catalog[["TEFF", "LOGG", "FE_H"]].to_numpy(np.float32)
    b = store.read(np.arange(min(n, 500)))
    vae.set_scaling(np.nanmean(b.flux, 0).astype(np.float32),
                    np.maximum(np.nanstd(b.flux, 0), 1e-3).astype(np.float32),
                    labels.mean(0), labels.std(0))
    vae_dir = models.save(vae, tmp / "vae", {"grid": "apogee7514", "bad_bits": "astronn"})
    cfg = EmulatorConfig(label_names=["TEFF", "LOGG", "FE_H"], x_min=[3900, 0.0, -2.1],
                         x_max=[5600, 4.1, 0.6], hidden=(64, 64), preset="small")
    emu = Emulator(cfg)
    with torch.no_grad():  # a spectrum-like output so the fit behaves as on real data
        emu.layers[-1].weight.mul_(0.1)
        emu.layers[-1].bias.fill_(0.9)
    emu.start_bank = torch.tensor(labels[:64], dtype=torch.float32)
    emu_dir = models.save(emu, tmp / "emulator")
    return store, vae_dir, emu_dir


def timed(fn, n: int, repeats: int) -> dict:
    fn()  # warm-up: first-call set-up (kernels, caches) is not the steady rate
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t0))
    return {"spectra": n, "repeats": repeats, "spectra_per_s": [round(r, 1) for r in rates],
            "median_spectra_per_s": round(statistics.median(rates), 1)}


def run(args) -> dict:
    device = torch.device(args.device if args.device != "auto"
                          else ("cuda" if torch.cuda.is_available() else "cpu"))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store, vae_dir, emu_dir = build(Path(tmp), args.n_vae)
        fit_rows = np.arange(min(args.n_fit, len(store)))

        from core.inference.vae import infer_store

        out["vae_infer_store"] = timed(
            lambda: infer_store(store, vae_dir, batch_size=args.batch_size, device=str(device),
                                progress=False, write=False), len(store), args.repeats)

        from core.fit.store import fit_store_table
        from core.models.emulator import load_emulator

        emu = load_emulator(emu_dir, device)
        out["emulator_fit_store"] = timed(
            lambda: fit_store_table(store, emu, rows=fit_rows, progress=False),
            len(fit_rows), args.repeats)

        if HAS_RUNNER:
            from core.inference.emulator import EmulatorPredictor
            from core.inference.runner import run_store
            from core.inference.vae import VAEPredictor

            vae = VAEPredictor.load(vae_dir, device)
            out["vae_runner"] = timed(
                lambda: run_store(vae, store, batch_size=args.batch_size, progress=False,
                                  write=False), len(store), args.repeats)
            fit = EmulatorPredictor.load(emu_dir, device)
            out["emulator_runner"] = timed(
                lambda: run_store(fit, store, rows=fit_rows, progress=False, write=False),
                len(fit_rows), args.repeats)
    return {"device": str(device), "threads": torch.get_num_threads(),
            "n_vae": args.n_vae, "n_fit": int(len(fit_rows)), "batch_size": args.batch_size,
            "measured": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
            "torch": torch.__version__, **out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--label", default="after", help="key of this run (before / after)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--n-vae", type=int, default=4096, help="spectra in the store (VAE timing)")
    p.add_argument("--n-fit", type=int, default=128, help="stars fitted (emulator timing)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--accumulate", action="store_true",
                   help="pool the rates with earlier runs of the same label (e.g. alternating "
                   "runs of the old and the new code on a busy machine)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.exists() else {}
    kind = result["device"].split(":")[0]
    if args.accumulate:  # runs of one label pool their rates (interleaved before/after runs)
        old = data.get(args.label, {}).get(kind, {})
        for key, fig in result.items():
            if isinstance(fig, dict) and isinstance(old.get(key), dict):
                fig["spectra_per_s"] = old[key]["spectra_per_s"] + fig["spectra_per_s"]
                fig["repeats"] = len(fig["spectra_per_s"])
                fig["median_spectra_per_s"] = round(statistics.median(fig["spectra_per_s"]), 1)
    data.setdefault(args.label, {})[kind] = result
    for key, fig in result.items():
        if isinstance(fig, dict):
            print(f"{key:20s} {fig['median_spectra_per_s']:>10.1f} spectra/s "
                  f"(median of {fig['repeats']})")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
