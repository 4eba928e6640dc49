"""Mock-survey generation speed (spectra/s) and peak memory; writes bench/results/mock.json.

    .venv/bin/python bench/mock.py [--n-synth 1024] [--n-survey 2048] [--repeats 3]

Figures: the median over repeats of synthesize() throughput (noiseless synthesis and the
whole pipeline with noise and masks, warm caches), generate_mock_survey() throughput into a
temporary store, and the peak traced memory (tracemalloc; numpy arrays included) of one more,
untimed survey run.  The machine's load average is recorded: on a shared machine the rates
scale down with the load.  The top-level figures are for the default (classic) physics;
``--physics`` adds the same rates for other physics sets (``physics`` section, with each
rate's ratio to classic).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.mock import draw_labels, generate_mock_survey, noiseless_flux, synthesize  # noqa: E402
from core.mock.survey import DEFAULT_CHUNK  # noqa: E402


def _median_rate(func, n: int, repeats: int) -> tuple[float, float, list[float]]:
    """Median spectra/s by wall clock and by this process's CPU time (the rate an idle
    machine would give; on a shared machine the wall-clock rate drops with the load)."""
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        func()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return n / float(np.median(wall)), n / float(np.median(cpu)), wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-synth", type=int, default=1024, help="stars per synthesize() call")
    ap.add_argument("--n-survey", type=int, default=2048, help="stars in the timed survey")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mock.json"))
    ap.add_argument("--physics", default="apogee,shifted",
                    help="other physics sets to time besides classic (comma-separated; '' = none)")
    args = ap.parse_args(argv)

    labels = draw_labels(args.n_synth, seed=1)
    t0 = time.perf_counter()
    synthesize(labels.iloc[:8], seed=1)  # builds the curve of growth and line templates
    warmup = time.perf_counter() - t0

    noiseless, noiseless_cpu, t_noiseless = _median_rate(lambda: noiseless_flux(labels),
                                                         args.n_synth, args.repeats)
    full, full_cpu, t_full = _median_rate(lambda: synthesize(labels, seed=1), args.n_synth,
                                          args.repeats)

    def survey_run(trace: bool = False, physics: str = "classic") -> tuple[float, float, int]:
        with tempfile.TemporaryDirectory() as tmp:
            if trace:
                tracemalloc.start()
            w0, c0 = time.perf_counter(), time.process_time()
            generate_mock_survey(Path(tmp) / "bench-store", n_stars=args.n_survey, seed=7,
                                 progress=False, physics=physics)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            peak = tracemalloc.get_traced_memory()[1] if trace else 0
            if trace:
                tracemalloc.stop()
        return wall, cpu, peak

    runs = [survey_run() for _ in range(args.repeats)]
    survey_times = [r[0] for r in runs]
    survey = args.n_survey / float(np.median(survey_times))
    survey_cpu = args.n_survey / float(np.median([r[1] for r in runs]))
    peak = survey_run(trace=True)[2]  # tracing slows the run, so it is not timed

    others = {}
    for name in [n.strip() for n in args.physics.split(",") if n.strip()]:
        synthesize(labels.iloc[:8], seed=1, physics=name)  # its line model and caches
        nl, nl_cpu, _ = _median_rate(lambda n=name: noiseless_flux(labels, physics=n),
                                     args.n_synth, args.repeats)
        sy, sy_cpu, _ = _median_rate(lambda n=name: synthesize(labels, seed=1, physics=n),
                                     args.n_synth, args.repeats)
        sv = [survey_run(physics=name) for _ in range(args.repeats)]
        rate = args.n_survey / float(np.median([r[0] for r in sv]))
        rate_cpu = args.n_survey / float(np.median([r[1] for r in sv]))
        others[name] = {
            "noiseless_spectra_per_cpu_s": round(nl_cpu, 1),
            "synthesize_spectra_per_cpu_s": round(sy_cpu, 1),
            "survey_spectra_per_s": round(rate, 1),
            "survey_spectra_per_cpu_s": round(rate_cpu, 1),
            "ratio_to_classic_cpu": {
                "noiseless": round(nl_cpu / noiseless_cpu, 2),
                "synthesize": round(sy_cpu / full_cpu, 2),
                "survey": round(rate_cpu / survey_cpu, 2)},
            "estimated_20000_star_survey_s": round(20_000 / rate, 1),
        }

    try:
        import resource

        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:  # not on Windows
        max_rss_mb = None
    figures = {
        "synthesize_spectra_per_s": round(full, 1),
        "synthesize_spectra_per_cpu_s": round(full_cpu, 1),
        "noiseless_spectra_per_s": round(noiseless, 1),
        "noiseless_spectra_per_cpu_s": round(noiseless_cpu, 1),
        "survey_spectra_per_s": round(survey, 1),
        "survey_spectra_per_cpu_s": round(survey_cpu, 1),
        "survey_peak_traced_mb": round(peak / 2**20, 1),
        "process_max_rss_mb": None if max_rss_mb is None else round(max_rss_mb, 1),
        "n_synth": args.n_synth,
        "n_survey": args.n_survey,
        "survey_chunk": DEFAULT_CHUNK,
        "repeats": args.repeats,
        "first_call_warmup_s": round(warmup, 2),
        "times_s": {"noiseless": [round(t, 3) for t in t_noiseless],
                    "synthesize": [round(t, 3) for t in t_full],
                    "survey": [round(t, 3) for t in survey_times]},
        "estimated_20000_star_survey_s": round(20_000 / survey, 1),
        "physics": {"classic": "the top-level figures", **others},
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(figures, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
