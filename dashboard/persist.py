"""Save and restore a dashboard session as JSON.

A session file records what a user set up, not data: the store it belongs to, the focused
star and tab, the brushed catalog rows (a packed bitmask, so 733,901 rows cost ~120 kB), the
named subsets (name and expression only: each is re-evaluated on restore, and refused with a
plain note when it no longer can be), and each registered view's settings (its ``session_params`` and ``extra_state()``: overlays, zoom,
line filters, latent slider values, the Fit view's options and drawn mask).  Restoring
re-reads everything through ``core``; the file is plain JSON, checked field by field (each
value through its param's own checks), never executed or unpickled.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import param

from core.errors import BadFileError
from core.subsets import SubsetError, make_subset

FORMAT = "stellarscope-session"
#: 2: ``tab`` is the view's name ("fit"); version 1 files (a tab number) are still read.
VERSION = 2
MAX_BYTES = 16 * 1024 * 1024


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


def _plain(value):
    """A param value as JSON (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _non_finite(value) -> bool:
    """True when ``value`` holds NaN or ±Infinity anywhere (json reads them as floats)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(map(_non_finite, value))
    if isinstance(value, dict):
        return any(map(_non_finite, value.values()))
    return False


def non_finite_field(value, where: str = "") -> str | None:
    """Where (``views.latent.z[3]``) the first NaN or ±Infinity in a parsed session lies,
    or None when every number is finite."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where or "the file")
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = non_finite_field(v, f"{where}[{i}]")
            if found:
                return found
    if isinstance(value, dict):
        for k, v in value.items():
            found = non_finite_field(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    return None


def refuse_non_finite(doc: dict, name: str = "session.json") -> None:
    """:class:`BadFileError` when a session holds NaN or Infinity anywhere: a session file
    written by Stellarscope never does, so the file is refused as a whole, not half-restored."""
    where = non_finite_field(doc)
    if where:
        raise BadFileError(name, f"holds NaN or Infinity (in {where}); a session file holds "
                                 "only finite numbers, so nothing was restored")


def view_state(view) -> dict:
    """A view's session settings: its ``session_params`` and its ``extra_state()``."""
    state = {name: _plain(getattr(view, name)) for name in getattr(view, "session_params", ())}
    if hasattr(view, "extra_state"):
        state.update(view.extra_state())
    return state


def _restore_param(view, name: str, saved) -> str | None:
    """Set one session param through param's own checks; a note when it cannot be."""
    p = view.param[name]
    if isinstance(p, param.ListSelector) and isinstance(saved, list):
        offered = list(p.get_range().values())
        keep = [v for v in saved if v in offered]
        view.param.update({name: keep})
        missing = [v for v in saved if v not in offered]
        return f"{name}: {missing} not offered here" if missing else None
    if isinstance(p, param.Selector) and not isinstance(p, param.ListSelector) \
            and not (saved is None and p.allow_None) and saved not in list(p.get_range().values()):
        return f"{name}: {saved!r} not offered here"
    if isinstance(p, param.Number) and isinstance(saved, bool):
        return f"{name}: {saved!r} is not a number"
    try:
        view.param.update({name: saved})
    except (ValueError, TypeError) as exc:
        return f"{name}: {saved!r} refused ({exc})"
    return None


def restore_view(view, state: dict, *, sync: bool = False) -> list[str]:
    """Restore a view's saved settings; returns notes on what was skipped and why.

    Each ``session_params`` value goes through param's own type and range checks; values
    holding NaN or Infinity are refused outright.  The rest of ``state`` goes to the view's
    ``restore_extra(state, sync)``.
    """
    names = tuple(getattr(view, "session_params", ()))
    notes, extra = [], {}
    for key, saved in state.items():
        if _non_finite(saved):
            notes.append(f"{key}: holds NaN or Infinity, not restored")
        elif key in names:
            note = _restore_param(view, key, saved)
            if note:
                notes.append(note)
        else:
            extra[key] = saved
    if hasattr(view, "restore_extra"):
        notes += view.restore_extra(extra, sync) or []
    return notes


def subsets_document(subsets) -> dict | None:
    """A :class:`~dashboard.state.SubsetState` as JSON: names and expressions, in order."""
    if not subsets.subsets:
        return None
    return {"items": [{"name": s.name, "expression": s.expression} for s in subsets.subsets],
            "shown": list(subsets.shown), "table": subsets.table}


def restore_subsets(subsets, saved, catalog) -> list[str]:
    """Re-evaluate saved subsets over ``catalog`` and put them in ``subsets`` (replacing the
    ones there); returns notes on the subsets refused (a column that is gone, a changed
    syntax, a subset built on a refused one) and why."""
    if not isinstance(saved, dict) or not isinstance(saved.get("items"), list):
        return ["subsets: not restored (the saved list is unreadable)"]
    made, notes = [], []
    for i, item in enumerate(saved["items"]):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                and isinstance(item.get("expression"), str)):
            notes.append(f"subset {i + 1}: not restored (needs a name and an expression)")
            continue
        try:
            made.append(make_subset(item["name"], item["expression"], catalog,
                                    {s.name: s.mask for s in made}))
        except SubsetError as exc:
            notes.append(f"subset {item['name'][:40]!r} ({item['expression'][:200]}) not "
                         f"restored: {exc}")
    names = [s.name for s in made]
    shown = saved.get("shown", names)
    shown = [n for n in shown if n in names] if isinstance(shown, list) else names
    table = saved.get("table") if saved.get("table") in names else ""
    subsets.param.update(subsets=made, shown=shown, table=table)
    return notes


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
        "tab": app.tab,
        "selection": None,
        "subsets": subsets_document(session.subsets),
        "views": {name: view_state(view) for name, view in app.views.items()
                  if getattr(view, "session_params", ()) or hasattr(view, "extra_state")},
    }
    sel = session.selection
    if store is not None and sel.active:
        doc["selection"] = {**pack_rows(sel.rows, len(store)), "description": sel.description}
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadFileError(name, f"not a JSON file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadFileError(name, f"not a Stellarscope session (no \"format\": \"{FORMAT}\")")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise BadFileError(name, f"session version {version!r} is newer than this "
                           f"Stellarscope understands ({VERSION})")
    tab_kind = int if version < 2 else str
    for key, kinds in (("star", str), ("uploaded_star", str), ("tab", tab_kind), ("views", dict),
                       ("store", (dict, type(None))), ("selection", (dict, type(None))),
                       ("subsets", (dict, type(None)))):
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
    from .views.registry import tab_name

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
    if "tab" in doc:
        tab = tab_name(doc["tab"], list(app.views))
        if tab is None:
            notes.append(f"tab {doc['tab']!r} is not a view here")
        else:
            app.show_tab(tab)
    for key, state in doc.get("views", {}).items():
        view = app.views.get(key)
        if view is None:
            notes.append(f"{key} view settings skipped (no such view here)")
            continue
        if not isinstance(state, dict):
            notes.append(f"{key} view settings skipped (not a JSON object)")
            continue
        try:
            notes += [f"{key} view: {n}" for n in restore_view(view, state, sync=sync)]
        except (KeyError, TypeError, ValueError) as exc:
            notes.append(f"{key} view settings skipped ({exc})")
    if "subsets" in doc:  # a file saved without subsets clears the ones on screen
        notes += restore_subsets(session.subsets, doc["subsets"] or {"items": []},
                                 store.catalog)
    if doc.get("selection"):  # after the catalog view's columns, which redraw the corner plot
        for view in app.views.values():  # a view first built later starts its selection afresh
            if hasattr(view, "ensure_built"):
                view.ensure_built()
        try:
            rows = unpack_rows(doc["selection"], len(store), name)
        except BadFileError as exc:
            notes.append(exc.problem)
        else:
            session.selection.select(rows, str(doc["selection"].get("description", "")))
    return notes

