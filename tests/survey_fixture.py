"""A small fake APOGEE data release on disk: an allStar catalog plus an aspcapStar tree whose
spectra depend on the catalog's labels (mock synthesis at the ASPCAP labels, with noise at the
catalog's S/N), so a model trained on it can be compared with "ASPCAP"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from core.grid import APOGEE_7514, APSTAR_NPIX
from core.mock.synth import noiseless_flux
from tests.fits_fixtures import write_allstar, write_aspcapstar

TELESCOPE, FIELD = "apo25m", "FIXTUREFIELD"


def fixture_ids(n: int) -> list[str]:
    return [f"2M{10000000 + 7919 * i:08d}+{1000000 + 13 * i:07d}" for i in range(n)]


def _labels(allstar: Path) -> pd.DataFrame:
    with fits.open(allstar) as hdul:
        t = hdul[1].data
        cols = {"APOGEE_ID": t["APOGEE_ID"].astype(str), "SNR": t["SNR"].astype(float)}
        for name in ("TEFF", "LOGG", "FE_H", "M_H", "VMICRO"):
            cols[name] = t[name].astype(float)
        for name in t.columns.names:
            if name.endswith("_FE") and not name.startswith("X_"):
                v = t[name].astype(float)
                cols[name] = np.where(v < -9000, 0.0, v)
    return pd.DataFrame(cols)


def write_fixture_survey(root, n: int = 120, seed: int = 0) -> tuple[Path, Path, pd.DataFrame]:
    """Write ``root/allStar-dr17-fixture.fits`` and ``root/spectra/apo25m/FIELD/aspcapStar-…``.

    Returns (allStar path, spectra folder, the labels the spectra were made from).  Labels
    are the allStar fixture's (independent uniform Teff 3500–6500 K, log g 0.5–5, [M/H]
    −1.5–0.4, [X/Fe] ~ N(0, 0.1)); the noise is white at each star's catalog S/N.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    allstar = write_allstar(root / "allStar-dr17-fixture.fits", fixture_ids(n), dr=17, seed=seed,
                            telescope=TELESCOPE, field=FIELD, sentinel_row=None)
    labels = _labels(allstar)
    flux = noiseless_flux(labels, APOGEE_7514)
    rng = np.random.default_rng(seed + 1)
    spectra = root / "spectra" / TELESCOPE / FIELD
    spectra.mkdir(parents=True, exist_ok=True)
    for k, row in labels.iterrows():
        full = np.zeros(APSTAR_NPIX, np.float32)
        err = np.zeros(APSTAR_NPIX, np.float32)
        sigma = 1.0 / row.SNR
        full[APOGEE_7514.index] = flux[k] + rng.normal(0.0, sigma, flux.shape[1])
        err[APOGEE_7514.index] = sigma
        write_aspcapstar(spectra / f"aspcapStar-dr17-{row.APOGEE_ID}.fits", row.APOGEE_ID,
                         snr=float(row.SNR), telescope=TELESCOPE, field=FIELD, teff=row.TEFF,
                         logg=row.LOGG, m_h=row.M_H, flux=full, error=err,
                         model=np.where(full > 0, 1.0, 0.0).astype(np.float32))
    return allstar, root / "spectra", labels
