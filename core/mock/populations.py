"""True stellar labels of a mock APOGEE survey, and catalog labels = truth + realistic errors.

Populations: red-giant branch (a metallicity-dependent Teff–log g relation), red clump and
dwarfs/subgiants; thin disc, thick disc (high-α sequence) and halo metallicities; [X/Fe]
trends with α and [Fe/H]; first dredge-up and extra mixing that lower C and raise N in
giants.  Positions fall in survey fields; APOGEE_IDs are 2MASS-style names built from them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .synth import XFE_LABELS, vmicro_from_logg

#: Catalog label columns of a mock survey (each has a ``_ERR`` and a ``TRUE_`` column).
MOCK_LABEL_COLUMNS = ("TEFF", "LOGG", "M_H", "FE_H", "VMICRO") + tuple(XFE_LABELS)
POPULATIONS = ("RGB", "RC", "dwarf")
POPULATION_FRACTIONS = (0.52, 0.20, 0.28)
FEH_RANGE = (-2.5, 0.5)
TEFF_RANGE = (3500.0, 6500.0)
LOGG_RANGE = (0.5, 4.8)

# Galactic disc components: (weight, mean [Fe/H], σ).
_DISCS = {"thin": (0.70, -0.05, 0.22), "thick": (0.24, -0.55, 0.25), "halo": (0.06, -1.35, 0.45)}
# How strongly each α element follows the α sequence, and its own scatter.
_ALPHA = {"O_FE": (1.0, 0.05), "MG_FE": (1.0, 0.03), "SI_FE": (0.75, 0.03),
          "S_FE": (0.8, 0.06), "CA_FE": (0.65, 0.03), "TI_FE": (0.6, 0.05)}
# Per-label error at S/N 100 for a solar-metallicity giant (ASPCAP-like).
_ERR100 = {"TEFF": 40.0, "LOGG": 0.035, "M_H": 0.012, "FE_H": 0.010, "VMICRO": 0.05,
           "C_FE": 0.020, "N_FE": 0.030, "O_FE": 0.022, "NA_FE": 0.090, "MG_FE": 0.015,
           "AL_FE": 0.030, "SI_FE": 0.016, "S_FE": 0.045, "K_FE": 0.035, "CA_FE": 0.018,
           "TI_FE": 0.030, "V_FE": 0.065, "CR_FE": 0.035, "MN_FE": 0.022, "CO_FE": 0.055,
           "NI_FE": 0.016}
_ERR_FLOOR = {"TEFF": 8.0, "LOGG": 0.012, "VMICRO": 0.015}
_ERR_CAP = {"TEFF": 250.0, "LOGG": 0.3, "VMICRO": 0.3}  # abundances: 0.35 dex

#: Rotation from Galactic to ICRS unit vectors (transpose of the Hipparcos ICRS→Galactic matrix).
_GAL_TO_ICRS = np.array([
    [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
    [0.4941094278755837, -0.4448296299600112, 0.7469822444972189],
    [-0.8676661490190047, -0.1980763734312015, 0.4559837761750669],
]).T


def _truncated_normal(rng, mean, sigma, lo, hi) -> np.ndarray:
    mean = np.asarray(mean, dtype=np.float64)
    out = rng.normal(mean, sigma)
    bad = (out < lo) | (out > hi)
    while bad.any():  # redraw only the rejected values, so the tails stay smooth
        out[bad] = rng.normal(np.broadcast_to(mean, out.shape)[bad], sigma)
        bad = (out < lo) | (out > hi)
    return out


def galactic_to_icrs(l_deg, b_deg) -> tuple[np.ndarray, np.ndarray]:
    l_rad, b_rad = np.radians(l_deg), np.radians(b_deg)
    v = np.stack([np.cos(b_rad) * np.cos(l_rad), np.cos(b_rad) * np.sin(l_rad), np.sin(b_rad)])
    x, y, z = _GAL_TO_ICRS @ v
    return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arcsin(np.clip(z, -1, 1)))


def apogee_id(ra, dec) -> np.ndarray:
    """2MASS-style names ``2MHHMMSSss±DDMMSSs`` (truncated, like 2MASS designations)."""
    ra_cs = np.floor(np.asarray(ra) / 15.0 * 360000.0).astype(np.int64) % 8_640_000
    dec = np.asarray(dec, dtype=np.float64)
    dec_ds = np.floor(np.abs(dec) * 36000.0).astype(np.int64)
    out = []
    for r, d, neg in zip(ra_cs, dec_ds, dec < 0, strict=True):
        out.append(f"2M{r // 360000:02d}{(r // 6000) % 60:02d}{r % 6000:04d}"
                   f"{'-' if neg else '+'}{d // 36000:02d}{(d // 600) % 60:02d}{d % 600:03d}")
    return np.array(out)


def _unique_ids(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IDs for all stars, nudging the RA of a later twin by 0.01 s until every name is unique."""
    ra = ra.copy()
    ids = apogee_id(ra, dec)
    while True:
        _, first = np.unique(ids, return_index=True)
        dup = np.setdiff1d(np.arange(ids.size), first)
        if dup.size == 0:
            return ids, ra
        ra[dup] = (ra[dup] + 0.01 * 15.0 / 3600.0) % 360.0
        ids[dup] = apogee_id(ra[dup], dec[dup])


