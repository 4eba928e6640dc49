"""The dashboard's views: each is one :class:`ViewSpec` in the registry.

The app builds its tabs, the tab keys, URL tab names and the session file's view list from
:func:`registered`.  A new view is one module plus one :func:`register_view` line (the list
of shipped views is in :mod:`dashboard.views`).

``make`` builds the view for one browser session: a callable ``make(session)``, or a
``"module:Class"`` string whose class is built with the session pieces it declares as params
(``focus``, ``selection``, ``context``, ``session``), imported on first use.

Hooks a view may offer (all optional): ``session_params`` (names of params saved in session
files), ``extra_state()`` / ``restore_extra(state, sync)``, an ``active`` param (True while
its tab is shown), ``ensure_built()`` (called on its first visit), ``fit()`` and ``busy``
(the *f* key).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

#: Session pieces a view class may declare as params; each gets the session's own.
SESSION_PIECES = ("focus", "selection", "context", "session")

#: Tab order before tabs had names: old ``?tab=3`` URLs and version-1 session files.
LEGACY_TAB_ORDER = ("star", "latent", "catalog", "fit", "attention")


@dataclass(frozen=True)
class ViewSpec:
    name: str                              # URL ?tab=NAME and the key in session files
    title: str                             # the tab's title
    make: Callable | str                   # make(session) -> view, or "module:Class"
    key: str = ""                          # keyboard key that shows the tab ("1" …)
    needs: tuple[str, ...] = ()            # model families the view needs (slots)

    def build(self, session):
        """This view for ``session``."""
        if callable(self.make):
            return self.make(session)
        module, _, attr = self.make.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        pieces = {"session": session, "focus": session.focus,
                  "selection": session.selection, "context": session.context}
        declared = getattr(cls, "param", None)
        return cls(**{k: v for k, v in pieces.items() if declared is not None and k in declared})


_VIEWS: dict[str, ViewSpec] = {}


def register_view(spec: ViewSpec) -> ViewSpec:
    """Add ``spec`` (a view of the same name is replaced, keeping its place)."""
    if not spec.name.isidentifier():
        raise ValueError(f"view name {spec.name!r} must be a plain identifier (it goes in URLs)")
    clash = [v.name for v in _VIEWS.values() if spec.key and v.key == spec.key
             and v.name != spec.name]
    if clash:
        raise ValueError(f"key {spec.key!r} of view {spec.name!r} is taken by {clash[0]!r}")
    _VIEWS[spec.name] = spec
    return spec


def unregister_view(name: str) -> None:
    _VIEWS.pop(name, None)


def registered() -> list[ViewSpec]:
    """The views in tab order."""
    return list(_VIEWS.values())


def tab_name(value, names: list[str] | None = None) -> str | None:
    """The view name a URL or session ``tab`` value means: a name, or an old tab number
    (``3``, ``"3"``: the tab order before names); None when it means no registered view."""
    names = [v.name for v in registered()] if names is None else names
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, int):
        order = list(LEGACY_TAB_ORDER) + [n for n in names if n not in LEGACY_TAB_ORDER]
        value = order[value] if 0 <= value < len(order) else None
    return value if isinstance(value, str) and value in names else None
