"""Fitting speed and label recovery: Stellarscope's fitter vs a The Payne-style curve_fit.

Test stars are fresh mock-survey spectra (labels drawn with a seed the training store did not
use, kept inside the emulator's training range, noise at a fixed S/N), once in the rest
frame and once Doppler-shifted by up to ±60 km/s.  Both fitters use the same emulator:

* ours: :func:`core.fit.fit_batch` (cross-correlation RV, multi-start, bounded LM with exact
  Jacobians, torch), timed one star at a time (as ``stellarscope fit``) and in batches;
  single-star fits of both methods are interleaved star by star, so a shared machine's
  changing load hits both alike;
* baseline: ``scipy.optimize.curve_fit(method="trf")`` with the numerical 2-point Jacobian
  and a numpy forward pass (einsum + leaky ReLU), start at the label-box centre, RV bounded to
  ±5 km/s, ftol = xtol = 5e-4, absolute σ with masked pixels at σ = 999 — how The Payne fits.

Prints a summary and writes JSON (default bench/results/fit.json).  Run:
``python bench/fit.py [--model DIR] [--n-stars 40] [--snr 100]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core for both fitters: a fair, quiet comparison

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.fit import FitOptions, fit_batch, load_model  # noqa: E402
from core.fit.calibrate import robust_width  # noqa: E402
from core.fit.forward import ForwardModel  # noqa: E402
from core.grid import C_KMS, bad_pixels  # noqa: E402
from core.store.atomic import write_json_atomic  # noqa: E402

KEY_LABELS = {"TEFF": 50.0, "LOGG": 0.1, "FE_H": 0.05}  # the recovery thresholds
CATALOG_ROWS = 733_901  # DR17 allStar


# -- test spectra ------------------------------------------------------------------------------


def test_stars(emulator, n: int, snr: float, seed: int):
    """Fresh mock stars inside the emulator's label box: (labels (n, L), flux, error, good)."""
    from core.mock import draw_labels, synthesize

    lo, hi = emulator.bounds
    names = emulator.label_names
    pool = draw_labels(max(20 * n, 2000), seed)
    true = pool[[f"TRUE_{k}" for k in names]].to_numpy()
    inside = np.all((true >= lo) & (true <= hi), axis=1)
    pick = pool[inside].iloc[:n].copy()
    if len(pick) < n:
        raise SystemExit(f"only {len(pick)} drawn stars fall inside the emulator's label range")
    pick["SNR"] = snr
    flux, error, pixmask = synthesize(pick, seed=seed)
    good = ~bad_pixels(pixmask) & np.isfinite(flux) & (error > 0)
    return pick[[f"TRUE_{k}" for k in names]].to_numpy(), flux, error, good


def doppler_shift(emulator, flux, error, good, rv):
    """Observed-frame copies of rest-frame spectra (linear interpolation, like the model)."""
    fwd = ForwardModel(emulator)
    grid = emulator.grid
    out_f, out_e, out_g = flux.copy(), error.copy(), good.copy()
    lam = grid.wavelength
    for i, v in enumerate(rv):
        rest = lam * np.sqrt((1 - v / C_KMS) / (1 + v / C_KMS))
        for sl in grid.chip_slices():
            out_f[i, sl] = np.interp(rest[sl], lam[sl], flux[i, sl])
            out_e[i, sl] = np.interp(rest[sl], lam[sl], error[i, sl])
            # a pixel is usable when both source pixels around it are
            g = good[i, sl].astype(float)
            out_g[i, sl] = np.interp(rest[sl], lam[sl], g) > 0.999
        inside = fwd.inside(torch.tensor([float(v)]))[0].numpy()
        out_g[i] &= inside
    return out_f, out_e, out_g


# -- The Payne-style baseline ------------------------------------------------------------------


class PayneBaseline:
    """curve_fit('trf') with a numerical Jacobian and a numpy forward pass of the same network."""

    def __init__(self, emulator):
        self.w = [layer.weight.detach().cpu().numpy().astype(np.float64) for layer in emulator.layers]
        self.b = [layer.bias.detach().cpu().numpy().astype(np.float64) for layer in emulator.layers]
        self.slope = emulator.config.negative_slope
        self.lam = emulator.grid.wavelength
        self.n_labels = emulator.n_labels

    def spectrum(self, x_scaled):
        h = x_scaled
        for k in range(len(self.w)):
            h = np.einsum("ij,j->i", self.w[k], h) + self.b[k]
            if k < len(self.w) - 1:
                h = np.where(h > 0, h, self.slope * h)
        return h

    def model(self, _x, *p):
        spec = self.spectrum(np.asarray(p[:-1]))
        v = p[-1]
        rest = self.lam * np.sqrt((1 - v / C_KMS) / (1 + v / C_KMS))
        return np.interp(rest, self.lam, spec)

    def fit(self, flux, error, good):
        from scipy.optimize import curve_fit

        sigma = np.where(good, error, 999.0)
        data = np.where(good, flux, 1.0)
        p0 = np.zeros(self.n_labels + 1)
        lower = np.r_[np.full(self.n_labels, -0.5), -5.0]
        upper = np.r_[np.full(self.n_labels, 0.5), 5.0]
        popt, _ = curve_fit(self.model, self.lam, data, p0=p0, sigma=sigma, absolute_sigma=True,
                            bounds=(lower, upper), method="trf", ftol=5e-4, xtol=5e-4)
        return popt


