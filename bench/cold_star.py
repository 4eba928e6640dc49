"""Cold ``/app?star=ID`` → spectrum drawn, and random star → new spectrum, in chromium.

The first two rows of issue 13's table (random star: the steady state, once the page is
complete; ``random_star_first_press_ms``: key r pressed as soon as the spectrum shows, while
the page still fills in its lower parts), with where the cold page's time goes: the server's
HTML response (time to first byte, measured in the page and with a plain HTTP GET), the
scripts and stylesheets it loads (count, bytes on the wire and decoded), the websocket's
document, the number of Bokeh models the first page holds, and the spectrum painted
(``bench/browser.py``'s detection: the spectrum source holds data, then the next frame).
Serves ``dashboard/app.py`` for ``--store`` (default: a 2,000-star mock built here, as
``bench/browser.py`` does).  Writes ``bench/results/cold_star.json`` (medians, p90, the load
average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser as bb  # noqa: E402  (the page probes and the star-drawn detection)
import browser_latent as bl  # noqa: E402  (the server and chromium pieces)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "cold_star.json"

# what the page loaded, read when the spectrum is drawn
TIMING = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const kind = (r) => /\\.css(\\?|$)/.test(r.name) ? 'css' : /\\.js(\\?|$)/.test(r.name) ? 'js'
                      : r.initiatorType;
  const by = {};
  for (const r of res) {
    const k = kind(r);
    const b = by[k] = by[k] || {n: 0, transfer: 0, decoded: 0, last_end: 0};
    b.n += 1; b.transfer += r.transferSize || 0; b.decoded += r.decodedBodySize || 0;
    b.last_end = Math.max(b.last_end, r.responseEnd);
  }
  let models = 0;
  for (const d of (window.Bokeh && Bokeh.documents) || []) models += d.all_models.size;
  return {ttfb: nav.responseStart, html_end: nav.responseEnd,
          html_bytes: nav.decodedBodySize, dom_content_loaded: nav.domContentLoadedEventEnd,
          load_event: nav.loadEventEnd, resources: by, bokeh_models: models,
          usable: window.__ss.usable};
}"""


def pct(values, q) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(float(np.percentile(vals, q)), 1) if vals else None


def stats(values) -> dict:
    return {"median": pct(values, 50), "p90": pct(values, 90),
            "max": round(max(values), 1) if values else None, "n": len(values)}


