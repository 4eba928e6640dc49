"""Fast vectorised synthesis of continuum-normalised, rest-frame APOGEE spectra from labels.

For every star and line (:mod:`.atmosphere`): line-centre opacity ratio η₀ from log gf,
abundance, Boltzmann and Saha factors (molecules: dissociation equilibrium), Doppler width
and damping; then the equivalent width from a Voigt curve of growth (:mod:`.profiles`).
Each line's absorption profile is a per-star mix of a few precomputed templates on the pixel
grid, so a whole chunk of stars is one sparse-matrix product:

    flux = exp(−Σ_lines S_line · Σ_k w_k T_line,k(λ))

with S chosen so that an isolated line keeps its equivalent width and its central depth
saturates smoothly below 1.  Noise and PIXMASK bits are added by :mod:`.observe`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import BadDataError
from ..grid import APOGEE_7514, KMS_PER_PIXEL, Grid, get_grid
from ..linelist import RYDBERG_H, load_linelist
from . import atmosphere as atm
from .observe import observe
from .physics import (
    DEFAULT_PHYSICS,
    Physics,
    broaden_lsf,
    continuum_ripples,
    get_physics,
    shifted_linelist,
)
from .profiles import (
    ATOMIC,
    HYDROGEN,
    LSF_SIGMA_PX,
    MOLECULAR,
    TemplateSet,
    build_templates,
    curve_of_growth,
)
from .profiles import template_weights as _weights

#: Abundance labels ([X/Fe]) and the element each one scales.
XFE_LABELS = {
    "C_FE": "C", "N_FE": "N", "O_FE": "O", "NA_FE": "Na", "MG_FE": "Mg", "AL_FE": "Al",
    "SI_FE": "Si", "S_FE": "S", "K_FE": "K", "CA_FE": "Ca", "TI_FE": "Ti", "V_FE": "V",
    "CR_FE": "Cr", "MN_FE": "Mn", "CO_FE": "Co", "NI_FE": "Ni",
}

# Calibration of the one-layer model: zero points of log η₀ chosen so that a solar-type dwarf
# and an Arcturus-like giant get line depths like those of APOGEE spectra.
LOG_ETA_ZERO = {"atomic": 15.9, "CO": 14.25, "CN": 15.05, "OH": 17.4, "hydrogen": 13.8}
#: Extra weakening of atomic lines per 1000 K (dex), see :func:`line_strengths`.
HOT_WEAKENING_PER_KK = 0.45
#: Largest central depth of an intrinsic line (the source function never reaches zero).
MAX_DEPTH = {"atomic": 0.85, "molecular": 0.80, "hydrogen": 0.75}
#: Observed central depths saturate smoothly towards this value.
DEPTH_CEILING = 0.97
#: Lorentzian width (in Doppler widths) of the template per unit of the curve of growth: a
#: saturated core is about as wide as its equivalent width.
WIDTH_PER_COG = 0.35
#: Stars per sparse-product block (bounds memory; results do not depend on it).
BLOCK = 512


@dataclass
class _Group:
    """Lines synthesised with one template family."""

    kind: str
    lines: np.ndarray  # indices into the line table
    tset: TemplateSet
    col0: int  # first column of this group in the template matrix
    peaks: np.ndarray  # (L_g, K)


@dataclass
class LineModel:
    """A line list prepared for one grid: per-line constants and the template matrix."""

    table: pd.DataFrame
    matrix: object  # scipy CSR (grid pixels × columns)
    groups: list[_Group]
    log_gf: np.ndarray
    mass: np.ndarray
    grid: Grid


def _filled_log_gf(df: pd.DataFrame) -> np.ndarray:
    """log gf with unknown values set to a typical value of the species (lines with no gf
    are mostly weaker than the well-studied ones, hence the −0.3 dex for atoms)."""
    gf = df["log_gf"].to_numpy(dtype=np.float64).copy()
    for idx in df.groupby("species").indices.values():
        missing = np.isnan(gf[idx])
        if not missing.any():
            continue
        known = gf[idx][~missing]
        atomic = df["kind"].iloc[idx[0]] == "atomic"
        fill = (np.median(known) - (0.3 if atomic else 0.0)) if known.size else -0.5
        gf[idx[missing]] = fill
    return gf


_MODELS: dict[tuple[str, str], LineModel] = {}


def line_model(linelist: pd.DataFrame | None = None, grid: Grid | str = APOGEE_7514) -> LineModel:
    """Prepare (and cache) a line list for synthesis on ``grid``."""
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    df = load_linelist() if linelist is None else linelist
    df = df[df["kind"] != "bandhead"].reset_index(drop=True)  # heads are markers, not lines
    if df.empty:
        raise BadDataError("the line list has no lines to synthesise")
    key_src = pd.util.hash_pandas_object(
        df[["wavelength_vac", "species", "ion", "excitation_potential", "log_gf", "kind"]],
        index=False).to_numpy().tobytes()
    key = (hashlib.sha1(key_src).hexdigest(), g.name)
    if key in _MODELS:
        return _MODELS[key]
    unknown = set(df.loc[df["kind"] == "atomic", "element"]) - set(atm.ELEMENTS)
    unknown |= set(df.loc[df["kind"] == "molecular", "species"]) - set(atm.MOLECULES)
    if unknown:
        raise BadDataError(f"the synthesiser has no data for {sorted(unknown)}")
    mass = np.array([
        atm.MOLECULES[s].mass if k == "molecular" else atm.ATOMIC_MASS[e]
        for s, e, k in zip(df["species"], df["element"], df["kind"], strict=True)
    ])
    blocks, groups, col0 = [], [], 0
    for kind, tset in (("atomic", ATOMIC), ("molecular", MOLECULAR), ("hydrogen", HYDROGEN)):
        idx = np.nonzero(df["kind"].to_numpy() == kind)[0]
        if idx.size == 0:
            continue
        matrix, peaks = build_templates(df["wavelength_vac"].to_numpy()[idx], tset)
        blocks.append(matrix[g.index])
        groups.append(_Group(kind, idx, tset, col0, peaks))
        col0 += matrix.shape[1]
    model = LineModel(df, sparse.hstack(blocks, format="csr"), groups, _filled_log_gf(df),
                      mass, g)
    _MODELS[key] = model
    return model


def label_arrays(labels: pd.DataFrame) -> dict[str, np.ndarray]:
    """Stellar labels to synthesise from: TRUE_<label> columns when present, else <label>.

    M_H defaults to FE_H, VMICRO to a log g relation and missing [X/Fe] to 0.
    """
    def col(name):
        for c in (f"TRUE_{name}", name):
            if c in labels.columns:
                return labels[c].to_numpy(dtype=np.float64)
        return None

    out = {}
    for name in ("TEFF", "LOGG", "FE_H"):
        v = col(name)
        if v is None:
            raise BadDataError(f"labels need a {name} (or TRUE_{name}) column to synthesise")
        out[name] = v
    m_h = col("M_H")
    out["M_H"] = out["FE_H"] if m_h is None else m_h
    vmicro = col("VMICRO")
    out["VMICRO"] = vmicro_from_logg(out["LOGG"]) if vmicro is None else vmicro
    for name in XFE_LABELS:
        v = col(name)
        out[name] = np.zeros(len(labels)) if v is None else v
    for name, v in out.items():
        if not np.all(np.isfinite(v)):
            raise BadDataError(f"label {name} has NaN/inf values; cannot synthesise")
    if np.any(out["TEFF"] < 2500) or np.any(out["TEFF"] > 12000):
        raise BadDataError("TEFF outside 2500-12000 K is beyond the mock synthesiser")
    return out


def vmicro_from_logg(logg) -> np.ndarray:
    """Microturbulence (km/s) of the ASPCAP-style cubic relation in log g."""
    g = np.clip(np.asarray(logg, dtype=np.float64), 0.0, 5.0)
    return 10.0 ** (0.226 - 0.0228 * g + 0.0297 * g**2 - 0.0113 * g**3)


def _log_eps(lab: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    eps = {el: atm.SOLAR_ABUNDANCE[el] + lab["FE_H"] for el in atm.ELEMENTS}
    eps["H"] = np.full_like(lab["FE_H"], 12.0)
    for name, el in XFE_LABELS.items():
        eps[el] = eps[el] + lab[name]
    return eps


@dataclass
class LineSetup:
    """What every physics set needs of a block of stars and a line list: the stars'
    atmospheric state, Doppler widths and the lines' constants, with empty η₀ and damping
    arrays to fill."""

    state: atm.StellarState
    theta: np.ndarray      # (n, 1)
    lam: np.ndarray        # (L,) vacuum Å
    chi: np.ndarray        # (L,) excitation potential, eV
    b: np.ndarray          # (n, L) Doppler width, km/s
    log_b: np.ndarray
    kinds: np.ndarray
    species: np.ndarray
    elements: np.ndarray
    ions: np.ndarray
    log_pg: np.ndarray     # (n, 1)
    log_eta: np.ndarray    # (n, L), to fill
    log_a: np.ndarray      # (n, L), to fill


def line_setup(lab: dict[str, np.ndarray], model: LineModel) -> LineSetup:
    df = model.table
    n, n_lines = lab["TEFF"].size, len(df)
    state = atm.stellar_state(lab["TEFF"], lab["LOGG"], lab["M_H"], lab["VMICRO"], _log_eps(lab))
    b = atm.doppler_b(state.teff, model.mass, state.vmicro)
    return LineSetup(state=state, theta=state.theta[:, None],
                     lam=df["wavelength_vac"].to_numpy(),
                     chi=df["excitation_potential"].to_numpy(), b=b, log_b=np.log10(b),
                     kinds=df["kind"].to_numpy(), species=df["species"].to_numpy(),
                     elements=df["element"].to_numpy(), ions=df["ion"].to_numpy(),
                     log_pg=state.log_pg[:, None], log_eta=np.empty((n, n_lines)),
                     log_a=np.empty((n, n_lines)))


def line_widths(setup: LineSetup, depth) -> tuple[np.ndarray, np.ndarray]:
    """Equivalent width and template Lorentz width (px) from the filled η₀ and damping:
    the curve of growth times the Doppler width and the limiting depth ``depth``."""
    cog = curve_of_growth(setup.log_eta, setup.log_a)
    doppler_px = setup.b / KMS_PER_PIXEL
    width_px = depth * doppler_px * cog
    # the template's Lorentz width: the damping width of the intrinsic profile, or the width
    # of its saturated core, whichever dominates
    gamma_px = doppler_px * np.hypot(10.0**setup.log_a, WIDTH_PER_COG * cog)
    return width_px, gamma_px


def line_strengths(lab: dict[str, np.ndarray], model: LineModel):
    """Equivalent width (px) and template Lorentz width (px) of every (star, line)."""
    su = line_setup(lab, model)
    state, theta, lam, chi, log_b = su.state, su.theta, su.lam, su.chi, su.log_b
    kinds, species, elements, ions = su.kinds, su.species, su.elements, su.ions
    log_eta, log_a, log_pg = su.log_eta, su.log_a, su.log_pg
    common = (model.log_gf[None, :] - theta * chi[None, :] - state.log_kappa[:, None]
              + np.log10(lam / 16000.0)[None, :] - log_b)
    depth = np.empty(lam.size)

    atomic = np.nonzero(kinds == "atomic")[0]
    # hotter atmospheres have shallower temperature gradients and form weaker metal lines,
    # which a one-layer model misses
    hot_weakening = -HOT_WEAKENING_PER_KK * (state.teff[:, None] - 5000.0) / 1000.0
    for el in np.unique(elements[atomic]):
        idx = atomic[elements[atomic] == el]
        u0, u1 = atm.PARTITION[el]
        log_u = np.where(ions[idx] == 0, np.log10(u0), np.log10(u1))
        log_eta[:, idx] = (LOG_ETA_ZERO["atomic"] + common[:, idx] + state.log_eps[el][:, None]
                           - 12.0 + atm.stage_fraction(el, ions[idx], state) - log_u[None, :]
                           + np.log10(2.0) + hot_weakening)
        log_a[:, idx] = (-0.9 + np.log10(2.0) + 0.7 * (log_pg - 4.95)
                         + 0.3 * np.log10(state.teff / 5777.0)[:, None] - log_b[:, idx])
        depth[idx] = MAX_DEPTH["atomic"]

    fractions = atm.molecular_fractions(state)
    for sp, mol in atm.MOLECULES.items():
        idx = np.nonzero((kinds == "molecular") & (species == sp))[0]
        if idx.size == 0:
            continue
        log_u = atm.log_molecular_partition(mol, state.teff)
        log_eta[:, idx] = (LOG_ETA_ZERO[sp] + common[:, idx] + (fractions[sp] - log_u)[:, None]
                           + np.log10(2.0))
        log_a[:, idx] = -1.6 + np.log10(2.0) + 0.7 * (log_pg - 4.95) - log_b[:, idx]
        depth[idx] = MAX_DEPTH["molecular"]

    hyd = np.nonzero(kinds == "hydrogen")[0]
    if hyd.size:
        n_up = 1.0 / np.sqrt(1.0 / 16.0 - 1e10 / (lam[hyd] * RYDBERG_H))
        log_f0 = atm.stage_fraction("H", np.zeros(hyd.size, dtype=np.int64), state)
        log_eta[:, hyd] = (LOG_ETA_ZERO["hydrogen"] + common[:, hyd] + log_f0 - np.log10(2.0)
                           + 1.0)
        # linear Stark broadening: grows with the electron density and the upper level
        log_a[:, hyd] = (0.5 + (2.0 / 3.0) * (state.log_pe[:, None] - 1.6)
                         + 2.0 * np.log10(n_up / 11.0)[None, :] + 1.0 - log_b[:, hyd])
        depth[hyd] = MAX_DEPTH["hydrogen"]

    return line_widths(su, depth[None, :])


def _template_amplitudes(width_px, gamma_px, model: LineModel,
                         ceiling: float = DEPTH_CEILING) -> np.ndarray:
    """Coefficients (n, columns) of the template matrix for each star."""
    n = width_px.shape[0]
    amps = np.zeros((n, model.matrix.shape[1]), dtype=np.float32)
    for grp in model.groups:
        w = _weights(gamma_px[:, grp.lines], grp.tset)  # (n, L_g, K)
        peak = np.einsum("nlk,lk->nl", w, grp.peaks)
        d = width_px[:, grp.lines] * peak
        r = d / ceiling
        d_obs = d / np.cbrt(1.0 + r * r * r)
        strength = -np.log1p(-d_obs) / peak
        k = len(grp.tset.gammas)
        cols = slice(grp.col0, grp.col0 + grp.lines.size * k)
        amps[:, cols] = (strength[:, :, None] * w).reshape(n, -1)
    return amps


_PHYSICS_MODELS: dict[tuple[str, str], LineModel] = {}


def _physics_model(phys: Physics, linelist: pd.DataFrame | None, grid: Grid | str) -> LineModel:
    """The line model of a physics set: its base list, perturbed when the physics is shifted."""
    if linelist is None and phys.name != "classic":
        # the shipped lists do not change within a run: skip re-reading and re-hashing them
        key = (phys.name, grid.name if isinstance(grid, Grid) else str(grid))
        if key not in _PHYSICS_MODELS:
            _PHYSICS_MODELS[key] = _physics_model_uncached(phys, None, grid)
        return _PHYSICS_MODELS[key]
    return _physics_model_uncached(phys, linelist, grid)


def _physics_model_uncached(phys: Physics, linelist: pd.DataFrame | None,
                            grid: Grid | str) -> LineModel:
    if phys.synthesis == "apogee":
        from .apogee import apogee_linelist

        base = apogee_linelist() if linelist is None else linelist
    elif phys.synthesis == "apogee2":
        from .apogee2 import apogee2_linelist

        base = apogee2_linelist() if linelist is None else linelist
    else:
        base = load_linelist() if linelist is None else linelist
    if not phys.shifted:
        return line_model(base, grid)
    plain = line_model(base, grid)  # drops band-head markers, checks the elements
    return line_model(shifted_linelist(plain.table, phys, plain.log_gf), grid)


def noiseless_flux(labels: pd.DataFrame, grid: Grid | str = APOGEE_7514,
                   linelist: pd.DataFrame | None = None,
                   physics: str | Physics = DEFAULT_PHYSICS) -> np.ndarray:
    """Noiseless continuum-normalised rest-frame flux (N × grid pixels, float32).

    ``physics`` names the physics set (:mod:`.physics`; default ``"apogee"``).
    """
    phys = get_physics(physics)
    model = _physics_model(phys, linelist, grid)
    if phys.synthesis == "apogee":
        from .apogee import DEPTH_CEILING as ceiling
        from .apogee import line_strengths as strengths
    elif phys.synthesis == "apogee2":
        from .apogee import DEPTH_CEILING as ceiling
        from .apogee2 import line_strengths as strengths
    else:
        strengths, ceiling = line_strengths, DEPTH_CEILING
    lab = label_arrays(labels)
    n = lab["TEFF"].size
    out = np.empty((n, model.grid.n_pix), dtype=np.float32)
    for start in range(0, n, BLOCK):
        sl = slice(start, start + BLOCK)
        part = {k: v[sl] for k, v in lab.items()}
        width_px, gamma_px = strengths(part, model)
        amps = _template_amplitudes(width_px, gamma_px, model, ceiling)
        # sparse (P × C) @ dense (C × n): each output sums its terms in a fixed order, so a
        # star's spectrum does not depend on the other stars in the block
        tau = model.matrix @ np.ascontiguousarray(amps.T)
        np.exp(-tau, out=tau)
        out[sl] = tau.T
    if phys.lsf_broadening > 0:
        out = broaden_lsf(out, model.grid.chip_slices(), LSF_SIGMA_PX,
                          phys.lsf_broadening).astype(np.float32)
    if phys.ripple_amplitude > 0:
        out = (out * continuum_ripples(labels, model.grid.wavelength,
                                       phys.ripple_amplitude)).astype(np.float32)
    return out


def synthesize(labels_df: pd.DataFrame, grid: Grid | str = APOGEE_7514, seed: int = 0,
               linelist: pd.DataFrame | None = None,
               physics: str | Physics = DEFAULT_PHYSICS):
    """Mock APOGEE spectra for the stars in ``labels_df``.

    Returns ``(flux, error, pixmask)``: float32, float32 and uint16 arrays of shape
    (N, grid pixels), continuum-normalised and in the rest frame.  Labels come from the
    TRUE_* columns when present (else TEFF, LOGG, FE_H, [M_H, VMICRO, X_FE]); SNR, TELESCOPE
    and VHELIO_AVG shape the noise and mask.  Each star's noise depends only on ``seed`` and
    its APOGEE_ID, so results do not depend on how stars are batched.  ``physics`` names the
    physics set (:mod:`.physics`; default ``"apogee"``).
    """
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    if len(labels_df) == 0:
        empty = np.empty((0, g.n_pix), dtype=np.float32)
        return empty, empty.copy(), np.empty((0, g.n_pix), dtype=np.uint16)
    model = noiseless_flux(labels_df, g, linelist, physics)
    return observe(model, labels_df, g, seed)