def _fields(rng, n: int):
    """Survey fields (name, telescope, centre) and each star's field and position."""
    n_fields = max(3, int(np.ceil(n / 120)))
    l_c = rng.uniform(0.0, 360.0, n_fields)
    b_c = np.where(rng.random(n_fields) < 0.8, rng.normal(0.0, 8.0, n_fields),
                   rng.uniform(-70.0, 70.0, n_fields))
    b_c = np.clip(b_c, -80.0, 80.0)
    ra_c, dec_c = galactic_to_icrs(l_c, b_c)
    tel = np.where(dec_c < -20.0, "lco25m", "apo25m").astype(object)
    tel[(dec_c >= -20.0) & (dec_c <= 10.0) & (rng.random(n_fields) < 0.3)] = "lco25m"
    names = np.array([f"{lc:03.0f}{bc:+03.0f}" for lc, bc in zip(l_c % 360, b_c, strict=True)],
                     dtype=object)
    field = rng.integers(0, n_fields, n)
    star_tel, star_field = tel[field], names[field]
    # bright calibration stars observed with the APO 1 m telescope
    one_m = (rng.random(n) < 0.03) & (dec_c[field] > -10.0)
    star_tel[one_m] = "apo1m"
    star_field[one_m] = "calibration"
    radius = 1.5 * np.sqrt(rng.random(n))
    angle = rng.uniform(0.0, 2 * np.pi, n)
    dec = np.clip(dec_c[field] + radius * np.sin(angle), -89.9, 89.9)
    ra = (ra_c[field] + radius * np.cos(angle) / np.cos(np.radians(dec))) % 360.0
    return star_field, star_tel, ra, dec


def _metallicity(rng, pop: np.ndarray):
    names = np.array(list(_DISCS))
    weights = np.array([w for w, _, _ in _DISCS.values()])
    comp = names[rng.choice(len(names), size=pop.size, p=weights / weights.sum())]
    # red-clump stars are disc stars; metal-poor core-helium burners sit on the horizontal branch
    comp = np.where((pop == "RC") & (comp == "halo"), "thick", comp)
    comp = np.where((pop == "dwarf") & (comp == "halo") & (rng.random(pop.size) < 0.5), "thick", comp)
    mean = np.array([_DISCS[c][1] for c in comp])
    sigma = np.array([_DISCS[c][2] for c in comp])
    lo = np.where(pop == "RC", -1.0, FEH_RANGE[0])
    feh = mean + sigma * rng.standard_normal(pop.size)
    bad = (feh < lo) | (feh > FEH_RANGE[1])
    while bad.any():
        feh[bad] = mean[bad] + sigma[bad] * rng.standard_normal(int(bad.sum()))
        bad = (feh < lo) | (feh > FEH_RANGE[1])
    return comp, feh


