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

Every configuration runs in a fresh subprocess (the store and models are built by another
one first), so its peak RSS (``VmHWM`` at its end: imports, model, store reads, warm-up and
repeats) is its own and not inherited from another measurement.  ``--tree DIR`` measures the
code of another checkout with this script (e.g. ``git worktree add /tmp/old COMMIT``; the
runner configurations are skipped where that tree has no runner).

Medians (spectra/s and peak RSS in MB) go to bench/results/infer.json under ``--label`` and
the device, so "before" and "after" figures sit side by side.  On a shared machine, alternate
runs of the old tree and this one with ``--accumulate`` so both see the same load.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mb  # bench/ is the script directory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "infer.json"
CONFIGS = ("vae_infer_store", "emulator_fit_store", "vae_runner", "emulator_runner")


def build(tmp: Path, n: int):
    """The store, a VAE directory and an emulator directory."""
    import numpy as np
    import torch

    from core import models
    from core.models.emulator import Emulator, EmulatorConfig
    from core.models.vae import SpectrumVAE, VAEConfig
    from core.train.synthetic import synthetic_store

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


def measure(args) -> dict:
    """One configuration (``args.child``) in this process: rates and this process's peak RSS."""
    import numpy as np
    import torch

    from core.store import SpectraStore

    device = torch.device(args.device)
    work = Path(args.work)
    store = SpectraStore.open(work / "store")
    vae_dir, emu_dir = work / "vae", work / "emulator"
    fit_rows = np.arange(min(args.n_fit, len(store)))
    if args.child == "vae_infer_store":
        from core.inference.vae import infer_store

        fig = timed(lambda: infer_store(store, vae_dir, batch_size=args.batch_size,
                                        device=str(device), progress=False, write=False),
                    len(store), args.repeats)
    elif args.child == "emulator_fit_store":
        from core.fit.store import fit_store_table
        from core.models.emulator import load_emulator

        emu = load_emulator(emu_dir, device)
        fig = timed(lambda: fit_store_table(store, emu, rows=fit_rows, progress=False),
                    len(fit_rows), args.repeats)
    elif args.child == "vae_runner":
        from core.inference.runner import run_store
        from core.inference.vae import VAEPredictor

        vae = VAEPredictor.load(vae_dir, device)
        fig = timed(lambda: run_store(vae, store, batch_size=args.batch_size, progress=False,
                                      write=False), len(store), args.repeats)
    else:
        from core.inference.emulator import EmulatorPredictor
        from core.inference.runner import run_store

        fit = EmulatorPredictor.load(emu_dir, device)
        fig = timed(lambda: run_store(fit, store, rows=fit_rows, progress=False, write=False),
                    len(fit_rows), args.repeats)
    return {**fig, "peak_rss_mb": [peak_rss_mb()], "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def child(args) -> None:
    """Run in a fresh interpreter on ``--tree``'s code; prints one JSON line."""
    sys.path.insert(0, str(Path(args.tree).resolve()))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import core

    if not Path(core.__file__).resolve().is_relative_to(Path(args.tree).resolve()):
        raise SystemExit(f"core imported from {core.__file__}, not from {args.tree}")
    if args.child == "build":
        build(Path(args.work), args.n_vae)
        has_runner = importlib.util.find_spec("core.inference.runner") is not None
        out = {"configs": [c for c in CONFIGS if has_runner or "runner" not in c]}
    else:
        out = measure(args)
    print("RESULT " + json.dumps(out), flush=True)


def _spawn(args, what: str, work: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", what, "--tree", args.tree,
           "--work", str(work), "--device", args.device, "--n-vae", str(args.n_vae),
           "--n-fit", str(args.n_fit), "--batch-size", str(args.batch_size),
           "--repeats", str(args.repeats)] + (["--threads", str(args.threads)] if args.threads
                                              else [])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only --tree's code
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{what} failed on {args.tree}:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def run(args) -> dict:
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = _spawn(args, "build", Path(tmp))["configs"]
        for name in configs:
            fig = _spawn(args, name, Path(tmp))
            threads, version = fig.pop("threads"), fig.pop("torch")
            fig["median_peak_rss_mb"] = fig["peak_rss_mb"][0]
            out[name] = fig
            print(f"  {name:20s} {fig['median_spectra_per_s']:>10.1f} spectra/s, peak RSS "
                  f"{fig['median_peak_rss_mb']:.0f} MB", flush=True)
    return {"device": args.device, "threads": threads, "tree": str(Path(args.tree).resolve()),
            "n_vae": args.n_vae, "n_fit": min(args.n_fit, args.n_vae),
            "batch_size": args.batch_size,
            "measured": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
            "torch": version, **out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--label", default="after", help="key of this run (before / after)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--n-vae", type=int, default=4096, help="spectra in the store (VAE timing)")
    p.add_argument("--n-fit", type=int, default=128, help="stars fitted (emulator timing)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tree", default=str(ROOT), help="the checkout whose code is measured")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--accumulate", action="store_true",
                   help="pool the rates with earlier runs of the same label (e.g. alternating "
                   "runs of the old and the new code on a busy machine)")
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
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
                fig["peak_rss_mb"] = old[key].get("peak_rss_mb", []) + fig["peak_rss_mb"]
                fig["median_peak_rss_mb"] = round(statistics.median(fig["peak_rss_mb"]), 1)
    data.setdefault(args.label, {})[kind] = result
    for key, fig in result.items():
        if isinstance(fig, dict):
            print(f"{key:20s} {fig['median_spectra_per_s']:>10.1f} spectra/s "
                  f"(median of {fig['repeats']}), peak RSS {fig['median_peak_rss_mb']:.0f} MB "
                  f"(median of {len(fig['peak_rss_mb'])} processes)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
