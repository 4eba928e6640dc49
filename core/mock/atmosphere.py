"""A one-layer model photosphere: the line-to-continuum opacity ratio of every line in every star.

Deliberately approximate but directionally right and smooth in the labels, so that models
trained on mock spectra learn real dependences:

* gas and electron pressure from log g, [M/H] and T (metals supply the electrons in cool
  stars, hydrogen above ~6000 K), and H⁻ continuum opacity ∝ P_e θ^2.5 10^(0.754 θ);
* Saha ionisation balance for every element and the Boltzmann factor 10^(−θχ), θ = 5040/T;
* molecules from dissociation equilibrium (K ∝ T^1.5 10^(−θ D₀)), with carbon shared
  between CO and free C, so CO saturates once all carbon is bound in cool giants;
* Doppler widths from T, the particle mass and the microturbulence, and damping that grows
  with the gas pressure (van der Waals) or, for hydrogen, the electron density (Stark).

Every quantity is an array over (stars,) or (stars, lines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Asplund et al. (2009) solar photospheric abundances, log ε (H = 12).
SOLAR_ABUNDANCE = {
    "H": 12.00, "C": 8.43, "N": 7.83, "O": 8.69, "Na": 6.24, "Mg": 7.60, "Al": 6.45,
    "Si": 7.51, "S": 7.12, "K": 5.03, "Ca": 6.34, "Ti": 4.95, "V": 3.93, "Cr": 5.64,
    "Mn": 5.43, "Fe": 7.50, "Co": 4.99, "Ni": 6.22,
}
ELEMENTS = tuple(SOLAR_ABUNDANCE)
ATOMIC_MASS = {
    "H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "Na": 22.990, "Mg": 24.305,
    "Al": 26.982, "Si": 28.085, "S": 32.06, "K": 39.098, "Ca": 40.078, "Ti": 47.867,
    "V": 50.942, "Cr": 51.996, "Mn": 54.938, "Fe": 55.845, "Co": 58.933, "Ni": 58.693,
}
#: First ionisation energies (eV).
IONISATION_EV = {
    "H": 13.598, "C": 11.260, "N": 14.534, "O": 13.618, "Na": 5.139, "Mg": 7.646,
    "Al": 5.986, "Si": 8.152, "S": 10.360, "K": 4.341, "Ca": 6.113, "Ti": 6.828, "V": 6.746,
    "Cr": 6.767, "Mn": 7.434, "Fe": 7.902, "Co": 7.881, "Ni": 7.640,
}
#: Partition functions of the neutral atom and the ion near 5000 K (held constant: their
#: slow T dependence hardly matters next to the Boltzmann and Saha factors).
PARTITION = {
    "H": (2.0, 1.0), "C": (9.3, 6.0), "N": (4.1, 9.0), "O": (8.9, 4.0), "Na": (2.0, 1.0),
    "Mg": (1.0, 2.0), "Al": (5.8, 1.0), "Si": (9.4, 5.7), "S": (8.9, 4.0), "K": (2.1, 1.0),
    "Ca": (1.2, 2.2), "Ti": (30.0, 55.0), "V": (40.0, 35.0), "Cr": (10.0, 7.0),
    "Mn": (6.0, 7.5), "Fe": (25.0, 42.0), "Co": (30.0, 28.0), "Ni": (28.0, 10.0),
}


@dataclass(frozen=True)
class Molecule:
    atoms: tuple[str, str]
    d0_ev: float  # dissociation energy
    b_cm: float  # rotational constant (cm⁻¹), for the partition function
    w_cm: float  # vibrational constant (cm⁻¹)
    g_el: float  # electronic degeneracy of the ground state
    mass: float


MOLECULES = {
    "CO": Molecule(("C", "O"), 11.09, 1.931, 2170.0, 1.0, 28.010),
    "CN": Molecule(("C", "N"), 7.72, 1.900, 2069.0, 2.0, 26.018),
    "OH": Molecule(("O", "H"), 4.39, 18.91, 3738.0, 4.0, 17.007),
}
#: log10 of the T^1.5-scaled dissociation constant at 5000 K and θ D₀ = 0 (cgs pressure).
LOG_K0 = 12.4

SPEED_KMS_PER_SQRT_T_OVER_M = 0.016629  # (2 k / amu) in km² s⁻² K⁻¹


@dataclass
class StellarState:
    """Per-star thermodynamic quantities (all arrays of shape (n,))."""

    teff: np.ndarray
    theta: np.ndarray
    log_pg: np.ndarray
    log_pe: np.ndarray
    log_kappa: np.ndarray
    vmicro: np.ndarray
    log_eps: dict[str, np.ndarray]  # log ε of each element


def log_saha(element: str, theta: np.ndarray, log_pe: np.ndarray) -> np.ndarray:
    """log10(N_ion / N_neutral) from the Saha equation in electron-pressure form."""
    u0, u1 = PARTITION[element]
    log_t = np.log10(5040.0 / theta)
    return (np.log10(2.0 * u1 / u0) + 2.5 * log_t - theta * IONISATION_EV[element]
            - 0.4772 - log_pe)


def stellar_state(teff, logg, m_h, vmicro, log_eps: dict[str, np.ndarray]) -> StellarState:
    """Pressures and continuum opacity of a representative H-band line-forming layer."""
    teff = np.asarray(teff, dtype=np.float64)
    logg = np.asarray(logg, dtype=np.float64)
    m_h = np.asarray(m_h, dtype=np.float64)
    theta = 5040.0 / teff
    log_t = np.log10(teff)
    # H-band light escapes near the H⁻ opacity minimum, so the layer is deep: P_g ∝ g^0.64,
    # higher in metal-poor (more transparent) and in cooler atmospheres
    log_pg = 4.95 + 0.64 * (logg - 4.44) - 0.25 * m_h - 2.0 * (log_t - np.log10(5777.0))
    # electrons from easily ionised metals (χ ≈ 7.9 eV, ε ≈ 1e-4) and from hydrogen
    log_phi_m = 2.5 * log_t - 7.9 * theta - 0.4772 + 0.3
    log_phi_h = 2.5 * log_t - 13.598 * theta - 0.4772
    log_pe_m = 0.5 * (log_pg - 4.0 + m_h + log_phi_m)
    log_pe_h = 0.5 * (log_pg + log_phi_h)
    log_pe = 0.5 * np.log10(10.0 ** (2 * log_pe_m) + 10.0 ** (2 * log_pe_h))
    log_kappa = log_pe + 2.5 * np.log10(theta) + 0.754 * theta
    return StellarState(teff, theta, log_pg, log_pe, log_kappa,
                        np.asarray(vmicro, dtype=np.float64), log_eps)


def stage_fraction(element: str, ion: np.ndarray, state: StellarState) -> np.ndarray:
    """log10 of the fraction of an element in ionisation stage ``ion`` (0 or 1): (n, m)."""
    r = log_saha(element, state.theta, state.log_pe)[:, None]
    log_f0 = -np.logaddexp(0.0, r * np.log(10.0)) / np.log(10.0)
    return np.where(np.asarray(ion)[None, :] == 0, log_f0, log_f0 + r)


def molecular_fractions(state: StellarState) -> dict[str, np.ndarray]:
    """log10 number fractions of CO, CN and OH relative to hydrogen, per star."""
    theta = state.theta
    log_ph = state.log_pg - 0.04  # helium carries ~9 % of the gas pressure

    def log_q(mol: Molecule) -> np.ndarray:  # log10 (P_H / K_AB)
        log_k = LOG_K0 + 1.5 * np.log10(5040.0 / theta / 5000.0) - theta * mol.d0_ev
        return log_ph - log_k

    c = 10.0 ** (state.log_eps["C"] - 12.0)
    o = 10.0 ** (state.log_eps["O"] - 12.0)
    n = 10.0 ** (state.log_eps["N"] - 12.0)
    q = 10.0 ** log_q(MOLECULES["CO"])
    # x_CO solves q (c − x)(o − x) = x; the small root, written without cancellation
    b = q * (c + o) + 1.0
    x_co = 2.0 * q * c * o / (b + np.sqrt(np.maximum(b * b - 4.0 * q * q * c * o, 0.0)))
    c_free = np.maximum(c - x_co, 1e-30)
    o_free = np.maximum(o - x_co, 1e-30)
    x_cn = c_free * n * 10.0 ** log_q(MOLECULES["CN"])
    x_oh = o_free * 10.0 ** log_q(MOLECULES["OH"])
    return {"CO": np.log10(x_co), "CN": np.log10(x_cn), "OH": np.log10(x_oh)}


def log_molecular_partition(mol: Molecule, teff: np.ndarray) -> np.ndarray:
    rot = teff / (1.4388 * mol.b_cm)
    vib = 1.0 / (1.0 - np.exp(-1.4388 * mol.w_cm / teff))
    return np.log10(mol.g_el * rot * vib)


def doppler_b(teff: np.ndarray, mass: np.ndarray, vmicro: np.ndarray) -> np.ndarray:
    """Doppler parameter b (km/s) of each (star, line): thermal ⊕ microturbulent."""
    return np.sqrt(SPEED_KMS_PER_SQRT_T_OVER_M * teff[:, None] / mass[None, :]
                   + vmicro[:, None] ** 2)
