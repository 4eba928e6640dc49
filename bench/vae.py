"""Speed of the spectrum VAE: training and inference spectra/s on CPU, and on CUDA when present.

    .venv/bin/python bench/vae.py                    # CPU (+ CUDA if available), small sizes
    .venv/bin/python bench/vae.py --device cuda      # the issue's H100 targets:
                                                     # 128,000-spectrum epoch, 733,901 inferred

Training runs the real training step (model, three-term loss, amsgrad Adam, clipping, bf16
autocast on CUDA) over spectra held on the device; inference runs encode + decode + χ² per
batch.  Both draw batches from a pool of synthetic low-rank spectra (values do not change the
speed of a dense network).  ``--store`` also times ``infer_store`` end to end (disk included).
Results are merged into bench/results/vae.json under the device's key, so a CPU run keeps
the figures of an earlier GPU run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.inference.vae import infer_store, run_batch  # noqa: E402
from core.models.vae import SpectrumVAE, VAEConfig, n_parameters  # noqa: E402
from core.train import data as D  # noqa: E402
from core.train.loop import make_optimizer, make_scheduler, train_epoch  # noqa: E402
from core.train.losses import LOG_TERMS, pixel_weights, vae_loss  # noqa: E402
from core.train.synthetic import synthetic_arrays  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "vae.json"

#: Sizes per device kind: (training spectra per timed epoch, inferred spectra, train batch,
#: inference batch, pool of distinct spectra).
SIZES = {
    "cpu": (4096, 8192, 256, 1024, 1024),
    "cuda": (128_000, 733_901, 1024, 8192, 8192),
}


def _pool(n: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    a = synthetic_arrays(n, seed=seed)
    labels, errs = D.label_arrays(a["catalog"])
    good = D.good_pixels(a["flux"], a["error"], a["pixmask"])
    arrays = {"flux": np.where(good, a["flux"], 0).astype(np.float32),
              "weight": pixel_weights(a["error"], good), "labels": labels, "label_err": errs}
    return {k: torch.as_tensor(v).to(device) for k, v in arrays.items()}


def _model(args, pool, device) -> SpectrumVAE:
    torch.manual_seed(0)
    kw = {"encoder_widths": tuple(args.widths)} if args.widths else {}
    model = SpectrumVAE(VAEConfig.preset(args.preset, **kw))
    flux = pool["flux"].float()
    model.set_scaling(flux.mean(0).cpu(), flux.std(0).clamp_min(1e-3).cpu(),
                      pool["labels"].mean(0).cpu(), pool["labels"].std(0).cpu())
    return model.to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(pool, n_spectra: int, batch: int, seed: int):
    g = torch.Generator(device="cpu").manual_seed(seed)
    size = pool["flux"].shape[0]
    device = pool["flux"].device
    for _ in range(n_spectra // batch):
        idx = torch.randint(0, size, (batch,), generator=g).to(device)
        yield {k: v.index_select(0, idx) for k, v in pool.items()}


def bench_training(model, pool, device, n_spectra, batch, amp) -> dict:
    def loss_fn(m, b):
        out = m(b["flux"], b["weight"] > 0, b["labels"], b["label_err"], sample=True)
        return vae_loss(out, b["flux"], b["weight"], 1.0, 1.0), b["flux"].shape[0]

    steps = max(1, n_spectra // batch)
    opt = make_optimizer(model.parameters(), 1e-3)
    sched = make_scheduler(opt, schedule="cosine", total_steps=steps + 3, warmup_steps=0,
                           steps_per_epoch=steps, min_factor=0.05, decay=0.95)
    kw = {"names": LOG_TERMS, "device": device, "clip": 1.0, "amp": amp}
    train_epoch(model, _batches(pool, 3 * batch, batch, 1), loss_fn, opt, sched, **kw)  # warm-up
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    terms = train_epoch(model, _batches(pool, steps * batch, batch, 2), loss_fn, opt, sched, **kw)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"spectra": steps * batch, "batch_size": batch, "seconds": round(seconds, 3),
            "spectra_per_s": round(steps * batch / seconds, 1),
            "final_chi2_nu": round(terms["chi2_nu"], 3)}


@torch.no_grad()
def bench_inference(model, pool, device, n_spectra, batch, amp) -> dict:
    model.eval()
    size = pool["flux"].shape[0]
    sl = slice(0, min(batch, size))
    run_batch(model, pool["flux"][sl], pool["weight"][sl], pool["labels"][sl], device, amp)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    done = 0
    t0 = time.perf_counter()
    while done < n_spectra:
        b = min(batch, n_spectra - done, size)
        start = done % (size - b + 1)
        run_batch(model, pool["flux"][start:start + b], pool["weight"][start:start + b],
                  pool["labels"][start:start + b], device, amp)
        done += b
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"spectra": n_spectra, "batch_size": batch, "seconds": round(seconds, 3),
            "spectra_per_s": round(n_spectra / seconds, 1)}


def bench_store(store_path, model, device, batch) -> dict:
    """infer_store end to end (reading the store from disk included), columns not written."""
    from core import models

    with tempfile.TemporaryDirectory() as tmp:
        models.save(model.cpu(), Path(tmp) / "m")
        model.to(device)
        fig = infer_store(store_path, Path(tmp) / "m", batch_size=batch, device=str(device),
                          progress=False, write=False)
    return {k: fig[k] for k in ("store", "n_spectra", "seconds", "spectra_per_s", "batch_size")}


def peak_memory(device) -> dict:
    out = {"host_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def run_device(args, kind: str) -> dict:
    device = torch.device(kind)
    n_train, n_infer, b_train, b_infer, n_pool = SIZES[kind]
    n_train = args.n_train or n_train
    n_infer = args.n_infer or n_infer
    b_train = args.batch_size or b_train
    b_infer = args.infer_batch_size or b_infer
    amp = kind == "cuda" and not args.no_amp
    pool = _pool(args.pool or n_pool, device)
    model = _model(args, pool, device)
    result = {
        "device_name": torch.cuda.get_device_name(device) if kind == "cuda"
        else (platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(), "training_bf16_autocast": amp,
        "model": {"preset": args.preset, "encoder_widths": list(model.config.encoder_widths),
                  "decoder_widths": list(model.config.decoder_shape),
                  "n_latent": model.config.n_latent, "parameters": n_parameters(model)},
        "training": bench_training(model, pool, device, n_train, b_train, amp),
    }
    train_peak = peak_memory(device)
    # float32 is what `infer vae` runs by default; bf16 autocast is its --amp option
    result["inference"] = bench_inference(model, pool, device, n_infer, b_infer, False)
    result["peak_memory"] = {"training": train_peak, "inference": peak_memory(device)}
    if amp:
        result["inference_bf16"] = bench_inference(model, pool, device, n_infer, b_infer, True)
    if args.store:
        result["store_inference"] = bench_store(args.store, model, device, b_infer)
    result["measured"] = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    result["torch"] = torch.__version__
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU, and CUDA too when available")
    p.add_argument("--preset", default="compact")
    p.add_argument("--widths", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="encoder widths (default: the preset's)")
    p.add_argument("--n-train", type=int, default=None, help="spectra in the timed epoch")
    p.add_argument("--n-infer", type=int, default=None, help="spectra inferred")
    p.add_argument("--batch-size", type=int, default=None, help="training batch")
    p.add_argument("--infer-batch-size", type=int, default=None)
    p.add_argument("--pool", type=int, default=None, help="distinct synthetic spectra on device")
    p.add_argument("--store", default=None, help="also time infer_store over this store")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
             "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    if "cuda" in kinds and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["benchmark"] = "spectrum VAE (bench/vae.py)"
    results["targets"] = {"cuda_inference_733901_spectra_s": 15.0,
                          "cuda_training_epoch_128000_spectra_s": 3.0}
    for kind in kinds:
        results[kind] = run_device(args, kind)
        r = results[kind]
        print(f"[{kind}] {r['device_name']}: training {r['training']['spectra_per_s']} spectra/s "
              f"(batch {r['training']['batch_size']}), inference "
              f"{r['inference']['spectra_per_s']} spectra/s (batch "
              f"{r['inference']['batch_size']}); model {r['model']['parameters']:,} parameters")
        if kind == "cuda":
            t_inf = 733_901 / r["inference"]["spectra_per_s"]
            t_ep = 128_000 / r["training"]["spectra_per_s"]
            print(f"[cuda] 733,901 spectra inferred in {t_inf:.1f} s (target 15 s); "
                  f"128,000-spectrum epoch in {t_ep:.2f} s (target 3 s)")
            r["projected"] = {"inference_733901_s": round(t_inf, 2),
                              "training_epoch_128000_s": round(t_ep, 2)}
        if "store_inference" in r:
            print(f"[{kind}] infer_store end to end: {r['store_inference']['spectra_per_s']} "
                  "spectra/s")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
