"""Store write-path figures: concurrent add_columns, the write lock, verify; bench/results/store.json.

    .venv/bin/python bench/store.py [--catalog-rows 20000] [--commits 20] [--verify-rows 4000]

Figures (medians):
- add_columns with 1, 2 and 4 writer processes on one store (each adds its own column,
  ``--commits`` times): commits per second for all writers together, and the median time
  of one add_columns call (lock wait + re-read + catalog write + manifest);
- the write lock: median acquire time when nobody holds it, and the hand-over time when a
  waiting process gets it after another releases it (release → acquired);
- verify_store seconds per GB of spectra parts (page cache warm: the store was just written).
The machine's load average is recorded: on a shared machine every figure scales with it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import write_result  # noqa: E402  (bench/ is the script directory)

from core.store import SpectraStore, store_lock, verify_store  # noqa: E402

P = 7514


def _make_store(path: Path, rows: int, catalog_cols: int, random_flux: bool):
    """A store of ``rows`` spectra and a catalog of ``catalog_cols`` float columns.  Without
    ``random_flux`` the spectra are constant and gzip-compressed, so a big catalog costs no
    disk."""
    rng = np.random.default_rng(0)
    with SpectraStore.create(path, rows_per_part=2048,
                             compression=None if random_flux else "gzip") as w:
        for start in range(0, rows, 1024):
            k = min(1024, rows - start)
            cat = pd.DataFrame({f"C{j:02d}": rng.normal(size=k) for j in range(catalog_cols)})
            cat.insert(0, "APOGEE_ID", [f"2M{start + i:08d}" for i in range(k)])
            flux = (rng.uniform(0.5, 1.5, (k, P)) if random_flux else np.ones((k, P)))
            w.append(flux.astype(np.float32), np.full((k, P), 0.02, np.float32),
                     np.zeros((k, P), np.uint16), cat)
    return SpectraStore.open(path)


def _writer(path: str, name: str, commits: int, start, out):
    store = SpectraStore.open(path)
    start.wait()
    times = []
    for i in range(commits):
        t0 = time.perf_counter()
        store.add_columns({name: np.full(len(store), float(i))})
        times.append(time.perf_counter() - t0)
    out.put(times)


def bench_concurrent(path: Path, writers: int, commits: int) -> dict:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), f"W{writers}_{k}", commits, start, out))
             for k in range(writers)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # every writer has imported and opened the store
    t0 = time.perf_counter()
    start.set()
    times = [t for _ in procs for t in out.get()]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    cols = SpectraStore.open(path).catalog.columns
    lost = [f"W{writers}_{k}" for k in range(writers) if f"W{writers}_{k}" not in cols]
    return {"writers": writers, "commits": writers * commits,
            "commits_per_s": round(writers * commits / wall, 2),
            "median_call_s": round(float(np.median(times)), 4), "lost_columns": lost}


def bench_uncontended(path: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with store_lock(path):
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _holder(path: str, rounds: int, hold: float, held, barrier, out):
    for _ in range(rounds):
        with store_lock(path):
            held.set()
            time.sleep(hold)
            out.put(time.monotonic())  # CLOCK_MONOTONIC: comparable across processes
        barrier.wait()


def _waiter(path: str, rounds: int, held, barrier, out, result):
    waits = []
    for _ in range(rounds):
        held.wait()
        with store_lock(path):
            got = time.monotonic()
            held.clear()
        waits.append(got - out.get())
        barrier.wait()
    result.put(waits)


def bench_handover(path: Path, rounds: int, hold: float = 0.02) -> float:
    ctx = mp.get_context("spawn")
    held, barrier, out, result = ctx.Event(), ctx.Barrier(2), ctx.Queue(), ctx.Queue()
    a = ctx.Process(target=_holder, args=(str(path), rounds, hold, held, barrier, out))
    b = ctx.Process(target=_waiter, args=(str(path), rounds, held, barrier, out, result))
    a.start()
    b.start()
    waits = result.get()
    a.join()
    b.join()
    return float(np.median(waits))


def bench_verify(path: Path, repeats: int) -> dict:
    gb = sum((path / p["file"]).stat().st_size
             for p in SpectraStore.open(path).manifest["parts"]) / 1e9
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = verify_store(path)
        times.append(time.perf_counter() - t0)
        assert report.ok, report.problems
    med = float(np.median(times))
    return {"parts_gb": round(gb, 3), "median_s": round(med, 3),
            "s_per_gb": round(med / gb, 3), "gb_per_s": round(gb / med, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog-rows", type=int, default=20_000,
                    help="catalog rows for the add_columns figures (the mock survey's size)")
    ap.add_argument("--catalog-cols", type=int, default=60)
    ap.add_argument("--commits", type=int, default=20, help="add_columns calls per writer")
    ap.add_argument("--lock-repeats", type=int, default=200)
    ap.add_argument("--handover-rounds", type=int, default=40)
    ap.add_argument("--verify-rows", type=int, default=4000,
                    help="spectra in the store that is verified (4000 ≈ 0.3 GB)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "store.json"))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        tmp = Path(tmp)
        small = _make_store(tmp / "cat", args.catalog_rows, args.catalog_cols, False)
        concurrent = [bench_concurrent(small.path, w, args.commits) for w in (1, 2, 4)]
        for row in concurrent:
            print(f"add_columns, {row['writers']} writer(s): {row['commits_per_s']} commits/s "
                  f"together, median call {row['median_call_s'] * 1e3:.1f} ms, "
                  f"lost columns: {row['lost_columns'] or 'none'}")
        uncontended = bench_uncontended(small.path, args.lock_repeats)
        handover = bench_handover(small.path, args.handover_rounds)
        print(f"lock: median acquire {uncontended * 1e6:.0f} µs uncontended; median hand-over "
              f"{handover * 1e3:.2f} ms (release → waiting process holds it)")
        big = _make_store(tmp / "big", args.verify_rows, 4, True)
        verify = bench_verify(big.path, args.repeats)
        print(f"verify: {verify['parts_gb']} GB of parts in {verify['median_s']} s median "
              f"({verify['s_per_gb']} s/GB, {verify['gb_per_s']} GB/s)")

    results = {
        "catalog_rows": args.catalog_rows, "catalog_cols": args.catalog_cols,
        "add_columns": concurrent,
        "lock_uncontended_median_s": round(uncontended, 7),
        "lock_handover_median_s": round(handover, 5),
        "verify": verify,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg": [round(x, 2) for x in os.getloadavg()]},
    }
    write_result(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
