"""Dashboard latency, measured on the server side (and optionally in a browser).

* star load: focusing a store star, i.e. reading its spectrum, running the VAE on it
  (encode + reconstruction + χ²) and swapping the Star view's plot data, as one click does
  (also timed with the Latent tab shown, which adds its decode and sensitivity strip);
* latent decode + redraw: one slider step in the Latent view (decode + plot data swap);
* corner plot over 733,901 synthetic catalog rows (DR17 allStar size), 6 columns: the
  datashader aggregation of the 15 panels + 6 histograms, the whole server-side build
  (aggregation + Bokeh models), and a box- and a lasso-selection update (a 20-vertex lasso;
  the polygon test alone also with 200 vertices, as a hand-drawn lasso has); next to
  ``corner.corner`` (matplotlib) drawing the same rows and columns, the tool a user would
  otherwise reach for;
* with ``--browser``: slider-to-screen round trip in headless chromium (key press on a
  latent slider → the decode readout, sent in the same patch as the plot data, changes).

Prints a summary and writes JSON (default bench/results/dashboard.json).  Run:
``python bench/dashboard.py [--store DIR] [--vae DIR] [--browser]``; ``--only-selection`` times
just the box and lasso selections and updates the ``corner`` entry of an existing JSON;
``--only-views`` times just the Star, Latent and Fit views (star load, the Star view's redraw
alone, slider steps, fits) and updates those entries.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CATALOG_ROWS = 733_901  # DR17 allStar
CORNER_COLS = ["TEFF", "LOGG", "FE_H", "MG_FE", "SNR", "VAE_CHI2"]
LASSO_VERTICES = 20
TARGETS_MS = {"star_load": 200, "latent_decode_redraw": 50, "browser_round_trip": 150}


def timed(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t0))
    return out


def summary(ms: list[float]) -> dict:
    return {"median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2), "n": len(ms)}


# -- data --------------------------------------------------------------------------------------


def synthetic_catalog(n: int = CATALOG_ROWS, seed: int = 0) -> pd.DataFrame:
    """Catalog-like columns: giant branch + red clump + dwarfs, a metal-poor tail, and the
    α-bimodality."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, n, p=[0.55, 0.25, 0.20])
    teff = np.where(kind == 0, rng.normal(4600, 350, n),
                    np.where(kind == 1, rng.normal(4750, 80, n), rng.normal(5600, 450, n)))
    logg = np.where(kind == 0, 2.4 + (teff - 4600) / 350 * 0.7 + rng.normal(0, 0.25, n),
                    np.where(kind == 1, rng.normal(2.45, 0.08, n), rng.normal(4.3, 0.25, n)))
    feh = np.concatenate([rng.normal(-0.1, 0.25, n - n // 10), rng.normal(-0.9, 0.5, n // 10)])
    rng.shuffle(feh)
    thick = rng.random(n) < 0.3
    mgfe = np.where(thick, 0.28, 0.05) - 0.1 * np.clip(feh, -1, 0.4) + rng.normal(0, 0.04, n)
    snr = rng.lognormal(np.log(150), 0.6, n)
    chi2 = rng.gamma(9, 1 / 8, n)
    return pd.DataFrame({"TEFF": teff, "LOGG": logg, "FE_H": feh, "MG_FE": mgfe, "SNR": snr,
                         "VAE_CHI2": chi2}).astype(np.float32)


def lasso_polygon(n_vertices: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A lobed loop around the red giant branch and clump in (TEFF, LOGG), as a hand draws it."""
    t = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    r = 1 + 0.25 * np.sin(3 * t)
    return 4700 + shift + 450 * r * np.cos(t), 2.6 + 0.9 * r * np.sin(t)


def bench_store(path: Path | None, workdir: Path, n_stars: int) -> Path:
    if path is not None:
        return path
    from core.mock import generate_mock_survey

    print(f"building a {n_stars}-star mock survey for the bench …", file=sys.stderr)
    return generate_mock_survey(workdir / "mock", n_stars=n_stars, seed=11, progress=False)


def bench_vae(path: Path | None, store: Path, workdir: Path) -> tuple[Path, str]:
    """A VAE to time: the one given, the shipped demo, or a quickly trained one of the same
    architecture (latency depends on the architecture, not on how well it is trained)."""
    from core.paths import SHIPPED_MODELS, home

    for cand, what in ((path, "given"), (home() / "models" / "vae-demo", "home demo"),
                       (SHIPPED_MODELS / "vae-demo", "shipped demo")):
        if cand is not None and (Path(cand) / "config.json").is_file():
            try:
                from core.inference.vae import VAEPredictor

                VAEPredictor.load(cand)
                return Path(cand), what
            except Exception as exc:  # stale weights of an older architecture: train instead
                print(f"skipping {cand}: {exc}", file=sys.stderr)
    from core.train.vae import VAETrainSettings, train_vae

    print("training a 1-epoch VAE (compact preset) to time …", file=sys.stderr)
    out = workdir / "vae"
    train_vae(VAETrainSettings(store=str(store), out=str(out), epochs=1, batch_size=128,
                               device="cpu", progress=False, checkpoint_every=100),
              overwrite=True)
    return out, "trained for the bench (1 epoch, compact preset)"


# -- measurements -----------------------------------------------------------------------------


def measure_views(store_path: Path, vae_dir: Path, repeats: int) -> dict:
    from core.inference.vae import VAEPredictor
    from core.store import SpectraStore
    from dashboard.state import AppContext, Session
    from dashboard.views.latent import LatentView
    from dashboard.views.star import StarView

    store = SpectraStore.open(store_path)
    vae = VAEPredictor.load(vae_dir)
    session = Session(context=AppContext(store=store, models={"vae": vae}))
    star_view = StarView(focus=session.focus, context=session.context)
    # as in the app: the Latent view decodes only while its tab is shown
    latent_view = LatentView(focus=session.focus, context=session.context, throttle_s=0,
                             active=False)
    star_view.overlays = []
    ids = store.catalog["APOGEE_ID"].astype(str).to_numpy()
    rng = np.random.default_rng(5)
    picks = iter(rng.choice(ids, size=2 * repeats + 10, replace=len(ids) < 2 * repeats + 10))

    def load_next():
        session.focus.star_id = next(picks)

    load = timed(load_next, repeats, warmup=2)
    # the Star view's redraw alone (figure sources, overlays, tables), two loaded stars in turn
    shown = []
    for _ in range(2):
        load_next()
        f = session.focus
        shown.append({"spectrum": f.spectrum, "models": dict(f.models),
                      "outputs": dict(f.outputs), "encoding": f.encoding})
    turn = iter(range(10**9))
    redraw = timed(lambda: session.focus.param.update(**shown[next(turn) % 2]), repeats)
    spec = session.focus.spectrum
    read_only = timed(lambda: store.spectrum(int(rng.integers(len(store)))), repeats)
    encode = timed(lambda: vae.encode(spec, labels=session.focus.encoding["labels"]), repeats)
    star_view.overlays = ["VAE reconstruction"]
    load_overlay = timed(load_next, max(5, repeats // 3))
    latent_view.active = True
    load_latent_tab = timed(load_next, max(5, repeats // 3))

    slider = latent_view.z_sliders[0]
    values = iter(np.tile(np.linspace(-2, 2, 41), 10))

    def step():
        slider.value = float(next(values))

    steps = timed(step, repeats * 2, warmup=3)
    z, y = latent_view.point
    decode_only = timed(lambda: vae.decode(z, y), repeats * 2)
    sens = timed(lambda: latent_view._update_sensitivity(), max(5, repeats // 3))
    return {
        "store": str(store_path), "n_stars": len(store), "vae": str(vae_dir),
        "n_latent": vae.n_latent,
        "star_load": summary(load),
        "star_view_redraw_only": summary(redraw),
        "star_load_with_overlay_and_residuals": summary(load_overlay),
        "star_load_on_latent_tab": summary(load_latent_tab),
        "store_read_only": summary(read_only),
        "vae_encode_only": summary(encode),
        "latent_decode_redraw": summary(steps),
        "latent_decode_only": summary(decode_only),
        "sensitivity_strip_update": summary(sens),
    }


def measure_fit_view(store_path: Path, repeats: int) -> dict:
    """The Fit view with the shipped emulator: Fit, a slider step, an element fit, a mask drag."""
    from core.errors import StellarscopeError
    from core.inference.emulator import EmulatorPredictor
    from core.models import find
    from core.store import SpectraStore
    from dashboard.state import AppContext, Session
    from dashboard.views.fit import FitView

    store = SpectraStore.open(store_path)
    try:  # the shipped (or home) demo emulator, as the app's model slot would hold it
        where = find("emulator")
        emulator = EmulatorPredictor.load(where)
    except StellarscopeError as exc:
        return {"skipped": str(exc)}
    session = Session(context=AppContext(store=store, models={"emulator": emulator}))
    session.context.slot("emulator").where = str(where)
    view = FitView(focus=session.focus, context=session.context)
    rows = iter(np.random.default_rng(9).choice(len(store), size=repeats + 2, replace=False))

    def fit_next():
        session.select_star(int(next(rows)))
        view.fit(sync=True)

    fits = timed(fit_next, repeats, warmup=1)
    slider = view.sliders["TEFF"]
    values = iter(np.tile(np.linspace(slider.start, slider.end, 41), 10))

    def step():
        slider.value = float(next(values))
        view._draw_slider_model()  # what the throttle runs; timed without its 50 ms wait

    steps = timed(step, repeats * 2, warmup=3)
    element = timed(lambda: view.fit_element("Mg", sync=True), max(3, repeats // 3))
    lam = view.spectrum.wavelength
    drag = timed(lambda: view.mask_range(lam[1000], lam[1300]), repeats)
    return {"emulator": view.model_dir, "fit_star": summary(fits),
            "slider_step_redraw": summary(steps), "element_fit_mg": summary(element),
            "mask_drag": summary(drag)}


def measure_corner(frame: pd.DataFrame, repeats: int) -> dict:
    from dashboard import corner
    from dashboard.figures.corner_plot import CornerPlot

    ranges = {c: corner.finite_range(frame[c].to_numpy()) for c in CORNER_COLS}
    corner.corner_aggregates(frame.head(1000), CORNER_COLS, ranges)  # compile numba kernels
    agg = timed(lambda: corner.corner_aggregates(frame, CORNER_COLS, ranges), repeats)
    build = timed(lambda: CornerPlot(frame, CORNER_COLS, None, "eq_hist", lambda *a: None,
                                     lambda *a: None), max(3, repeats // 2), warmup=1)
    return {"rows": len(frame), "columns": CORNER_COLS, "panels": 15, "histograms": 6,
            "panel_bins": corner.PANEL_BINS,
            "aggregation": summary(agg), "server_build_with_bokeh_models": summary(build),
            **measure_selection(frame, repeats)}


def measure_selection(frame: pd.DataFrame, repeats: int) -> dict:
    """A box and a lasso brushed in the (TEFF, LOGG) panel: finding the rows on the server and
    re-aggregating every panel's selection layer, as one brush in the Catalog view does."""
    from dashboard import corner
    from dashboard.figures.corner_plot import CornerPlot

    plot = CornerPlot(frame, CORNER_COLS, None, "eq_hist", lambda *a: None, lambda *a: None)
    boxes = iter([(4200 + 10 * i, 5000, 1.5, 3.2) for i in range(repeats + 2)])

    def brush():
        b = next(boxes)
        rows = np.flatnonzero(corner.box_mask(frame, "TEFF", b[:2], "LOGG", b[2:]))
        plot.set_selection(rows, ("TEFF", "LOGG"), b)

    # each lasso a little to the side of the last, so no selection repeats itself
    lassos = iter([lasso_polygon(LASSO_VERTICES, 10.0 * i) for i in range(repeats + 2)])

    def lasso():
        xs, ys = next(lassos)
        rows = np.flatnonzero(corner.polygon_mask(frame, "TEFF", "LOGG", xs, ys))
        plot.set_selection(rows, ("TEFF", "LOGG"), lasso=(xs, ys))

    def lasso_mask(n_vertices: int) -> dict:
        xs, ys = lasso_polygon(n_vertices)
        return summary(timed(lambda: corner.polygon_mask(frame, "TEFF", "LOGG", xs, ys),
                             repeats))

    xs, ys = lasso_polygon(LASSO_VERTICES)
    return {"box_selection_update": summary(timed(brush, repeats)),
            "lasso_selection_update": summary(timed(lasso, repeats)),
            "lasso_vertices": LASSO_VERTICES,
            "lasso_selected_rows": int(corner.polygon_mask(frame, "TEFF", "LOGG", xs, ys).sum()),
            "lasso_mask_only": lasso_mask(LASSO_VERTICES),
            "lasso_mask_only_200_vertices": lasso_mask(200)}


def selection_only(args) -> int:
    """Time just the box and lasso selections; update the ``corner`` entry of ``args.out``."""
    import json

    from core.store.atomic import write_json_atomic

    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    corner = result.setdefault("corner", {"rows": args.rows})
    if corner.get("rows") != args.rows:
        print(f"{args.out} holds a {corner.get('rows')}-row corner bench, not {args.rows} rows: "
              "pass another --out", file=sys.stderr)
        return 1
    corner.update(measure_selection(synthetic_catalog(args.rows), max(5, args.repeats // 3)))
    write_json_atomic(args.out, result)
    print(f"selection over {args.rows:,} rows: box {corner['box_selection_update']['median_ms']} "
          f"ms, {LASSO_VERTICES}-vertex lasso {corner['lasso_selection_update']['median_ms']} ms "
          f"(polygon test alone {corner['lasso_mask_only']['median_ms']} ms, with 200 vertices "
          f"{corner['lasso_mask_only_200_vertices']['median_ms']} ms)")
    print(f"wrote {args.out}")
    return 0


def fit_view_only(args) -> int:
    """Time just the Fit view; update the ``fit_view`` entry of ``args.out``."""
    import json

    from core.store.atomic import write_json_atomic

    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="stellarscope-bench-") as tmp:
        store = bench_store(args.store, Path(tmp), args.n_stars)
        result["fit_view"] = fit = measure_fit_view(store, max(5, args.repeats // 3))
    write_json_atomic(args.out, result)
    print_fit_view(fit)
    print(f"wrote {args.out}")
    return 0


def print_fit_view(fit: dict) -> None:
    if "skipped" in fit:
        print(f"Fit view not timed: {fit['skipped']}")
        return
    print(f"Fit view: Fit {fit['fit_star']['median_ms']} ms, slider step "
          f"{fit['slider_step_redraw']['median_ms']} ms, Mg element fit "
          f"{fit['element_fit_mg']['median_ms']} ms, mask drag {fit['mask_drag']['median_ms']} ms "
          "(medians)")


def measure_corner_py(frame: pd.DataFrame, runs: int) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import corner as corner_py
    import matplotlib.pyplot as plt

    data = frame[CORNER_COLS].to_numpy(dtype=np.float64)

    def draw():
        fig = corner_py.corner(data, labels=CORNER_COLS)
        fig.canvas.draw()
        plt.close(fig)

    ms = timed(draw, runs, warmup=0)
    return {"version": corner_py.__version__, "rows": len(frame), **summary(ms)}


def measure_browser(store_path: Path, vae_dir: Path, samples: int) -> dict:
    """Key press on a latent slider → the readout (same patch as the plot data) changes."""
    import socket
    import urllib.request

    from playwright.sync_api import sync_playwright

    from core.store import SpectraStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, STELLARSCOPE_STORE=str(store_path), STELLARSCOPE_MODELS=str(vae_dir))
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", str(ROOT / "dashboard/app.py"),
                             "--port", str(port), "--address", "127.0.0.1", "--warm"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    star = str(SpectraStore.open(store_path).catalog["APOGEE_ID"].iloc[0]).replace("+", "%2B")
    url = f"http://127.0.0.1:{port}/app"
    try:
        for _ in range(480):
            try:
                urllib.request.urlopen(url, timeout=30)
                break
            except OSError:
                time.sleep(0.5)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{url}?star={star}&tab=1", timeout=180_000)
            readout = page.locator(".ss-decode-readout")
            readout.get_by_text("Decode #").wait_for(timeout=180_000)
            handle = page.locator(".noUi-handle").nth(3)
            handle.focus()
            page.wait_for_timeout(1000)
            # Panel renders into nested shadow roots: find the readout once, then poll its text
            page.evaluate("""() => {
                const find = (root) => {
                    for (const el of root.querySelectorAll('*')) {
                        if (el.classList?.contains('ss-decode-readout')) return el;
                        const hit = el.shadowRoot && find(el.shadowRoot);
                        if (hit) return hit;
                    }
                    return null;
                };
                window.__readout = find(document);
            }""")
            text = "() => window.__readout?.shadowRoot?.textContent ?? ''"
            ms = []
            for i in range(samples + 3):
                before = page.evaluate(text)
                t0 = time.perf_counter()
                handle.press("ArrowRight" if (i // 20) % 2 == 0 else "ArrowLeft")
                page.wait_for_function(f"(b) => ({text})() !== b", arg=before, timeout=30_000,
                                       polling="raf")
                if i >= 3:
                    ms.append(1000 * (time.perf_counter() - t0))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"what": "key press on a latent slider → decode readout updated (headless chromium, "
                    "same machine)", **summary(ms)}


def views_only(args) -> int:
    """Time the Star, Latent and Fit views only; update those entries of ``args.out``."""
    import json

    from core.store.atomic import write_json_atomic

    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="stellarscope-bench-") as tmp:
        store = bench_store(args.store, Path(tmp), args.n_stars)
        vae, result["vae_origin"] = bench_vae(args.vae, store, Path(tmp))
        result["views"] = v = measure_views(store, vae, args.repeats)
        result["fit_view"] = fit = measure_fit_view(store, max(5, args.repeats // 3))
    write_json_atomic(args.out, result)
    print_views(v)
    print_fit_view(fit)
    print(f"wrote {args.out}")
    return 0


def print_views(v: dict) -> None:
    print(f"star load (read + VAE + plot swap): {v['star_load']['median_ms']} ms median "
          f"(target < {TARGETS_MS['star_load']}); Star view redraw alone "
          f"{v['star_view_redraw_only']['median_ms']} ms")
    print(f"latent slider step (decode + redraw): {v['latent_decode_redraw']['median_ms']} ms "
          f"median (target < {TARGETS_MS['latent_decode_redraw']})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, default=None, help="store to time (default: a new "
                    "2000-star mock survey)")
    ap.add_argument("--vae", type=Path, default=None, help="VAE model directory")
    ap.add_argument("--n-stars", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=CATALOG_ROWS)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--corner-runs", type=int, default=2, help="corner.py runs (each ~10 s)")
    ap.add_argument("--browser", action="store_true", help="also time the browser round trip")
    ap.add_argument("--only-selection", action="store_true", help="time only the box and "
                    "lasso selections, updating the corner entry of --out")
    ap.add_argument("--only-fit-view", action="store_true", help="time only the Fit view and "
                    "update that entry of --out")
    ap.add_argument("--only-views", action="store_true", help="time only the Star/Latent views "
                    "(star load, redraw, slider) and the Fit view, updating those entries of --out")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard.json")
    args = ap.parse_args(argv)
    if args.only_selection:
        return selection_only(args)
    if args.only_fit_view:
        return fit_view_only(args)
    if args.only_views:
        return views_only(args)

    import torch

    from core.store.atomic import write_json_atomic

    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version()},
              "targets_ms": TARGETS_MS}
    with tempfile.TemporaryDirectory(prefix="stellarscope-bench-") as tmp:
        store = bench_store(args.store, Path(tmp), args.n_stars)
        vae, vae_origin = bench_vae(args.vae, store, Path(tmp))
        result["vae_origin"] = vae_origin
        result["views"] = measure_views(store, vae, args.repeats)
        result["fit_view"] = measure_fit_view(store, max(5, args.repeats // 3))
        frame = synthetic_catalog(args.rows)
        result["corner"] = measure_corner(frame, max(5, args.repeats // 3))
        result["corner_py"] = measure_corner_py(frame, args.corner_runs)
        result["corner_speedup_vs_corner_py"] = {
            "aggregation": round(result["corner_py"]["median_ms"]
                                 / result["corner"]["aggregation"]["median_ms"], 1),
            "server_build_with_bokeh_models": round(
                result["corner_py"]["median_ms"]
                / result["corner"]["server_build_with_bokeh_models"]["median_ms"], 1)}
        if args.browser:
            result["browser_round_trip"] = measure_browser(store, vae, args.repeats)
    write_json_atomic(args.out, result)

    v, c = result["views"], result["corner"]
    print_views(v)
    print(f"corner {len(CORNER_COLS)} cols × {c['rows']:,} rows: aggregation "
          f"{c['aggregation']['median_ms']} ms, full server build "
          f"{c['server_build_with_bokeh_models']['median_ms']} ms, box selection "
          f"{c['box_selection_update']['median_ms']} ms, {LASSO_VERTICES}-vertex lasso "
          f"{c['lasso_selection_update']['median_ms']} ms; corner.py "
          f"{result['corner_py']['median_ms']} ms → ×{result['corner_speedup_vs_corner_py']}")
    print_fit_view(result["fit_view"])
    if "browser_round_trip" in result:
        print(f"browser slider round trip: {result['browser_round_trip']['median_ms']} ms median "
              f"(target < {TARGETS_MS['browser_round_trip']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
