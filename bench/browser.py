"""The dashboard as the user waits for it: chromium (Playwright) against a served app.

Serves ``dashboard/app.py`` (``panel serve``, as the browser tests do) for ``--store`` — or,
with no ``--store``, for a 2,000-star mock built here with ``stellarscope mock`` under a
temporary ``$STELLARSCOPE_HOME`` (plus the VAE's latents) — unless ``--url`` names an app
already served, and times in the page itself (``performance.now()``), over ``--repeats``:

* cold ``/app?star=ID`` → spectrum drawn (a new browser context each repeat);
* random star (key ``r``) → the new spectrum drawn;
* Catalog first visit → corner drawn; box select on a corner panel → count and table updated;
* latent slider step → decoded plot changed (``browser_latent.measure``);
* revisiting a tab (Star → Catalog → Star …) → its content shown;
* ``--sessions N``: N browser contexts opened at once: time-to-usable per session, server CPU
  seconds per session (/proc/<pid>/stat) and the server's RSS before, at peak and after closing
  (sampled until it settles: Bokeh discards a closed session up to ~30 s after its websocket
  goes).  ``--load-only`` runs this alone and replaces just the ``load`` section of ``--out``;
  ``--corner-only`` measures just the Catalog's first corner (each repeat in a fresh session,
  the first right after the server started) and the box selects, and replaces just those.

"Drawn" is detected in the page (see ``DRAWN`` in the JSON): a Bokeh document change event
(``Document.on_change``) on the model that shows the result, then the next
``requestAnimationFrame`` callback (the frame in which Bokeh paints it).  Writes
``bench/results/browser.json`` with the targets of issue 13 beside the figures.
Needs Debian chromium (/usr/bin/chromium) and Playwright.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser_latent as bl  # noqa: E402  (the latent bench's server, slider and /proc pieces)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "browser.json"
VIEWPORT = {"width": 1600, "height": 1000}
TIMEOUT_MS = 180_000

#: issue 13's targets (browser-measured, idle, this 2-core machine)
TARGETS = {
    "cold_star_spectrum_ms": 1500, "random_star_ms": 300, "catalog_first_corner_ms": 1500,
    "box_select_ms": 500, "latent_step_ms": 150, "latent_drag_redraws_per_s": 10,
    "tab_revisit_ms": "instant (tabs kept alive)", "session_usable_s": 20,
    "server_cpu_s_per_session": 1.0, "rss_after_close_within": "10 % of before",
}

DRAWN = {
    "spectrum": "the page's spectrum ColumnDataSource (columns wave, flux, err, mask) holds "
                "data, then the next requestAnimationFrame; polled every frame from the "
                "navigation start (cold) or from the key press (random: the first data change "
                "of that source after the keydown whose flux differs from before)",
    "corner": "after the tab click: the selection-count text changed to something other than "
              "'Building …' and the Catalog's corner (.ss-corner) holds Bokeh figures with a "
              "canvas of non-zero size, then the next animation frame (checked every frame; the "
              "DOM only once the count has changed)",
    "box_select": "after mouseup: the selection-count Markdown's text changed to '… selected' "
                  "AND the Tabulator's data source changed, then the next animation frame",
    "latent": "browser_latent.measure: decoded-spectrum source changed, then the next frame",
    "tab_revisit": "after the tab click: that tab's body (.ss-tab-NAME) has non-zero size and "
                   "its plot element is laid out, then the next animation frame",
    "session_usable": "as 'spectrum' (cold), per browser context, all opened at once",
}

# Installed in every page before its scripts run: a deep (shadow-DOM piercing) query, the
# document's change events with the frame after them, the user's inputs, and a per-frame check
# of the cold "spectrum drawn" condition.
INIT = """(() => {
  const ss = window.__ss = {events: [], inputs: [], usable: null, unpainted: []};
  const deep = window.__ssDeep = (sel, root) => {
    const out = [];
    const walk = (r) => {
      if (r.shadowRoot) walk(r.shadowRoot);
      for (const el of r.querySelectorAll('*')) {
        if (el.matches(sel)) out.push(el);
        if (el.shadowRoot) walk(el.shadowRoot);
      }
    };
    walk(root || document);
    return out;
  };
  const isSpec = (m) => m && m.data && ('flux' in m.data) && ('mask' in m.data) && ('wave' in m.data);
  const nflux = (m) => { const f = m.data.flux; return f ? f.length : 0; };
  const sig = (m) => { const f = m.data.flux; if (!f || !f.length) return '';
    const i = Math.floor(f.length / 3); return f.length + ':' + f[i] + ':' + f[2 * i]; };
  window.__ssSpec = () => {
    for (const d of (window.Bokeh && Bokeh.documents) || [])
      for (const m of d.all_models) if (isSpec(m)) return m;
    return null;
  };
  window.__ssSig = () => { const m = window.__ssSpec(); return m ? sig(m) : ''; };
  const flush = () => { const now = performance.now();
    for (const r of ss.unpainted) r.p = now; ss.unpainted = []; };
  const tapped = new WeakSet();
  const tableSrc = new WeakMap();
  const tap = () => {
    for (const d of (window.Bokeh && Bokeh.documents) || []) {
      if (tapped.has(d)) continue;
      tapped.add(d);
      d.on_change((ev) => {
        const m = ev.model;
        if (!m) return;
        const cls = (m.css_classes || []).join(' ');
        const r = {t: performance.now(), type: m.type, attr: ev.attr || null, cls: cls};
        if (isSpec(m)) { r.spec = nflux(m); r.sig = sig(m); }
        if (/DataSource/.test(m.type)) {
          if (!tableSrc.has(m)) {
            let is = false;
            for (const d2 of Bokeh.documents) for (const o of d2.all_models)
              if (o.source === m && /Tabulator/.test(o.type)) is = true;
            tableSrc.set(m, is);
          }
          if (tableSrc.get(m)) r.table = true;
        }
        if (ev.attr === 'text' || ev.attr === 'object') r.text = String(m[ev.attr] || '').slice(0, 200);
        if (ss.unpainted.length === 0) requestAnimationFrame(flush);
        ss.unpainted.push(r);
        ss.events.push(r);
        if (ss.events.length > 20000) ss.events.splice(0, 10000);
      });
    }
  };
  const check = () => {
    tap();
    if (ss.usable === null) {
      const m = window.__ssSpec();
      if (m && nflux(m) > 0) {
        const seen = performance.now();
        ss.usable = -1;
        requestAnimationFrame(() => { ss.usable = performance.now(); ss.usable_seen = seen; });
      }
    }
  };
  setInterval(check, 25);
  for (const type of ['keydown', 'mousedown', 'mouseup', 'click'])
    document.addEventListener(type, (e) => ss.inputs.push([type, performance.now(),
      e.key || null]), true);
})()"""

# the corner drawn (figures with painted canvases, count no longer "Building"); returns a time.
# Polled every frame, so it must cost the page little: the count's text is read from the
# change events the page already logs (since event ``n``), and the shadow-DOM walk for the
# figures runs only once the count says the plot is there (walking every frame from the click
# took ~10 % of the page's CPU while it built the corner).
CORNER_DRAWN = """(n) => {
  const ev = window.__ss.events;
  let said = false;
  for (let i = ev.length - 1; i >= n; i--) {
    const e = ev[i];
    if (/ss-selection-count/.test(e.cls) && e.text !== undefined) {
      said = !/Building/.test(e.text); break;
    }
  }
  if (!said) return false;
  const hosts = window.__ssDeep('.ss-corner');
  if (!hosts.length) return false;
  const figs = hosts.flatMap(h => window.__ssDeep('.bk-Figure', h));
  if (!figs.length) return false;
  for (const f of figs) {
    const c = window.__ssDeep('canvas', f);
    if (!c.length || c[0].getBoundingClientRect().width === 0) return false;
  }
  return new Promise(r => requestAnimationFrame(() => r([performance.now(), figs.length])));
}"""

# a tab's content laid out (non-zero size, its plot drawn); returns the frame time
TAB_SHOWN = """([name, plot]) => {
  const body = window.__ssDeep('.ss-tab-' + name)[0];
  if (!body || body.getBoundingClientRect().width === 0) return false;
  const p = window.__ssDeep(plot, body);
  if (!p.length || p[0].getBoundingClientRect().height === 0) return false;
  return new Promise(r => requestAnimationFrame(() => r(performance.now())));
}"""


def summary(values) -> dict:
    """Median, p90, max and n of ``values`` (ms or s), rounded; Nones for an empty list."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "p90": None, "max": None, "n": 0}
    return {"median": round(float(np.percentile(vals, 50)), 1),
            "p90": round(float(np.percentile(vals, 90)), 1),
            "max": round(max(vals), 1), "n": len(vals)}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="serve this store (default: a 2,000-star mock built here)")
    ap.add_argument("--n-stars", type=int, default=2000, help="stars of the mock built here")
    ap.add_argument("--url", help="measure an app already served here (…/app); needs --store "
                                  "for the star IDs")
    ap.add_argument("--server-pid", type=int, help="with --url: the server's process id")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=3, help="sessions of the load mode")
    ap.add_argument("--skip-load", action="store_true", help="no load mode")
    ap.add_argument("--load-only", action="store_true",
                    help="only the load mode; replaces the 'load' section of --out, keeping "
                         "the rest")
    ap.add_argument("--corner-only", action="store_true",
                    help="only the Catalog's first corner (--repeats fresh sessions) and box "
                         "selects; replaces those entries of --out, keeping the rest")
    ap.add_argument("--clients", choices=("browser", "bokeh"), default="browser",
                    help="load mode sessions: chromium pages (time to the spectrum drawn) or "
                         "Bokeh client sessions (no browser: the server's side alone; written "
                         "as 'load_bokeh_clients')")
    ap.add_argument("--latent-steps", type=int, default=15)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--screenshots", default=str(REPO / "test-artifacts" / "bench-browser"),
                    help="folder for a screenshot of each measured view")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.sessions < 1:
        ap.error("--repeats and --sessions must be at least 1")
    if args.skip_load and args.load_only:
        ap.error("--skip-load and --load-only exclude each other")
    if args.corner_only and args.load_only:
        ap.error("--corner-only and --load-only exclude each other")
    if args.url and not args.store:
        ap.error("--url needs --store (the star IDs to open)")
    return args


