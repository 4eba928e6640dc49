"""Everything the dashboard loads, through ``core`` only, cached once per server process.

Stores, models and line lists are shared by all sessions (``pn.state.as_cached``); each cache
key carries the files' newest modification time, so a store that gains catalog columns (or
breaks), or a model that finishes training, is picked up without a restart.  Models: one per
registered family (:data:`core.models.FAMILIES`), found by :func:`core.models.find` unless a
directory in ``$STELLARSCOPE_MODELS`` names that family's model, loaded by the family's
Predictor into the context's :class:`~dashboard.state.ModelSlot`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn

from core import models, paths
from core.errors import StellarscopeError
from core.linelist import LINELIST_PATH, WINDOWS_PATH, load_element_windows, load_linelist
from core.models.families import family_of
from core.store import MANIFEST, SpectraStore
from core.train.trainer import LOG_FILE, RUNNING_FILE

from .state import AppContext

#: Environment variables through which ``stellarscope serve`` passes its options to the app:
#: the store, and model directories (``os.pathsep``-separated) that take precedence for
#: their family.
ENV_STORE = "STELLARSCOPE_STORE"
ENV_MODELS = "STELLARSCOPE_MODELS"

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
    """The store at ``path``, shared by sessions until one of its files changes (new columns,
    or a part file damaged under a running server: reopening names what broke)."""
    path = Path(path).expanduser().resolve()
    stamp = max(_mtime(path / MANIFEST), _newest(path))
    return pn.state.as_cached(f"stellarscope-store:{path}:{stamp}", SpectraStore.open, path=path)


def shared(kind: str, store: SpectraStore, build):
    """``build()``, once per process for this store as it is now: cached under the store's
    path and its manifest's modification time (every catalog update rewrites the manifest,
    so a rewritten store is never served stale), the copy for an older stamp dropped."""
    prefix = f"stellarscope-{kind}:{store.path}:"
    key = f"{prefix}{_mtime(store.path / MANIFEST)}"
    value = pn.state.as_cached(key, build)
    for old in [k for k in list(pn.state.cache) if isinstance(k, tuple) and k
                and str(k[0]).startswith(prefix) and k[0] != key]:
        pn.state.cache.pop(old, None)
    return value


def catalog_frame(store: SpectraStore) -> pd.DataFrame:
    """Numeric catalog columns as float32 (plus ``ROW``), for datashader and nearest-star
    picks; one per process, shared by every session (its corner aggregates are cached too)."""
    def build():
        from . import corner

        cat = store.catalog
        cols = {c: cat[c].to_numpy(dtype=np.float32, na_value=np.nan)
                for c in cat.columns if pd.api.types.is_numeric_dtype(cat[c])
                and not pd.api.types.is_bool_dtype(cat[c])}
        frame = pd.DataFrame(cols)
        frame["ROW"] = np.arange(len(cat), dtype=np.int64)
        corner.share(frame)
        return frame

    return shared("frame", store, build)


def catalog_ids(store: SpectraStore) -> pd.Series:
    """The catalog's APOGEE_IDs as str, shared by every session."""
    return shared("id-strings", store, lambda: store.catalog["APOGEE_ID"].astype(str))


def store_axis_columns(store: SpectraStore) -> list[str]:
    """:func:`axis_columns` of the store's :func:`catalog_frame`, shared (a copy per call)."""
    return list(shared("axes", store, lambda: tuple(axis_columns(catalog_frame(store)))))


def table_frame(store: SpectraStore, columns) -> pd.DataFrame:
    """The catalog's ``columns`` for the table, shared by every session (never modified:
    a session's table shows it or a filtered copy)."""
    columns = list(columns)
    return shared("table:" + ",".join(columns), store, lambda: store.catalog[columns])


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
    """The store's :class:`IdIndex`, shared by every session."""
    return shared("ids", store, lambda: IdIndex(catalog_ids(store)))


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
        df = pn.state.as_cached(f"stellarscope-lines:{_mtime(LINELIST_PATH)}", load_linelist)
    except StellarscopeError as exc:
        return None, str(exc)
    return df, ""


