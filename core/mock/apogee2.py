"""The 'apogee2' physics: the ``apogee`` synthesis with computed OH and CO band systems and
molecules formed where they really form, in the cool outer photosphere.

What changes against :mod:`.apogee` (atoms, hydrogen and the H⁻ continuum are the same):

* **line list** (:func:`apogee2_linelist`): the shipped atomic, hydrogen and CN lines and the
  CN forest as in ``apogee``; every ¹²CO line computed from the Dunham expansion
  (:mod:`.molecules`: Δv = 3 bands 3-0 … 11-8, log gf from the band strength and Hönl–London
  factors, lower-level energies from the term values); the OH lines at their measured
  positions (published OH lines and ASPCAP O windows centred on OH features), each with the
  excitation energy and log gf of the strongest computed Meinel Δv = 2 line within
  :data:`SNAP_ANGSTROM` (P/Q/R of both spin components, Λ-doubled).  Computed OH lines are not
  added on their own: their positions are good to ~0.8 Å rms only, and a line 3–4 pixels
  off costs more than a missing one (the 427 computed OH lines with no measured partner,
  added, raise the M giant's χ²_ν at its header labels from 257 to 467).
* **molecular equilibrium** (:func:`molecular_fractions`): dissociation constants from
  statistical mechanics, K_p = (2π μ k T / h²)^{3/2} k T · u_A u_B / u_AB(T) · e^{−D₀/kT},
  with rotational–vibrational partition functions of each molecule, carbon shared between CO
  and CN, oxygen between CO and OH; evaluated, together with the molecules' Boltzmann
  factors, at the temperature and pressure of the outer layers where molecular lines form,
  :data:`T_MOL` × Teff (the grey-atmosphere boundary temperature, 0.84 Teff) and
  :data:`LOG_P_MOL` below the continuum layer's pressure, instead of at Teff.  With D₀/kT
  at that temperature, molecular lines grow as Teff falls at the physical rate, and carbon
  locked in CO leaves less for CN in M stars; each molecule's zero point keeps ``apogee``'s total absorption at a 4500 K,
  log g 2.5, solar giant (:data:`REFERENCE_GIANT`), so only the dependence on the labels
  and the band structure change.
* **¹³CO** (Δv = 3, Dunham coefficients mass-scaled) with ¹²C/¹³C falling from 89 in
  dwarfs to ~22 after the first dredge-up and ~12 on the upper giant branch
  (:func:`carbon_isotope_ratio`).

Global constants only; nothing is set per star, and the two real spectra of
``bench/realism.py`` set none of them (the zero points come from ``apogee`` at the reference
giant, T_MOL and LOG_P_MOL from the grey atmosphere).  Measured on the real M giant against
``apogee`` (``python bench/realism.py --synth``): χ²_ν at its header labels 257 (293), direct
fit ΔTeff +197 K (+172), Δ[Fe/H] −0.01 (−0.09), log g 1.80 (2.14; header 0.53), χ²_ν 202
(209); but its blue chip is shallower (depth ×0.66 of the real, ×0.74 before).  The F dwarf
does not change.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from ..linelist import load_linelist
from . import atmosphere as atm
from . import molecules as mol
from .apogee import LOG_ETA_ZERO as APOGEE_ZERO
from .apogee import T_CONT, _forest, log_kappa, max_depth

#: Molecular lines form in the outer layers, at the boundary temperature of a grey
#: atmosphere, T₀ = (½)^{1/4} Teff ≈ 0.84 Teff (T(τ) stays within 3 % of it for τ ≲ 0.1).
T_MOL = 0.5 ** 0.25
#: The reference giant (Teff, log g, [Fe/H]) at which each molecule's total equivalent width
#: equals that of ``apogee``: the calibration of ``apogee`` is kept there, and the new physics
#: only changes how the molecules vary away from it (and where their lines lie).
REFERENCE_GIANT = (4500.0, 2.5, 0.0)
#: log10 of the gas pressure where molecular lines form relative to the continuum layer of
#: :func:`.atmosphere.stellar_state` (hydrostatic with H⁻ opacity ∝ P_e: P ∝ √τ, and
#: τ ≈ 0.01–0.02 there against ~1).
LOG_P_MOL = -1.0
#: log η₀ zero points (dex): atoms and hydrogen as in ``apogee``; molecules set by
#: :data:`REFERENCE_GIANT` (bisection on the summed equivalent width, tests check it).
LOG_ETA_ZERO = {**APOGEE_ZERO, "CO": 13.614, "OH": 16.729, "CN": 14.878}
#: A computed OH line takes a measured position within this distance (Å).
SNAP_ANGSTROM = 1.2
#: Computed lines weaker than the strongest of their molecule by more than this (dex, in
#: log gf − θχ at 2800 K) are left out: they cannot reach 0.1 % depth anywhere in the box.
KEEP_DEX = 3.5
#: ¹²C/¹³C against log g: unmixed dwarfs (solar, 89), after the first dredge-up (~22 on the
#: lower giant branch) and after the extra mixing above the bump (~12 on the upper giant
#: branch and in the clump); log-linear in between.
C12_C13_KNOTS = ((1.5, 12.0), (2.2, 12.0), (3.0, 22.0), (3.8, 89.0))


def carbon_isotope_ratio(logg) -> np.ndarray:
    """¹²C/¹³C of a star of surface gravity ``logg`` (see :data:`C12_C13_KNOTS`)."""
    x = [k[0] for k in C12_C13_KNOTS]
    y = [np.log10(k[1]) for k in C12_C13_KNOTS]
    return 10.0 ** np.interp(np.asarray(logg, dtype=np.float64), x, y)


#: Dissociation energies D₀ (eV).
D0_EV = {"CO": 11.09, "CN": 7.72, "OH": 4.39}
#: Rotational symmetry numbers and electronic ground-state degeneracies.
SIGMA = {"CO": 1.0, "CN": 1.0, "OH": 1.0}

_H = 6.62607015e-27  # erg s
_K = 1.380649e-16  # erg / K
_AMU = 1.66053907e-24  # g
_HC_K = 1.4387769  # hc/k, cm K


def log_kp(molecule: str, temperature: np.ndarray) -> np.ndarray:
    """log10 of the dissociation constant K_p = P_A P_B / P_AB (dyn cm⁻²) at ``temperature``."""
    m = atm.MOLECULES[molecule]
    a, b = m.atoms
    t = np.asarray(temperature, dtype=np.float64)
    ma, mb = atm.ATOMIC_MASS[a], atm.ATOMIC_MASS[b]
    mu = ma * mb / (ma + mb) * _AMU
    trans = 1.5 * np.log10(2.0 * np.pi * mu * _K * t / _H**2) + np.log10(_K * t)
    u_a, u_b = atm.PARTITION[a][0], atm.PARTITION[b][0]
    log_u_ab = log_partition(molecule, t)
    return trans + np.log10(u_a * u_b) - log_u_ab - 5040.0 / t * D0_EV[molecule]


def log_partition(molecule: str, temperature: np.ndarray) -> np.ndarray:
    """log10 of the molecule's internal partition function (rigid rotor × harmonic
    oscillator × electronic degeneracy of the ground state)."""
    m = atm.MOLECULES[molecule]
    t = np.asarray(temperature, dtype=np.float64)
    rot = t / (_HC_K * m.b_cm * SIGMA[molecule]) + 1.0 / 3.0
    vib = 1.0 / (1.0 - np.exp(-_HC_K * m.w_cm / t))
    return np.log10(m.g_el * rot * vib)


def molecular_fractions(state: atm.StellarState, t_mol: np.ndarray) -> dict[str, np.ndarray]:
    """log10 number fractions of CO, CN and OH relative to hydrogen at temperature ``t_mol``
    and the layer's gas pressure: CO first (it takes the less abundant of C and O), then CN
    and OH from what is left."""
    # helium carries ~9 % of the gas pressure; the outer layers are at lower pressure
    log_ph = state.log_pg - 0.04 + LOG_P_MOL
    c = 10.0 ** (state.log_eps["C"] - 12.0)
    o = 10.0 ** (state.log_eps["O"] - 12.0)
    n = 10.0 ** (state.log_eps["N"] - 12.0)
    q = 10.0 ** (log_ph - log_kp("CO", t_mol))
    # x_CO solves q (c − x)(o − x) = x; the small root, without cancellation
    b = q * (c + o) + 1.0
    x_co = 2.0 * q * c * o / (b + np.sqrt(np.maximum(b * b - 4.0 * q * q * c * o, 0.0)))
    c_free = np.maximum(c - x_co, 1e-30)
    o_free = np.maximum(o - x_co, 1e-30)
    x_cn = c_free * n * 10.0 ** (log_ph - log_kp("CN", t_mol))
    x_oh = o_free * 10.0 ** (log_ph - log_kp("OH", t_mol))
    return {"CO": np.log10(x_co), "CN": np.log10(x_cn), "OH": np.log10(x_oh)}


def assign_measured(measured: pd.DataFrame, computed: pd.DataFrame) -> pd.DataFrame:
    """Measured OH lines (position kept) with the excitation energy and log gf of the strongest
    computed line within :data:`SNAP_ANGSTROM` (the line a star shows there); measured lines
    with no computed partner keep their own values.  Computed lines are not added on their
    own: their positions (~0.8 Å rms) would put absorption where stars have none."""
    out = measured.copy()
    lam = computed["wavelength_vac"].to_numpy()
    strength = (computed["log_gf"] - 1.8 * computed["excitation_potential"]).to_numpy()
    chi = out["excitation_potential"].to_numpy(dtype=np.float64).copy()
    gf = out["log_gf"].to_numpy(dtype=np.float64).copy()
    notes = out["note"].astype(str).to_numpy().copy()
    for k, w in enumerate(out["wavelength_vac"].to_numpy()):
        near = np.nonzero(np.abs(lam - w) <= SNAP_ANGSTROM)[0]
        if near.size == 0:
            continue
        i = near[np.argmax(strength[near])]
        chi[k], gf[k] = computed["excitation_potential"].iat[i], computed["log_gf"].iat[i]
        notes[k] = (f"{notes[k]}; χ, gf of computed {computed['note'].iat[i]} "
                    f"({lam[i] - w:+.2f} Å)")
    out["excitation_potential"], out["log_gf"], out["note"] = chi, gf, notes
    return out


def _keep_strong(lines: pd.DataFrame) -> pd.DataFrame:
    s = lines["log_gf"] - (5040.0 / 2800.0) * lines["excitation_potential"]
    return lines[s >= s.max() - KEEP_DEX]


@lru_cache(maxsize=1)
def computed_molecules() -> pd.DataFrame:
    """OH at measured positions with computed χ and gf, and the computed CO lines, in the
    line list's columns."""
    shipped = load_linelist()
    measured = shipped[(shipped["species"] == "OH") & (shipped["kind"] == "molecular")]
    oh = assign_measured(measured, _keep_strong(mol.oh_lines()))
    co = pd.concat([_keep_strong(mol.co_lines()),
                    # ¹³CO per ¹³CO molecule; kept down to the same floor as ¹²CO at 1/10
                    _keep_strong(mol.co_lines(isotopologue="13C16O"))], ignore_index=True)
    co = co.assign(note=co["note"] + "; computed from Dunham coefficients")
    rows = []
    oh = oh.assign(isotopologue="")
    for df, element, informs in ((oh, "O", "O_FE;TEFF"), (co, "C", "C_FE;TEFF;LOGG")):
        rows.append(pd.DataFrame({
            "wavelength_vac": df["wavelength_vac"].round(4).to_numpy(),
            "species": df["species"].to_numpy(), "element": element, "ion": 0,
            "excitation_potential": df["excitation_potential"].round(4).to_numpy(),
            "log_gf": df["log_gf"].round(4).to_numpy(), "informs": informs,
            "kind": "molecular", "note": df["note"].to_numpy(),
            "isotopologue": df["isotopologue"].to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def apogee2_linelist() -> pd.DataFrame:
    """Shipped atomic, hydrogen and CN lines, the CN forest, and the computed OH and CO."""
    shipped = load_linelist()
    keep = ~((shipped["kind"] == "molecular") & shipped["species"].isin(["OH", "CO"]))
    forest = _forest()
    forest = forest[forest["species"] == "CN"]
    out = pd.concat([shipped[keep], forest, computed_molecules()], ignore_index=True)
    out["isotopologue"] = out["isotopologue"].fillna("")
    out = out.sort_values("wavelength_vac", kind="stable").reset_index(drop=True)
    out.attrs = {"medium": "vacuum",
                 "path": f"{shipped.attrs['path']} (atoms, H, CN) + CN forest + computed OH/CO"}
    return out


def state_logg(lab: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(lab["LOGG"], dtype=np.float64)


def line_strengths(lab: dict[str, np.ndarray], model):
    """Equivalent width (px) and template Lorentz width (px) of every (star, line)."""
    from .synth import line_setup, line_widths

    su = line_setup(lab, model)
    state, theta, lam, chi, log_b = su.state, su.theta, su.lam, su.chi, su.log_b
    kinds, species, elements, ions = su.kinds, su.species, su.elements, su.ions
    log_eta, log_a, log_pg = su.log_eta, su.log_a, su.log_pg
    lkap = log_kappa(lam, state.theta / T_CONT, state.log_pe)
    base = (model.log_gf[None, :] - lkap + np.log10(lam / 16000.0)[None, :] - log_b)

    atomic = np.nonzero(kinds == "atomic")[0]
    for el in np.unique(elements[atomic]):
        idx = atomic[elements[atomic] == el]
        u0, u1 = atm.PARTITION[el]
        log_u = np.where(ions[idx] == 0, np.log10(u0), np.log10(u1))
        log_eta[:, idx] = (LOG_ETA_ZERO["atomic"] + base[:, idx] - theta * chi[None, idx]
                           + state.log_eps[el][:, None] - 12.0
                           + atm.stage_fraction(el, ions[idx], state) - log_u[None, :])
        log_a[:, idx] = (-0.6 + 0.7 * (log_pg - 4.95)
                         + 0.3 * np.log10(state.teff / 5777.0)[:, None] - log_b[:, idx])

    t_mol = T_MOL * state.teff
    theta_mol = (5040.0 / t_mol)[:, None]
    fractions = molecular_fractions(state, t_mol)
    for sp in atm.MOLECULES:
        idx = np.nonzero((kinds == "molecular") & (species == sp))[0]
        if idx.size == 0:
            continue
        log_u = log_partition(sp, t_mol)
        log_eta[:, idx] = (LOG_ETA_ZERO[sp] + base[:, idx] - theta_mol * chi[None, idx]
                           + (fractions[sp] - log_u)[:, None])
        if sp == "CO" and "isotopologue" in model.table.columns:
            # each isotopologue's share of the CO molecules
            iso = model.table["isotopologue"].to_numpy()[idx]
            ratio = carbon_isotope_ratio(state_logg(lab))[:, None]
            share = np.where(iso[None, :] == "13C16O", 1.0 / (ratio + 1.0),
                             ratio / (ratio + 1.0))
            log_eta[:, idx] += np.log10(share)
        log_a[:, idx] = -1.3 + 0.7 * (log_pg - 4.95) - log_b[:, idx]

    hyd = np.nonzero(kinds == "hydrogen")[0]
    if hyd.size:
        from ..linelist import RYDBERG_H

        n_up = 1.0 / np.sqrt(1.0 / 16.0 - 1e10 / (lam[hyd] * RYDBERG_H))
        log_f0 = atm.stage_fraction("H", np.zeros(hyd.size, dtype=np.int64), state)
        log_eta[:, hyd] = (LOG_ETA_ZERO["hydrogen"] + base[:, hyd] - theta * chi[None, hyd]
                           + log_f0)
        log_a[:, hyd] = (0.5 + (2.0 / 3.0) * (state.log_pe[:, None] - 1.6)
                         + 2.0 * np.log10(n_up / 11.0)[None, :] + 1.0 - log_b[:, hyd])

    return line_widths(su, max_depth(state.teff, lam))
