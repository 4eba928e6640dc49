"""Named physics sets of the mock synthesiser, and how a store says which one made it.

* ``apogee`` (the default) — the APOGEE-like synthesis of :mod:`.apogee`: H⁻ continuous
  opacity, a Planck source-function depth limit, a dense molecular forest with band structure.
  The shipped demo models are trained on it.
* ``apogee2`` — the ``apogee`` synthesis with the OH Meinel Δv = 2 and ¹²CO/¹³CO Δv = 3 band
  systems computed from molecular constants, and molecular equilibrium and Boltzmann factors
  at the temperature of the outer layers where molecular lines form (:mod:`.apogee2`).  Not
  the default: the shipped models are trained on ``apogee``.
* ``classic`` — the original one-layer synthesis (lines 3–10× too deep in dwarfs; kept
  bit-for-bit, and what stores written before physics variants existed hold).
* ``shifted`` / ``shifted-apogee`` — a base physics seen "through a different code": every
  line's log gf perturbed (seeded, σ = 0.1 dex), a few per cent extra unidentified lines, a
  slightly broader line-spread function and small continuum ripples.  It stands in for
  "synthetic grid vs real observations" when testing transfer between physics.

Everything here is deterministic: the perturbations use :data:`PERTURB_SEED`, the ripples a
stream per star keyed on (``PERTURB_SEED``, APOGEE_ID) like the noise of :mod:`.observe`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d

from ..errors import BadDataError

#: The physics of a new mock survey (the shipped demo models are trained on it).
DEFAULT_PHYSICS = "apogee"
#: What a store without a physics record was made with (written before variants existed).
LEGACY_PHYSICS = "classic"
#: Seed of the fixed perturbations of the shifted physics (one alternative "universe").
PERTURB_SEED = 0x5F1F7ED


@dataclass(frozen=True)
class Physics:
    """One named physics set (see the module docstring)."""

    name: str
    synthesis: str  # "classic", "apogee" or "apogee2": which line-strength model
    description: str
    gf_sigma: float = 0.0  # dex, Gaussian perturbation of every line's log gf
    extra_line_fraction: float = 0.0  # extra unidentified lines / lines of the base list
    lsf_broadening: float = 0.0  # fractional increase of the line-spread function's width
    ripple_amplitude: float = 0.0  # continuum ripple amplitude (fraction of the continuum)

    @property
    def shifted(self) -> bool:
        return (self.gf_sigma > 0 or self.extra_line_fraction > 0 or self.lsf_broadening > 0
                or self.ripple_amplitude > 0)

    def record(self) -> dict:
        """What a store's manifest records about this physics."""
        out = {"physics": self.name, "physics_synthesis": self.synthesis,
               "physics_description": self.description}
        if self.shifted:
            out["physics_shift"] = {
                "gf_sigma_dex": self.gf_sigma, "extra_line_fraction": self.extra_line_fraction,
                "lsf_broadening": self.lsf_broadening, "ripple_amplitude": self.ripple_amplitude,
                "perturb_seed": PERTURB_SEED}
        return out


_SHIFT = dict(gf_sigma=0.10, extra_line_fraction=0.04, lsf_broadening=0.08,
              ripple_amplitude=0.004)
PHYSICS = {
    "classic": Physics("classic", "classic", "original one-layer mock synthesis (lines far too deep)"),
    "apogee": Physics("apogee", "apogee", "APOGEE-like synthesis: H- continuum, Planck depth "
                      "limit, dense CN/OH/CO forest with band structure"),
    "apogee2": Physics("apogee2", "apogee2", "apogee synthesis with OH (Meinel dv=2) and CO "
                       "(dv=3, with 13CO) bands computed from molecular constants, molecules "
                       "in equilibrium at the outer-layer temperature (0.84 Teff)"),
    "shifted": Physics("shifted", "classic", "classic physics with perturbed log gf (0.1 dex), "
                       "4 % extra unidentified lines, an 8 % broader LSF and continuum ripples",
                       **_SHIFT),
    "shifted-apogee": Physics("shifted-apogee", "apogee", "apogee physics with perturbed "
                              "log gf (0.1 dex), 4 % extra unidentified lines, an 8 % broader "
                              "LSF and continuum ripples", **_SHIFT),
}


def get_physics(name: str | Physics | None) -> Physics:
    """The physics set called ``name`` (None = the default); a clear error for unknown names."""
    if isinstance(name, Physics):
        return name
    key = DEFAULT_PHYSICS if name is None else str(name).strip().lower()
    if key not in PHYSICS:
        raise BadDataError(f"unknown mock physics {name!r} (known: {', '.join(PHYSICS)})")
    return PHYSICS[key]


