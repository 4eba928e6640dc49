"""H-band molecular line lists computed from molecular constants, for the ``apogee2`` physics.

Two molecules dominate the H band of cool giants, and both can be computed well from the
constants of their ground electronic states:

* **¹²C¹⁶O, X¹Σ⁺, second overtone (Δv = 3)**: term values from the Dunham expansion
  E(v, J) = Σ Y_kl (v + ½)^k [J(J + 1)]^l; R and P branches of bands 3-0 … 11-8; band heads
  where the R branch turns (:func:`co_bandheads`: 3-0 at 15 582 Å … 9-6 at 16 840 Å, vacuum).
* **OH, X²Πᵢ, Meinel Δv = 2 vibration-rotation bands** (2-0 … 10-8): for each v the 2 × 2
  case (a) Hamiltonian of a ²Π state (spin–orbit A_v, rotation B_v, centrifugal D_v and H_v)
  is diagonalised for every J, giving the F₁ (Ω = 3/2 at low J, J = N + ½) and F₂
  (J = N − ½) levels (Hill–Van Vleck when D = H = 0); Λ-doubling splits each level into e and
  f components by ½ (p_v (J + ½) + 2 q_v (J + ½)² …) in the pure-precession form, and P/R
  lines join like components (e–e, f–f), so every P and R line is a close doublet whose
  splitting grows with N as q changes with v.

The OH constants (:data:`OH_CONSTANTS`) start from textbook values of the ground state and
were refined once by least squares (:func:`refine_oh_constants`) against line positions
measured in the laboratory and in the night sky: the published stellar OH lines of the
APOGEE line list (high N, v'' = 0–2) and the bright OH airglow lines of
``apogee_sky_oh_lines.csv`` (low N, high v) — never against a stellar spectrum.

Line strengths: log gf = log f_band + log(Hönl–London factor), the band oscillator strength
scaled from the fundamental as a harmonic-oscillator overtone (∝ C(v', Δv)), with the OH
Δv = 2 and CO Δv = 3 zero points set by published log gf of H-band lines.  Lower-level
energies come from the same term values, so the Boltzmann factor is right line by line.

Everything is computed on import of a list (cached); nothing here is fitted to stars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: E[eV] = HC_EV_CM · E[cm⁻¹].
HC_EV_CM = 1.23984198e-4
#: Wavelength range of the lists (vacuum Å): the APOGEE detectors with a margin.
LO, HI = 15100.0, 17000.0

# --- CO -----------------------------------------------------------------------------------

#: Dunham coefficients Y_kl of ¹²C¹⁶O X¹Σ⁺ (cm⁻¹): ωe, −ωexe, ωeye, Be, −αe, γe, −De, βe, He.
CO_DUNHAM = {(1, 0): 2169.81358, (2, 0): -13.28831, (3, 0): 0.0105138, (0, 1): 1.93128087,
             (1, 1): -0.01750441, (2, 1): 5.49e-7, (0, 2): -6.1215e-6, (1, 2): 1.0e-9,
             (0, 3): 5.7e-12}
#: log10 of the 3-0 band's oscillator strength (second overtone; ~1e-8 per band with the
#: Hönl–London factor normalised to 2J + 1) and of the first hot bands' growth.
CO_LOG_F30 = -7.55
#: Δv = 3 bands computed (lower v = 0 … CO_V_MAX).
CO_V_MAX = 8


#: Atomic masses (u) of the carbon and oxygen isotopes.
ISOTOPE_MASS = {"12C": 12.0, "13C": 13.0033548, "16O": 15.9949146}


def isotope_rho(isotopologue: str = "12C16O") -> float:
    """ρ = √(μ(¹²C¹⁶O) / μ(isotopologue)): Dunham Y_kl scale as ρ^(k + 2l)."""
    def mu(c, o):
        return ISOTOPE_MASS[c] * ISOTOPE_MASS[o] / (ISOTOPE_MASS[c] + ISOTOPE_MASS[o])
    return float(np.sqrt(mu("12C", "16O") / mu(isotopologue[:3], isotopologue[3:])))


def co_term(v, j, isotopologue: str = "12C16O") -> np.ndarray:
    """Term value E(v, J) of CO X¹Σ⁺ (cm⁻¹) from the Dunham expansion (¹²C¹⁶O coefficients,
    mass-scaled for another isotopologue)."""
    rho = isotope_rho(isotopologue)
    x = np.asarray(v, dtype=np.float64) + 0.5
    y = np.asarray(j, dtype=np.float64) * (np.asarray(j, dtype=np.float64) + 1.0)
    return sum(c * rho ** (k + 2 * m) * x**k * y**m for (k, m), c in CO_DUNHAM.items())


def co_bandheads(dv: int = 3, v_lower=range(0, 7),
                 isotopologue: str = "12C16O") -> dict[tuple[int, int], float]:
    """Vacuum wavelengths (Å) of the R-branch heads of CO bands (v'' + dv)-v''."""
    out = {}
    j = np.arange(0, 120)
    for vl in v_lower:
        nu = co_term(vl + dv, j + 1, isotopologue) - co_term(vl, j, isotopologue)
        out[(vl + dv, vl)] = float(1e8 / nu.max())
    return out


def co_lines(lo: float = LO, hi: float = HI, v_max: int = CO_V_MAX,
             j_max: int = 120, isotopologue: str = "12C16O") -> pd.DataFrame:
    """CO Δv = 3 lines in [lo, hi] Å: wavelength, lower-level energy (eV), log gf, label.
    log gf is per molecule of that isotopologue (the abundance ratio is the synthesiser's)."""
    def term(v, j):
        return co_term(v, j, isotopologue)

    tag = {"12C16O": "12CO", "13C16O": "13CO"}.get(isotopologue, isotopologue)
    e0 = term(0, 0)
    rows = []
    j = np.arange(0, j_max)
    for vl in range(0, v_max + 1):
        vu = vl + 3
        # harmonic overtone scaling of the band strength: C(v', 3)
        log_band = CO_LOG_F30 + np.log10(vu * (vu - 1) * (vu - 2) / 6.0)
        for branch, ju, hl in (("R", j + 1, (j + 1.0) / (2 * j + 1.0)),
                               ("P", j - 1, j / (2 * j + 1.0))):
            ok = ju >= 0
            nu = term(vu, ju[ok]) - term(vl, j[ok])
            lam = 1e8 / nu
            keep = (lam >= lo) & (lam <= hi)
            if not keep.any():
                continue
            jl = j[ok][keep]
            # gf of one line: f_band · (2J'' + 1) · Hönl–London share of the branch
            gf = log_band + np.log10((2 * jl + 1.0) * hl[ok][keep])
            rows.append(pd.DataFrame({
                "wavelength_vac": lam[keep], "species": "CO",
                "excitation_potential": (term(vl, jl) - e0) * HC_EV_CM, "log_gf": gf,
                "v_upper": vu, "v_lower": vl, "branch": branch, "j_lower": jl.astype(float),
                "isotopologue": isotopologue,
                "note": [f"{tag} ({vu}-{vl}) {branch}({int(x)})" for x in jl]}))
    return pd.concat(rows, ignore_index=True)


# --- OH -----------------------------------------------------------------------------------

#: OH X²Πᵢ constants (cm⁻¹).  Vibration: G(v) = ωe x − ωexe x² + ωeye x³ + ωeze x⁴ with
#: x = v + ½; rotation B_v = Be − αe x + γe x²; D_v = De + βe x; H_v = He; spin–orbit
#: A_v = Ae + αA x; Λ-doubling p_v = pe + αp x, q_v = qe + αq x.
OH_TEXTBOOK = {"we": 3737.761, "wexe": 84.8813, "weye": 0.5409, "weze": -0.02434,
               "be": 18.9108, "ae": 0.7242, "ge": 0.0, "de": 1.938e-3, "bd": -2.0e-5,
               "he": 1.4e-7, "ae_so": -139.3, "aa": 0.2, "pe": 0.240, "ap": -0.008,
               "qe": -0.0395, "aq": 0.0016}
#: The same refined (vibration, rotation, centrifugal distortion, spin–orbit; Λ-doubling kept
#: at the textbook values) by :func:`refine_oh_constants` against 35 measured positions:
#: residual rms 0.79 Å, largest 1.4 Å.
OH_CONSTANTS = {**OH_TEXTBOOK, "we": 3738.605, "wexe": 84.6840, "weye": 0.47663,
                "be": 18.91482, "ae": 0.725098, "de": 1.92116e-3, "bd": -1.8745e-5,
                "ae_so": -142.968}
#: Herman–Wallis coefficient of the OH overtone: |M|² ∝ (1 + HW m)², m = −J'' (P), J'' + 1 (R);
#: negative: the P branch is enhanced and the R branch weakened, as observed in Δv = 2.
OH_HERMAN_WALLIS = -0.02
#: log10 of the 2-0 Meinel band oscillator strength with the Hönl–London factors normalised
#: to 2J'' + 1 per Λ component: set by the 20 published log gf of APOGEE OH lines (their
#: offsets from the computed Hönl–London × Herman–Wallis pattern scatter by 0.014 dex MAD).
OH_LOG_F20 = -6.56
#: Δv = 2 bands computed (lower v = 0 … OH_V_MAX) and the largest N.
OH_V_MAX = 8
OH_N_MAX = 45


def _oh_vib(v, c) -> np.ndarray:
    x = np.asarray(v, dtype=np.float64) + 0.5
    return c["we"] * x - c["wexe"] * x**2 + c["weye"] * x**3 + c["weze"] * x**4


def oh_levels(v: int, j: np.ndarray, c: dict | None = None):
    """Term values (cm⁻¹) of OH X²Π v at half-integer J: (F₁e, F₁f, F₂e, F₂f), each (len(J),).

    F₁ is the lower root of the 2 × 2 case (a) matrix (Ω = 3/2 at low J in the inverted
    ground state), F₂ the upper; F₂ exists from J = ½, F₁ from J = 3/2.
    """
    c = OH_CONSTANTS if c is None else c
    x = v + 0.5
    b = c["be"] - c["ae"] * x + c["ge"] * x * x
    d = c["de"] + c["bd"] * x
    h = c["he"]
    a = c["ae_so"] + c["aa"] * x
    p = c["pe"] + c["ap"] * x
    q = c["qe"] + c["aq"] * x
    jj = np.asarray(j, dtype=np.float64)
    z = (jj + 0.5) ** 2  # (J + ½)²
    # case (a) basis |Ω = 3/2⟩, |Ω = 1/2⟩ with N² expectation values; centrifugal terms
    # follow the rotational ones (D: −(N²)², H: +(N²)³ on the diagonal, off-diagonal scaled)
    n2_32, n2_12 = z - 2.0, z
    off = np.sqrt(np.maximum(z - 1.0, 0.0))
    h11 = 0.5 * a + b * n2_32 - d * (n2_32**2 + z - 1.0) + h * n2_32**3
    h22 = -0.5 * a + b * n2_12 - d * (n2_12**2 + z - 1.0) + h * n2_12**3
    h12 = -(b - 2.0 * d * z) * off
    mean, half = 0.5 * (h11 + h22), 0.5 * (h11 - h22)
    root = np.sqrt(half * half + h12 * h12)
    f1, f2 = mean - root, mean + root
    # Λ-doubling, high-J (case b) form: ±½ (p (J + ½)/2 + q (J + ½)² ) … with opposite p sign
    # for F₁ and F₂
    s = np.sqrt(z)
    lam1 = 0.5 * (q * (z - 1.0) + 0.5 * p * s)
    lam2 = 0.5 * (q * (z - 1.0) - 0.5 * p * s)
    return f1 + lam1, f1 - lam1, f2 + lam2, f2 - lam2


def _hl_factors(branch: str, j: np.ndarray, omega: float) -> np.ndarray:
    """Hönl–London factors of a ΔΛ = 0 transition (case (a) form) from lower J."""
    if branch == "P":
        return np.maximum((j - omega) * (j + omega), 0.0) / np.maximum(j, 1e-9)
    if branch == "R":
        return np.maximum((j + 1 - omega) * (j + 1 + omega), 0.0) / (j + 1)
    return (2 * j + 1) * omega**2 / (j * (j + 1))


def oh_lines(lo: float = LO, hi: float = HI, c: dict | None = None, v_max: int = OH_V_MAX,
             n_max: int = OH_N_MAX, dv: int = 2, with_q: bool = True) -> pd.DataFrame:
    """OH X²Π Δv = ``dv`` lines in [lo, hi] Å: wavelength, lower-level energy (eV), log gf,
    band, branch (P1, P2, R1, R2, Q1, Q2), lower J and N, Λ component."""
    c = OH_CONSTANTS if c is None else c
    j = np.arange(0.5, n_max + 1.0)
    e0 = min(float(np.min(oh_levels(0, np.array([1.5]), c)[0])) + _oh_vib(0, c),
             float(np.min(oh_levels(0, np.array([0.5]), c)[2])) + _oh_vib(0, c))
    rows = []
    for vl in range(0, v_max + 1):
        vu = vl + dv
        lower = oh_levels(vl, j, c)
        upper_cache = {}
        gvl, gvu = _oh_vib(vl, c), _oh_vib(vu, c)
        # harmonic overtone scaling C(v', Δv) of the band strength
        log_band = OH_LOG_F20 + np.log10(float(np.prod([vu - i for i in range(dv)]))
                                         / float(np.prod(range(1, dv + 1))))
        for fi, comp_l in ((0, "1e"), (1, "1f"), (2, "2e"), (3, "2f")):
            f_index = int(comp_l[0])
            omega = 1.5 if f_index == 1 else 0.5
            jmin = 1.5 if f_index == 1 else 0.5
            for branch, dj in (("P", -1), ("Q", 0), ("R", 1)):
                if branch == "Q" and not with_q:
                    continue
                ju = j + dj
                key = float(dj)
                if key not in upper_cache:
                    upper_cache[key] = oh_levels(vu, np.maximum(ju, 0.5), c)
                # P and R join like Λ components, Q joins e with f
                same = fi if branch != "Q" else (fi ^ 1)
                eu = upper_cache[key][same] + gvu
                el = lower[fi] + gvl
                ok = (j >= jmin) & (ju >= jmin)
                nu = eu - el
                lam = np.where(ok & (nu > 0), 1e8 / np.where(nu > 0, nu, 1.0), np.nan)
                keep = ok & (lam >= lo) & (lam <= hi)
                if not keep.any():
                    continue
                jl = j[keep]
                hl = _hl_factors(branch, jl, omega)
                good = hl > 0
                jl, hl = jl[good], hl[good]
                idx = np.nonzero(keep)[0][good]
                n_l = jl - 0.5 if f_index == 1 else jl + 0.5
                m = {"P": -jl, "Q": 0.0 * jl, "R": jl + 1.0}[branch]
                rows.append(pd.DataFrame({
                    "wavelength_vac": lam[idx], "species": "OH",
                    "excitation_potential": (el[idx] - e0) * HC_EV_CM,
                    # each Λ component carries half of the level's (2J + 1)·2 states
                    "log_gf": log_band + np.log10(hl) + 2.0 * np.log10(
                        np.maximum(np.abs(1.0 + OH_HERMAN_WALLIS * m), 0.05)),
                    "v_upper": vu, "v_lower": vl, "branch": f"{branch}{f_index}",
                    "j_lower": jl, "n_lower": n_l, "component": comp_l[1],
                    "note": [f"OH ({vu}-{vl}) {branch}{f_index}{comp_l[1]}(N={int(n)})"
                             for n in n_l]}))
    return pd.concat(rows, ignore_index=True)


# --- refining the OH constants on measured positions ------------------------------------------

#: Constants :func:`refine_oh_constants` varies, and the step that makes each O(1).
OH_FREE = {"we": 1.0, "wexe": 0.1, "weye": 0.01, "be": 0.01, "ae": 0.001, "de": 1e-5,
           "bd": 1e-6, "ae_so": 1.0}


def _oh_line_position(c: dict, vu: int, vl: int, branch: str, j_lower: float,
                      component: str) -> float:
    f_index = int(branch[1])
    fi = (0 if f_index == 1 else 2) + (0 if component == "e" else 1)
    dj = {"P": -1, "Q": 0, "R": 1}[branch[0]]
    same = fi if branch[0] != "Q" else fi ^ 1
    eu = oh_levels(vu, np.array([j_lower + dj]), c)[same][0] + _oh_vib(vu, c)
    el = oh_levels(vl, np.array([j_lower]), c)[fi][0] + _oh_vib(vl, c)
    return 1e8 / (eu - el)


def refine_oh_constants(stellar: np.ndarray, airglow: np.ndarray, start: dict | None = None,
                        tolerances=(8.0, 6.0, 4.0, 3.0, 2.0, 1.5), prior: float = 0.3):
    """Least-squares refinement of the OH constants on measured line positions (vacuum Å).

    ``stellar`` lines (cool-star OH: P branches of v'' ≤ 2, N'' ≥ 5) and ``airglow`` lines
    (low N ≤ 6, v' = 3–9) are assigned to the nearest computed line of those kinds; the
    constants of :data:`OH_FREE` are fitted (with a weak pull, ``prior`` per unit step, towards
    ``start``), and assignment and fit alternate with a shrinking tolerance (Å).  Returns the
    constants, the assignments kept and their residuals (Å).
    """
    from scipy.optimize import least_squares

    base = dict(OH_TEXTBOOK if start is None else start)
    names = list(OH_FREE)
    step = np.array([OH_FREE[k] for k in names])

    def consts(p):
        return {**base, **{k: base[k] + x * s for k, x, s in zip(names, p, step, strict=True)}}

    def assign(c, tol):
        df = oh_lines(LO - 100.0, HI + 100.0, c=c)
        pools = (df[(df["branch"].str[0] == "P") & (df["v_lower"] <= 2) & (df["n_lower"] >= 5)],
                 df[(df["n_lower"] <= 6) & df["v_upper"].between(3, 9)])
        out = []
        for observed, pool in zip((stellar, airglow), pools, strict=True):
            lam = pool["wavelength_vac"].to_numpy()
            for w in np.asarray(observed, dtype=np.float64):
                i = int(np.argmin(np.abs(lam - w)))
                if abs(lam[i] - w) < tol:
                    r = pool.iloc[i]
                    out.append((float(w), int(r["v_upper"]), int(r["v_lower"]), r["branch"],
                                float(r["j_lower"]), r["component"]))
        return out

    def predicted(c, assigned):
        return np.array([_oh_line_position(c, *a[1:]) for a in assigned])

    p = np.zeros(len(names))
    assigned = []
    for tol in tolerances:
        for _ in range(3):
            assigned = assign(consts(p), tol)
            obs = np.array([a[0] for a in assigned])
            p = least_squares(lambda q, a=assigned, o=obs: np.concatenate(
                [predicted(consts(q), a) - o, prior * q]), p, method="lm").x
    c = consts(p)
    resid = predicted(c, assigned) - np.array([a[0] for a in assigned])
    return c, assigned, resid
