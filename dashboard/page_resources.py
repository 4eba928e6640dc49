"""The scripts a Stellarscope page loads: BokehJS without the bundles the app never uses.

Panel's page asks for every BokehJS bundle, and for the 1.8 MB MathJax one whenever a page has
an HTML or Markdown pane (any of them *might* hold TeX).  Stellarscope draws on canvas only and
renders no TeX (star IDs, file names and session text are shown as written), so the WebGL and
MathJax bundles are 2 MB of script that every new page would download and parse before the
spectrum can appear.  :func:`install` leaves them out of the page Panel's server renders.
"""

from __future__ import annotations

import copy

#: BokehJS bundles no Stellarscope page uses: every figure is ``output_backend="canvas"`` and
#: no text is TeX (tests/test_serve.py checks the figures and the served page).
UNUSED_BUNDLES = ("bokeh-gl", "bokeh-mathjax")


def lean(bundle_resources):
    """``bundle_resources`` (Panel's) for pages without :data:`UNUSED_BUNDLES`."""
    if getattr(bundle_resources, "stellarscope_lean", False):
        return bundle_resources

    def lean_bundle(roots, resources, *args, **kwargs):
        if resources is not None and hasattr(resources, "components"):
            resources = copy.copy(resources)
            resources.components = [c for c in resources.components if c not in UNUSED_BUNDLES]
        kwargs["enable_mathjax"] = False
        return bundle_resources(roots, resources, *args, **kwargs)

    lean_bundle.stellarscope_lean = True
    return lean_bundle


def install() -> None:
    """Serve pages without :data:`UNUSED_BUNDLES` (idempotent: the app runs once per session)."""
    from panel.io import server

    server.bundle_resources = lean(server.bundle_resources)
