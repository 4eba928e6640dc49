"""Rebuild the shipped H-band line list, element windows and sky-line list from facts.

Run from the repository root::

    .venv/bin/python assets/linelists/build_linelists.py [--windows PATH]

Facts written here by hand: laboratory/literature wavelengths (air, converted to vacuum),
excitation potentials and log gf of well-known APOGEE lines (Smith et al. 2013 tables,
Shetrone et al. 2015 additions, solar-atlas identifications), OH line positions and log gf,
and bright OH airglow lines.  Computed here: ¹²C¹⁶O second-overtone (Δv = 3) lines and band
heads from the Dunham coefficients of CO, CN red-system (A²Π–X²Σ⁺, Δv = −1) lines from
textbook molecular constants (positions approximate), and the hydrogen Brackett series from
the Rydberg formula.  ``--windows`` points at a table of ASPCAP element windows (element,
start, end in vacuum Å, pixels); narrow windows add line positions for lines whose
wavelengths are not listed here, and all windows are rewritten in this project's format.
That table is only needed to rebuild; the shipped CSV files are self-contained.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from core.grid import air_to_vac  # noqa: E402
from core.linelist import brackett_wavelengths  # noqa: E402

LO, HI = 15100.0, 17000.0
HC_EV_CM = 1.23984198e-4  # E[eV] = HC_EV_CM * E[cm⁻¹]
THETA_REF = 5040.0 / 4000.0  # a cool giant: selects the molecular lines that matter

# --- atomic lines: (air Å, species, χ eV, log gf or None, source note) -----------------------
S13 = "Smith+2013"
ATOMIC_AIR = [
    # Fe I
    (15194.492, "Fe I", 2.223, -4.779, S13), (15207.526, "Fe I", 5.385, 0.080, S13),
    (15395.718, "Fe I", 5.620, -0.341, S13), (15490.339, "Fe I", 2.198, -4.807, S13),
    (15648.510, "Fe I", 5.426, -0.701, S13), (15964.867, "Fe I", 5.921, -0.128, S13),
    (16040.657, "Fe I", 5.874, 0.066, S13), (16153.247, "Fe I", 5.351, -0.743, S13),
    (16165.032, "Fe I", 6.319, 0.723, S13), (16697.635, "Fe I", 6.30, None, "Shetrone+2015"),
    (16009.610, "Fe I", 5.43, -0.55, "lab line (Ruffoni+2013); gf approx"),
    (15244.97, "Fe I", 5.59, -0.10, "solar atlas; approx"),
    (15294.56, "Fe I", 5.31, 0.68, "solar atlas; approx"),
    (15343.79, "Fe I", 5.65, -0.60, "solar atlas; approx"),
    (15500.80, "Fe I", 6.35, 0.00, "solar atlas; approx"),
    (15501.32, "Fe I", 6.29, 0.10, "solar atlas; approx"),
    (15531.75, "Fe I", 5.64, -0.50, "solar atlas; approx"),
    (15534.26, "Fe I", 5.64, -0.40, "solar atlas; approx"),
    (15551.43, "Fe I", 6.35, -0.30, "solar atlas; approx"),
    (15588.26, "Fe I", 6.37, 0.40, "solar atlas; approx"),
    (15591.49, "Fe I", 6.36, 0.60, "solar atlas; approx"),
    (15598.87, "Fe I", 6.24, -0.90, "solar atlas; approx"),
    (15604.22, "Fe I", 6.24, 0.30, "solar atlas; approx"),
    (15621.658, "Fe I", 5.54, 0.40, "solar atlas; gf approx"),
    (15631.950, "Fe I", 5.35, 0.00, "solar atlas; gf approx"),
    (15645.020, "Fe I", 6.31, -0.50, "solar atlas; gf approx"),
    (15652.873, "Fe I", 6.25, -0.10, "solar atlas; gf approx"),
    (15662.018, "Fe I", 5.83, 0.20, "solar atlas; gf approx"),
    (15692.75, "Fe I", 5.39, -0.30, "solar atlas; approx"),
    (15723.59, "Fe I", 5.62, 0.00, "solar atlas; approx"),
    (15761.31, "Fe I", 6.25, -0.20, "solar atlas; approx"),
    (15774.07, "Fe I", 6.30, 0.20, "solar atlas; approx"),
    (15818.14, "Fe I", 5.59, -0.60, "solar atlas; approx"),
    (15835.17, "Fe I", 6.31, 0.80, "solar atlas; approx"),
    (15837.64, "Fe I", 6.30, -0.20, "solar atlas; approx"),
    (15980.73, "Fe I", 6.26, 0.70, "solar atlas; approx"),
    (16007.08, "Fe I", 6.35, 0.30, "solar atlas; approx"),
    (16102.41, "Fe I", 5.87, 0.00, "solar atlas; approx"),
    (16125.90, "Fe I", 6.35, 0.60, "solar atlas; approx"),
    (16174.98, "Fe I", 6.38, 0.10, "solar atlas; approx"),
    (16179.58, "Fe I", 6.32, 0.10, "solar atlas; approx"),
    (16195.06, "Fe I", 6.39, 0.30, "solar atlas; approx"),
    (16198.50, "Fe I", 5.41, -0.50, "solar atlas; approx"),
    (16225.62, "Fe I", 6.38, 0.00, "solar atlas; approx"),
    (16231.65, "Fe I", 6.38, 0.60, "solar atlas; approx"),
    (16316.32, "Fe I", 6.28, 0.70, "solar atlas; approx"),
    (16324.45, "Fe I", 5.39, -0.50, "solar atlas; approx"),
    (16444.82, "Fe I", 5.83, 0.60, "solar atlas; approx"),
    (16486.67, "Fe I", 5.83, 0.70, "solar atlas; approx"),
    (16517.22, "Fe I", 6.29, 0.40, "solar atlas; approx"),
    (16524.47, "Fe I", 6.34, 0.40, "solar atlas; approx"),
    (16561.77, "Fe I", 5.98, 0.00, "solar atlas; approx"),
    (16645.88, "Fe I", 5.96, -0.20, "solar atlas; approx"),
    (16753.06, "Fe I", 6.39, 0.20, "solar atlas; approx"),
    # Mg I
    (15740.716, "Mg I", 5.931, -0.262, S13), (15748.988, "Mg I", 5.932, 0.276, S13),
    (15765.842, "Mg I", 5.933, 0.504, S13), (15879.5, "Mg I", 5.946, -1.248, S13),
    (15886.2, "Mg I", 5.946, -1.555, S13), (15889.485, "Mg I", 5.946, -2.013, S13),
    (15954.477, "Mg I", 6.588, -0.807, S13),
    # Al I
    (16718.957, "Al I", 4.085, 0.290, S13), (16750.564, "Al I", 4.087, 0.41, "S13; gf approx"),
    (16763.359, "Al I", 4.087, -0.524, S13),
    # Si I
    (15361.161, "Si I", 5.954, -1.925, S13), (15376.831, "Si I", 6.223, -0.65, "S13; gf approx"),
    (15557.78, "Si I", 5.964, -0.80, "solar atlas; approx"),
    (15833.602, "Si I", 6.222, -0.168, S13), (15888.410, "Si I", 5.082, -1.85, "S13; gf approx"),
    (15960.063, "Si I", 5.984, 0.107, S13), (16060.009, "Si I", 5.954, -0.566, S13),
    (16094.787, "Si I", 5.964, -0.168, S13), (16215.670, "Si I", 5.964, -0.665, S13),
    (16380.18, "Si I", 5.86, -0.80, "solar atlas; approx"),
    (16434.93, "Si I", 5.96, -1.20, "solar atlas; approx"),
    (16680.770, "Si I", 5.984, -0.140, S13), (16828.159, "Si I", 5.984, -1.102, S13),
    # S I
    (15469.816, "S I", 8.046, -0.20, "Shetrone+2015; gf approx"),
    (15475.624, "S I", 8.046, -0.55, "Shetrone+2015; gf approx"),
    (15478.482, "S I", 8.046, -0.05, "Shetrone+2015; gf approx"),
    # K I
    (15163.067, "K I", 2.670, 0.63, "S13; gf approx"), (15168.376, "K I", 2.670, 0.48, "S13; gf approx"),
    # Ca I
    (16136.823, "Ca I", 4.531, -0.67, "S13; gf approx"), (16150.763, "Ca I", 4.532, -0.24, "S13; gf approx"),
    (16155.236, "Ca I", 4.532, -0.62, "S13; gf approx"), (16157.364, "Ca I", 4.554, -0.21, "S13; gf approx"),
    (16197.07, "Ca I", 4.535, 0.05, "solar atlas; approx"),
    # Ti I / Ti II
    (15334.847, "Ti I", 1.887, -1.10, "S13; gf approx"), (15543.756, "Ti I", 1.879, -1.12, "S13; gf approx"),
    (15602.842, "Ti I", 2.267, -1.64, "S13; gf approx"), (15698.979, "Ti I", 1.887, -2.06, "S13; gf approx"),
    (15715.573, "Ti I", 1.873, -1.20, "S13; gf approx"), (16330.54, "Ti I", 3.11, -1.00, "approx"),
    (16635.161, "Ti I", 2.345, -1.58, "S13; gf approx"),
    (15873.84, "Ti II", 3.12, -1.90, "approx"),
    # V I, Cr I, Mn I, Co I
    (15924.0, "V I", 2.138, -1.18, "S13; gf approx"),
    (15680.063, "Cr I", 4.697, 0.15, "S13; gf approx"), (15860.214, "Cr I", 4.697, -0.05, "S13; gf approx"),
    (15159.0, "Mn I", 4.889, 0.60, "S13; gf approx"), (15217.85, "Mn I", 4.889, 0.50, "S13; gf approx"),
    (15262.4, "Mn I", 4.889, 0.30, "S13; gf approx"),
    (16757.7, "Co I", 3.409, -1.10, "S13; gf approx"),
    # Ni I
    (15555.37, "Ni I", 5.49, 0.00, "approx"), (15605.680, "Ni I", 5.30, -0.40, "S13; gf approx"),
    (15632.654, "Ni I", 5.31, -0.10, "approx"), (16584.439, "Ni I", 5.30, -0.50, "S13; gf approx"),
    (16589.295, "Ni I", 5.47, -0.60, "S13; gf approx"), (16673.711, "Ni I", 6.03, 0.10, "S13; gf approx"),
    (16815.471, "Ni I", 5.31, -0.50, "S13; gf approx"), (16818.760, "Ni I", 6.04, 0.30, "S13; gf approx"),
    # Na I
    (16373.853, "Na I", 3.753, -1.50, "Cunha; gf approx"), (16388.858, "Na I", 3.753, -1.04, "Cunha; gf approx"),
    # C I (high excitation)
    (15784.7, "C I", 9.63, 0.10, "approx"), (16005.0, "C I", 9.63, 0.30, "approx"),
    (16021.7, "C I", 9.63, 0.10, "approx"), (16890.4, "C I", 9.00, 0.40, "approx"),
]
#: Lines already given in vacuum by their source.
ATOMIC_VAC = [
    (15406.540, "S I", 8.70, -0.40, "Shetrone+2015 (vacuum); gf approx"),
    (15426.490, "S I", 8.70, -0.20, "Shetrone+2015 (vacuum); gf approx"),
]

#: OH vibration-rotation lines (air Å, log gf) with published log gf.
OH_AIR = [
    (15266.168, -5.500), (15278.525, -5.453), (15391.205, -5.512), (15409.170, -5.435),
    (15428.401, -5.425), (15429.688, -5.153), (15505.746, -5.378), (15568.782, -5.337),
    (15651.897, -5.203), (15719.695, -5.320), (15755.520, -5.175), (15756.530, -5.175),
    (16052.766, -4.976), (16247.884, -5.177), (16312.920, -5.077), (16347.493, -5.002),
    (16368.136, -4.858), (16662.200, -5.069), (16729.784, -4.793), (16904.278, -4.712),
]
#: OH lines known by position only (air Å).
OH_AIR_NO_GF = [15572.08, 16055.46, 16190.263, 16192.208, 16909.29]
#: CN lines known by position only (air Å).
CN_AIR = [
    15260.0, 15322.0, 15332.0, 15397.0, 15410.8, 15447.0, 15466.0, 15472.0, 15482.0,
    15528.063, 15528.734, 15529.9, 15530.8, 15534.4, 15540.23, 15541.40, 15542.20, 15542.90,
    15544.5, 15550.45, 15550.9, 15552.6, 15553.5, 15554.5, 15555.435, 15557.9, 15558.7,
    15561.4, 15562.2, 15563.4, 15573.2, 15579.8, 15580.2, 15580.88, 15581.0,
]

#: Bright OH airglow (sky) lines in the APOGEE range, vacuum Å, observed frame, with a rough
#: relative brightness (1 = brightest class); positions from the airglow literature.
SKY_OH_VAC = [
    (15187.1, 2), (15240.9, 1), (15287.8, 2), (15332.4, 1), (15395.3, 2), (15432.2, 1),
    (15539.7, 2), (15540.6, 2), (15546.3, 3), (15597.6, 1), (15631.4, 2), (15655.0, 2),
    (15702.5, 3), (15808.1, 1), (15972.5, 2), (16030.8, 1), (16079.8, 1), (16128.6, 1),
    (16194.6, 2), (16235.4, 1), (16351.2, 2), (16388.5, 2), (16478.8, 3), (16502.4, 1),
    (16553.8, 2), (16692.4, 1), (16708.8, 1), (16840.4, 2), (16903.7, 1),
]

# --- element windows → species used for window-derived lines --------------------------------
WINDOW_SPECIES = {
    "Fe": ("Fe I", 5.9), "Ni": ("Ni I", 5.5), "Si": ("Si I", 6.0), "Mg": ("Mg I", 5.9),
    "Ti": ("Ti I", 2.0), "TiII": ("Ti II", 3.1), "V": ("V I", 2.2), "Cr": ("Cr I", 4.0),
    "Mn": ("Mn I", 4.9), "Co": ("Co I", 3.4), "Na": ("Na I", 3.75), "K": ("K I", 2.67),
    "Ca": ("Ca I", 4.5), "S": ("S I", 8.0), "Al": ("Al I", 4.1), "CI": ("C I", 9.5),
}
WINDOW_MAX_WIDTH = {"CI": 7.5, "Fe": 3.6}
LABEL_ELEMENTS = ("C", "N", "O", "Na", "Mg", "Al", "Si", "S", "K", "Ca", "Ti", "V", "Cr", "Mn",
                  "Co", "Ni", "Fe")


def species_element(species: str) -> tuple[str, int]:
    parts = species.split()
    return parts[0], (len(parts[1]) - 1 if len(parts) > 1 else 0)


def atomic_informs(element: str, ion: int, chi: float) -> str:
    tags = ["FE_H", "M_H"] if element == "Fe" else [f"{element.upper()}_FE"]
    if ion == 1:
        tags.append("LOGG")
    if chi < 3.0:
        tags.append("TEFF")
    return ";".join(tags)


def atomic_rows(windows: pd.DataFrame | None) -> list[dict]:
    rows = []
    facts = [(float(air_to_vac(w)), s, c, g, n) for w, s, c, g, n in ATOMIC_AIR]
    facts += list(ATOMIC_VAC)
    for wl, species, chi, gf, note in facts:
        el, ion = species_element(species)
        rows.append(dict(wavelength_vac=wl, species=species, element=el, ion=ion,
                         excitation_potential=chi, log_gf=gf,
                         informs=atomic_informs(el, ion, chi), kind="atomic",
                         note=note + ("" if "vacuum" in note else "; air→vac")))
    if windows is None:
        return rows
    for key, (species, chi) in WINDOW_SPECIES.items():
        el, ion = species_element(species)
        known = np.array([r["wavelength_vac"] for r in rows if r["element"] == el])
        sel = windows[windows["element"] == key]
        width = sel["wave_end_A"] - sel["wave_start_A"]
        ok = (width >= 0.15) & (width <= WINDOW_MAX_WIDTH.get(key, 2.5))
        for lo, hi in sel.loc[ok, ["wave_start_A", "wave_end_A"]].to_numpy():
            centre = 0.5 * (lo + hi)
            if known.size and np.min(np.abs(known - centre)) < 1.2:
                continue
            known = np.append(known, centre)
            rows.append(dict(wavelength_vac=centre, species=species, element=el, ion=ion,
                             excitation_potential=chi, log_gf=None,
                             informs=atomic_informs(el, ion, chi), kind="atomic",
                             note="position: centre of an ASPCAP window; χ typical, gf unknown"))
    return rows


# --- CO: Dunham expansion of X¹Σ⁺ ¹²C¹⁶O (cm⁻¹) -------------------------------------------------
CO_DUNHAM = {(1, 0): 2169.81358, (2, 0): -13.28831, (3, 0): 0.0105138, (0, 1): 1.93128087,
             (1, 1): -0.01750441, (2, 1): 5.49e-7, (0, 2): -6.1215e-6, (1, 2): 1.0e-9}


def co_term(v, j):
    x, y = v + 0.5, j * (j + 1.0)
    return sum(c * x**k * y**m for (k, m), c in CO_DUNHAM.items())


def co_rows(max_lines: int = 360) -> list[dict]:
    """¹²CO Δv = 3 lines (R and P branches) and band heads of bands 3-0 … 9-6."""
    e0 = co_term(0, 0)
    lines, heads = [], []
    for vl in range(7):
        vu = vl + 3
        # overtone band strength grows roughly like the binomial C(vu, 3) for hot bands
        log_band = -7.6 + np.log10(np.prod([vu - i for i in range(3)]) / 6.0)
        j = np.arange(0, 100)
        r_nu = co_term(vu, j + 1) - co_term(vl, j)
        k = int(np.argmax(r_nu))
        heads.append((vu, vl, 1e8 / r_nu[k]))
        for branch, ju, hl in (("R", j + 1, j + 1.0), ("P", j - 1, j.astype(float))):
            ok = ju >= 0
            nu = co_term(vu, ju[ok]) - co_term(vl, j[ok])
            el = (co_term(vl, j[ok]) - e0) * HC_EV_CM
            gf = log_band + np.log10(np.maximum(hl[ok], 1e-9))
            for jj, n, e, g in zip(j[ok], nu, el, gf, strict=True):
                lam = 1e8 / n
                if LO <= lam <= HI and g > -99:
                    lines.append((lam, e, g, f"12CO ({vu}-{vl}) {branch}({jj})"))
    strength = np.array([g - THETA_REF * e for _, e, g, _ in lines])
    keep = np.argsort(-strength)[:max_lines]
    rows = [dict(wavelength_vac=lines[i][0], species="CO", element="C", ion=0,
                 excitation_potential=lines[i][1], log_gf=lines[i][2], informs="C_FE;TEFF;LOGG",
                 kind="molecular", note=lines[i][3] + "; computed from Dunham coefficients")
            for i in sorted(keep)]
    for vu, vl, lam in heads:
        if LO <= lam <= HI:
            rows.append(dict(wavelength_vac=lam, species="CO", element="C", ion=0,
                             excitation_potential=(co_term(vl, 0) - e0) * HC_EV_CM, log_gf=None,
                             informs="C_FE;TEFF;LOGG", kind="bandhead",
                             note=f"12CO ({vu}-{vl}) band head (R-branch turning point); computed"))
    return rows


# --- CN red system A²Π – X²Σ⁺ (textbook constants, cm⁻¹) --------------------------------------
CN_X = dict(we=2068.59, wexe=13.087, be=1.8997, ae=0.01736, de=6.40e-6)
CN_A = dict(te=9245.28, we=1812.56, wexe=12.60, be=1.7151, ae=0.01708, de=5.93e-6, a_so=-52.6)


def cn_rows(per_bin: int = 14, bin_width: float = 100.0) -> list[dict]:
    """Strongest CN (Δv = −1) lines of each 100 Å bin for a 4000 K giant (positions approximate).

    Selecting per bin keeps the weaker high-v, high-N lines that make the red-chip CN forest.
    """
    def g_x(v):
        return CN_X["we"] * (v + 0.5) - CN_X["wexe"] * (v + 0.5) ** 2

    def g_a(v):
        return CN_A["te"] + CN_A["we"] * (v + 0.5) - CN_A["wexe"] * (v + 0.5) ** 2

    def f_x(v, n):
        b = CN_X["be"] - CN_X["ae"] * (v + 0.5)
        return b * n * (n + 1) - CN_X["de"] * (n * (n + 1)) ** 2

    def f_a(v, j, comp):
        b = CN_A["be"] - CN_A["ae"] * (v + 0.5)
        y = CN_A["a_so"] / b
        x = j + 0.5
        s = np.sqrt(4 * x**2 + y * (y - 4))
        return b * (x**2 - 1 + (-0.5 if comp == 1 else 0.5) * s) - CN_A["de"] * x**4

    lines = []
    n = np.arange(0, 90)
    for vu in range(0, 7):
        vl = vu + 1
        for comp in (1, 2):
            jl = n + 0.5 if comp == 1 else n - 0.5
            ok_l = jl >= 0.5
            el_cm = g_x(vl) - g_x(0) + f_x(vl, n)
            for branch, dj, hl in (("P", -1, 0.5), ("Q", 0, 1.0), ("R", 1, 0.5)):
                ju = jl + dj
                ok = ok_l & (ju >= (1.5 if comp == 1 else 0.5))
                nu = g_a(vu) + f_a(vu, ju[ok], comp) - (g_x(vl) + f_x(vl, n[ok]))
                gf = -2.9 + np.log10(hl * (jl[ok] + 0.5))
                for nn, nu_line, e, g in zip(n[ok], nu, el_cm[ok] * HC_EV_CM, gf, strict=True):
                    lam = 1e8 / nu_line
                    if LO <= lam <= HI:
                        lines.append((lam, e, g, f"CN ({vu}-{vl}) {branch}{comp}(N={nn})"))
    lam = np.array([x[0] for x in lines])
    strength = np.array([g - THETA_REF * e for _, e, g, _ in lines])
    keep = []
    for lo in np.arange(LO, HI, bin_width):
        idx = np.nonzero((lam >= lo) & (lam < lo + bin_width))[0]
        keep.extend(idx[np.argsort(-strength[idx])[:per_bin]])
    return [dict(wavelength_vac=lines[i][0], species="CN", element="N", ion=0,
                 excitation_potential=lines[i][1], log_gf=lines[i][2], informs="N_FE;C_FE",
                 kind="molecular",
                 note=lines[i][3] + "; computed from textbook constants, position ±~5 Å")
            for i in sorted(keep)]


def cn_fact_rows() -> list[dict]:
    return [dict(wavelength_vac=float(air_to_vac(w)), species="CN", element="N", ion=0,
                 excitation_potential=1.0, log_gf=None, informs="N_FE;C_FE", kind="molecular",
                 note="CN line position from the APOGEE literature; air→vac; χ typical, gf unknown")
            for w in CN_AIR]


def oh_rows(windows: pd.DataFrame | None) -> list[dict]:
    """OH lines: published positions (+ log gf), then narrow O-window centres."""
    def chi_est(lam):  # longer-wavelength OH lines come from higher rotational levels
        return 0.6 + 0.6 * (lam - LO) / (HI - LO)

    rows = []
    for w, gf in OH_AIR:
        lam = float(air_to_vac(w))
        rows.append(dict(wavelength_vac=lam, species="OH", element="O", ion=0,
                         excitation_potential=round(chi_est(lam), 2), log_gf=gf,
                         informs="O_FE;TEFF", kind="molecular",
                         note="published OH line; air→vac; χ estimated"))
    for w in OH_AIR_NO_GF:
        lam = float(air_to_vac(w))
        rows.append(dict(wavelength_vac=lam, species="OH", element="O", ion=0,
                         excitation_potential=round(chi_est(lam), 2), log_gf=None,
                         informs="O_FE;TEFF", kind="molecular",
                         note="OH line position from the APOGEE literature; air→vac; gf unknown"))
    if windows is None:
        return rows
    known = np.array([r["wavelength_vac"] for r in rows])
    sel = windows[windows["element"] == "O"]
    width = sel["wave_end_A"] - sel["wave_start_A"]
    for lo, hi in sel.loc[(width >= 0.15) & (width <= 2.0), ["wave_start_A", "wave_end_A"]].to_numpy():
        centre = 0.5 * (lo + hi)
        if np.min(np.abs(known - centre)) < 0.8:
            continue
        known = np.append(known, centre)
        rows.append(dict(wavelength_vac=centre, species="OH", element="O", ion=0,
                         excitation_potential=round(chi_est(centre), 2), log_gf=None,
                         informs="O_FE;TEFF", kind="molecular",
                         note="OH line at the centre of an ASPCAP O window; gf unknown"))
    return rows


def kramers_log_gf(n_low: int, n_up: int) -> float:
    """log gf of a hydrogen line from Kramers' formula with a mean Gaunt factor of 0.9."""
    f = 32.0 / (3.0**1.5 * np.pi) / (n_low**5 * n_up**3) / (1.0 / n_low**2 - 1.0 / n_up**2) ** 3
    return float(np.log10(2 * n_low**2 * 0.9 * f))


