"""A deterministic mock APOGEE survey: population labels, fast line-by-line synthesis, noise
and PIXMASK bits, written through :mod:`core.store` like ingested data (kind "mock survey").

The synthesis comes in named physics sets (:mod:`.physics`): ``classic`` (the default),
``apogee``, ``shifted`` and ``shifted-apogee``; a store's manifest records which one made it
(:func:`store_physics`).
"""

from .physics import DEFAULT_PHYSICS, PHYSICS, get_physics, store_physics
from .populations import MOCK_LABEL_COLUMNS, draw_labels
from .survey import MOCK_VERSION, generate_mock_survey
from .synth import noiseless_flux, synthesize

__all__ = ["DEFAULT_PHYSICS", "MOCK_LABEL_COLUMNS", "MOCK_VERSION", "PHYSICS", "draw_labels",
           "generate_mock_survey", "get_physics", "noiseless_flux", "store_physics",
           "synthesize"]