def rss_mb(pid: int | None) -> float | None:
    """Resident set size of ``pid`` in MB (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _mock_store(tmp: Path, n_stars: int) -> Path:
    """``stellarscope mock`` into a temporary $STELLARSCOPE_HOME, plus the VAE's latents."""
    home = tmp / "home"
    out = home / "stores" / "bench-mock"
    env = {**os.environ, "STELLARSCOPE_HOME": str(home)}
    subprocess.run([str(Path(sys.executable).with_name("stellarscope")), "mock", "--n-stars",
                    str(n_stars), "--seed", "7", "--out", str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    from core.inference.vae import infer_store
    from core.models import find

    infer_store(str(out), Path(find("vae", None)), progress=False)
    return out


def _store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _store_note(args, store: Path, ids) -> dict:
    return {"path": str(store) if args.store else
            f"built here: stellarscope mock --n-stars {args.n_stars} (temporary)",
            "stars": len(ids), "bytes": _store_bytes(store)}


def _quoted(star: str) -> str:
    return star.replace("+", "%2B")


def _new_page(browser):
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.add_init_script(INIT)
    return ctx, ctx.new_page()


def _wait_usable(page, timeout_ms: int = TIMEOUT_MS) -> float:
    page.wait_for_function("() => window.__ss && window.__ss.usable > 0", timeout=timeout_ms,
                           polling=100)
    return page.evaluate("() => window.__ss.usable")


def cold_star(browser, url: str, stars: list[str], repeats: int, shots: Path) -> list[float]:
    """Navigation start → the star's spectrum painted, a new context (cold cache) each time."""
    out = []
    for i in range(repeats):
        ctx, page = _new_page(browser)
        page.goto(f"{url}?star={_quoted(stars[i % len(stars)])}", timeout=TIMEOUT_MS)
        out.append(_wait_usable(page))
        if i == 0:
            page.wait_for_timeout(500)
            page.screenshot(path=shots / "cold-star.png")
        ctx.close()
    return out


def _last_input(page, type_: str) -> float:
    return page.evaluate(f"() => window.__ss.inputs.filter(i => i[0] === '{type_}').pop()[1]")


def random_star(page, repeats: int) -> list[float]:
    """Key ``r`` → the first paint after the spectrum source got a different spectrum."""
    page.wait_for_selector(".ss-keys-ready", state="attached", timeout=TIMEOUT_MS)
    out = []
    for _ in range(repeats):
        page.locator(".ss-selected-star").click()  # focus the page, not a text field
        before = page.evaluate("() => window.__ssSig()")
        n = page.evaluate("() => window.__ss.events.length")
        page.keyboard.press("r")
        t0 = _last_input(page, "keydown")
        pred = (f"() => window.__ss.events.slice({n}).find(e => e.spec > 0 && "
                f"e.sig !== {json.dumps(before)} && e.p !== undefined)")
        page.wait_for_function(pred, timeout=60_000, polling=50)
        out.append(page.evaluate(f"({pred})().p") - t0)
        page.wait_for_timeout(700)  # a user's look at the new star
    return out


def _click_tab(page, label: str) -> float:
    page.locator(".bk-tab", has_text=label).first.click()
    return _last_input(page, "click")


def catalog_first(page) -> tuple[float, int]:
    """Catalog tab click → corner panels painted (first visit of this session)."""
    n = page.evaluate("() => window.__ss.events.length")
    t0 = _click_tab(page, "Catalog")
    handle = page.wait_for_function(CORNER_DRAWN, arg=n, timeout=TIMEOUT_MS, polling="raf")
    t1, n_fig = handle.json_value()
    return t1 - t0, n_fig


def box_select(page, repeats: int, n_total: int, shots: Path) -> list[float]:
    """Drag a box on the Teff–log g panel → count text and table data changed, painted."""
    out = []
    panel = page.locator(".ss-corner .bk-Figure").nth(1)
    for i in range(repeats):
        b = panel.bounding_box()
        right, top, size = b["x"] + b["width"], b["y"], 170
        # a different box each time, so every drag is a new selection
        x0, y0 = right - size + 15 + 6 * i, top + 15 + 4 * i
        n = page.evaluate("() => window.__ss.events.length")
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + 50, y0 + 50, steps=5)
        page.mouse.move(right - 30 - 3 * i, top + size - 30, steps=5)
        page.mouse.up()
        t0 = _last_input(page, "mouseup")
        pred = (f"() => {{ const ev = window.__ss.events.slice({n});"
                f"const c = ev.find(e => /ss-selection-count/.test(e.cls) && "
                f"/selected/.test(e.text || '') && e.p !== undefined);"
                f"const t = ev.find(e => e.table && e.p !== undefined);"
                f"return c && t ? Math.max(c.p, t.p) : false; }}")
        page.wait_for_function(pred, timeout=60_000, polling=50)
        out.append(page.evaluate(f"({pred})()") - t0)
        if i == 0:
            page.wait_for_timeout(800)
            page.screenshot(path=shots / "box-select.png", full_page=True)
        page.locator(".bk-btn", has_text="Clear selection").first.click()
        page.wait_for_timeout(1200)
    return out


def tab_revisits(page, repeats: int) -> dict:
    """Star ↔ Catalog, both already built: click → that tab's content laid out and painted."""
    out: dict[str, list[float]] = {"star": [], "catalog": []}
    for _ in range(repeats):
        for label, name, plot in (("Star", "star", ".ss-spectrum-plot"),
                                  ("Catalog", "catalog", ".bk-Figure")):
            t0 = _click_tab(page, label)
            t1 = page.wait_for_function(TAB_SHOWN, arg=[name, plot], timeout=TIMEOUT_MS,
                                        polling="raf").json_value()
            out[name].append(t1 - t0)
            page.wait_for_timeout(500)
    return out


#: After closing the load mode's sessions: how long the server's RSS is watched (Bokeh
#: discards a session whose websocket went after --unused-session-lifetime, 15 s, checked
#: every 17 s) and when it counts as settled (no change over this many seconds).
CLOSE_WATCH_S, SETTLED_S = 75, 20


def load(browser, url: str, stars: list[str], n: int, pid: int | None) -> dict:
    """N contexts opened at once (each on its own star): time-to-usable per session, the
    server's CPU seconds per session and its RSS before, at peak and after close."""
    load_start = [round(x, 2) for x in os.getloadavg()]
    rss_before, cpu0 = rss_mb(pid), bl.process_cpu_s(pid)
    peak = [rss_before or 0.0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(pid) or 0.0)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t_open = time.perf_counter()
    pages = [_new_page(browser) for _ in range(n)]
    for i, (_, page) in enumerate(pages):
        page.goto(f"{url}?star={_quoted(stars[(7 * i + 3) % len(stars)])}", wait_until="commit",
                  timeout=TIMEOUT_MS)
    usable, failed = [], 0
    for _, page in pages:
        try:
            usable.append(_wait_usable(page, 600_000) / 1000)
        except Exception:  # noqa: BLE001 — a session that never became usable is counted
            failed += 1
    all_usable_s = time.perf_counter() - t_open
    time.sleep(2)  # the sessions' deferred work (plots after the first paint)
    cpu1 = bl.process_cpu_s(pid)
    rss_open = rss_mb(pid)
    load_open = [round(x, 2) for x in os.getloadavg()]
    for ctx, _ in pages:
        ctx.close()
    stop.set()
    sampler.join()
    timeline = watch_rss(pid)
    rss_after = timeline[-1][1] if timeline else None
    cpu = (cpu1 - cpu0) / n if cpu0 is not None and cpu1 is not None else None
    return {"sessions": n, "failed": failed, "time_to_usable_s": summary(usable),
            "all_usable_after_s": round(all_usable_s, 1),
            "server_cpu_s_per_session": round(cpu, 2) if cpu is not None else None,
            "server_rss_mb": {"before": rss_before, "peak": peak[0] if pid else None,
                              "all_open": rss_open,
                              "after_close": rss_after,
                              "after_close_s": timeline[-1][0] if timeline else None,
                              "after_vs_before": (round(rss_after / rss_before - 1, 3)
                                                  if rss_before and rss_after else None),
                              "after_close_timeline": timeline},
            "machine_load_average": {"start": load_start, "all_open": load_open,
                                     "end": [round(x, 2) for x in os.getloadavg()]}}


def _has_spectrum(doc) -> bool:
    for m in doc.models:
        data = getattr(m, "data", None)
        if isinstance(data, dict) and {"wave", "flux", "mask"} <= set(data) and len(data["flux"]):
            return True
    return False


def load_clients(url: str, stars: list[str], n: int, pid: int | None) -> dict:
    """The load mode without browsers: N Bokeh client sessions (``bokeh.client.pull_session``,
    what a page's websocket asks for, no JavaScript run) opened at once, each on its own star.
    Time-to-usable is until its document arrived holding the star's spectrum: the server's
    side of a session alone (N chromium pages on the same 2 cores mostly measure chromium)."""
    import importlib

    import panel.models.location  # noqa: F401
    import panel.models.tabulator  # noqa: F401
    from bokeh.client import pull_session

    # the page's Panel and dashboard models (Location, Tabulator, the key listener …) must be
    # known here to read the documents (the repository's dashboard package, not bench/'s
    # dashboard.py beside this file)
    saved = list(sys.path)
    sys.path.insert(0, str(REPO))
    try:
        importlib.import_module("dashboard.app")
    finally:
        sys.path[:] = saved

    load_start = [round(x, 2) for x in os.getloadavg()]
    rss_before, cpu0 = rss_mb(pid), bl.process_cpu_s(pid)
    out: list = [None] * n

    def one(i: int) -> None:
        t0 = time.perf_counter()
        try:
            s = pull_session(url=url, arguments={"star": stars[(7 * i + 3) % len(stars)]})
            out[i] = (time.perf_counter() - t0, s, _has_spectrum(s.document))
        except Exception as exc:  # noqa: BLE001 — a session that failed is counted
            out[i] = (None, None, repr(exc))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    cpu1, rss_open = bl.process_cpu_s(pid), rss_mb(pid)
    usable = [r[0] for r in out if r and r[2] is True]
    for r in out:
        if r and r[1] is not None:
            r[1].close()
    timeline = watch_rss(pid)
    rss_after = timeline[-1][1] if timeline else None
    cpu = (cpu1 - cpu0) / n if cpu0 is not None and cpu1 is not None else None
    return {"sessions": n, "failed": n - len(usable),
            "problems": sorted({str(r[2]) for r in out if r and r[2] is not True})[:3],
            "time_to_usable_s": summary(usable),
            "server_cpu_s_per_session": round(cpu, 2) if cpu is not None else None,
            "server_rss_mb": {"before": rss_before, "all_open": rss_open,
                              "after_close": rss_after,
                              "after_close_s": timeline[-1][0] if timeline else None,
                              "after_vs_before": (round(rss_after / rss_before - 1, 3)
                                                  if rss_before and rss_after else None),
                              "after_close_timeline": timeline},
            "machine_load_average": {"start": load_start,
                                     "end": [round(x, 2) for x in os.getloadavg()]}}


def watch_rss(pid: int | None, watch_s: float = CLOSE_WATCH_S,
              settled_s: float = SETTLED_S) -> list[tuple[float, float]]:
    """[(seconds since close, RSS MB)] every 5 s until the RSS has not moved by 1 % for
    ``settled_s`` (after at least 35 s: a closed session lives that long) or ``watch_s``."""
    if pid is None:
        return []
    t0, out = time.perf_counter(), []
    while True:
        time.sleep(5)
        t, rss = round(time.perf_counter() - t0), rss_mb(pid)
        if rss is None:
            return out
        out.append((t, rss))
        old = [r for s, r in out if s <= t - settled_s]
        if t >= watch_s or (t >= 35 and old and abs(old[-1] - rss) <= 0.01 * rss):
            return out


def _table(res: dict) -> str:
    t = TARGETS
    lat = res.get("latent") or {}
    rows = [
        ("cold /app?star=ID → spectrum", res["cold_star_ms"], f"≤ {t['cold_star_spectrum_ms']} ms"),
        ("random star (r) → new spectrum", res["random_star_ms"], f"≤ {t['random_star_ms']} ms"),
        ("Catalog first visit → corner", res["catalog_first_corner_ms"],
         f"≤ {t['catalog_first_corner_ms']} ms"),
        ("box select → count + table", res["box_select_ms"], f"≤ {t['box_select_ms']} ms"),
        ("latent step → plot changed", lat.get("step_latency_ms", {}),
         f"≤ {t['latent_step_ms']} ms"),
        ("revisit Star tab → shown", res["tab_revisit_ms"]["star"], "instant"),
        ("revisit Catalog tab → shown", res["tab_revisit_ms"]["catalog"], "instant"),
    ]
    lines = [f"{'action':34s} {'median':>9s} {'p90':>9s} {'n':>3s}  target"]
    for name, s, target in rows:
        med = "-" if s.get("median") is None else f"{s['median']:.0f} ms"
        p90 = "-" if s.get("p90") is None else f"{s['p90']:.0f} ms"
        lines.append(f"{name:34s} {med:>9s} {p90:>9s} {s.get('n', 0):>3d}  {target}")
    drag = lat.get("drag", {})
    lines.append(f"{'latent drag redraws/s':34s} {drag.get('redraws_per_s', '-')!s:>9s} "
                 f"{'':>9s} {'':>3s}  ≥ {t['latent_drag_redraws_per_s']}")
    if res.get("load"):
        lines.append(_load_line(res["load"]))
    return "\n".join(lines)


def _load_line(ld: dict) -> str:
    u, t = ld["time_to_usable_s"], TARGETS
    rss = {k: v for k, v in ld["server_rss_mb"].items() if not k.endswith("timeline")}
    return (f"{ld['sessions']} sessions: usable median {u['median']} s, p90 {u['p90']} s, "
            f"max {u['max']} s (target ≤ {t['session_usable_s']} s); server CPU "
            f"{ld['server_cpu_s_per_session']} s/session (≤ 1 s); RSS MB {rss}; "
            f"failed {ld['failed']}")


def merge_corner(path: Path, result: dict) -> dict:
    """The JSON at ``path`` with its corner and box-select entries (and the machine's load
    during their run) replaced by ``result``'s; ``result`` alone when there is no such file."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    keys = ("catalog_first_corner_ms", "box_select_ms")
    new = {k: {**result[k], "when": result["when"], "store": result.get("store"),
               "machine_load_average": {
        "start": result["machine"]["load_average_start"],
        "end": result["machine"]["load_average_end"]}} for k in keys}
    return {**old, **new} if old else {**result, **new}


def corner_sessions(browser, url: str, stars: list[str], repeats: int, n_total: int,
                    shots: Path) -> dict:
    """The Catalog's first corner in ``repeats`` fresh sessions (the first one right after the
    server's start, as the first user after a restart meets it) and, in the first session,
    ``repeats`` box selects."""
    firsts, boxes, n_fig = [], [], 0
    for i in range(repeats):
        ctx, page = _new_page(browser)
        page.goto(f"{url}?star={_quoted(stars[(2 + i) % len(stars)])}", timeout=TIMEOUT_MS)
        _wait_usable(page)
        page.wait_for_timeout(500)
        t, n_fig = catalog_first(page)
        firsts.append(t)
        if i == 0:
            page.wait_for_timeout(1500)
            page.screenshot(path=shots / "catalog.png", full_page=True)
            boxes = box_select(page, repeats, n_total, shots)
        ctx.close()
    return {"catalog_first_corner_ms": {**summary(firsts), "panels": n_fig,
                                        "first_after_server_start": round(firsts[0], 1),
                                        "all": [round(t, 1) for t in firsts]},
            "box_select_ms": {**summary(boxes), "all": [round(t, 1) for t in boxes]}}


def merge_load(path: Path, result: dict, name: str = "load") -> dict:
    """The JSON at ``path`` with its ``name`` section replaced by ``result``'s ``load`` (the
    store and time of the load run go inside it); that alone when there is no such file."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    section = {**result["load"], "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "store": result.get("store")}
    return {**old, name: section} if old else {"bench": "browser", name: section}