def _alpha(rng, comp: np.ndarray, feh: np.ndarray) -> np.ndarray:
    thin = 0.03 - 0.06 * feh
    thick = 0.30 - 0.25 * np.clip((feh + 0.8) / 0.8, 0.0, 1.0)
    halo = np.where(rng.random(feh.size) < 0.2, 0.12, 0.32)  # a low-α accreted halo
    base = np.select([comp == "thin", comp == "thick"], [thin, thick], halo)
    return base + rng.normal(0.0, 0.03, feh.size)


def _teff_logg(rng, pop: np.ndarray, feh: np.ndarray):
    n = pop.size
    teff = np.empty(n)
    logg = np.empty(n)
    rgb, rc, dw = pop == "RGB", pop == "RC", pop == "dwarf"
    # red-giant branch: cooler up the branch, hotter when metal-poor
    g = LOGG_RANGE[0] + (3.8 - LOGG_RANGE[0]) * rng.beta(2.0, 1.4, rgb.sum())
    logg[rgb] = g
    teff[rgb] = 3800.0 + 330.0 * (g - 0.8) - 230.0 * feh[rgb] + rng.normal(0, 50, rgb.sum())
    # red clump
    logg[rc] = _truncated_normal(rng, np.full(rc.sum(), 2.45), 0.07, 2.25, 2.65)
    teff[rc] = _truncated_normal(rng, 4760.0 - 160.0 * feh[rc], 50.0, 4550.0, 5050.0)
    # dwarfs and subgiants: a main sequence in (Teff, log g) plus evolution off it
    t = 3500.0 + 3000.0 * rng.beta(3.2, 2.0, dw.sum()) - 150.0 * np.minimum(feh[dw], 0.0)
    t = np.clip(t, *TEFF_RANGE)
    ms = np.where(t > 4000.0, 4.72 - 1.6e-4 * (t - 4000.0), 4.72 + 0.8e-4 * (4000.0 - t))
    evolved = rng.exponential(0.10, t.size)
    subgiant = (t > 5000.0) & (rng.random(t.size) < 0.12)
    evolved = evolved + np.where(subgiant, rng.uniform(0.3, 0.9, t.size), 0.0)
    teff[dw] = t
    logg[dw] = ms - evolved + rng.normal(0.0, 0.04, t.size)
    return np.clip(teff, *TEFF_RANGE), np.clip(logg, *LOGG_RANGE)


def _abundances(rng, pop, comp, feh, alpha, logg) -> dict[str, np.ndarray]:
    n = feh.size
    x = {name: w * alpha + rng.normal(0.0, s, n) for name, (w, s) in _ALPHA.items()}
    x["NA_FE"] = 0.02 + rng.normal(0.0, 0.08, n)
    x["AL_FE"] = 0.5 * alpha + rng.normal(0.0, 0.05, n)
    x["K_FE"] = 0.05 + rng.normal(0.0, 0.06, n)
    x["V_FE"] = 0.2 * alpha + rng.normal(0.0, 0.08, n)
    x["CR_FE"] = rng.normal(0.0, 0.03, n)
    x["MN_FE"] = 0.12 * np.clip(feh, -1.5, 0.5) - 0.4 * alpha + 0.02 + rng.normal(0.0, 0.04, n)
    x["CO_FE"] = 0.05 + 0.3 * alpha + rng.normal(0.0, 0.06, n)
    x["NI_FE"] = 0.02 + 0.15 * alpha + rng.normal(0.0, 0.03, n)
    c = 0.2 * alpha + rng.normal(0.0, 0.05, n)
    nn = rng.normal(0.0, 0.05, n)
    giant = pop != "dwarf"
    # first dredge-up: stronger in more massive (younger, thin-disc) giants
    mass = rng.random(n) * np.where(comp == "thin", 1.0, 0.4)
    c = c - giant * (0.12 + 0.12 * mass + rng.normal(0.0, 0.03, n))
    nn = nn + giant * (0.25 + 0.30 * mass + rng.normal(0.0, 0.05, n))
    # extra mixing above the RGB bump in metal-poor giants
    extra = giant * np.clip((2.0 - logg) / 1.5, 0.0, 1.0) * (feh < -0.8)
    x["C_FE"] = c - 0.15 * extra
    x["N_FE"] = nn + 0.15 * extra
    return {name: x[name] for name in XFE_LABELS}


