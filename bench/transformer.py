"""Spectral transformer speed: training and inference spectra/s, attention extraction ms/star.

    .venv/bin/python bench/transformer.py                    # CPU, compact preset
    .venv/bin/python bench/transformer.py --device cuda --preset spectrafm --n 2000

On a synthetic store (``core.train.synthetic``, 7514-pixel grid):

* training: ``--epochs`` epochs of the shared trainer; the median of training_log.csv's
  per-epoch ``train_spectra_per_s`` (optimiser steps only, first epoch excluded when there
  are more: it pays for start-up);
* inference: the whole store through ``core.inference.runner.run_store`` without writing
  (every good pixel, in context-sized patches), median spectra/s over ``--repeats``;
* attention: ``core.inference.attention.star_attention`` (every label, decoder layer and head
  and the rollout, over all the spectrum's patches), median ms per star over ``--stars``
  stars (one warm-up call excluded), with torch's default threads and with one thread;
* whole-store inference of a trained model (default: the shipped demo) over a mock survey
  (``--infer-n`` stars, or ``--infer-store``) with ``--threads`` 1 and 2: the runner's
  spectra/s, median over ``--repeats``, beside the previous path (every star's patches
  through the model's standard forward, 256 patches per pass on torch's own threads) on
  ``--reference-n`` stars, and the load average; ``--whole-store-only`` runs just this part
  (result key ``cpu/whole-store``);
* the Attention view's star switch (server side): ``Session.select_star`` until the view has
  recomputed and redrawn, median ms (``AttentionView.last_redraw_ms``); a label switch too;
* with ``--eval-model DIR --eval-store DIR``: ``stellarscope evaluate transformer``'s label
  accuracy and alignment scores (``--eval-stars`` / ``--eval-attention-stars``).

Prints the figures and writes them to bench/results/transformer.json under the device name.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "transformer.json"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=400, help="spectra in the synthetic store")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--preset", default="compact")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stars", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-model", default=None, help="a trained transformer to evaluate")
    p.add_argument("--eval-store", default=None, help="the store to evaluate it on")
    p.add_argument("--eval-stars", type=int, default=1000)
    p.add_argument("--eval-attention-stars", type=int, default=100)
    p.add_argument("--whole-store-only", action="store_true",
                   help="only the whole-store inference figures")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="torch thread counts of the whole-store inference")
    p.add_argument("--infer-model", default=None, help="default: the shipped demo transformer")
    p.add_argument("--infer-store", default=None, help="default: a fresh mock survey")
    p.add_argument("--infer-n", type=int, default=400, help="stars of that mock survey")
    p.add_argument("--reference-n", type=int, default=48,
                   help="stars run through the previous path (0: skip it)")
    args = p.parse_args(argv)
    if args.whole_store_only:
        return _save("cpu/whole-store", _whole_store(args))

    import numpy as np
    import pandas as pd
    import torch

    from core.inference.predictor import SpectraBatch
    from core.inference.runner import run_store
    from core.inference.transformer import TransformerPredictor
    from core.train import trainer as T
    from core.train.synthetic import synthetic_store
    from core.train.transformer import TransformerTask, TransformerTrainSettings

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "store", n=args.n, seed=0)
        run = Path(tmp) / "run"
        settings = TransformerTrainSettings(store=str(store.path), out=str(run),
                                            epochs=args.epochs, batch_size=args.batch_size,
                                            preset=args.preset, progress=False,
                                            device=args.device, checkpoint_every=1000)
        t0 = time.perf_counter()
        T.train(TransformerTask(settings))
        train_wall = time.perf_counter() - t0
        log = pd.read_csv(run / T.LOG_FILE)
        rates = log["train_spectra_per_s"].tolist()
        train_rate = statistics.median(rates[1:] if len(rates) > 1 else rates)

        pred = TransformerPredictor.load(run, device)
        infer_rates = []
        for _ in range(args.repeats):
            figures = run_store(pred, store.path, write=False, progress=False)
            infer_rates.append(figures["spectra_per_s"])

        from core.inference.attention import star_attention

        rows = np.arange(min(args.stars + 1, len(store)))
        times = {}
        for threads in (torch.get_num_threads(), 1):
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            t_star = []
            for r in rows:
                batch = SpectraBatch.from_store(store, store.read(np.array([r])))
                t = time.perf_counter()
                star_attention(pred, batch)
                t_star.append(1000 * (time.perf_counter() - t))
            torch.set_num_threads(before)
            times[threads] = statistics.median(t_star[1:] or t_star)
        view = _view_figures(pred, store, rows)
        ctx = pred.model.config.context
        n_params = sum(q.numel() for q in pred.model.parameters())

    result = {
        "when": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "machine": platform.machine(), "threads": torch.get_num_threads(),
        "preset": args.preset, "context": ctx, "parameters": n_params,
        "n_spectra": args.n, "epochs": args.epochs, "batch_size": args.batch_size,
        "train_spectra_per_s_median": round(train_rate, 1),
        "train_wall_s": round(train_wall, 1),
        "infer_spectra_per_s_median": round(statistics.median(infer_rates), 2),
        "infer_spectra_per_s": [round(v, 2) for v in infer_rates],
        "attention_ms_per_star_median": round(times[torch.get_num_threads()], 1),
        "attention_ms_per_star_median_1_thread": round(times[1], 1),
        **view,
    }
    if args.eval_model and args.eval_store:
        result["evaluate"] = _evaluate(args)
    _save(f"{device.type}/{args.preset}", result)
    if device.type == "cpu":
        _save("cpu/whole-store", _whole_store(args))
    return result


def _save(key: str, result: dict) -> dict:
    from core.store.atomic import write_json_atomic

    print(json.dumps(result, indent=1))
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    old[key] = result
    write_json_atomic(RESULTS, old)
    return result


def _whole_store(args) -> dict:
    """Whole-store inference spectra/s of a trained model per thread count (medians), and
    of the previous path on a few stars, with the load average around each measurement."""
    import os

    import torch

    from core.inference.runner import run_store
    from core.inference.transformer import TransformerPredictor
    from core.models.families import get_family
    from core.paths import SHIPPED_MODELS
    from core.store import SpectraStore

    model_dir = args.infer_model or str(SHIPPED_MODELS / get_family("transformer").demo)
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        if args.infer_store:
            store = SpectraStore.open(args.infer_store)
        else:
            from core.mock import generate_mock_survey

            generate_mock_survey(Path(tmp) / "mock", n_stars=args.infer_n, seed=5,
                                 progress=False)
            store = SpectraStore.open(Path(tmp) / "mock")
        pred = TransformerPredictor.load(model_dir)
        run_store(pred, store, rows=np.arange(min(16, len(store))), write=False,
                  progress=False)                                 # warm-up
        per_threads = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            load = [os.getloadavg()[0]]
            rates, cpu_rates = [], []
            for _ in range(args.repeats):
                cpu = time.process_time()
                rates.append(run_store(pred, store, write=False, progress=False)["spectra_per_s"])
                cpu_rates.append(round(len(store) / (time.process_time() - cpu), 1))
            load.append(os.getloadavg()[0])
            # spectra per CPU-second (all threads): what the CPU time allows when the
            # threads are not starved by other work (threads × this bounds an idle machine)
            entry = {"spectra_per_s_median": round(statistics.median(rates), 1),
                     "spectra_per_s": rates,
                     "spectra_per_cpu_s_median": statistics.median(cpu_rates),
                     "spectra_per_cpu_s": cpu_rates, "load_1min": load}
            if args.reference_n:
                ref = [_reference_rate(pred, store, args.reference_n)
                       for _ in range(args.repeats)]
                load.append(os.getloadavg()[0])
                entry["previous_path_spectra_per_s_median"] = round(
                    statistics.median(r[0] for r in ref), 2)
                entry["previous_path_spectra_per_s"] = [round(r[0], 2) for r in ref]
                entry["previous_path_spectra_per_cpu_s_median"] = round(
                    statistics.median(r[1] for r in ref), 1)
            per_threads[str(threads)] = entry
            print(f"whole-store inference, {threads} thread(s): {entry}", file=sys.stderr)
        torch.set_num_threads(before)
        n = len(store)
    return {"when": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "model": _shown(model_dir),
            "store": args.infer_store or f"mock survey, {n} stars, seed 5", "n_spectra": n,
            "repeats": args.repeats, "reference_n": args.reference_n, "threads": per_threads}


def _shown(path) -> str:
    """A path inside the repository relative to it (results stay comparable across clones)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _reference_rate(pred, store, n: int) -> tuple[float, float]:
    """spectra/s and spectra per CPU-second of the previous whole-store path: every star's
    patches through the model's standard forward, 256 patches per pass, torch's own
    threads, the wavelength encoding evaluated for every token."""
    import torch

    from core.inference.predictor import SpectraBatch
    from core.inference.transformer import patch_arrays

    rows = np.arange(min(n, len(store)))
    t, cpu = time.perf_counter(), time.process_time()
    for k in range(0, len(rows), 64):
        batch = SpectraBatch.from_store(store, store.read(rows[k:k + 64]))
        good = pred._good(batch)
        f, e, w, mask, owner, _ = patch_arrays(batch.flux, batch.error, pred.grid.wavelength,
                                               good, pred.model.config.context)
        means, logvars = [], []
        with torch.inference_mode():
            for j in range(0, len(f), 256):
                mean, logvar = pred.model(*(torch.from_numpy(a[j:j + 256])
                                            for a in (f, e, w, mask)))
                means.append(mean)
                logvars.append(logvar)
        pred._combine(torch.cat(means).numpy(), torch.cat(logvars).numpy(), owner, len(batch))
    return len(rows) / (time.perf_counter() - t), len(rows) / (time.process_time() - cpu)