def run(args) -> dict:
    from playwright.sync_api import sync_playwright

    from core.store import SpectraStore

    load_start = [round(x, 2) for x in os.getloadavg()]
    shots = Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        tmp = Path(tmp)
        store = Path(args.store) if args.store else _mock_store(tmp, args.n_stars)
        ids = SpectraStore.open(store).catalog["APOGEE_ID"].astype(str).tolist()
        stars = ids[11::max(len(ids) // 50, 1)][:50]
        if args.url:
            proc, fh, url, pid = None, None, args.url, args.server_pid
        else:
            from core.models import find

            proc, fh, url = bl._serve(store, Path(find("vae", None)), tmp / "serve-home",
                                      tmp / "server.log")
            pid = proc.pid
        res: dict = {}
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=bl.CHROMIUM, args=bl.CHROMIUM_ARGS)
                # one page first: warms the server's per-process caches, as a served app is
                ctx, page = _new_page(browser)
                page.goto(f"{url}?star={_quoted(stars[-1])}", timeout=TIMEOUT_MS)
                _wait_usable(page)
                ctx.close()
                # the server's memory with one session served (the load mode's "before" comes
                # after all the sessions this bench opened earlier)
                res["server_rss_mb_after_first_session"] = rss_mb(pid)
                if args.load_only:
                    res["load"] = (load_clients(url, stars, args.sessions, pid)
                                   if args.clients == "bokeh" else
                                   load(browser, url, stars, args.sessions, pid))
                    browser.close()
                    return {"store": _store_note(args, store, ids), **res}
                if args.corner_only:
                    res.update(corner_sessions(browser, url, stars, args.repeats, len(ids),
                                               shots))
                    browser.close()
                    return _result(args, load_start, store, ids, res)
                res["cold_star_ms"] = summary(cold_star(browser, url, stars, args.repeats, shots))

                ctx, page = _new_page(browser)
                page.goto(f"{url}?star={_quoted(stars[1])}", timeout=TIMEOUT_MS)
                _wait_usable(page)
                res["random_star_ms"] = summary(random_star(page, args.repeats))
                first, n_fig = catalog_first(page)
                res["catalog_first_corner_ms"] = {**summary([first]), "panels": n_fig}
                page.wait_for_timeout(1500)
                page.screenshot(path=shots / "catalog.png", full_page=True)
                res["box_select_ms"] = summary(box_select(page, args.repeats, len(ids), shots))
                revisits = tab_revisits(page, args.repeats)
                res["tab_revisit_ms"] = {k: summary(v) for k, v in revisits.items()}
                ctx.close()

                # Catalog first visit again, in fresh sessions (at most 3 in all: each costs a
                # session's whole corner build)
                more = []
                for _ in range(min(args.repeats, 3) - 1):
                    ctx, page = _new_page(browser)
                    page.goto(f"{url}?star={_quoted(stars[2])}", timeout=TIMEOUT_MS)
                    _wait_usable(page)
                    page.wait_for_timeout(500)
                    more.append(catalog_first(page)[0])
                    ctx.close()
                res["catalog_first_corner_ms"] = {
                    **summary([first, *more]), "panels": n_fig}

                ctx, page = _new_page(browser)
                bl.open_latent(page, url, stars[3])
                res["latent"] = bl.measure(page, steps=args.latent_steps, drag_s=3.0,
                                           server_pid=pid)
                page.screenshot(path=shots / "latent.png", full_page=True)
                ctx.close()

                if not args.skip_load:
                    res["load"] = load(browser, url, stars, args.sessions, pid)
                browser.close()
        finally:
            bl.stop_server(proc, fh)
    return _result(args, load_start, store, ids, res)


def _result(args, load_start, store, ids, res: dict) -> dict:
    return {
        "bench": "browser", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_start": load_start,
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "store": _store_note(args, store, ids),
        "served_by": args.url or "panel serve dashboard/app.py (started by this bench)",
        "repeats": args.repeats, "viewport": VIEWPORT, "drawn_means": DRAWN,
        "targets": TARGETS, **res,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not Path(bl.CHROMIUM).exists():
        print(f"skipped: {bl.CHROMIUM} is absent")
        return {}
    if not args.store:
        print(f"no --store: building a {args.n_stars}-star mock (stellarscope mock) under a "
              "temporary STELLARSCOPE_HOME")
    result = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.load_only:
        section = "load_bokeh_clients" if args.clients == "bokeh" else "load"
        result = merge_load(Path(args.out), result, section)
        print(_load_line(result[section]))
    elif args.corner_only:
        result = merge_corner(Path(args.out), result)
        for k in ("catalog_first_corner_ms", "box_select_ms"):
            print(k, {n: v for n, v in result[k].items() if n != "machine_load_average"})
    else:
        print(_table(result))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    return result


if __name__ == "__main__":
    main()