# -- figures -----------------------------------------------------------------------------------


def recovery(names, true, fitted, errors=None) -> dict:
    """Per label: median |fit − truth|, bias, robust scatter; with ``errors`` also the robust
    width of (fit − truth)/σ (1 when the quoted σ are honest)."""
    out = {}
    for k, name in enumerate(names):
        d = fitted[:, k] - true[:, k]
        ok = np.isfinite(d)
        entry = {"median_abs": float(np.median(np.abs(d[ok]))),
                 "bias": float(np.median(d[ok])),
                 "scatter_mad": robust_width(d[ok])}
        if errors is not None:
            sig = errors[:, k]
            use = ok & np.isfinite(sig) & (sig > 0)
            entry["median_sigma"] = float(np.median(sig[use]))
            entry["pull_mad"] = robust_width(d[use] / sig[use])
        if name in KEY_LABELS:
            entry["within"] = KEY_LABELS[name]
            entry["fraction_within"] = float(np.mean(np.abs(d) <= KEY_LABELS[name]))
        out[name] = entry
    return out


def run_both(emulator, base: PayneBaseline, flux, error, good, batch: int):
    """Per-star fits by both methods, interleaved star by star so that the machine's changing
    load hits both alike; then our batched fit of the same stars."""
    opts = FitOptions()
    ours, theirs, t_ours, t_theirs = [], [], [], []
    for i in range(len(flux)):
        t0 = time.perf_counter()
        ours.append(fit_batch(emulator, flux[i:i + 1], error[i:i + 1], good[i:i + 1], opts))
        t1 = time.perf_counter()
        theirs.append(base.fit(flux[i], error[i], good[i]))
        t_ours.append(t1 - t0)
        t_theirs.append(time.perf_counter() - t1)
    t0 = time.perf_counter()
    batched = [fit_batch(emulator, flux[i:i + batch], error[i:i + batch], good[i:i + batch], opts)
               for i in range(0, len(flux), batch)]
    t_batch = (time.perf_counter() - t0) / len(flux)
    labels = np.concatenate([f.labels for f in ours])
    span = emulator.bounds[1] - emulator.bounds[0]
    agree = float(np.nanmax(np.abs(np.concatenate([f.labels for f in batched]) - labels) / span))
    theirs = np.array(theirs)
    return {
        "labels": labels, "labels_err": np.concatenate([f.labels_err for f in ours]),
        "rv": np.concatenate([f.rv for f in ours]),
        "flags": np.concatenate([f.flags for f in ours]), "seconds": float(np.median(t_ours)),
        "seconds_mean": float(np.mean(t_ours)), "seconds_batched": t_batch,
        "batch_agreement": agree,
        "base_labels": emulator.unscale(theirs[:, :-1]), "base_rv": theirs[:, -1],
        "base_seconds": float(np.median(t_theirs)), "base_seconds_mean": float(np.mean(t_theirs)),
    }


def scenario(name, emulator, base, true, flux, error, good, rv_true, batch):
    print(f"[{name}] fitting {len(flux)} stars with both fitters …", file=sys.stderr)
    r = run_both(emulator, base, flux, error, good, batch)
    names = emulator.label_names
    return {
        "n_stars": int(len(flux)),
        "rv_true_range": [float(rv_true.min()), float(rv_true.max())],
        "timing": "per-star seconds are medians over the stars (means beside them)",
        "ours": {"seconds_per_star": round(r["seconds"], 4),
                 "seconds_per_star_mean": round(r["seconds_mean"], 4),
                 "seconds_per_star_batched": round(r["seconds_batched"], 4),
                 "batch": batch, "batched_vs_single_max_label_diff_scaled": r["batch_agreement"],
                 "rv_median_abs_error": float(np.median(np.abs(r["rv"] - rv_true))),
                 "flagged": int((r["flags"] != 0).sum()),
                 "labels": recovery(names, true, r["labels"], r["labels_err"])},
        "curve_fit": {"seconds_per_star": round(r["base_seconds"], 4),
                      "seconds_per_star_mean": round(r["base_seconds_mean"], 4),
                      "rv_median_abs_error": float(np.median(np.abs(r["base_rv"] - rv_true))),
                      "rv_at_bound": int(np.sum(np.abs(np.abs(r["base_rv"]) - 5.0) < 1e-3)),
                      "labels": recovery(names, true, r["base_labels"])},
        "speed_ratio_curve_fit_over_ours": round(r["base_seconds"] / r["seconds"], 2),
        "speed_ratio_curve_fit_over_ours_batched": round(
            r["base_seconds_mean"] / r["seconds_batched"], 2),
    }


