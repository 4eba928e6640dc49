"""Live latent sliders as the user sees them: chromium (Playwright) against a served app.

Serves ``dashboard/app.py`` on a free localhost port (a mock store built here unless
``--store`` names one; the demo VAE unless ``--model``), opens the Latent tab of a star and
times, in the browser itself (``performance.now()``):

* **step latency** — a key press on a latent slider's handle (one 0.01 step) → the decoded
  spectrum's data source updated and the next frame painted (median, p90 over ``--steps``);
* **drag** — the mouse dragged across a slider for ``--drag-s`` seconds at 60 moves/s: plot
  updates per second while dragging, and the settle latency (last move → last update painted).

Writes ``bench/results/browser_latent.json``; targets (issue 13): step ≤ 150 ms, ≥ 10
redraws/s while dragging.  The figures depend on the machine's load (recorded with them):
the page's own busy time per redraw (long tasks) says how much is the browser's drawing.
Needs Debian chromium (/usr/bin/chromium) and Playwright.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "browser_latent.json"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]

# records every update of the decoded spectrum's source and when the frame after it painted
INSTRUMENT = """() => {
  const docs = Bokeh.documents;
  let src = null;
  for (const d of docs) { src = d.get_model_by_name('ss-decoded-source'); if (src) break; }
  if (!src) return false;
  const ss = window.__ss = {updates: [], keys: [], moves: []};
  // one entry per painted frame: the columns of one update arrive as separate events
  let pending = null;
  const rec = () => {
    if (pending !== null) return;
    pending = performance.now();
    requestAnimationFrame(() => { ss.updates.push([pending, performance.now()]); pending = null; });
  };
  src.properties.data.change.connect(rec);
  src.streaming.connect(rec);
  src.patching.connect(rec);
  // main-thread tasks over 50 ms: how long the page itself is busy per redraw
  ss.longtasks = [];
  new PerformanceObserver(l => { for (const e of l.getEntries()) ss.longtasks.push(
    [e.startTime, e.duration]); }).observe({type: 'longtask'});
  document.addEventListener('keydown', () => ss.keys.push(performance.now()), true);
  document.addEventListener('mousemove', () => ss.moves.push(performance.now()), true);
  return true;
}"""


# drags a noUiSlider handle back and forth across its track for ms milliseconds, 60 moves/s
DRAG = """async ([handle, ms]) => {
  const track = handle.closest('.noUi-target').getBoundingClientRect();
  const box = handle.getBoundingClientRect();
  const y = box.top + box.height / 2, lo = track.left + 4, hi = track.right - 4;
  // noUiSlider listens to mouse events where navigator.pointerEnabled is not set (Chrome)
  const ev = (type, x) => handle.dispatchEvent(new MouseEvent(type, {
    bubbles: true, composed: true, cancelable: true, clientX: x, clientY: y,
    buttons: type === 'mouseup' ? 0 : 1, button: 0, view: window}));
  ev('mousedown', box.left + box.width / 2);
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < ms) {
    const phase = 4 * (performance.now() - t0) / ms;
    const frac = Math.floor(phase) % 2 === 0 ? phase % 1 : 1 - phase % 1;
    ev('mousemove', lo + frac * (hi - lo));
    n += 1;
    await new Promise(r => setTimeout(r, 1000 / 60));
  }
  ev('mouseup', lo);
  return n;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _store_and_model(args, tmp: Path) -> tuple[Path, Path]:
    from core.inference.vae import infer_store
    from core.models import find

    model = Path(args.model) if args.model else Path(find("vae", None))
    if args.store:
        return Path(args.store), model
    from core.mock import generate_mock_survey

    store = generate_mock_survey(tmp / "mock", n_stars=args.n_stars, seed=7, progress=False)
    infer_store(str(store), model, progress=False)
    return Path(store), model


