"""Save and restore a dashboard session as JSON.

A session file records what a user set up, not data: the store it belongs to, the focused
star and tab, the brushed catalog rows (a packed bitmask, so 733,901 rows cost ~120 kB), and
each view's settings (overlays, zoom, line filters, latent slider values, the Fit view's options
and drawn mask).  Restoring re-reads everything through ``core``; the file is plain JSON,
checked field by field, never executed or unpickled.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core.errors import BadFileError

FORMAT = "stellarscope-session"
VERSION = 1
MAX_BYTES = 16 * 1024 * 1024
VIEWS = ("star", "latent", "catalog", "fit")


def pack_rows(rows: np.ndarray | None, n_rows: int) -> dict | None:
    """Selected row numbers as a base64 bitmask over the store's rows."""
    if rows is None:
        return None
    mask = np.zeros(n_rows, bool)
    mask[np.asarray(rows, dtype=np.int64)] = True
    return {"n_rows": int(n_rows), "count": int(mask.sum()),
            "bitmask": base64.b64encode(np.packbits(mask).tobytes()).decode("ascii")}


def unpack_rows(packed: dict, n_rows: int, name: str = "session") -> np.ndarray:
    """The row numbers of :func:`pack_rows`' output; checks it matches the store's size."""
    try:
        stored_n = int(packed["n_rows"])
        bits = np.frombuffer(base64.b64decode(packed["bitmask"], validate=True), np.uint8)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadFileError(name, f"the saved selection is unreadable ({exc})") from exc
    if stored_n != n_rows:
        raise BadFileError(name, f"the saved selection covers {stored_n:,} rows but this store "
                           f"has {n_rows:,}")
    if bits.size != (n_rows + 7) // 8:
        raise BadFileError(name, "the saved selection's bitmask has the wrong length")
    return np.flatnonzero(np.unpackbits(bits)[:n_rows]).astype(np.int64)


def session_document(app) -> dict:
    """What ``app`` (a :class:`dashboard.app.DashboardApp`) shows, as a JSON-ready dict."""
    ctx, session = app.context, app.session
    store = ctx.store
    focus = session.focus
    doc = {
        "format": FORMAT, "version": VERSION,
        "saved": datetime.now(UTC).isoformat(timespec="seconds"),
        "store": None if store is None else {"path": str(store.path), "title": store.title,
                                             "n_stars": len(store)},
        "star": focus.star_id if focus.source == "store" else "",
        "uploaded_star": focus.label if focus.source == "upload" else "",
        "tab": int(app.tabs.active),
        "selection": None,
        "views": {},
    }
    sel = session.selection
    if store is not None and sel.active:
        doc["selection"] = {**pack_rows(sel.rows, len(store)), "description": sel.description}
    for key in VIEWS:
        view = app.views.get(key)
        if view is not None and hasattr(view, "state_dict"):
            doc["views"][key] = view.state_dict()
    return doc


def dumps(doc: dict) -> bytes:
    return json.dumps(doc, indent=1, allow_nan=False).encode()


def read_session(raw: bytes, name: str = "session.json") -> dict:
    """Parse and check a session file's bytes; :class:`BadFileError` naming ``name`` if bad."""
    if len(raw) > MAX_BYTES:
        raise BadFileError(name, f"{len(raw) / 2**20:.1f} MB is over the "
                           f"{MAX_BYTES // 2**20} MB limit for session files")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadFileError(name, f"not a JSON file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadFileError(name, f"not a Stellarscope session (no \"format\": \"{FORMAT}\")")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise BadFileError(name, f"session version {doc.get('version')!r} is newer than this "
                           f"Stellarscope understands ({VERSION})")
    for key, kinds in (("star", str), ("uploaded_star", str), ("tab", int), ("views", dict),
                       ("store", (dict, type(None))), ("selection", (dict, type(None)))):
        if key in doc and (not isinstance(doc[key], kinds) or isinstance(doc[key], bool)):
            expected = kinds.__name__ if isinstance(kinds, type) else f"{kinds[0].__name__} or null"
            raise BadFileError(name, f"field {key!r} should be {expected}")
    path = (doc.get("store") or {}).get("path")
    if path is not None and not isinstance(path, str):
        raise BadFileError(name, "field 'store.path' should be a string")
    return doc


def apply_session(app, doc: dict, name: str = "session.json", *, sync: bool = False) -> list[str]:
    """Restore ``doc`` into ``app``; returns notes on what could not be restored.

    The star comes first (views react to it), then the tab, each view's settings and the
    selection.  ``sync`` runs a saved fit in this thread (tests) instead of a worker.
    """
    ctx, session = app.context, app.session
    notes = []
    saved_store = doc.get("store") or {}
    store = ctx.store
    if store is None:
        raise BadFileError(name, "no store is open to restore the session into")
    if saved_store.get("path") and Path(saved_store["path"]) != Path(store.path):
        notes.append(f"saved with store {saved_store['path']}; restored into {store.path}")
    star = doc.get("star") or ""
    if star:
        if not session.select_star(star):
            notes.append(f"star {star} is not in this store")
    elif doc.get("uploaded_star"):
        notes.append(f"the uploaded spectrum {doc['uploaded_star']} must be uploaded again")
    tab = doc.get("tab", 0)
    if 0 <= tab < len(app.tabs):
        app.tabs.active = tab
    for key, state in doc.get("views", {}).items():
        view = app.views.get(key)
        if view is None or not hasattr(view, "load_state") or not isinstance(state, dict):
            continue
        try:
            notes += view.load_state(state, sync=sync) or []
        except (KeyError, TypeError, ValueError) as exc:
            notes.append(f"{key} view settings skipped ({exc})")
    if doc.get("selection"):  # after the catalog view's columns, which redraw the corner plot
        try:
            rows = unpack_rows(doc["selection"], len(store), name)
        except BadFileError as exc:
            notes.append(exc.problem)
        else:
            session.selection.select(rows, str(doc["selection"].get("description", "")))
    return notes


def widget_state(widgets: dict) -> dict:
    """The values of a view's persisted widgets (JSON-ready)."""
    out = {}
    for key, w in widgets.items():
        v = w.value
        out[key] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def restore_widgets(widgets: dict, state: dict) -> list[str]:
    """Set each widget named in ``state`` to its saved value when the widget still offers it;
    returns notes on the values it had to skip."""
    notes = []
    for key, w in widgets.items():
        if key not in state:
            continue
        saved = state[key]
        if isinstance(w.value, bool):
            w.value = bool(saved)
            continue
        allowed = list(w.values) if hasattr(w, "values") else list(getattr(w, "options", []))
        if isinstance(w.value, list):
            keep = [v for v in saved if v in allowed] if isinstance(saved, list) else []
            if isinstance(saved, list) and len(keep) < len(saved):
                notes.append(f"{key}: {sorted(set(saved) - set(keep))} not offered here")
            w.value = keep
        elif saved in allowed:
            w.value = saved
        elif saved is not None:
            notes.append(f"{key}: {saved!r} not offered here")
    return notes
