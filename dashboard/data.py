"""Everything the dashboard loads, through ``core`` only, cached once per server process.

Stores, models and line lists are shared by all sessions (``pn.state.as_cached``); each cache
key carries the file's modification time, so a store that gains catalog columns, or a model
that finishes training, is picked up on the next session without a restart.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn

from core import paths
from core.errors import StellarscopeError
from core.store import MANIFEST, SpectraStore

from .state import AppContext

#: Environment variables through which ``stellarscope serve`` passes its options to the app.
ENV_STORE = "STELLARSCOPE_STORE"
ENV_VAE = "STELLARSCOPE_VAE"
VAE_DEMO = "vae-demo"

#: Catalog columns offered first in the corner plot, when present.
PREFERRED_AXES = ("TEFF", "LOGG", "FE_H", "MG_FE", "SNR", "VAE_CHI2")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# -- store -------------------------------------------------------------------------------------


def store_path_from_env() -> Path:
    return paths.resolve_store(os.environ.get(ENV_STORE) or None)


def open_store(path) -> SpectraStore:
    """The store at ``path`` (shared by sessions until its manifest changes)."""
    path = Path(path).expanduser().resolve()
    stamp = _mtime(path / MANIFEST)
    return pn.state.as_cached(f"stellarscope-store:{path}:{stamp}", SpectraStore.open, path=path)


def catalog_frame(store: SpectraStore) -> pd.DataFrame:
    """Numeric catalog columns as float32 (plus ``ROW``), for datashader and nearest-star picks."""
    def build(path, stamp):
        cat = store.catalog
        cols = {c: cat[c].to_numpy(dtype=np.float32, na_value=np.nan)
                for c in cat.columns if pd.api.types.is_numeric_dtype(cat[c])
                and not pd.api.types.is_bool_dtype(cat[c])}
        frame = pd.DataFrame(cols)
        frame["ROW"] = np.arange(len(cat), dtype=np.int64)
        return frame

    return pn.state.as_cached(f"stellarscope-frame:{store.path}:{_mtime(store.path / MANIFEST)}",
                              build, path=str(store.path), stamp=_mtime(store.path / MANIFEST))


def axis_columns(frame: pd.DataFrame) -> list[str]:
    """Columns worth plotting: labels, true labels of a mock, latents, χ², S/N (not errors,
    flag bits or latent σ)."""
    cols = [c for c in frame.columns if c != "ROW" and not c.endswith("_ERR")
            and "FLAG" not in c and not c.startswith("VAE_S")
            and np.isfinite(frame[c].to_numpy()).any()]
    first = [c for c in PREFERRED_AXES if c in cols]
    return first + [c for c in cols if c not in first]


class IdIndex:
    """Sorted APOGEE_IDs for prefix search that stays fast at 700k stars."""

    def __init__(self, ids):
        ids = np.asarray(ids, dtype=str)
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]
        self.upper = np.char.upper(self.sorted)

    def search(self, text: str, limit: int = 20) -> list[str]:
        key = text.strip().upper()
        if not key:
            return []
        lo = np.searchsorted(self.upper, key, side="left")
        hi = np.searchsorted(self.upper, key + "\U0010ffff", side="left")
        found = list(self.sorted[lo:min(hi, lo + limit)])
        if len(found) < limit and len(key) >= 3:  # then any match inside the ID
            inside = np.flatnonzero(np.char.find(self.upper, key) > 0)[: limit - len(found)]
            found += list(self.sorted[inside])
        return [str(s) for s in found]


def id_index(store: SpectraStore) -> IdIndex:
    return pn.state.as_cached(f"stellarscope-ids:{store.path}:{_mtime(store.path / MANIFEST)}",
                              lambda **_: IdIndex(store.catalog["APOGEE_ID"].astype(str)),
                              path=str(store.path))


def nearest_row(frame: pd.DataFrame, xcol: str, ycol: str, x: float, y: float,
                xspan: float, yspan: float, rows: np.ndarray | None = None) -> int | None:
    """Catalog row nearest to (x, y) in units of the visible spans, among ``rows`` if given."""
    xs = frame[xcol].to_numpy()
    ys = frame[ycol].to_numpy()
    idx = np.arange(len(frame)) if rows is None else np.asarray(rows, dtype=np.int64)
    if idx.size == 0:
        return None
    d2 = ((xs[idx] - x) / max(xspan, 1e-12)) ** 2 + ((ys[idx] - y) / max(yspan, 1e-12)) ** 2
    d2 = np.where(np.isfinite(d2), d2, np.inf)
    best = int(np.argmin(d2))
    return None if not np.isfinite(d2[best]) else int(idx[best])


# -- line list ---------------------------------------------------------------------------------


def linelist() -> tuple[pd.DataFrame | None, str]:
    """(line list, problem): the shipped H-band list, or None and why not."""
    try:
        from core.linelist import LINELIST_PATH, load_linelist
    except ImportError as exc:
        return None, f"line list module missing ({exc})"
    try:
        df = pn.state.as_cached(f"stellarscope-lines:{_mtime(LINELIST_PATH)}", load_linelist)
    except StellarscopeError as exc:
        return None, str(exc)
    return df, ""


def element_windows() -> pd.DataFrame | None:
    try:
        from core.linelist import WINDOWS_PATH, load_element_windows

        return pn.state.as_cached(f"stellarscope-windows:{_mtime(WINDOWS_PATH)}",
                                  load_element_windows)
    except (ImportError, StellarscopeError):
        return None


# -- models ------------------------------------------------------------------------------------


def vae_candidates(explicit=None) -> list[Path]:
    """Where a VAE may be, most specific first: --vae / $STELLARSCOPE_VAE, the home, assets."""
    out = []
    given = explicit or os.environ.get(ENV_VAE)
    if given:
        out.append(Path(given).expanduser())
    out.append(paths.home() / "models" / VAE_DEMO)
    out.append(paths.SHIPPED_MODELS / VAE_DEMO)
    return out


def first_loadable(candidates, kind: str, loader):
    """(model, its directory, problems): the first candidate directory whose model loads.

    Loads are cached per server process, keyed by the directory's newest file time, so
    retrained weights are picked up and sessions share one copy.
    """
    problems = []
    for cand in candidates:
        if not (cand / "config.json").is_file():
            continue
        stamp = max((_mtime(f) for f in cand.iterdir()), default=0.0)
        try:
            model = pn.state.as_cached(f"stellarscope-{kind}:{cand.resolve()}:{stamp}",
                                       loader, path=cand)
        except (StellarscopeError, OSError, ValueError, KeyError) as exc:
            problems.append(f"{cand}: {exc}")
            continue
        return model, str(cand), []
    return None, "", problems


def load_vae(explicit=None):
    """(predictor, model dir, problem): the first VAE that loads, else None and why."""
    try:
        from core.inference.vae import VAEPredictor
    except ImportError:
        return None, "", "no VAE model yet (the VAE inference module is not installed)"
    vae, where, problems = first_loadable(vae_candidates(explicit), "vae",
                                          lambda path: VAEPredictor.load(path))
    if vae is not None:
        return vae, where, ""
    if problems:
        return None, "", "VAE could not be loaded: " + "; ".join(problems)
    return None, "", ("no VAE model yet: train one with `stellarscope train vae` "
                      "(it appears here when ready)")


TRAINING_FRESH_S = 300


def training_note(model_dir: Path) -> str:
    """'training: epoch 7, validation χ²_ν 1.21' while a VAE run is going: its run marker is
    there and its log is still growing (a crashed run's log goes stale)."""
    from core.train.vae import LOG_FILE, RUNNING_FILE

    log = Path(model_dir) / LOG_FILE
    if not (Path(model_dir) / RUNNING_FILE).is_file():
        return ""
    try:
        if time.time() - log.stat().st_mtime > TRAINING_FRESH_S:
            return ""
        rows = pd.read_csv(log)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return ""
    if rows.empty or "epoch" not in rows.columns:
        return ""
    last = rows.iloc[-1]
    chi2 = (f", validation χ²_ν {last['val_chi2_nu']:.2f}" if "val_chi2_nu" in rows.columns
            else "")
    return f"training in progress: epoch {int(last['epoch'])} done{chi2}"


def make_context(store_path=None, vae_dir=None) -> AppContext:
    """The app's context: the store (or why there is none) and the VAE (or why there is none)."""
    path = Path(store_path).expanduser() if store_path else store_path_from_env()
    ctx = AppContext(store_path=str(path))
    try:
        ctx.store = open_store(path)
    except StellarscopeError as exc:
        ctx.store_problem = (f"{exc}. Build the mock survey with `stellarscope demo` "
                             f"(or `stellarscope mock --out {path}`).")
    refresh_vae(ctx, vae_dir)
    return ctx


def refresh_vae(ctx: AppContext, vae_dir=None) -> bool:
    """Load the VAE if it appeared (or changed) since last time; True when it changed."""
    vae, where, problem = load_vae(vae_dir)
    note = next((n for n in map(training_note, vae_candidates(vae_dir)) if n), "")
    if note != ctx.vae_training:
        ctx.vae_training = note
    if vae is ctx.vae and problem == ctx.vae_problem:
        return False
    ctx.param.update(vae=vae, vae_dir=where, vae_problem=problem)
    return True


def warm_up() -> None:
    """Compile datashader's numba kernels once per process (``panel serve --warm`` runs this at
    start-up), so the first visit to the Catalog tab does not wait for the compiler."""
    def compile_kernels():
        from . import corner

        rng = np.random.default_rng(0)
        frame = pd.DataFrame({c: rng.random(64, dtype=np.float32) for c in "xyc"})
        subset = frame.take(np.arange(0, 64, 3))  # selections aggregate row subsets like this
        for f in (frame, subset):
            corner.aggregate(f, "x", "y", (0, 1), (0, 1))
            corner.aggregate(f, "x", "y", (0, 1), (0, 1), color="c")
        return True

    pn.state.as_cached("stellarscope-warm-up", compile_kernels)