def line_names() -> list[str]:
    """'Fe I 15207.53'-style names of the line list's non-molecular lines (the Star view's
    go-to-line choices), made once per process: a copy per call."""
    lines, _ = linelist()
    if lines is None:
        return []

    def build():
        from .figures.lines import line_label

        named = lines[lines["kind"] != "molecular"]
        return tuple(f"{line_label(r)} {r['wavelength_vac']:.2f}" for _, r in named.iterrows())

    return list(pn.state.as_cached(f"stellarscope-line-names:{_mtime(LINELIST_PATH)}", build))


def line_columns(kinds, elements) -> tuple[pd.DataFrame, dict, dict] | None:
    """(shown lines, marker columns, label columns) of the line list filtered to ``kinds``
    and ``elements``, made once per process for each filter (a new page's default costs no
    work); None without a line list.  Shared by sessions, so read-only: tuples and
    non-writeable arrays (a source given them is replaced, never edited in place)."""
    lines, _ = linelist()
    if lines is None:
        return None
    kinds = None if kinds is None else tuple(sorted(kinds))
    elements = tuple(sorted(elements or ()))

    def frozen(cols: dict) -> dict:
        out = {}
        for k, v in cols.items():
            if isinstance(v, np.ndarray):
                v = v.copy()
                v.setflags(write=False)
                out[k] = v
            else:
                out[k] = tuple(v)
        return out

    def build():
        from .figures.lines import filter_lines, label_columns, marker_columns

        shown = filter_lines(lines, kinds, elements)
        return shown, frozen(marker_columns(shown)), frozen(label_columns(shown))

    key = f"stellarscope-line-columns:{_mtime(LINELIST_PATH)}:{kinds}:{elements}"
    return pn.state.as_cached(key, build)


def element_windows() -> pd.DataFrame | None:
    """The element windows of the shipped line list, or None when they cannot be read."""
    try:
        return pn.state.as_cached(f"stellarscope-windows:{_mtime(WINDOWS_PATH)}",
                                  load_element_windows)
    except StellarscopeError:
        return None


# -- models ------------------------------------------------------------------------------------


def explicit_models(value: str | None = None) -> tuple[dict[str, Path], list[str]]:
    """The model directories named in ``$STELLARSCOPE_MODELS`` (``os.pathsep``-separated),
    keyed by the family of their config.json ``model_type``; and notes on the ones that
    name no known model."""
    value = os.environ.get(ENV_MODELS, "") if value is None else value
    found, notes = {}, []
    for entry in filter(None, (e.strip() for e in value.split(os.pathsep))):
        path = Path(entry).expanduser()
        try:
            kind = models.read_config(path).get("model_type")
        except (StellarscopeError, OSError, ValueError) as exc:
            notes.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            continue
        family = family_of(str(kind))
        if family is None:
            notes.append(f"{path}: model_type {kind!r} belongs to no known model family")
        elif family.name in found:
            notes.append(f"{path}: a second {family.title} on the command line (using "
                         f"{found[family.name]})")
        else:
            found[family.name] = path
    return found, notes


def _newest(path: Path) -> float:
    try:
        return max((_mtime(f) for f in path.iterdir()), default=0.0)
    except OSError:
        return 0.0


def load_model(family: str, explicit: str | os.PathLike | None = None):
    """(predictor, its directory, problem) of ``family``: :func:`core.models.find` picks the
    directory, the family's Predictor loads it.  Loads are cached per server process keyed
    by the directory and its newest file time, so sessions share one copy and retrained
    weights are picked up."""
    fam = models.get_family(family)
    try:
        where = models.find(family, explicit)
    except StellarscopeError as exc:
        return None, "", str(exc)
    prefix = f"stellarscope-model:{family}:{where.resolve()}:"
    key = f"{prefix}{_newest(where)}"
    try:
        predictor = fam.part("predictor")
        model = pn.state.as_cached(key, lambda: predictor.load(where))
    except (StellarscopeError, OSError, ValueError, KeyError, ImportError,
            AttributeError, RuntimeError) as exc:
        return None, "", f"the {fam.title} in {where} could not be loaded: {exc}"
    # weights retrained in place: the process keeps only the newest copy
    for old in [k for k in list(pn.state.cache) if isinstance(k, tuple) and k[0] != key
                and str(k[0]).startswith(prefix)]:
        pn.state.cache.pop(old, None)
    return model, str(where), ""


