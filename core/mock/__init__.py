"""A deterministic mock APOGEE survey: population labels, fast line-by-line synthesis, noise
and PIXMASK bits, written through :mod:`core.store` like ingested data (kind "mock survey")."""

from .populations import MOCK_LABEL_COLUMNS, draw_labels
from .survey import MOCK_VERSION, generate_mock_survey
from .synth import noiseless_flux, synthesize

__all__ = ["MOCK_LABEL_COLUMNS", "MOCK_VERSION", "draw_labels", "generate_mock_survey",
           "noiseless_flux", "synthesize"]
