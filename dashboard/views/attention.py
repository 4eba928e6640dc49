"""Attention tab: a placeholder until the transformer model exists (its own issue)."""

from __future__ import annotations

import panel as pn


class AttentionPlaceholder(pn.viewable.Viewer):
    """Says plainly that this view is not built yet; shows nothing made up."""

    def __panel__(self):
        return pn.pane.Alert(
            "### Attention maps are not available yet\n\n"
            "This tab will show a spectrum transformer's attention over the focused star's "
            "pixels next to the line list, once the transformer is trained (planned in its own "
            "issue). Nothing here is simulated in the meantime.",
            alert_type="secondary", sizing_mode="stretch_width")
