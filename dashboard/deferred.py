"""Parts of a page filled in once the page is shown, so a new page's first view comes first.

A served page's first HTML and first document carry what the first screen needs (the spectrum,
its controls, the sidebar's top); what lies below the fold or is used later (the Star view's
tables and line-list row, the upload box, the session and key sections) goes into an empty
:func:`slot`, filled by ``pn.state.onload`` once the browser has drawn the rest.  Each part
costs Bokeh models built on the server, sent and rendered in the browser before anything shows:
later, they cost the user nothing.  Outside a served session (tests, scripts) and after the
page is loaded (a tab opened later) a slot is filled at once.
"""

from __future__ import annotations

from collections.abc import Callable

import panel as pn

from .jobs import session_doc


def when_shown(fill: Callable[[], None]) -> None:
    """``fill()`` once this session's page is shown (now outside a served, loading page)."""
    doc = session_doc()
    if doc is None or pn.state.loaded:
        fill()
    else:
        pn.state.onload(fill)


def slot(make: Callable[[], list], **layout) -> pn.Column:
    """A column that receives ``make()``'s objects once the page is shown."""
    column = pn.Column(sizing_mode="stretch_width", margin=0, **layout)

    def fill():
        column.objects = make()

    when_shown(fill)
    return column
