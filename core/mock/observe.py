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
    n, n_pix = model.shape
    snr = np.clip(_label(labels, "SNR", 100.0).astype(np.float64), 1.0, None)
    telescope = _label(labels, "TELESCOPE", "apo25m").astype(str)
    vhelio = np.nan_to_num(_label(labels, "VHELIO_AVG", 0.0).astype(np.float64))
    sky_pix, sky_class = _sky_lines()
    n_sky = sky_pix.size
    offsets = np.arange(-3, 4)

    # every random number a star uses comes from its own stream, in a fixed order
    z_pix = np.empty((n, n_pix), dtype=np.float32)
    z_sky = np.empty((n, n_sky, offsets.size), dtype=np.float32)
    u = np.empty((n, 8))
    extra_bad, cosmic = [], []
    for i, rng in enumerate(star_rngs(labels, seed)):
        z_pix[i] = rng.standard_normal(n_pix, dtype=np.float32)
        z_sky[i] = rng.standard_normal((n_sky, offsets.size), dtype=np.float32)
        u[i] = rng.random(8)
        extra_bad.append(rng.integers(0, APSTAR_NPIX, rng.poisson(12)))
        n_cr = rng.poisson(2.0)
        cosmic.append((rng.integers(0, APSTAR_NPIX - 2, n_cr), rng.integers(1, 3, n_cr),
                       rng.uniform(0.05, 0.25, n_cr)))

    f0 = np.asarray(model, dtype=np.float32)
    pattern = _detector_pattern()[grid.index].astype(np.float32)
    # photon noise: σ² ∝ flux, scaled so that σ = pattern/SNR on the continuum, plus a floor
    scale2 = (pattern[None, :] / snr.astype(np.float32)[:, None]) ** 2
    error = np.sqrt(scale2 * np.clip(f0, 0.05, None) + np.float32(ERROR_FLOOR**2))
    flux = f0 + error * z_pix
    pixmask = np.zeros((n, n_pix), dtype=np.uint16)
    on_grid = np.full(APSTAR_NPIX, -1, dtype=np.int64)
    on_grid[grid.index] = np.arange(n_pix)

    def apply(rows, apstar_pix, bit, boost, add=None):
        """Flag, inflate the error of and add artefact flux to (row, apStar pixel) pairs."""
        rows, q = np.asarray(rows), on_grid[np.clip(apstar_pix, 0, APSTAR_NPIX - 1)]
        keep = (apstar_pix >= 0) & (apstar_pix < APSTAR_NPIX) & (q >= 0)
        rows, q = rows[keep], q[keep]
        pixmask[rows, q] |= np.uint16(bit)
        error[rows, q] *= np.asarray(boost, dtype=np.float32)[keep] if np.ndim(boost) else boost
        if add is not None:
            flux[rows, q] += np.asarray(add, dtype=np.float32)[keep] if np.ndim(add) else add

    rows_all = np.arange(n)
    # observed-frame features appear shifted by the star's topocentric velocity
    v_topo = vhelio + (u[:, 0] - 0.5) * 60.0  # barycentric correction of the visits
    shift = -v_topo / KMS_PER_PIXEL

    # sky lines: residuals of the sky subtraction, wider for brighter lines
    centres = sky_pix[None, :] + shift[:, None]
    pix = np.floor(centres)[:, :, None].astype(np.int64) + offsets
    half = np.array([2.6, 1.6, 1.1])[sky_class - 1]
    r, s_idx, o_idx = np.nonzero(np.abs(pix - centres[:, :, None]) <= half[None, :, None])
    cls = sky_class[s_idx] - 1
    apply(r, pix[r, s_idx, o_idx], _BAD["SIG_SKYLINE"], np.array([4.0, 2.5, 1.8])[cls],
          z_sky[r, s_idx, o_idx] * np.array([3.0, 1.5, 1.0])[cls] / snr[r])

    # bad detector pixels (fixed) and a few random ones this visit
    fixed = np.rint(_fixed_bad_pixels()[None, :] + shift[:, None]).astype(np.int64)
    r_bad = np.concatenate([np.repeat(rows_all, fixed.shape[1])]
                           + [np.full(b.size, i) for i, b in enumerate(extra_bad)])
    p_bad = np.concatenate([fixed.ravel()] + extra_bad)
    apply(r_bad, p_bad, _BAD["BADPIX"], 25.0, -0.3 + 0.5 * ((p_bad * 0.6180339887) % 1.0))

    # cosmic rays: 1-2 pixel hits that the visit combination did not fully reject
    r_cr, p_cr, a_cr = [], [], []
    for i, (starts, widths, amps) in enumerate(cosmic):
        for a, w, amp in zip(starts, widths, amps, strict=True):
            r_cr += [i] * int(w)
            p_cr += list(range(a, a + w))
            a_cr += [amp] * int(w)
    if r_cr:
        apply(np.array(r_cr), np.array(p_cr), _BAD["CRPIX"], 20.0, np.array(a_cr))

    # saturation next to the brightest sky lines, in a few high-S/N stars
    sat = np.nonzero((snr > 300) & (u[:, 1] < 0.1))[0]
    if sat.size:
        c = np.rint(centres[sat, (u[sat, 2] * n_sky).astype(np.int64)]).astype(np.int64)
        apply(np.repeat(sat, 3), (c[:, None] + np.arange(-1, 2)).ravel(), _BAD["SATPIX"], 30.0)

    # persistence on the blue detector of the APO 2.5 m spectrograph
    blue = DETECTORS[0]
    levels = ("PERSIST_LOW", "PERSIST_MED", "PERSIST_HIGH")
    amps = (0.01, 0.03, 0.06)
    for i in np.nonzero((telescope == "apo25m") & (u[:, 3] < 0.18))[0]:
        k = int(np.searchsorted([0.5, 0.85], u[i, 4], side="right"))
        end = blue[0] + int((blue[1] - blue[0]) * (0.35 + 0.65 * u[i, 5]))
        ramp = amps[k] * (0.5 + 0.5 * u[i, 6]) * np.linspace(1.0, 0.3, end - blue[0])
        apply(np.full(end - blue[0], i), np.arange(blue[0], end), _BAD[levels[k]], 1.3, ramp)

    # Littrow ghost: a faint fixed-position reflection on the green detector
    ghost = apstar_pixel(np.asarray(LITTROW_GHOST_VAC))
    for i in np.nonzero((telescope != "apo1m") & (u[:, 7] < 0.25))[0]:
        span = np.arange(int(np.floor(ghost[0] + shift[i])), int(np.ceil(ghost[1] + shift[i])) + 1)
        apply(np.full(span.size, i), span, _BAD["LITTROW_GHOST"], 1.5, 0.005 + 0.025 * u[i, 6])

    np.clip(flux, *FLUX_RANGE, out=flux)
    return flux, error, pixmask