def http_get_ms(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        r.read()
    return (time.perf_counter() - t0) * 1000


def run(args) -> dict:
    from playwright.sync_api import sync_playwright

    from core.models import find
    from core.store import SpectraStore

    load_start = [round(x, 2) for x in os.getloadavg()]
    shots = Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        tmp = Path(tmp)
        store = Path(args.store) if args.store else bb._mock_store(tmp, args.n_stars)
        ids = SpectraStore.open(store).catalog["APOGEE_ID"].astype(str).tolist()
        stars = ids[11::max(len(ids) // 50, 1)][:50]
        proc, fh, url = bl._serve(store, Path(find("vae", None)), tmp / "home", tmp / "log")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=bl.CHROMIUM, args=bl.CHROMIUM_ARGS)
                ctx, page = bb._new_page(browser)  # warms the per-process caches
                page.goto(f"{url}?star={bb._quoted(stars[-1])}", timeout=bb.TIMEOUT_MS)
                bb._wait_usable(page)
                ctx.close()
                time.sleep(1)
                res["http_get_ms"] = stats([
                    http_get_ms(f"{url}?star={bb._quoted(stars[20 + i])}")
                    for i in range(args.repeats)])
                time.sleep(2)
                rows = []
                for i in range(args.repeats):
                    ctx, page = bb._new_page(browser)
                    page.goto(f"{url}?star={bb._quoted(stars[i % len(stars)])}",
                              timeout=bb.TIMEOUT_MS)
                    bb._wait_usable(page)
                    rows.append(page.evaluate(TIMING))
                    if i == 0:
                        page.wait_for_timeout(800)
                        page.screenshot(path=shots / "cold-star.png")
                    ctx.close()
                    time.sleep(1.5)  # the closed session's teardown is not the next one's wait
                res["cold_star_ms"] = stats([r["usable"] for r in rows])
                res["cold_breakdown_ms"] = {
                    k: stats([r[k] for r in rows])
                    for k in ("ttfb", "html_end", "dom_content_loaded", "load_event")}
                first = rows[0]
                res["first_page"] = {"html_bytes": first["html_bytes"],
                                     "bokeh_models": first["bokeh_models"],
                                     "resources": first["resources"]}
                # one key press as soon as the spectrum shows (the page is still filling in
                # its lower parts), in fresh pages
                first = []
                for i in range(min(args.repeats, 3)):
                    ctx, page = bb._new_page(browser)
                    page.goto(f"{url}?star={bb._quoted(stars[30 + i])}", timeout=bb.TIMEOUT_MS)
                    bb._wait_usable(page)
                    first += bb.random_star(page, 1)
                    ctx.close()
                res["random_star_first_press_ms"] = stats(first)
                # the steady state: once the page is complete (tables drawn), key r repeatedly
                ctx, page = bb._new_page(browser)
                page.goto(f"{url}?star={bb._quoted(stars[1])}", timeout=bb.TIMEOUT_MS)
                bb._wait_usable(page)
                page.locator(".ss-labels").first.wait_for(timeout=bb.TIMEOUT_MS)
                page.wait_for_timeout(1000)
                res["random_star_ms"] = stats(bb.random_star(page, args.repeats))
                ctx.close()
                browser.close()
        finally:
            bl.stop_server(proc, fh)
    return {"bench": "cold_star", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "load_average_start": load_start,
                        "load_average_end": [round(x, 2) for x in os.getloadavg()]},
            "store": {"path": str(store) if args.store else
                      f"stellarscope mock --n-stars {args.n_stars} (temporary)",
                      "stars": len(ids)},
            "repeats": args.repeats, "viewport": bb.VIEWPORT,
            "targets": {"cold_star_ms": 1500, "random_star_ms": 300}, **res}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="serve this store (default: a 2,000-star mock built here)")
    ap.add_argument("--n-stars", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--label", default="",
                    help="file this run under 'runs' → LABEL in --out, beside earlier runs")
    ap.add_argument("--screenshots", default=str(REPO / "test-artifacts" / "bench-cold-star"))
    args = ap.parse_args(argv)
    if not Path(bl.CHROMIUM).exists():
        print(f"skipped: {bl.CHROMIUM} is absent")
        return {}
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.label:  # kept beside the other labelled runs of --out (e.g. before / after)
        old = json.loads(out.read_text()) if out.exists() else {}
        runs = old.get("runs", {}) if isinstance(old, dict) else {}
        runs.setdefault(args.label, []).append(result)
        out.write_text(json.dumps({"bench": "cold_star", "runs": runs}, indent=1) + "\n")
    else:
        out.write_text(json.dumps(result, indent=1) + "\n")
    c, r, b = result["cold_star_ms"], result["random_star_ms"], result["cold_breakdown_ms"]
    print(f"cold /app?star=ID → spectrum: median {c['median']} ms, p90 {c['p90']} ms "
          f"(ttfb median {b['ttfb']['median']} ms, DOMContentLoaded "
          f"{b['dom_content_loaded']['median']} ms); random star: median {r['median']} ms, "
          f"p90 {r['p90']} ms (first press: median "
          f"{result['random_star_first_press_ms']['median']} ms); "
          f"load {result['machine']['load_average_start']} → "
          f"{result['machine']['load_average_end']}")
    print(json.dumps(result["first_page"], indent=1))
    return result


if __name__ == "__main__":
    main()