TRAINING_FRESH_S = 300


def training_note(model_dir: Path) -> str:
    """'training in progress: epoch 7 done, validation χ²_ν 1.21' while a run writes into
    ``model_dir``: its run marker is there and its log is still growing (a crashed run's log
    goes stale).  Any family's trainer leaves the same marker and log."""
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


def _training(family: str, explicit) -> str:
    try:
        places = models.families.candidates(family, explicit)
    except (StellarscopeError, OSError):
        return ""
    return next((n for n in map(training_note, places) if n), "")


def refresh_models(ctx: AppContext) -> list[str]:
    """Fill (or refresh) one slot per registered family; returns the families whose model
    changed.  Directories named on the command line (``ctx.model_dirs``) take precedence."""
    changed = []
    for family in models.FAMILIES:
        given = ctx.model_dirs.get(family)
        model, where, problem = load_model(family, given)
        slot = ctx.slot(family)
        note = _training(family, given)
        if note != slot.training:
            slot.training = note
        if model is slot.model and problem == slot.problem:
            continue
        slot.param.update(model=model, where=where, problem=problem)
        changed.append(family)
    return changed


def make_context(store_path=None, model_dirs: str | None = None) -> AppContext:
    """The app's context: the store (or why there is none) and one model slot per family
    (``model_dirs``: like ``$STELLARSCOPE_MODELS``, which it defaults to)."""
    path = Path(store_path).expanduser() if store_path else store_path_from_env()
    ctx = AppContext(store_path=str(path))
    try:
        store = open_store(path)
        store.catalog  # noqa: B018  (read now: a broken catalog is named here, not later)
        ctx.store = store
    except StellarscopeError as exc:
        if (path / MANIFEST).is_file():  # a store that is there but damaged
            hint = f"Check every file of it with `stellarscope inspect --verify {path}`."
        else:
            hint = (f"Build the mock survey with `stellarscope demo` (or `stellarscope mock "
                    f"--out {path}`).")
        ctx.store_problem = f"{exc}. {hint}"
    explicit, notes = explicit_models(model_dirs)
    ctx.param.update(model_dirs=explicit, model_notes=notes)
    refresh_models(ctx)
    return ctx


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


# -- sessions ----------------------------------------------------------------------------------

#: Every session's app object until it is garbage collected (a closed session that stays here
#: is held by something: the log says how many are live after each burst of closes).
LIVE_SESSIONS: weakref.WeakSet = weakref.WeakSet()
#: Seconds after the last closed session before the process tidies up (one tidy per burst).
TIDY_DELAY_S = 5.0
_tidy_timer: threading.Timer | None = None
_tidy_lock = threading.Lock()
_log = logging.getLogger("dashboard.sessions")


def session_opened(app) -> None:
    LIVE_SESSIONS.add(app)


def session_closed(delay: float | None = None) -> None:
    """A session was destroyed: tidy the process up once the closes stop coming."""
    global _tidy_timer
    with _tidy_lock:
        if _tidy_timer is not None:
            _tidy_timer.cancel()
        _tidy_timer = threading.Timer(TIDY_DELAY_S if delay is None else delay, tidy)
        _tidy_timer.daemon = True
        _tidy_timer.start()


def _malloc_trim() -> bool:
    """Give freed heap pages back to the system (glibc only): a closed session's memory is
    freed by Python, but glibc keeps the pages of its per-thread arenas without this."""
    name = ctypes.util.find_library("c")
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0)) if name else False
    except (OSError, AttributeError):
        return False


def tidy() -> int:
    """Collect closed sessions' reference cycles and return the freed memory to the system;
    returns how many sessions are still live."""
    gc.collect()
    _malloc_trim()
    live = len(LIVE_SESSIONS)
    _log.info("sessions closed: %d still live", live)
    return live
