"""True stellar labels of a mock APOGEE survey, and catalog labels = truth + realistic errors.

Two named populations (:data:`POPULATIONS`, ``draw_labels(..., population=)``):

* "classic" (the original population, kept unchanged; older stores hold it): red-giant
  branch (a metallicity-dependent Teff–log g relation), red clump and dwarfs/subgiants; thin
  disc, thick disc (high-α sequence) and halo metallicities in Teff 3500–6500 K, log g 0.5–4.8.
* "dr17" (the default; the shipped demo models are trained on it): like the DR17 allStar over Teff 3000–7000 K, log g −0.5 to 5.5: an isochrone-like
  giant branch up to a metallicity-dependent tip (M giants), red clump / red horizontal branch,
  early AGB; dwarfs, M dwarfs and subgiants; thin and thick disc (two α sequences with a dip),
  bulge, in-situ halo, a low-α accreted halo and the Magellanic Clouds, each seen along the
  giant branch as far as a magnitude-limited survey would see it.  Adds COMPONENT and ALPHA_M.

Both: [X/Fe] trends with α and [Fe/H]; first dredge-up and extra mixing that lower C and raise
N in giants.  Positions fall in survey fields; APOGEE_IDs are 2MASS-style names built from them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .synth import XFE_LABELS, vmicro_from_logg

#: Catalog label columns of a mock survey (each has a ``_ERR`` and a ``TRUE_`` column).
MOCK_LABEL_COLUMNS = ("TEFF", "LOGG", "M_H", "FE_H", "VMICRO") + tuple(XFE_LABELS)
#: Named label populations :func:`draw_labels` can draw ("dr17" is the default).
POPULATIONS = ("classic", "dr17")
#: Stellar classes of the classic population and their shares.
CLASSIC_CLASSES = ("RGB", "RC", "dwarf")
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


def _abundances(rng, giant, comp, feh, alpha, logg, accreted=None,
                alpha_pattern=_ALPHA) -> dict[str, np.ndarray]:
    """[X/Fe] of every star; ``alpha`` is [α/Fe], ``accreted`` marks stars born in dwarf galaxies."""
    n = feh.size
    x = {name: w * alpha + rng.normal(0.0, s, n) for name, (w, s) in alpha_pattern.items()}
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
    # first dredge-up: stronger in more massive (younger, thin-disc) giants
    mass = rng.random(n) * np.where(comp == "thin", 1.0, 0.4)
    c = c - giant * (0.12 + 0.12 * mass + rng.normal(0.0, 0.03, n))
    nn = nn + giant * (0.25 + 0.30 * mass + rng.normal(0.0, 0.05, n))
    # extra mixing above the RGB bump in metal-poor giants
    extra = giant * np.clip((2.0 - logg) / 1.5, 0.0, 1.0) * (feh < -0.8)
    x["C_FE"] = c - 0.15 * extra
    x["N_FE"] = nn + 0.15 * extra
    if accreted is not None:
        # slow, bursty chemical evolution in dwarf galaxies: little Al, Na, Ni or Mn from
        # metal-dependent yields (the accreted halo's chemical fingerprint)
        x["AL_FE"] = x["AL_FE"] - 0.25 * accreted
        x["NA_FE"] = x["NA_FE"] - 0.10 * accreted
        x["NI_FE"] = x["NI_FE"] - 0.06 * accreted
        x["MN_FE"] = x["MN_FE"] - 0.05 * accreted
    return {name: x[name] for name in XFE_LABELS}


def _errors(rng, true: dict[str, np.ndarray], snr: np.ndarray,
            err100: dict[str, float] = _ERR100) -> dict[str, np.ndarray]:
    """Per-star label errors: ∝ (100/SNR)^0.85, larger for metal-poor and hot stars."""
    noise = (100.0 / snr) ** 0.85
    weak_lines = 10.0 ** (-0.35 * np.minimum(true["FE_H"], 0.0))
    hot = np.exp(np.clip(true["TEFF"] - 4800.0, 0.0, None) / 2500.0)
    out = {}
    for name, base in err100.items():
        e = base * noise
        if name.endswith("_FE") or name in ("M_H", "FE_H", "ALPHA_M"):
            e = e * weak_lines
        if name in ("C_FE", "N_FE", "O_FE"):  # molecular features fade in warm stars
            e = e * hot**2
        elif name != "TEFF":
            e = e * hot
        floor = _ERR_FLOOR.get(name, 0.004)
        e = np.hypot(e, floor) * rng.lognormal(0.0, 0.1, snr.size)
        out[name] = np.minimum(e, _ERR_CAP.get(name, 0.35))
    return out


# --- the "dr17" population --------------------------------------------------------------------
#: Stellar classes of the dr17 population ("M giant" = an RGB/AGB star cooler than 3800 K).
DR17_CLASSES = ("RGB", "RC", "AGB", "M giant", "subgiant", "dwarf", "M dwarf")
#: The dr17 label box (true labels).
DR17_BOX = {"TEFF": (3000.0, 7000.0), "LOGG": (-0.5, 5.5), "FE_H": (-2.5, 0.6)}
#: Shares in the whole dr17 mock, roughly as in the DR17 allStar: giants (RGB, RC, AGB, M giant;
#: about a tenth of them clump stars) two thirds, K/G/F dwarfs a quarter, then subgiants between
#: turn-off and giant branch, and M dwarfs.
DR17_KIND_SHARES = {"giant": 0.62, "subgiant": 0.07, "dwarf": 0.25, "M dwarf": 0.06}
_GIANT_CLASSES = ("RGB", "RC", "AGB", "M giant")
M_GIANT_TEFF = 3800.0
_MH_ALPHA = 0.13  # [M/H] − [Fe/H] per dex of [α/Fe]
# O and Mg follow [α/Fe] one-to-one (they define [α/M] in bench/population.py); Si, S, Ca, Ti less
_ALPHA_DR17 = {"O_FE": (1.0, 0.025), "MG_FE": (1.0, 0.02), "SI_FE": (0.8, 0.03),
               "S_FE": (0.8, 0.06), "CA_FE": (0.7, 0.03), "TI_FE": (0.65, 0.05)}

# Galactic components: metallicity distribution (mean, σ, upper edge) and where along the giant
# branch they are seen.  A magnitude-limited survey sees distant components only by their
# luminous giants: the visibility is a logistic window in log g, rising at ``lo`` (the branch
# thins towards the tip) and falling at ``hi`` (fainter giants drop below the limit).
_COMPONENTS = {
    #            weight among: giants  others    MDF mean, σ, max    lo,   hi
    "thin":     (0.570, 0.850, (-0.12, 0.25, 0.55), (1.30, 9.0)),
    "thick":    (0.225, 0.125, (-0.48, 0.22, 0.15), (0.90, 9.0)),
    "bulge":    (0.070, 0.000, (-0.05, 0.30, 0.55), (0.00, 2.2)),
    "halo":     (0.030, 0.010, (-1.45, 0.45, -0.4), (0.60, 2.2)),
    "accreted": (0.035, 0.015, (-1.15, 0.30, -0.4), (0.60, 2.2)),
    "clouds":   (0.050, 0.000, (-0.60, 0.18, -0.2), (0.55, 1.5)),
}


def alpha_m(labels: pd.DataFrame, prefix: str = "") -> np.ndarray:
    """[α/M] of a mock catalog: its ALPHA_M column (dr17), else mean [O/Fe] and [Mg/Fe] (the α
    elements that follow [α/Fe] one to one) less [M/H] − [Fe/H].  ``prefix="TRUE_"`` for the
    true labels."""
    if f"{prefix}ALPHA_M" in labels:
        return labels[f"{prefix}ALPHA_M"].to_numpy(np.float64)
    xfe = 0.5 * (labels[f"{prefix}O_FE"] + labels[f"{prefix}MG_FE"])
    return np.asarray(xfe - (labels[f"{prefix}M_H"] - labels[f"{prefix}FE_H"]), dtype=np.float64)


def _rejection(rng, pdf, lo, hi, size) -> np.ndarray:
    """Samples of an unnormalised pdf(x, index) ≤ 1 on [lo, hi] (arrays per star)."""
    out = np.empty(size)
    todo = np.arange(size)
    while todo.size:
        x = rng.uniform(lo[todo], hi[todo])
        ok = rng.random(todo.size) < pdf(x, todo)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


def _dr17_metallicity(rng, comp: np.ndarray) -> np.ndarray:
    feh = np.empty(comp.size)
    for name, (_, _, (mean, sigma, top), _) in _COMPONENTS.items():
        m = comp == name
        feh[m] = _truncated_normal(rng, np.full(m.sum(), mean), sigma, DR17_BOX["FE_H"][0], top)
    return feh


def _dr17_alpha(rng, comp: np.ndarray, feh: np.ndarray) -> np.ndarray:
    """[α/M]: two disc sequences with a gap between them, an α-rich halo, and low-α accreted
    stars whose knee (where SN Ia start to lower α) sits at lower [Fe/H] the smaller the galaxy."""
    n = feh.size
    f = np.clip(feh, -0.7, 0.6)
    low = 0.04 - 0.08 * f + 0.04 * f**2
    # the high-α sequence bends down once SN Ia set in and meets the low one near [Fe/H] +0.2
    knee = np.clip((feh + 0.75) / 0.95, 0.0, 1.0)
    high = 0.285 - 0.265 * knee**2
    halo = 0.30 - 0.02 * np.clip(feh + 1.5, -1.0, 1.0)
    gse = 0.30 - 0.26 * np.clip((feh + 1.9) / 1.1, 0.0, 1.0)
    clouds = np.clip(0.12 - 0.20 * (feh + 1.0), 0.0, 0.2)
    # the bulge: α-rich like the thick disc when metal-poor, thin-disc-like when metal-rich
    bulge = np.where(rng.random(n) * (1.0 + np.exp((feh + 0.15) / 0.15)) > 1.0, high, low)
    base = np.select([comp == "thin", comp == "thick", comp == "bulge", comp == "halo",
                      comp == "accreted"], [low, high, bulge, halo, gse], clouds)
    # metal-rich stars formed from well-mixed gas: the low-α sequence narrows with [Fe/H]
    thin_sigma = 0.013 + 0.009 * np.clip((0.1 - feh) / 0.35, 0.0, 1.0)
    sigma = np.select([comp == "thin", comp == "thick", comp == "bulge"],
                      [thin_sigma, 0.018, 0.022], 0.03)
    return base + sigma * rng.standard_normal(n)


def rgb_teff(logg, feh) -> np.ndarray:
    """Isochrone-like red-giant-branch ridge Teff(log g, [Fe/H]): cooler up the branch and when
    metal-rich, bending to the cool side near the tip (H⁻ and molecular opacity)."""
    f = np.clip(feh, -2.5, 0.6)
    dg = np.asarray(logg) - 2.0
    t2 = 4330.0 - 400.0 * f - 25.0 * f**2
    slope = 515.0 + 40.0 * f
    curve = 70.0 + 20.0 * f
    return t2 + slope * dg - curve * dg**2


def _tip_logg(feh) -> np.ndarray:
    """log g of the RGB/AGB tip: metal-rich giants climb higher (lower log g)."""
    return np.clip(-0.3 - 0.55 * feh, -0.45, 0.6)


def _dr17_giants(rng, comp, feh):
    """Class, Teff and log g of giants of the given components and metallicities."""
    n = comp.size
    lo = np.array([_COMPONENTS[c][3][0] for c in comp])
    hi = np.array([_COMPONENTS[c][3][1] for c in comp])
    u = rng.random(n)
    # core-helium burners: the red clump (metal-rich), the red horizontal branch (metal-poor)
    rc = (u < 0.11) & (hi > 2.6)
    agb = ~rc & (u > 0.92)
    tip = _tip_logg(feh)
    base = np.full(n, 3.8)

    def window(g, i):
        return 1.0 / ((1.0 + np.exp(-(g - lo[i]) / 0.28)) * (1.0 + np.exp((g - hi[i]) / 0.12)))

    logg = _rejection(rng, window, tip, np.where(agb, 2.2, base), n)
    teff = rgb_teff(logg, feh) + np.where(agb, 90.0, 0.0) + rng.normal(0.0, 55.0, n)
    # red clump: log g ≈ 2.45 (a secondary clump of younger, heavier stars at higher log g)
    second = rc & (comp == "thin") & (rng.random(n) < 0.2)
    f_rc = np.clip(feh, -1.6, 0.6)
    g_rc = np.where(second, rng.normal(2.75, 0.10, n), rng.normal(2.54 + 0.15 * f_rc, 0.06, n))
    t_rc = 4620.0 - 300.0 * f_rc + np.where(second, 60.0, 0.0)
    logg = np.where(rc, g_rc, logg)
    teff = np.where(rc, t_rc + rng.normal(0.0, 60.0, n), teff)
    cls = np.select([rc, agb], ["RC", "AGB"], "RGB").astype(object)
    cls[~rc & (teff < M_GIANT_TEFF)] = "M giant"
    return cls, teff, logg


def _ms_logg(teff, feh) -> np.ndarray:
    """Zero-age main-sequence log g at Teff: ~5.0 for M dwarfs, 4.6 for K, 4.4 for G, 4.2 for F."""
    t = np.asarray(teff)
    cool = 4.66 + 2.2e-4 * (4400.0 - t)
    warm = 4.66 - 2.0e-4 * (t - 4400.0)
    return np.where(t < 4400.0, cool, warm) - 0.05 * np.clip(feh, -2.0, 0.5)


def _dr17_stars(rng, n: int):
    """Class, component, [Fe/H], [α/M], Teff and log g of ``n`` stars of the dr17 population."""
    kinds = np.array(list(DR17_KIND_SHARES))[rng.choice(len(DR17_KIND_SHARES), size=n,
                                                    p=list(DR17_KIND_SHARES.values()))]
    giant = kinds == "giant"
    names = list(_COMPONENTS)
    w_giant = np.array([c[0] for c in _COMPONENTS.values()])
    w_other = np.array([c[1] for c in _COMPONENTS.values()])
    comp = np.empty(n, dtype=object)
    comp[giant] = np.array(names)[rng.choice(len(names), size=giant.sum(), p=w_giant / w_giant.sum())]
    comp[~giant] = np.array(names)[rng.choice(len(names), size=(~giant).sum(),
                                              p=w_other / w_other.sum())]
    feh = _dr17_metallicity(rng, comp)
    alpha = _dr17_alpha(rng, comp, feh)
    cls = kinds.astype(object)
    teff = np.empty(n)
    logg = np.empty(n)

    cls[giant], teff[giant], logg[giant] = _dr17_giants(rng, comp[giant], feh[giant])

    # dwarfs: K/G/F stars (metal-poor ones hotter at the same mass), a little evolution off the
    # zero-age main sequence, more for hotter (shorter-lived) stars
    d = kinds == "dwarf"
    t = 3900.0 + 3100.0 * rng.beta(2.4, 2.2, d.sum()) - 120.0 * np.minimum(feh[d], 0.0)
    evolved = rng.exponential(0.05 + 0.10 * np.clip((t - 5000.0) / 1500.0, 0.0, 1.0))
    teff[d] = t
    logg[d] = _ms_logg(t, feh[d]) - evolved + rng.normal(0.0, 0.05, t.size)

    # M dwarfs: fully convective, log g rising as they get cooler and smaller
    m = kinds == "M dwarf"
    t = 3000.0 + 900.0 * rng.beta(1.8, 1.6, m.sum())
    teff[m] = t
    logg[m] = _ms_logg(t, feh[m]) + rng.normal(0.0, 0.08, t.size)

    # subgiants: from the turn-off (hotter and higher log g when less massive or metal-poor)
    # across to the base of the giant branch
    s = kinds == "subgiant"
    mass = rng.uniform(0.9, 1.6, s.sum())
    f = np.clip(feh[s], -2.0, 0.5)
    u = rng.random(s.sum())
    t_to = 5900.0 + 700.0 * (mass - 1.0) - 250.0 * f
    g_to = 4.05 - 0.30 * (mass - 1.0)
    t_base = 5050.0 + 150.0 * (mass - 1.0) - 200.0 * f
    g_base = 3.75 - 0.45 * (mass - 1.0)
    teff[s] = t_to + (t_base - t_to) * u + rng.normal(0.0, 60.0, u.size)
    logg[s] = g_to + (g_base - g_to) * u + rng.normal(0.0, 0.05, u.size)

    teff = np.clip(teff, *DR17_BOX["TEFF"])
    logg = np.clip(logg, *DR17_BOX["LOGG"])
    return cls.astype(str), comp.astype(str), feh, alpha, teff, logg


def draw_labels(n: int, seed: int = 42, population: str = "dr17") -> pd.DataFrame:
    """A mock allStar-like catalog of ``n`` stars: catalog labels, errors and TRUE_* labels.

    ``population`` names the label population (:data:`POPULATIONS`): "dr17" (the default:
    DR17-like giants, dwarfs, M dwarfs, subgiants and an accreted halo over a wider box; see
    :func:`_dr17_stars`) or "classic" (the original population, unchanged).
    """
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    if population not in POPULATIONS:
        raise ValueError(f"unknown mock population {population!r}; choose one of "
                         f"{', '.join(POPULATIONS)}")
    if population == "classic":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x1ABE15]))
        pop = np.array(CLASSIC_CLASSES)[rng.choice(3, size=n, p=POPULATION_FRACTIONS)]
        comp, feh = _metallicity(rng, pop)
        alpha = _alpha(rng, comp, feh)
        teff, logg = _teff_logg(rng, pop, feh)
        m_h = feh + 0.2 * alpha
        giant, accreted, alpha_m = pop != "dwarf", None, None
    else:
        rng = np.random.default_rng(
            np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x1ABE15, 0xD417]))
        pop, comp, feh, alpha_m, teff, logg = _dr17_stars(rng, n)
        # ASPCAP's [M/H] follows the α elements a little: [M/H] = [Fe/H] + k·[α/Fe]
        alpha = alpha_m / (1.0 - _MH_ALPHA)
        m_h = feh + _MH_ALPHA * alpha
        giant = np.isin(pop, _GIANT_CLASSES)
        accreted = np.isin(comp, ("accreted", "clouds")).astype(np.float64)
    return _catalog(rng, n, pop, comp, feh, alpha, m_h, teff, logg, giant, accreted,
                    None if population == "classic" else alpha_m)


def _catalog(rng, n, pop, comp, feh, alpha, m_h, teff, logg, giant, accreted,
             alpha_m_true=None) -> pd.DataFrame:
    true = {"TEFF": teff, "LOGG": logg, "FE_H": feh}
    true["M_H"] = m_h
    true["VMICRO"] = np.clip(vmicro_from_logg(logg) + rng.normal(0.0, 0.05, n), 0.3, None)
    pattern = _ALPHA if accreted is None else _ALPHA_DR17
    true.update(_abundances(rng, giant, comp, feh, alpha, logg, accreted, pattern))
    field, telescope, ra, dec = _fields(rng, n)
    snr = 50.0 * 10.0 ** rng.beta(1.2, 3.0, n)
    snr = np.where(telescope == "apo1m", 150.0 * 10.0 ** (np.log10(500 / 150) * rng.random(n)), snr)
    ids, ra = _unique_ids(ra, dec)
    errors = _errors(rng, true, snr)

    spread = np.select([comp == "thin", comp == "thick", comp == "clouds"], [35.0, 60.0, 40.0],
                       120.0)
    # the Magellanic Clouds recede at ≈ 260 km/s
    binary = rng.random(n) < 0.05
    cat = {
        "APOGEE_ID": ids,
        "TELESCOPE": telescope.astype(str),
        "FIELD": field.astype(str),
        "RA": ra,
        "DEC": dec,
        "SNR": snr,
        "NVISITS": 1 + rng.poisson(2.0, n),
        "VHELIO_AVG": rng.normal(np.where(comp == "clouds", 260.0, 0.0), spread),
        "VSCATTER": np.where(binary, 10.0 ** rng.uniform(0.0, 1.3, n),
                             10.0 ** rng.normal(-0.7, 0.35, n)),
        "STARFLAG": np.zeros(n, dtype=np.int64),
        "ASPCAPFLAG": np.zeros(n, dtype=np.int64),
    }
    for name in MOCK_LABEL_COLUMNS:
        cat[name] = true[name] + errors[name] * rng.standard_normal(n)
        cat[f"{name}_ERR"] = errors[name]
    cat["POPULATION"] = pop.astype(str)
    if accreted is not None:  # dr17 only: classic's columns stay exactly as they were
        cat["COMPONENT"] = comp.astype(str)
    for name in MOCK_LABEL_COLUMNS:
        cat[f"TRUE_{name}"] = true[name]
    if alpha_m_true is not None:
        # the overall α of the allStar (ASPCAP fits all α lines at once: a smaller error
        # than any one element's); drawn last so the other columns do not depend on it
        true["ALPHA_M"] = alpha_m_true
        err = _errors(rng, true, snr, {"ALPHA_M": 0.012})["ALPHA_M"]
        cat["ALPHA_M"] = alpha_m_true + err * rng.standard_normal(n)
        cat["ALPHA_M_ERR"] = err
        cat["TRUE_ALPHA_M"] = alpha_m_true
    return pd.DataFrame(cat)
