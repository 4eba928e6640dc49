"""The 'apogee' physics: line strengths closer to real APOGEE spectra across the HR diagram.

Same machinery as the classic synthesis (curve of growth, sparse Voigt templates, one
representative layer per star), different physics:

* **continuous opacity** per line from H⁻: bound-free with its 16 419 Å threshold (the
  cross-section of John 1988) plus free-free (the Bell & Berrington fit as given by Gray),
  both ∝ P_e, so the line/continuum ratio changes along the H band and with Teff and log g;
  plus hydrogenic H I bound-free (n ≥ 5) and free-free, which takes over above ~7000 K and
  keeps hot stars' lines from growing without bound;
* **depth limit from the source function**: an LTE line core cannot go below the Planck
  function of the layer where it forms; at 1.6 µm the intrinsic limiting depth is
  1 − B_λ(T_core)/B_λ(T_cont) with the continuum formed deep (T_cont = 1.15 Teff: near the
  H⁻ opacity minimum τ_1.6µm = 2/3 lies near τ_Ross ≈ 1.7) and strong cores high up
  (T_core = 0.78 Teff), and the H⁻ opacity taken at T_cont: deep lines in cool
  giants, shallow ones in hot dwarfs — instead of the classic fixed 0.85 and its ad hoc
  "hot weakening";
* **the molecular forest** (:data:`FOREST_PATH`): the shipped list plus many more
  computed CN red-system and ¹²CO Δv = 3 lines with their band structure, which in cool
  giants blanket the spectrum so that the continuum is hardly ever reached.

Global constants only (:data:`LOG_ETA_ZERO`, :data:`T_CONT`, :data:`T_CORE`), calibrated
once on two real APOGEE stars together, an M giant (S/N 154) and an F dwarf (S/N 45), with
``bench/realism.py --synth``: χ²_ν at their header labels, their line depths and counts, and
the labels of a direct fit, never per star.  The hydrogen zero point is the least certain:
the dwarf's fit χ²_ν is flat (2.30–2.35) from 14.4 to 14.85 while its fitted Teff runs from
7250 to 6475 K.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from ..linelist import LINELIST_DIR, RYDBERG_H, load_linelist
from . import atmosphere as atm

FOREST_PATH = LINELIST_DIR / "apogee_hband_forest.csv"

#: log η₀ zero points (dex) per line family, relative to the H⁻ opacity of :func:`log_kappa`.
LOG_ETA_ZERO = {"atomic": 14.6, "CO": 13.6, "CN": 14.9, "OH": 17.1, "hydrogen": 14.7}
#: Continuum-forming and line-core temperatures in units of Teff (see the module docstring).
T_CONT, T_CORE = 1.15, 0.78
#: Observed central depths saturate smoothly towards this value.
DEPTH_CEILING = 0.97
#: hc/(λ k) at 16 000 Å, in K.
HC_OVER_LK_16000 = 1.4387769e8 / 16000.0

# H⁻ bound-free cross-section (John 1988 form): λ in µm, threshold λ0.
_HM_LAMBDA0 = 1.6419
_HM_BF = (152.519, 49.534, -118.858, 92.536, -34.194, 4.982)


def hminus_bf_cross_section(lam_angstrom) -> np.ndarray:
    """H⁻ photo-detachment cross-section (cm²) at vacuum wavelengths (Å); 0 beyond 16 419 Å."""
    lam = np.asarray(lam_angstrom, dtype=np.float64) / 1e4
    x = np.clip(1.0 / lam - 1.0 / _HM_LAMBDA0, 0.0, None)
    f = sum(c * x ** (0.5 * n) for n, c in enumerate(_HM_BF))
    return 1e-18 * lam**3 * x**1.5 * f


def hminus_ff(lam_angstrom, theta) -> np.ndarray:
    """H⁻ free-free absorption per neutral H atom per unit P_e (cm² / (dyn cm⁻²)), with
    stimulated emission included; ``theta`` (n, 1) against λ (L,) broadcast to (n, L)."""
    lg = np.log10(np.asarray(lam_angstrom, dtype=np.float64))
    f0 = -2.2763 - 1.6850 * lg + 0.76661 * lg**2 - 0.053346 * lg**3
    f1 = 15.2827 - 9.2846 * lg + 1.99381 * lg**2 - 0.142631 * lg**3
    f2 = -197.789 + 190.266 * lg - 67.9775 * lg**2 + 10.6913 * lg**3 - 0.625151 * lg**4
    lt = np.log10(theta)
    return 1e-26 * 10.0 ** (f0 + f1 * lt + f2 * lt * lt)


def hydrogen_continuum(lam_angstrom, theta) -> np.ndarray:
    """Neutral-hydrogen bound-free (levels n ≥ 5: the H band lies redward of the Brackett
    edge at 14 588 Å) and free-free absorption per neutral H atom (cm²), hydrogenic with
    Gaunt factors of 1 and the levels above n = 7 summed as an integral; (n, L).  It only
    matters above ~6500 K, where it starts to rival H⁻."""
    lam = np.asarray(lam_angstrom, dtype=np.float64)[None, :]
    th = np.asarray(theta, dtype=np.float64)
    ion = 13.598
    total = np.zeros(np.broadcast_shapes(th.shape, lam.shape))
    for n in (5, 6, 7):
        total = total + 10.0 ** (-th * ion * (1.0 - 1.0 / n**2)) / n**3
    tail = np.log10(np.e) / (2.0 * th * ion)
    total = total + tail * (10.0 ** (-th * ion * (1.0 - 1.0 / 64.0)) - 10.0 ** (-th * ion))
    total = total + tail * 10.0 ** (-th * ion)  # free-free
    return 1.0449e-26 * lam**3 * total


def log_kappa(lam: np.ndarray, theta: np.ndarray, log_pe: np.ndarray) -> np.ndarray:
    """log10 of the continuous opacity per H atom (×1e26), (n, L): H⁻ bound-free and
    free-free (∝ P_e) plus neutral hydrogen, with stimulated emission."""
    th = theta[:, None]
    u = HC_OVER_LK_16000 * 16000.0 / lam[None, :] * th / 5040.0  # hν/kT
    stim = -np.expm1(-u)
    saha = 4.158e-10 * th**2.5 * 10.0 ** (0.754 * th)  # n(H⁻)/(n(H) P_e)
    bf = saha * hminus_bf_cross_section(lam)[None, :] * stim
    pe = 10.0 ** log_pe[:, None]
    return np.log10((pe * (bf + hminus_ff(lam, th)) + hydrogen_continuum(lam, th) * stim) * 1e26)


def max_depth(teff: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Limiting intrinsic depth 1 − B_λ(T_core)/B_λ(T_cont) of each (star, line)."""
    u = (HC_OVER_LK_16000 * 16000.0 / lam)[None, :] / teff[:, None]
    return 1.0 - np.expm1(u / T_CONT) / np.expm1(u / T_CORE)