def _view_figures(pred, store, rows) -> dict:
    """Server-side ms of the Attention view: a star switch (maps computed and drawn) and a
    label switch (drawn from the maps already computed), medians."""
    import numpy as np

    from core.store import SpectraStore
    from dashboard.state import AppContext, Session
    from dashboard.views import attention as V

    # the catalog mean (200 stars, once per model and store) would run in the background and
    # slow what is measured here: the view is measured without it
    V.catalog_mean = lambda *a, **k: None
    ctx = AppContext(store=SpectraStore.open(store.path), models={"transformer": pred})
    session = Session(context=ctx)
    view = V.AttentionView(focus=session.focus, context=ctx)
    view.active = True
    star_ms, label_ms = [], []
    names = list(pred.label_names)
    for k, r in enumerate(rows):
        t = time.perf_counter()
        session.select_star(int(r))
        star_ms.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        view.label = names[(k + 1) % len(names)]
        label_ms.append(1000 * (time.perf_counter() - t))
    assert np.isfinite(view.last_redraw_ms)
    return {"view_star_switch_ms_median": round(statistics.median(star_ms[1:] or star_ms), 1),
            "view_label_switch_ms_median": round(statistics.median(label_ms[1:] or label_ms), 1)}


def _evaluate(args) -> dict:
    from core.evaluate.transformer import evaluate
    from core.inference.transformer import TransformerPredictor
    from core.store import SpectraStore

    pred = TransformerPredictor.load(args.eval_model)
    t = time.perf_counter()
    out = evaluate(pred, SpectraStore.open(args.eval_store), args.eval_stars,
                   args.eval_attention_stars)
    out["seconds"] = round(time.perf_counter() - t, 1)
    return out


if __name__ == "__main__":
    main()
