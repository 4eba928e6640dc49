"""How far an emulator's fits are from the information floor of the spectra.

For stars of a mock survey the emulator never saw, per S/N bin:

* **bound**: the Cramér–Rao σ of each star from the mock's own physics
  (:mod:`core.evaluate.information`), summarised as the robust width (1.4826·MAD) of errors
  drawn from those σ, the same statistic as the fits' scatter;
* **oracle**: the observed spectra fitted with the exact synthesis (Gauss–Newton from the
  truth, the same good pixels), the best any forward model can do with these pixels: it is
  above the bound where unmasked artefacts (persistence, the Littrow ghost) bias every fit;
* **emulator**: the same stars fitted by ``core.fit`` with the emulator (RV and all labels
  free, as ``stellarscope fit`` does).

An emulator at the floor scatters like the oracle.  Writes bench/results/emulator_floor.json.

    python bench/emulator_floor.py --store $STELLARSCOPE_HOME/stores/mock-seed8 \\
        --model assets/models/emulator-demo --n-stars 300
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import write_result  # noqa: E402  (bench/ is the script directory)

from core.evaluate.information import cramer_rao, oracle_fit, synthesis_jacobian  # noqa: E402
from core.fit import load_model  # noqa: E402
from core.fit.calibrate import SNR_BINS, robust_width  # noqa: E402
from core.fit.engine import FitOptions  # noqa: E402
from core.fit.store import PREFIX, _batch_arrays, fit_store_table  # noqa: E402
from core.mock.physics import store_physics  # noqa: E402
from core.store import SpectraStore  # noqa: E402

SHOWN = ("TEFF", "LOGG", "FE_H", "MG_FE", "SI_FE")


def _bins(snr):
    edges = list(SNR_BINS[1:]) + [np.inf]
    out = [(f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">={lo:g}", (snr >= lo) & (snr < hi))
           for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return out + [(">=100", snr >= 100)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a mock survey the emulator never saw")
    ap.add_argument("--model", default=str(ROOT / "assets/models/emulator-demo"))
    ap.add_argument("--n-stars", type=int, default=300)
    ap.add_argument("--min-snr", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench/results/emulator_floor.json"))
    args = ap.parse_args(argv)

    store = SpectraStore.open(args.store)
    emulator = load_model(args.model)
    names = emulator.label_names
    physics = store_physics(store)
    cat = store.catalog
    snr_all = cat["SNR"].to_numpy(float)
    rng = np.random.default_rng(args.seed)
    pool = np.flatnonzero(snr_all >= args.min_snr)
    rows = np.sort(rng.choice(pool, size=min(args.n_stars, pool.size), replace=False))
    truth = cat[[f"TRUE_{n}" for n in names]].to_numpy(float)[rows]
    snr = snr_all[rows]

    t0 = time.perf_counter()
    bound = np.empty((rows.size, len(names)))
    oracle = np.empty_like(bound)
    for k, batch in enumerate(store.iter_batches(1, rows=rows)):
        flux, error, good = _batch_arrays(store, emulator, batch, "astronn")
        star = cat.iloc[int(batch.rows[0])]
        with warnings.catch_warnings():  # molecules vanish in hot stars: log10(0) is harmless
            warnings.simplefilter("ignore", RuntimeWarning)
            _, jac = synthesis_jacobian(star, names, store.grid, physics)
            bound[k] = cramer_rao(jac, error[0], good[0])
            oracle[k] = oracle_fit(flux[0], error[0], good[0], star, names, store.grid,
                                   physics, iterations=3)[0]
        if (k + 1) % 50 == 0:
            print(f"oracle {k + 1}/{rows.size}", file=sys.stderr)
    t_oracle = time.perf_counter() - t0

    t0 = time.perf_counter()
    table = fit_store_table(store, emulator, FitOptions(), rows=rows, progress=True)
    fitted = table.loc[rows, [f"{PREFIX}{n}" for n in names]].to_numpy(float)
    sigma = table.loc[rows, [f"{PREFIX}{n}_ERR" for n in names]].to_numpy(float)
    t_fit = time.perf_counter() - t0

    draws = rng.standard_normal((200, *bound.shape)) * bound  # errors as the bound says
    result = {"what": __doc__.split("\n\n")[0], "store": str(store.path),
              "model": str(args.model), "physics": physics, "n_stars": int(rows.size),
              "labels": names, "scatter": "1.4826·MAD of (estimate − truth)",
              "seconds": {"oracle": round(t_oracle, 1), "emulator_fits": round(t_fit, 1)},
              "bins": []}
    for label, sel in _bins(snr):
        if not sel.any():
            continue
        row = {"snr_bin": label, "n_stars": int(sel.sum()), "median_snr": float(np.median(snr[sel]))}
        for j, name in enumerate(names):
            b = float(np.median([robust_width(d[sel, j]) for d in draws]))
            o = robust_width(oracle[sel, j] - truth[sel, j])
            e = robust_width(fitted[sel, j] - truth[sel, j])
            diff = fitted[sel, j] - truth[sel, j]
            row[name] = {"bound": b, "oracle": o, "emulator": e,
                         "emulator_over_oracle": e / o if o > 0 else None,
                         "emulator_bias": float(np.nanmedian(diff)),
                         # σ as the fit reports it (formal ⊕ the model's calibrated floor)
                         "emulator_pull_width": robust_width(diff / sigma[sel, j])}
        result["bins"].append(row)

    print(f"{rows.size} stars of {store.path.name} ({physics}); scatter = 1.4826·MAD vs truth")
    print(f"{'S/N':>8} {'n':>4}  " + "  ".join(f"{n:>22}" for n in SHOWN))
    print(f"{'':>8} {'':>4}  " + "  ".join(f"{'bound/oracle/emulator':>22}" for _ in SHOWN))
    for row in result["bins"]:
        cells = []
        for n in SHOWN:
            if n in row:
                v = row[n]
                fmt = "{:.1f}" if n == "TEFF" else "{:.3f}"
                cells.append(f"{'/'.join(fmt.format(v[k]) for k in ('bound', 'oracle', 'emulator')):>22}")
        print(f"{row['snr_bin']:>8} {row['n_stars']:>4}  " + "  ".join(cells))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
