"""Small synthetic stores of low-rank spectra, for tests and benchmarks of trainable models.

Each spectrum is 1 minus a sum of absorption lines whose depths are smooth functions of
(Teff, logg, [Fe/H]) and one hidden parameter (so a model has something beyond the labels to
learn), plus Gaussian noise at the star's SNR and a few flagged pixels.  This is not the mock
survey (``core.mock``); it is a cheap stand-in with known structure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..grid import APOGEE_7514, PIXMASK_VALUE, Grid
from ..store import SpectraStore


def synthetic_arrays(n: int, seed: int = 0, grid: Grid = APOGEE_7514, n_lines: int = 60,
                     bad_fraction: float = 0.01, hidden_column: str = "HIDDEN") -> dict:
    """flux, error, pixmask (n × n_pix) and a catalog DataFrame with allStar label columns.

    The hidden parameter goes to the catalog column ``hidden_column``: name a label column
    (e.g. ``"VMICRO"``) to make it a control that a VAE's free latents may legitimately hold."""
    rng = np.random.default_rng(seed)
    p = grid.n_pix
    teff = rng.uniform(4000.0, 5500.0, n)
    logg = np.clip(0.5 + 3.0 * (teff - 4000.0) / 1500.0 + rng.normal(0, 0.3, n), 0.0, 4.0)
    feh = np.clip(rng.normal(-0.2, 0.3, n), -2.0, 0.5)
    hidden = rng.normal(0.0, 1.0, n)
    x = np.column_stack([(teff - 4750) / 450, (logg - 2) / 0.9, (feh + 0.2) / 0.3, hidden])

    # line depth = softplus of a random quadratic form of the parameters, kept in (0, 0.6)
    centres = rng.choice(p, n_lines, replace=False)
    widths = rng.uniform(1.5, 4.0, n_lines)
    lin = rng.normal(0, 0.4, (4, n_lines))
    quad = rng.normal(0, 0.1, (4, n_lines))
    base = rng.uniform(-2.0, 0.0, n_lines)
    depth = 0.6 * (1 - np.exp(-np.logaddexp(0, base + x @ lin + (x**2) @ quad)))
    pix = np.arange(p)
    profiles = np.exp(-0.5 * ((pix[None, :] - centres[:, None]) / widths[:, None]) ** 2)
    clean = 1.0 - depth @ profiles

    snr = rng.uniform(80.0, 250.0, n)
    error = np.repeat((1.0 / snr)[:, None], p, axis=1) * rng.uniform(0.8, 1.2, (n, p))
    flux = clean + rng.normal(0.0, 1.0, (n, p)) * error
    pixmask = np.zeros((n, p), np.uint16)
    bad = rng.random((n, p)) < bad_fraction
    pixmask[bad] = PIXMASK_VALUE["BADPIX"]
    flux[bad] = rng.uniform(-5, 5, bad.sum())  # garbage where flagged, as in real data
    catalog = pd.DataFrame({
        "APOGEE_ID": [f"2MSYN{seed:04d}{i:07d}" for i in range(n)],
        "TEFF": teff + rng.normal(0, 30, n), "TEFF_ERR": np.full(n, 30.0),
        "LOGG": logg + rng.normal(0, 0.05, n), "LOGG_ERR": np.full(n, 0.05),
        "FE_H": feh + rng.normal(0, 0.02, n), "FE_H_ERR": np.full(n, 0.02),
        "SNR": snr, hidden_column: hidden,
    })
    return {"flux": flux.astype(np.float32), "error": error.astype(np.float32),
            "pixmask": pixmask, "catalog": catalog, "clean": clean.astype(np.float32)}


def synthetic_store(path: str | os.PathLike, n: int = 500, seed: int = 0, **kw) -> SpectraStore:
    """Write :func:`synthetic_arrays` as a store (kind "generic") and open it."""
    arrays = synthetic_arrays(n, seed, **kw)
    with SpectraStore.create(Path(path), kind="generic", title=f"synthetic low-rank ({n})",
                             provenance={"generator": "core.train.synthetic", "seed": seed,
                                         "n": n}, overwrite=True) as w:
        w.append(arrays["flux"], arrays["error"], arrays["pixmask"], arrays["catalog"])
    return SpectraStore.open(path)