def _serve(store: Path, model: Path, home: Path, log: Path):
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "STELLARSCOPE_STORE": str(store),
           "STELLARSCOPE_MODELS": str(model), "STELLARSCOPE_HOME": str(home)}
    fh = open(log, "w")  # noqa: SIM115 — closed with the server
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve",
                             str(REPO / "dashboard" / "app.py"), "--port", str(port),
                             "--address", "127.0.0.1"], cwd=REPO, env=env, stdout=fh,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/app"
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=300) as r:
                if r.status == 200:
                    return proc, fh, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the dashboard did not come up in 600 s")


def stop_server(proc, log_handle) -> None:
    """Stop a server started by :func:`_serve` (if any) and close its log."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log_handle.close()


def _pct(values, q) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def open_latent(page, url: str, star: str, timeout_ms: int = 180_000):
    """The Latent tab of ``star`` with its first decode drawn and the directions shown."""
    page.goto(f"{url}?star={star.replace('+', '%2B')}&tab=latent", timeout=timeout_ms)
    page.wait_for_selector(".ss-decoded-plot", timeout=timeout_ms)
    # Panel draws its widgets in shadow roots: Playwright's locators reach into them
    page.locator(".ss-decode-readout").filter(has_text="Decode #").wait_for(timeout=timeout_ms)
    page.locator(".ss-directions-note").filter(
        has_text=re.compile("Flux change|Could not")).wait_for(timeout=timeout_ms)
    page.wait_for_timeout(1000)


def process_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) a process has used so far (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _metrics(cdp) -> dict:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def measure(page, steps: int = 30, drag_s: float = 4.0, handle_index: int = 3,
            server_pid: int | None = None) -> dict:
    """Step latency and drag redraw rate on the slider handle ``handle_index`` (3: the first
    free latent, after the three label sliders).

    Besides wall-clock figures, the CPU each side spends per redraw while dragging: the page's
    main thread (Chrome's ThreadTime metric) and the server process (/proc), so what the
    machine could do when idle is estimated as 1000 / the larger of the two."""
    if not page.evaluate(INSTRUMENT):
        raise RuntimeError("the decoded spectrum's data source is not on the page")
    handle = page.locator(".noUi-handle").nth(handle_index)
    handle.focus()
    latencies = []
    for i in range(steps):
        n = page.evaluate("() => window.__ss.updates.length")
        handle.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
        page.wait_for_function(f"() => window.__ss.updates.length > {n}", timeout=10_000)
        key = page.evaluate("() => window.__ss.keys[window.__ss.keys.length - 1]")
        painted = page.evaluate(f"() => window.__ss.updates[{n}][1]")
        latencies.append(painted - key)
        page.wait_for_timeout(150)  # a user's pause between steps; lets the strip redraw
    page.wait_for_timeout(1000)

    # the drag runs in the page (pointer events at 60 Hz from the browser's own timer), so the
    # input rate is a user's, not the rate at which Playwright can send moves on a busy machine
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    n_before = page.evaluate("() => window.__ss.updates.length")
    m0, c0 = _metrics(cdp), process_cpu_s(server_pid)
    n_moves = page.evaluate(DRAG, [handle.element_handle(), int(drag_s * 1000)])
    m1, c1 = _metrics(cdp), process_cpu_s(server_pid)
    page.wait_for_timeout(1500)
    ss = page.evaluate("() => window.__ss")
    moves = ss["moves"]
    drag_moves = moves[-n_moves:]
    t0, t1 = drag_moves[0], drag_moves[-1]
    during = [u for u in ss["updates"][n_before:] if t0 <= u[0] <= t1 + 1]
    after = ss["updates"][n_before:]
    gaps = np.diff([u[1] for u in during]) if len(during) > 1 else np.array([])
    busy = [d for t, d in ss["longtasks"] if t0 <= t <= t1]
    n_up = max(len(during), 1)
    page_cpu = 1000 * (m1.get("ThreadTime", 0) - m0.get("ThreadTime", 0)) / n_up
    server_cpu = 1000 * (c1 - c0) / n_up if c0 is not None and c1 is not None else None
    per_redraw = {
        "page_main_thread_cpu_ms": round(page_cpu, 1),
        "page_layout_ms": round(1000 * (m1.get("LayoutDuration", 0)
                                        - m0.get("LayoutDuration", 0)) / n_up, 1),
        "page_style_ms": round(1000 * (m1.get("RecalcStyleDuration", 0)
                                       - m0.get("RecalcStyleDuration", 0)) / n_up, 1),
        "page_script_ms": round(1000 * (m1.get("ScriptDuration", 0)
                                        - m0.get("ScriptDuration", 0)) / n_up, 1),
        "server_cpu_ms": round(server_cpu, 1) if server_cpu is not None else None,
    }
    worst = max(page_cpu, server_cpu or 0.0)
    return {
        "cpu_per_redraw_while_dragging": per_redraw,
        "idle_estimate_redraws_per_s": round(1000 / worst, 1) if worst > 0 else None,
        "step_latency_ms": {"median": _pct(latencies, 50), "p90": _pct(latencies, 90),
                            "max": round(float(max(latencies)), 1), "n": len(latencies)},
        "drag": {"seconds": round((t1 - t0) / 1000, 2), "mouse_moves": len(drag_moves),
                 "updates": len(during),
                 "redraws_per_s": round(len(during) / max((t1 - t0) / 1000, 1e-3), 1),
                 "gap_between_redraws_ms": {"median": _pct(gaps, 50), "p90": _pct(gaps, 90)},
                 "settle_ms": round(after[-1][1] - t1, 1) if after else None,
                 "page_busy_fraction": round(sum(busy) / max(t1 - t0, 1e-3), 2),
                 "long_task_ms": {"median": _pct(busy, 50), "p90": _pct(busy, 90)}},
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="serve this store (default: a fresh mock of --n-stars)")
    ap.add_argument("--model", help="VAE model directory (default: the one core.models.find picks)")
    ap.add_argument("--n-stars", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--drag-s", type=float, default=4.0)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--screenshot", help="save a screenshot of the Latent tab here")
    ap.add_argument("--server-pid", type=int, help="with --url: the server's process id, for "
                                                   "its CPU time per redraw")
    ap.add_argument("--url", help="measure an app already served here (with --store: its "
                                  "store, for the star's ID)")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"skipped: {CHROMIUM} is absent")
        return {}
    from playwright.sync_api import sync_playwright

    load_before = round(os.getloadavg()[0], 2)

    with tempfile.TemporaryDirectory(prefix="bench-latent-") as tmp:
        tmp = Path(tmp)
        store, model = _store_and_model(args, tmp)
        from core.store import SpectraStore

        star = str(SpectraStore.open(store).catalog["APOGEE_ID"].iloc[5])
        proc, fh, url = ((None, None, args.url) if args.url else
                         _serve(store, model, tmp / "home", tmp / "server.log"))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                t = time.perf_counter()
                open_latent(page, url, star)
                opened = time.perf_counter() - t
                res = measure(page, args.steps, args.drag_s, server_pid=(
                    proc.pid if proc is not None else args.server_pid))
                if args.screenshot:
                    page.screenshot(path=args.screenshot, full_page=True)
                browser.close()
        finally:
            stop_server(proc, fh)
    result = {
        "bench": "browser_latent", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    # the figures depend on what else runs: the 1-min load average around them
                    "load_average_before": load_before,
                    "load_average_after": round(os.getloadavg()[0], 2)},
        "store": str(store) if args.store else f"fresh mock, {args.n_stars} stars",
        "model": str(model), "star": star, "open_latent_tab_s": round(opened, 2), **res,
        "targets": {"step_latency_ms_median": 150, "redraws_per_s": 10},
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
