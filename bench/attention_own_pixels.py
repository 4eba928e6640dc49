"""The Attention view's own-pixel switch for an uploaded apVisit, server side (CPU).

    .venv/bin/python bench/attention_own_pixels.py            # the real apVisit in ../shared
    .venv/bin/python bench/attention_own_pixels.py --file apVisit-….fits --repeats 15

The file goes through the app's upload path (``dashboard.views.upload.read_upload``: read,
normalised, resampled, its own rest-frame pixels kept), is shown in an
:class:`~dashboard.views.attention.AttentionView` with the shipped demo transformer (or
``--model``), and then, per repeat (the first excluded from the medians):

* ``shown_until_both_ms``: ``Session.show`` of the upload until the own-pixel reading that
  the view starts in a worker thread has arrived (grid reading drawn + own pixels read);
* ``switch_to_own_ms`` / ``switch_to_grid_ms``: the switch, both readings already there
  (what a user meets: redraw only);
* ``switch_reading_there_ms``: the switch when the worker has not finished yet, so the
  switch reads the own pixels itself.

Torch on one thread (``--threads``).  Prints the figures with the load average and writes
them to bench/results/attention_own_pixels.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "attention_own_pixels.json"
REAL = ROOT.parent / "shared" / "data" / "apogee_real" / "apVisit-r13-5095-55844-128.fits"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", default=str(REAL), help="an apVisit FITS file")
    p.add_argument("--model", default=None, help="transformer (default: the shipped demo)")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    path = Path(args.file)
    if not path.is_file():
        sys.exit(f"{path} is absent: give an apVisit with --file")

    import torch

    torch.set_num_threads(args.threads)
    from core import models
    from core.inference.transformer import TransformerPredictor
    from dashboard.state import AppContext, Session
    from dashboard.views.attention import AttentionView
    from dashboard.views.upload import read_upload

    pred = TransformerPredictor.load(models.find("transformer", args.model))
    t = time.perf_counter()
    spec = read_upload(path.name, path.read_bytes())
    read_ms = 1000 * (time.perf_counter() - t)
    ctx = AppContext(models={"transformer": pred})
    session = Session(context=ctx)
    view = AttentionView(focus=session.focus, context=ctx)
    view.active = True
    shown, on, off, there = [], [], [], []

    def ms(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return 1000 * (time.perf_counter() - t0)

    def wait() -> None:
        while "own" not in view.readings:
            time.sleep(0.005)

    for _ in range(args.repeats):
        view.own = False
        shown.append(ms(lambda: (session.show(spec.copy(), source="upload"), wait())))
        on.append(ms(lambda: view.param.update(own=True)))
        off.append(ms(lambda: view.param.update(own=False)))
        view.readings.pop("own")
        there.append(ms(lambda: view.param.update(own=True)))

    def med(x):
        return round(statistics.median(x[1:] or x), 1)

    result = {"when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
              "machine": platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
              "load_average": [round(v, 2) for v in os.getloadavg()],
              "file": path.name, "model": _rel(pred.model_dir), "repeats": args.repeats,
              "own_pixels": int(view.readings["own"].n_read),
              "grid_pixels": int(view.readings["grid"].n_read),
              "upload_read_ms": round(read_ms, 1),
              "shown_until_both_ms_median": med(shown),
              "switch_to_own_ms_median": med(on), "switch_to_grid_ms_median": med(off),
              "switch_reading_there_ms_median": med(there)}
    print(json.dumps(result, indent=1))
    from core.store.atomic import write_json_atomic

    write_json_atomic(RESULTS, result)
    return result


def _rel(path) -> str:
    """A path inside the repository relative to it (results stay comparable across clones)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


if __name__ == "__main__":
    main()
