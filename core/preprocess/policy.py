"""How a spectrum from a file is made ready for the models: one policy for every entry point.

``stellarscope fit --file``, ``stellarscope inspect`` and the app's upload all call
:func:`prepare_file_spectrum`, so the command the Fit view prints for an uploaded file fits
exactly the spectrum the view fitted.

* A file already continuum-normalised (aspcapStar) is used as it is.
* A spectrum on an APOGEE grid (apStar) is normalised with the shipped continuum-pixel mask
  (``"mask"``): the default of ``stellarscope ingest`` (:class:`core.ingest.ContinuumSettings`),
  so a file fitted directly and the same file ingested into a store give the same spectrum.
* A spectrum on its own wavelengths (apVisit) has no fixed continuum pixels, so it gets the
  iterative upper-envelope fit (``"clip"``).
* A spectrum whose flux is mostly non-positive is refused, naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadDataError, BadFileError
from ..spectrum import Spectrum
from .continuum import DEFAULT_DEGREE, flux_problem, normalize

#: Continuum method for spectra on an APOGEE grid (the ingest default).
METHOD_ON_GRID = "mask"
#: Continuum method for spectra on their own wavelength array.
METHOD_OWN_WAVELENGTHS = "clip"

_NOTES = {
    "mask": "Continuum-normalised per chip (core.preprocess, Chebyshev fit to the shipped "
            "continuum pixels, as `stellarscope ingest`)",
    "clip": "Continuum-normalised per chip (core.preprocess, iterative upper-envelope fit)",
}


def method_for(spectrum: Spectrum) -> str:
    """The continuum method this policy uses for ``spectrum``."""
    return METHOD_ON_GRID if spectrum.grid else METHOD_OWN_WAVELENGTHS


def normalise_for_models(spectrum: Spectrum) -> Spectrum:
    """``spectrum`` itself if normalised, else its copy normalised the policy's way.

    Raises :class:`BadDataError` naming the star (or source) when its flux is mostly
    non-positive, normalised or not.
    """
    good = spectrum.good()
    problem = flux_problem(spectrum.flux, good) if good.any() else ""
    if problem:
        raise BadDataError(f"{spectrum.label}: {problem}")
    if spectrum.normalized:
        return spectrum
    method = method_for(spectrum)
    out = normalize(spectrum, method=method, degree=DEFAULT_DEGREE)
    out.meta["NOTE"] = _NOTES[method]
    return out


def prepare_file_spectrum(spectrum_or_path: Spectrum | str | os.PathLike,
                          source: str | os.PathLike | None = None) -> Spectrum:
    """Read (if given a path) and normalise a file's spectrum the one way everything does.

    ``source`` names the file in errors and in ``meta["SOURCE"]`` (an upload's own name
    rather than its temporary path).  Errors are :class:`BadFileError` naming the file.
    """
    if isinstance(spectrum_or_path, Spectrum):
        spectrum = spectrum_or_path
        where = source if source is not None else spectrum.meta.get("SOURCE")
    else:
        from ..io import read_spectrum

        path = Path(spectrum_or_path)
        where = source if source is not None else path
        try:
            spectrum = read_spectrum(path)
        except BadFileError as exc:
            if source is None:
                raise
            raise BadFileError(where, exc.problem) from None
    if where is not None:
        spectrum.meta["SOURCE"] = os.fspath(where) if not isinstance(where, str) else where
    try:
        return normalise_for_models(spectrum)
    except BadDataError as exc:
        if where is None:
            raise
        raise BadFileError(where, str(exc)) from None

