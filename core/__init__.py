"""Stellarscope core: APOGEE grids, readers, the spectra store, models and fitting.

Nothing in ``core`` imports Panel; the dashboard calls into ``core``.
"""

__version__ = "0.1.0"
