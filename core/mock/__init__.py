"""A deterministic mock APOGEE survey: population labels, fast line-by-line synthesis, noise
and PIXMASK bits, written through :mod:`core.store` like ingested data (kind "mock survey").

The synthesis comes in named physics sets (:mod:`.physics`): ``apogee`` (the default),
``classic``, ``shifted`` and ``shifted-apogee``; a store's manifest records which one made it
(:func:`store_physics`).  Labels come from named populations (:data:`POPULATIONS`: ``dr17``,
the default, and ``classic``), also recorded (:func:`store_population`).
"""

from .physics import DEFAULT_PHYSICS, PHYSICS, get_physics, store_physics
from .populations import MOCK_LABEL_COLUMNS, POPULATIONS, draw_labels
from .survey import DEFAULT_POPULATION, MOCK_VERSION, generate_mock_survey, store_population
from .synth import noiseless_flux, synthesize

__all__ = ["DEFAULT_PHYSICS", "DEFAULT_POPULATION", "MOCK_LABEL_COLUMNS", "MOCK_VERSION",
           "PHYSICS", "POPULATIONS", "draw_labels", "generate_mock_survey", "get_physics",
           "noiseless_flux", "store_physics", "store_population", "synthesize"]