def emulation_accuracy(emulator, n: int, seed: int) -> dict:
    """Emulator vs noiseless mock flux for fresh labels inside the training box."""
    from core.mock import draw_labels, noiseless_flux

    lo, hi = emulator.bounds
    names = emulator.label_names
    pool = draw_labels(max(20 * n, 2000), seed)
    true = pool[[f"TRUE_{k}" for k in names]].to_numpy()
    pick = pool[np.all((true >= lo) & (true <= hi), axis=1)].iloc[:n]
    ref = noiseless_flux(pick)
    pred = emulator.predict(pick[[f"TRUE_{k}" for k in names]].to_numpy())
    err = np.abs(pred - ref)
    return {"n_stars": int(len(pick)), "median_abs": float(np.median(err)),
            "rms": float(np.sqrt(np.mean(err**2))), "p99_abs": float(np.percentile(err, 99)),
            "per_star_rms_median": float(np.median(np.sqrt(np.mean(err**2, axis=1))))}


def gpu_throughput(emulator, flux, error, good, chunk: int) -> dict | None:
    if not torch.cuda.is_available():
        return None
    gpu = emulator.to("cuda")
    reps = max(1, chunk // len(flux) + 1)
    f, e, g = (np.concatenate([a] * reps)[:chunk] for a in (flux, error, good))
    fit_batch(gpu, f[:64], e[:64], g[:64])  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fit_batch(gpu, f, e, g)
    torch.cuda.synchronize()
    rate = chunk / (time.perf_counter() - t0)
    emulator.to("cpu")
    return {"device": torch.cuda.get_device_name(), "chunk": chunk,
            "stars_per_second": round(rate, 1),
            "catalog_minutes": round(CATALOG_ROWS / rate / 60, 2)}


def main(argv=None) -> int:
    from core.models import find

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="emulator directory (default: the demo)")
    ap.add_argument("--n-stars", type=int, default=40)
    ap.add_argument("--snr", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=2024, help="seed of the test stars")
    ap.add_argument("--batch", type=int, default=20, help="stars per batch for the batched run")
    ap.add_argument("--gpu-chunk", type=int, default=4096)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fit.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model_dir = Path(args.model) if args.model else find("emulator")
    emulator = load_model(model_dir).to("cpu")
    base = PayneBaseline(emulator)
    true, flux, error, good = test_stars(emulator, args.n_stars, args.snr, args.seed)
    rng = np.random.default_rng(args.seed)
    rv = rng.uniform(-60.0, 60.0, len(flux))
    sflux, serr, sgood = doppler_shift(emulator, flux, error, good, rv)
    results = {
        "model": str(model_dir),
        "model_preset": emulator.config.preset,
        "hidden": list(emulator.config.hidden),
        "labels": emulator.label_names,
        "snr": args.snr,
        "threads": 1,
        "machine": f"{os.cpu_count()} CPU cores (shared)",
        "emulation": emulation_accuracy(emulator, 200, args.seed + 1),
        "rest_frame": scenario("rest frame", emulator, base, true, flux, error, good,
                               np.zeros(len(flux)), args.batch),
        "rv_shifted": scenario("RV ±60 km/s", emulator, base, true, sflux, serr, sgood, rv,
                               args.batch),
        "gpu": gpu_throughput(emulator, flux, error, good, args.gpu_chunk),
    }
    write_json_atomic(args.out, results)
    for key in ("rest_frame", "rv_shifted"):
        r = results[key]
        print(f"{key}: ours {r['ours']['seconds_per_star']:.3f} s/star "
              f"({r['ours']['seconds_per_star_batched']:.3f} batched), curve_fit "
              f"{r['curve_fit']['seconds_per_star']:.3f} s/star → ratio "
              f"{r['speed_ratio_curve_fit_over_ours']}×")
        for label in KEY_LABELS:
            a, b = r["ours"]["labels"][label], r["curve_fit"]["labels"][label]
            print(f"   {label:5s} median |Δ| ours {a['median_abs']:.4g} "
                  f"(within {a['within']}: {a['fraction_within']:.0%}) vs curve_fit "
                  f"{b['median_abs']:.4g} ({b['fraction_within']:.0%}); our pull width "
                  f"{a['pull_mad']:.2f}")
    print(f"emulation error vs noiseless mock: median {results['emulation']['median_abs']:.2e}, "
          f"rms {results['emulation']['rms']:.2e}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