def brackett_rows() -> list[dict]:
    rows = []
    chi = 13.598434 * (1.0 - 1.0 / 16.0)
    for n in range(5, 40):
        lam = brackett_wavelengths(n)
        if LO <= lam <= HI:
            rows.append(dict(wavelength_vac=lam, species="H I", element="H", ion=0,
                             excitation_potential=chi, log_gf=kramers_log_gf(4, n),
                             informs="TEFF;LOGG", kind="hydrogen",
                             note=f"Brackett {n}-4 (Br{n}); Rydberg formula, reduced mass; "
                                  "gf from Kramers x Gaunt 0.9"))
    return rows


def window_table(windows: pd.DataFrame) -> pd.DataFrame:
    species = {"CI": ("C", "C I"), "TiII": ("Ti", "Ti II")}
    out = []
    for row in windows.itertuples(index=False):
        el, sp = species.get(row.element, (row.element, ""))
        if not sp:
            sp = {"C": "CO/CN", "N": "CN", "O": "OH"}.get(el, f"{el} I")
        out.append(dict(element=el, species=sp, start_vac=round(row.wave_start_A, 3),
                        end_vac=round(row.wave_end_A, 3), n_pixels=int(row.n_pixels),
                        note="ASPCAP DR14-17 (l31c) window"))
    return pd.DataFrame(out)


