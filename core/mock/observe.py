"""Observation effects on a noiseless spectrum: per-pixel noise and APOGEE PIXMASK bits.

Everything here is drawn from one random stream per star (see :func:`star_rngs`), so a star's
noise and mask depend only on the seed and the star, never on which other stars share a
chunk.  Detector and sky features are fixed in the observed frame; the rest-frame spectra
see them shifted by the star's topocentric velocity.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import pandas as pd

from ..grid import APOGEE_7514, APSTAR_NPIX, KMS_PER_PIXEL, PIXMASK_VALUE, Grid, apstar_pixel
from ..linelist import load_sky_lines

#: The three detectors in apStar pixels (the extent of the 7514-pixel grid's chips).
DETECTORS = APOGEE_7514.chips
#: Littrow-ghost region (vacuum Å, observed frame) on the green detector.
LITTROW_GHOST_VAC = (16045.7, 16056.8)
#: Fraction of detector pixels that are bad in every exposure.
FIXED_BADPIX_FRACTION = 0.0035
ERROR_FLOOR = 0.003
FLUX_RANGE = (-0.1, 1.3)

_BAD = {name: PIXMASK_VALUE[name] for name in
        ("BADPIX", "CRPIX", "SATPIX", "LITTROW_GHOST", "PERSIST_HIGH", "PERSIST_MED",
         "PERSIST_LOW", "SIG_SKYLINE")}


def star_rngs(labels: pd.DataFrame, seed: int) -> list[np.random.Generator]:
    """One generator per star, keyed on (seed, APOGEE_ID) — or on the row label without IDs."""
    if "APOGEE_ID" in labels.columns:
        keys = [str(s).strip().encode() for s in labels["APOGEE_ID"]]
    else:
        keys = [f"row:{i}".encode() for i in labels.index]
    out = []
    for key in keys:
        digest = hashlib.blake2b(key, digest_size=8).digest()
        words = np.frombuffer(digest, dtype=np.uint32).tolist()
        out.append(np.random.default_rng([int(seed) & 0xFFFFFFFF, *words]))
    return out


@lru_cache(maxsize=1)
def _detector_pattern() -> np.ndarray:
    """Relative noise per apStar pixel: worse near detector edges and outside the chips."""
    pix = np.arange(APSTAR_NPIX)
    pattern = np.full(APSTAR_NPIX, 3.0)
    chip_gain = (1.06, 0.96, 1.0)  # throughput differs a little between the detectors
    for (a, b), gain in zip(DETECTORS, chip_gain, strict=True):
        inside = (pix >= a) & (pix < b)
        edge = np.minimum(pix - a, b - 1 - pix)
        ripple = 0.04 * np.sin(2 * np.pi * (pix - a) / 900.0)
        pattern[inside] = (gain * (1.0 + 0.45 * np.exp(-edge / 45.0) + ripple))[inside]
    inside_7514 = APOGEE_7514.index
    return pattern / np.median(pattern[inside_7514])


@lru_cache(maxsize=1)
def _fixed_bad_pixels() -> np.ndarray:
    """Detector defects (observed-frame apStar pixels), the same for every star."""
    rng = np.random.default_rng(0xA9060E)
    n = int(FIXED_BADPIX_FRACTION * APSTAR_NPIX)
    return np.sort(rng.choice(APSTAR_NPIX, size=n, replace=False))


@lru_cache(maxsize=1)
def _sky_lines() -> tuple[np.ndarray, np.ndarray]:
    sky = load_sky_lines()
    return (apstar_pixel(sky["wavelength_vac"].to_numpy()),
            sky["brightness_class"].to_numpy().astype(np.int64))


def _label(labels: pd.DataFrame, name: str, default) -> np.ndarray:
    if name in labels.columns:
        return labels[name].to_numpy()
    return np.full(len(labels), default)


def observe(model: np.ndarray, labels: pd.DataFrame, grid: Grid, seed: int):
    """Noisy flux, error and PIXMASK (float32, float32, uint16) for noiseless ``model`` rows."""
    snr = np.clip(_label(labels, "SNR", 100.0).astype(np.float64), 1.0, None)
    telescope = _label(labels, "TELESCOPE", "apo25m").astype(str)
    vhelio = np.nan_to_num(_label(labels, "VHELIO_AVG", 0.0).astype(np.float64))
    pattern = _detector_pattern()[grid.index]
    index = grid.index
    sky_pix, sky_class = _sky_lines()
    fixed_bad = _fixed_bad_pixels()
    ghost = apstar_pixel(np.asarray(LITTROW_GHOST_VAC))
    blue = DETECTORS[0]

    flux = np.empty_like(model, dtype=np.float32)
    error = np.empty_like(model, dtype=np.float32)
    pixmask = np.zeros(model.shape, dtype=np.uint16)
    for i, rng in enumerate(star_rngs(labels, seed)):
        f0 = model[i].astype(np.float64)
        sigma = np.hypot(pattern * np.sqrt(np.clip(f0, 0.05, None)) / snr[i], ERROR_FLOOR)
        f = f0 + sigma * rng.standard_normal(f0.size)
        err = sigma.copy()
        mask = np.zeros(APSTAR_NPIX, dtype=np.int64)
        boost = np.ones(APSTAR_NPIX)  # error inflation on the apStar grid
        extra = np.zeros(APSTAR_NPIX)  # additive flux artefacts
        # observed-frame features appear shifted by the star's topocentric velocity
        v_topo = vhelio[i] + rng.uniform(-30.0, 30.0)  # barycentric correction of the visits
        shift = -v_topo / KMS_PER_PIXEL

        # sky lines: residuals of the sky subtraction, wider for brighter lines
        centres = sky_pix + shift
        half = np.array([2.6, 1.6, 1.1])[sky_class - 1]
        for c, h, cls in zip(centres, half, sky_class, strict=True):
            a, b = int(np.ceil(c - h)), int(np.floor(c + h)) + 1
            if b <= 0 or a >= APSTAR_NPIX:
                continue
            a, b = max(a, 0), min(b, APSTAR_NPIX)
            mask[a:b] |= _BAD["SIG_SKYLINE"]
            boost[a:b] *= (4.0, 2.5, 1.8)[cls - 1]
            extra[a:b] += rng.normal(0.0, (3.0, 1.5, 1.0)[cls - 1] / snr[i], b - a)

        # bad detector pixels (fixed) and a few random ones this visit
        bad = np.rint(fixed_bad + shift).astype(np.int64)
        bad = np.concatenate([bad, rng.integers(0, APSTAR_NPIX, rng.poisson(12))])
        bad = bad[(bad >= 0) & (bad < APSTAR_NPIX)]
        mask[bad] |= _BAD["BADPIX"]
        boost[bad] *= 25.0
        extra[bad] += rng.uniform(-0.3, 0.2, bad.size)

        # cosmic rays: 1-2 pixel hits that the visit combination did not fully reject
        for _ in range(rng.poisson(2.0)):
            a = int(rng.integers(0, APSTAR_NPIX - 2))
            width = int(rng.integers(1, 3))
            mask[a:a + width] |= _BAD["CRPIX"]
            boost[a:a + width] *= 20.0
            extra[a:a + width] += rng.uniform(0.05, 0.25)

        # saturation next to the brightest sky lines, in a few high-S/N stars
        if snr[i] > 300 and rng.random() < 0.1:
            c = int(np.rint(centres[int(rng.integers(0, centres.size))]))
            a, b = max(c - 1, 0), min(c + 2, APSTAR_NPIX)
            mask[a:b] |= _BAD["SATPIX"]
            boost[a:b] *= 30.0

        # persistence on the blue detector of the APO 2.5 m spectrograph
        if telescope[i] == "apo25m" and rng.random() < 0.18:
            level = rng.choice(("PERSIST_LOW", "PERSIST_MED", "PERSIST_HIGH"), p=(0.5, 0.35, 0.15))
            end = blue[0] + int((blue[1] - blue[0]) * rng.uniform(0.35, 1.0))
            mask[blue[0]:end] |= _BAD[level]
            amp = {"PERSIST_LOW": 0.01, "PERSIST_MED": 0.03, "PERSIST_HIGH": 0.06}[level]
            ramp = np.linspace(1.0, 0.3, end - blue[0])
            extra[blue[0]:end] += amp * rng.uniform(0.5, 1.0) * ramp
            boost[blue[0]:end] *= 1.3

        # Littrow ghost: a faint fixed-position reflection on the green detector
        if telescope[i] != "apo1m" and rng.random() < 0.25:
            a, b = int(np.floor(ghost[0] + shift)), int(np.ceil(ghost[1] + shift)) + 1
            a, b = max(a, 0), min(b, APSTAR_NPIX)
            mask[a:b] |= _BAD["LITTROW_GHOST"]
            extra[a:b] += rng.uniform(0.005, 0.03)
            boost[a:b] *= 1.5

        f = f + extra[index]
        err = err * boost[index]
        flux[i] = np.clip(f, *FLUX_RANGE)
        error[i] = err
        pixmask[i] = mask[index].astype(np.uint16)
    return flux, error, pixmask