def store_physics(store) -> str:
    """The physics name a store's mock spectra were made with ('classic' when not recorded:
    stores written before physics variants existed used it).  ``store`` is a store directory,
    an open store (anything with a ``manifest`` dict) or a manifest dict."""
    return str(_provenance(store).get("physics", LEGACY_PHYSICS))


def _provenance(store) -> dict:
    """A mock store's provenance record (store directory, open store or manifest dict)."""
    if isinstance(store, dict):
        manifest = store
    elif hasattr(store, "manifest"):
        manifest = store.manifest
    else:
        from ..store.manifest import read_manifest

        manifest = read_manifest(Path(store))
    return manifest.get("provenance") or {}


# --- the shifted perturbations --------------------------------------------------------------

def shifted_linelist(linelist: pd.DataFrame, physics: Physics,
                     filled_log_gf: np.ndarray) -> pd.DataFrame:
    """The line list seen through ``physics``: log gf (unknown ones filled first, as the
    synthesiser does) plus N(0, gf_sigma), and extra unidentified Fe I-like lines.

    Extra lines sit at uniformly random wavelengths over the list's range, with excitation
    potentials of 2–6 eV and log gf such that their strength at 4500 K, log gf − θχ, is drawn
    like that of the list's known atomic lines but 0.5 dex weaker (unidentified lines are
    mostly weak); their note says "unidentified (shifted physics)".
    """
    rng = np.random.default_rng(PERTURB_SEED)
    df = linelist.copy()
    df["log_gf"] = filled_log_gf + rng.normal(0.0, physics.gf_sigma, len(df))
    n_extra = int(round(physics.extra_line_fraction * len(df)))
    if n_extra == 0:
        return df
    theta = 5040.0 / 4500.0
    atomic = (linelist["kind"].to_numpy() == "atomic") & linelist["log_gf"].notna().to_numpy()
    strength = (linelist.loc[atomic, "log_gf"].to_numpy()
                - theta * linelist.loc[atomic, "excitation_potential"].to_numpy())
    lo, hi = float(df["wavelength_vac"].min()), float(df["wavelength_vac"].max())
    chi = rng.uniform(2.0, 6.0, n_extra)
    drawn = np.minimum(rng.normal(np.median(strength) - 0.5, np.std(strength), n_extra),
                       np.percentile(strength, 75))
    extra = pd.DataFrame({
        "wavelength_vac": np.round(rng.uniform(lo, hi, n_extra), 3),
        "species": "Fe I", "element": "Fe", "ion": 0,
        "excitation_potential": np.round(chi, 3),
        "log_gf": drawn + theta * chi,
        "informs": "", "kind": "atomic", "note": "unidentified (shifted physics)",
    })
    out = pd.concat([df, extra], ignore_index=True)
    return out.sort_values("wavelength_vac", kind="stable").reset_index(drop=True)


def broaden_lsf(flux: np.ndarray, chips: list[slice], sigma_px: float,
                broadening: float) -> np.ndarray:
    """Convolve each chip with the Gaussian that widens an LSF of σ ``sigma_px`` by the
    fraction ``broadening`` (in quadrature); edges mirror the chip."""
    extra = sigma_px * np.sqrt((1.0 + broadening) ** 2 - 1.0)
    out = flux.copy()
    for sl in chips:
        # convolve the depth, not the flux: the continuum stays exactly 1
        out[:, sl] = 1.0 - gaussian_filter1d(1.0 - flux[:, sl], extra, axis=1, mode="nearest")
    return out


def continuum_ripples(labels: pd.DataFrame, wavelength: np.ndarray,
                      amplitude: float) -> np.ndarray:
    """Multiplicative ripples (N × pixels): two sinusoids per star, periods 20–80 Å, random
    phases, total amplitude ``amplitude``; each star's from its own stream."""
    from .observe import star_rngs

    lam = np.asarray(wavelength, dtype=np.float64)
    out = np.ones((len(labels), lam.size), dtype=np.float64)
    for i, rng in enumerate(star_rngs(labels, PERTURB_SEED)):
        periods = rng.uniform(20.0, 80.0, 2)
        phases = rng.uniform(0.0, 2 * np.pi, 2)
        share = rng.uniform(0.3, 0.7)
        out[i] += amplitude * (share * np.sin(2 * np.pi * lam / periods[0] + phases[0])
                               + (1 - share) * np.sin(2 * np.pi * lam / periods[1] + phases[1]))
    return out


def describe(name: str | None = None) -> str:
    """A one-line description (for the CLI), or all of them as JSON lines when ``name`` is None."""
    if name is not None:
        p = get_physics(name)
        return f"{p.name}: {p.description}"
    return "\n".join(json.dumps(p.record(), ensure_ascii=False) for p in PHYSICS.values())