@lru_cache(maxsize=1)
def _forest() -> pd.DataFrame:
    return load_linelist(FOREST_PATH)


def apogee_linelist() -> pd.DataFrame:
    """The shipped line list plus the computed molecular forest (sorted by wavelength)."""
    out = pd.concat([load_linelist(), _forest()], ignore_index=True)
    out = out.sort_values("wavelength_vac", kind="stable").reset_index(drop=True)
    out.attrs = {"medium": "vacuum", "path": f"{load_linelist().attrs['path']} + {FOREST_PATH}"}
    return out


def line_strengths(lab: dict[str, np.ndarray], model):
    """Equivalent width (px) and template Lorentz width (px) of every (star, line)."""
    from .synth import line_setup, line_widths

    su = line_setup(lab, model)
    state, theta, lam, chi, log_b = su.state, su.theta, su.lam, su.chi, su.log_b
    kinds, species, elements, ions = su.kinds, su.species, su.elements, su.ions
    log_eta, log_a, log_pg = su.log_eta, su.log_a, su.log_pg
    common = (model.log_gf[None, :] - theta * chi[None, :]
              - log_kappa(lam, state.theta / T_CONT, state.log_pe)
              + np.log10(lam / 16000.0)[None, :] - log_b)

    atomic = np.nonzero(kinds == "atomic")[0]
    for el in np.unique(elements[atomic]):
        idx = atomic[elements[atomic] == el]
        u0, u1 = atm.PARTITION[el]
        log_u = np.where(ions[idx] == 0, np.log10(u0), np.log10(u1))
        log_eta[:, idx] = (LOG_ETA_ZERO["atomic"] + common[:, idx] + state.log_eps[el][:, None]
                           - 12.0 + atm.stage_fraction(el, ions[idx], state) - log_u[None, :])
        log_a[:, idx] = (-0.6 + 0.7 * (log_pg - 4.95)
                         + 0.3 * np.log10(state.teff / 5777.0)[:, None] - log_b[:, idx])

    fractions = atm.molecular_fractions(state)
    for sp, mol in atm.MOLECULES.items():
        idx = np.nonzero((kinds == "molecular") & (species == sp))[0]
        if idx.size == 0:
            continue
        log_u = atm.log_molecular_partition(mol, state.teff)
        log_eta[:, idx] = LOG_ETA_ZERO[sp] + common[:, idx] + (fractions[sp] - log_u)[:, None]
        log_a[:, idx] = -1.3 + 0.7 * (log_pg - 4.95) - log_b[:, idx]

    hyd = np.nonzero(kinds == "hydrogen")[0]
    if hyd.size:
        n_up = 1.0 / np.sqrt(1.0 / 16.0 - 1e10 / (lam[hyd] * RYDBERG_H))
        log_f0 = atm.stage_fraction("H", np.zeros(hyd.size, dtype=np.int64), state)
        log_eta[:, hyd] = LOG_ETA_ZERO["hydrogen"] + common[:, hyd] + log_f0
        log_a[:, hyd] = (0.5 + (2.0 / 3.0) * (state.log_pe[:, None] - 1.6)
                         + 2.0 * np.log10(n_up / 11.0)[None, :] + 1.0 - log_b[:, hyd])

    return line_widths(su, max_depth(state.teff, lam))