def _errors(rng, true: dict[str, np.ndarray], snr: np.ndarray) -> dict[str, np.ndarray]:
    """Per-star label errors: ∝ (100/SNR)^0.85, larger for metal-poor and hot stars."""
    noise = (100.0 / snr) ** 0.85
    weak_lines = 10.0 ** (-0.35 * np.minimum(true["FE_H"], 0.0))
    hot = np.exp(np.clip(true["TEFF"] - 4800.0, 0.0, None) / 2500.0)
    out = {}
    for name, base in _ERR100.items():
        e = base * noise
        if name.endswith("_FE") or name in ("M_H", "FE_H"):
            e = e * weak_lines
        if name in ("C_FE", "N_FE", "O_FE"):  # molecular features fade in warm stars
            e = e * hot**2
        elif name != "TEFF":
            e = e * hot
        floor = _ERR_FLOOR.get(name, 0.004)
        e = np.hypot(e, floor) * rng.lognormal(0.0, 0.1, snr.size)
        out[name] = np.minimum(e, _ERR_CAP.get(name, 0.35))
    return out


def draw_labels(n: int, seed: int = 42) -> pd.DataFrame:
    """A mock allStar-like catalog of ``n`` stars: catalog labels, errors and TRUE_* labels."""
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x1ABE15]))
    pop = np.array(POPULATIONS)[rng.choice(3, size=n, p=POPULATION_FRACTIONS)]
    comp, feh = _metallicity(rng, pop)
    alpha = _alpha(rng, comp, feh)
    teff, logg = _teff_logg(rng, pop, feh)
    true = {"TEFF": teff, "LOGG": logg, "FE_H": feh}
    true["M_H"] = feh + 0.2 * alpha
    true["VMICRO"] = np.clip(vmicro_from_logg(logg) + rng.normal(0.0, 0.05, n), 0.3, None)
    true.update(_abundances(rng, pop, comp, feh, alpha, logg))

    field, telescope, ra, dec = _fields(rng, n)
    snr = 50.0 * 10.0 ** rng.beta(1.2, 3.0, n)
    snr = np.where(telescope == "apo1m", 150.0 * 10.0 ** (np.log10(500 / 150) * rng.random(n)), snr)
    ids, ra = _unique_ids(ra, dec)
    errors = _errors(rng, true, snr)

    spread = np.select([comp == "thin", comp == "thick"], [35.0, 60.0], 120.0)
    binary = rng.random(n) < 0.05
    cat = {
        "APOGEE_ID": ids,
        "TELESCOPE": telescope.astype(str),
        "FIELD": field.astype(str),
        "RA": ra,
        "DEC": dec,
        "SNR": snr,
        "NVISITS": 1 + rng.poisson(2.0, n),
        "VHELIO_AVG": rng.normal(0.0, spread),
        "VSCATTER": np.where(binary, 10.0 ** rng.uniform(0.0, 1.3, n),
                             10.0 ** rng.normal(-0.7, 0.35, n)),
        "STARFLAG": np.zeros(n, dtype=np.int64),
        "ASPCAPFLAG": np.zeros(n, dtype=np.int64),
    }
    for name in MOCK_LABEL_COLUMNS:
        cat[name] = true[name] + errors[name] * rng.standard_normal(n)
        cat[f"{name}_ERR"] = errors[name]
    cat["POPULATION"] = pop.astype(str)
    for name in MOCK_LABEL_COLUMNS:
        cat[f"TRUE_{name}"] = true[name]
    return pd.DataFrame(cat)