def write_csv(df: pd.DataFrame, path: Path, header: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        for line in header:
            fh.write(f"# {line}\n")
        df.to_csv(fh, index=False, float_format="%.4f", lineterminator="\n")
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", default=None, help="ASPCAP element-window table (CSV)")
    args = ap.parse_args(argv)
    windows = pd.read_csv(args.windows) if args.windows else None

    rows = atomic_rows(windows) + oh_rows(windows) + cn_fact_rows() + cn_rows() + co_rows()
    rows += brackett_rows()
    df = pd.DataFrame(rows)
    df = df[(df["wavelength_vac"] >= LO) & (df["wavelength_vac"] <= HI)]
    df["wavelength_vac"] = df["wavelength_vac"].round(3)
    df["excitation_potential"] = df["excitation_potential"].astype(float).round(3)
    df["log_gf"] = pd.to_numeric(df["log_gf"]).round(3)
    df = df.sort_values(["wavelength_vac", "species"], kind="stable").reset_index(drop=True)
    missing = set(LABEL_ELEMENTS) - set(df["element"])
    if missing:
        raise SystemExit(f"line list lacks elements {sorted(missing)}")
    write_csv(df, HERE / "apogee_hband_lines.csv", [
        "Stellarscope APOGEE H-band line list; wavelength medium: vacuum; units: Angstrom, eV",
        "Columns: wavelength_vac, species, element, ion (0 neutral, 1 singly ionised), "
        "excitation_potential (lower level, eV), log_gf (blank = unknown), informs (labels), "
        "kind (atomic|molecular|bandhead|hydrogen), note (source)",
        "Built by assets/linelists/build_linelists.py; see README.md for sources",
    ])
    sky = pd.DataFrame(SKY_OH_VAC, columns=["wavelength_vac", "brightness_class"])
    sky["note"] = "OH airglow (Meinel bands), observed frame"
    write_csv(sky, HERE / "apogee_sky_oh_lines.csv", [
        "Bright OH airglow lines in the APOGEE range (observed frame); wavelength medium: vacuum",
        "brightness_class: 1 brightest, 3 faintest; used to place SIG_SKYLINE bits in mock spectra",
    ])
    if windows is not None:
        write_csv(window_table(windows), HERE / "apogee_element_windows.csv", [
            "Element abundance windows on the APOGEE grid; wavelength medium: vacuum; units: Angstrom",
            "One row per contiguous window; species says which feature the window covers",
        ])
    counts = df.groupby("kind").size().to_dict()
    print(f"{len(df)} lines ({counts}); elements: {sorted(df['element'].unique())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
