"""Small synthetic files in the APOGEE data models, for tests across the project.

Every writer takes the target path first, returns it (or the paths it wrote), and is
deterministic given ``seed``.  Spectra share one rest-frame line list
(:func:`rest_template`), so an apVisit written with ``vrad=v`` and an apStar of the same
star show the same absorption lines once the visit is shifted to the rest frame.

    from fits_fixtures import write_apstar  # tests/ is on sys.path under pytest
    path = write_apstar(tmp_path / "apStar-dr17-2M00000000+0000000.fits", n_visits=3)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from core.grid import (
    APOGEE_7514,
    APSTAR_CDELT1,
    APSTAR_CRVAL1,
    APSTAR_NPIX,
    apstar_wavelength,
    doppler_factor,
)

DEFAULT_ID = "2M00000000+0000000"
_LINE_SEED = 8575
_N_LINES = 400

#: Approximate observed wavelength ranges of the three apVisit chips, as stored (red first).
APVISIT_CHIP_RANGES = ((16954.8, 16472.8), (16435.4, 15857.3), (15810.3, 15142.7))
APVISIT_NPIX = 4096

#: DR14 X_H column order (Fe is column 17) and PARAM order.
DR14_ELEMENTS = (
    "C", "CI", "N", "O", "Na", "Mg", "Al", "Si", "P", "S", "K", "Ca", "Ti", "TiII", "V",
    "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Ge", "Ce", "Rb", "Y", "Nd",
)  # fmt: skip
DR14_PARAMS = ("TEFF", "LOGG", "VMICRO", "M_H", "C_M", "N_M", "ALPHA_M")
#: Elements with named <X>_FE columns in the DR16/DR17 fixtures.
DR17_ELEMENTS = (
    "C", "CI", "N", "O", "NA", "MG", "AL", "SI", "P", "S", "K", "CA", "TI", "TIII", "V",
    "CR", "MN", "CO", "NI", "CU", "CE",
)  # fmt: skip
#: Elements of the astroNN VAC ([X/H] columns).
VAC_ELEMENTS = (
    "C", "CI", "N", "O", "NA", "MG", "AL", "SI", "P", "S", "K", "CA", "TI", "TIII", "V",
    "CR", "MN", "FE", "CO", "NI",
)  # fmt: skip


# --- synthetic spectra -----------------------------------------------------------------------


def _line_list() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(_LINE_SEED)
    centers = rng.uniform(15050.0, 17050.0, _N_LINES)
    depths = rng.uniform(0.05, 0.6, _N_LINES)
    sigmas = rng.uniform(0.25, 0.7, _N_LINES)
    return centers, depths, sigmas


def rest_template(wavelength: np.ndarray) -> np.ndarray:
    """Continuum-normalised rest-frame absorption spectrum (≈ 1 with Gaussian lines)."""
    lam = np.asarray(wavelength, dtype=np.float64)
    centers, depths, sigmas = _line_list()
    out = np.ones_like(lam)
    for c, d, s in zip(centers, depths, sigmas, strict=True):
        near = np.abs(lam - c) < 6 * s
        out[near] -= d * np.exp(-0.5 * ((lam[near] - c) / s) ** 2)
    return np.clip(out, 0.05, None)


def continuum(wavelength: np.ndarray, level: float = 800.0) -> np.ndarray:
    """A smooth, positive flux-calibrated continuum."""
    lam = np.asarray(wavelength, dtype=np.float64)
    return level * (1.0 + 0.15 * np.sin((lam - 15100.0) / 400.0))


def _noisy(
    model: np.ndarray, snr: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    error = np.abs(model) / snr + 1e-3
    return model + rng.normal(size=model.shape) * error, error


def _gap_pixels() -> np.ndarray:
    """apStar pixels outside the 7514 grid (chip gaps and ends)."""
    outside = np.ones(APSTAR_NPIX, dtype=bool)
    outside[APOGEE_7514.index] = False
    return outside


def _wcs(header: fits.Header, crval1: float, cdelt1: float) -> None:
    header["CRVAL1"] = (crval1, "Start log10(wavelength)")
    header["CDELT1"] = (cdelt1, "Dispersion in log10(wavelength)")
    header["CRPIX1"] = 1
    header["CTYPE1"] = "LOG-LINEAR"


# --- apStar ----------------------------------------------------------------------------------


def write_apstar(
    path,
    n_visits: int = 3,
    apogee_id: str = DEFAULT_ID,
    snr: float = 100.0,
    seed: int = 0,
    telescope: str | None = "apo25m",
    field: str = "TESTFIELD",
    vhelio: float = 12.5,
    ra: float = 10.0,
    dec: float = -5.0,
    crval1: float = APSTAR_CRVAL1,
    cdelt1: float = APSTAR_CDELT1,
    flux: np.ndarray | None = None,
    error: np.ndarray | None = None,
    pixmask: np.ndarray | None = None,
    dtype=np.float32,
    mask_dtype=np.int32,
    n_bad: int = 20,
) -> Path:
    """An apStar file: 1-D when ``n_visits == 1``, else rows [pixel-weighted, global-weighted,
    visit 1 … visit n].  Combined rows hold NaN outside the 7514 grid, visits hold 0.

    ``flux``/``error``/``pixmask`` replace the synthetic arrays (any shape, to build broken
    files); ``n_bad`` random pixels per row get PIXMASK bits (BADPIX or SIG_SKYLINE).
    """
    rng = np.random.default_rng(seed)
    wave = apstar_wavelength()
    model = continuum(wave) * rest_template(wave)
    n_rows = 1 if n_visits == 1 else 2 + n_visits
    rows_f, rows_e, rows_m = [], [], []
    gaps = _gap_pixels()
    for r in range(n_rows):
        combined = n_rows > 1 and r < 2
        row_snr = snr if (combined or n_rows == 1) else snr / np.sqrt(n_visits)
        f, e = _noisy(model, row_snr, rng)
        m = np.zeros(APSTAR_NPIX, dtype=np.int64)
        bad = rng.choice(APOGEE_7514.index, size=n_bad, replace=False)
        m[bad] = rng.choice([1, 4096], size=n_bad)
        fill = np.nan if combined else 0.0
        f[gaps], e[gaps] = fill, fill
        rows_f.append(f)
        rows_e.append(e)
        rows_m.append(m)
    f_all, e_all, m_all = (np.array(x) if n_rows > 1 else x[0] for x in (rows_f, rows_e, rows_m))
    f_all = np.asarray(flux if flux is not None else f_all, dtype=dtype)
    e_all = np.asarray(error if error is not None else e_all, dtype=dtype)
    m_all = np.asarray(pixmask if pixmask is not None else m_all, dtype=mask_dtype)

    h0 = fits.Header()
    _wcs(h0, crval1, cdelt1)
    h0["NWAVE"] = APSTAR_NPIX
    h0["FIELD"] = field
    h0["OBJID"] = apogee_id
    if telescope:
        h0["TELESCOP"] = telescope
    h0["SNR"] = snr
    h0["RA"] = ra
    h0["DEC"] = dec
    h0["NVISITS"] = n_visits
    h0["STARFLAG"] = 0
    h0["VHELIO"] = vhelio
    h0["VSCATTER"] = 0.2
    for k in range(1, n_visits + 1):
        h0[f"SFILE{k}"] = f"apVisit-dr17-1000-5600{k}-{100 + k}.fits"
        h0[f"JD{k}"] = 2456000.5 + k
        h0[f"VRAD{k}"] = vhelio - 10.0 * k
        h0[f"VHELIO{k}"] = vhelio + 0.1 * k
        h0[f"SNRVIS{k}"] = snr / np.sqrt(n_visits) * (1 + 0.01 * k)
        h0[f"FLAG{k}"] = 0
    hdus = [fits.PrimaryHDU(header=h0)]
    for data, unit in ((f_all, "Flux"), (e_all, "Err"), (m_all, "Pixel bitmask")):
        hdu = fits.ImageHDU(data)
        _wcs(hdu.header, crval1, cdelt1)
        hdu.header["BUNIT"] = unit
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


def write_apstar_dr17(
    path,
    n_visits: int = 1,
    apogee_id: str = DEFAULT_ID,
    snr: float = 150.0,
    seed: int = 0,
    n_rows: int | None = None,
    empty_rows: tuple[int, ...] | None = None,
    telescope: str = "apo25m",
    field: str = "000+02",
    vhelio: float = 15.7,
    rv_labels: tuple[float, float, float] = (4700.0, 2.4, -0.1),
) -> Path:
    """An apStar in the full DR17 layout: float64 flux/error, int64 PIXMASK, HDU4-7 sky and
    telluric images, an empty HDU8; Doppler labels RV_TEFF/RV_LOGG/RV_FEH in the header.

    Rows: [pixel-weighted, global-weighted, visit 1 … visit n] for ``n_visits > 1`` (the
    globally weighted row's PIXMASK left empty, as DR17 does); for one visit DR17 writes two
    rows, row 0 the spectrum and row 1 all zero (``empty_rows`` defaults to (1,)).  ``n_rows``
    overrides the row count (1 for a one-row file); rows in ``empty_rows`` are all zero.
    """
    rng = np.random.default_rng(seed)
    wave = apstar_wavelength()
    model = continuum(wave) * rest_template(wave)
    gaps = _gap_pixels()
    if n_rows is None:
        n_rows = 2 if n_visits == 1 else 2 + n_visits
    if empty_rows is None:
        empty_rows = (1,) if n_visits == 1 and n_rows == 2 else ()
    f_all = np.zeros((n_rows, APSTAR_NPIX))
    e_all = np.zeros((n_rows, APSTAR_NPIX))
    m_all = np.zeros((n_rows, APSTAR_NPIX), dtype=np.int64)
    for r in range(n_rows):
        if r in empty_rows:
            continue
        combined = n_visits > 1 and r < 2
        row_snr = snr if (combined or n_visits == 1) else snr / np.sqrt(n_visits)
        f, e = _noisy(model, row_snr, rng)
        f[gaps], e[gaps] = (np.nan, np.nan) if combined else (0.0, 0.0)
        f_all[r], e_all[r] = f, e
        if not (combined and r == 1):
            bad = rng.choice(APOGEE_7514.index, size=20, replace=False)
            m_all[r, bad] = rng.choice([1, 4096], size=20)
    h0 = fits.Header()
    _wcs(h0, APSTAR_CRVAL1, APSTAR_CDELT1)
    h0["NWAVE"] = APSTAR_NPIX
    h0["TELESCOP"] = telescope
    h0["FIELD"] = field
    h0["OBJID"] = apogee_id
    h0["RA"] = 263.48
    h0["DEC"] = -27.88
    h0["SNR"] = snr
    h0["NVISITS"] = n_visits
    h0["STARFLAG"] = 0
    h0["VHELIO"] = vhelio
    h0["VSCATTER"] = 0.1
    h0["RV_TEFF"], h0["RV_LOGG"], h0["RV_FEH"] = rv_labels
    for k in range(1, n_visits + 1):
        h0[f"SFILE{k}"] = f"apVisit-dr17-5095-5584{k}-{100 + k}.fits"
        h0[f"JD{k}"] = 2456000.5 + k
        h0[f"BC{k}"] = 10.0 + k
        h0[f"VRAD{k}"] = vhelio - 10.0 - k
        h0[f"VHELIO{k}"] = vhelio
        h0[f"SNRVIS{k}"] = snr / np.sqrt(n_visits)
        h0[f"FLAG{k}"] = 0
    hdus = [fits.PrimaryHDU(header=h0)]
    images = [(f_all, "Flux (10^-17 erg/s/cm^2/Ang)"), (e_all, "Err (10^-17 erg/s/cm^2/Ang)"),
              (m_all, "Pixel bitmask")]
    images += [(np.ones((n_rows, APSTAR_NPIX)), unit)
               for unit in ("Sky", "Sky error", "Telluric", "Telluric error")]
    for data, unit in images:
        hdu = fits.ImageHDU(data)
        _wcs(hdu.header, APSTAR_CRVAL1, APSTAR_CDELT1)
        hdu.header["BUNIT"] = unit
        hdus.append(hdu)
    hdus.append(fits.ImageHDU())  # DR17's empty LSF placeholder
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


# --- aspcapStar ------------------------------------------------------------------------------


def write_aspcapstar(
    path,
    apogee_id: str = DEFAULT_ID,
    snr: float = 150.0,
    seed: int = 0,
    telescope: str = "apo25m",
    field: str = "TESTFIELD",
    teff: float = 4800.0,
    logg: float = 2.5,
    m_h: float = -0.1,
    flux: np.ndarray | None = None,
    error: np.ndarray | None = None,
    model: np.ndarray | None = None,
    with_table: bool = True,
    with_wcs: bool = True,
) -> Path:
    """A DR17 aspcapStar: HDU1 normalised flux, HDU2 error, HDU3 model (8575, zeros in gaps),
    HDU4 a one-row results table (unless ``with_table=False``)."""
    rng = np.random.default_rng(seed)
    wave = apstar_wavelength()
    best_fit = rest_template(wave)
    f, e = _noisy(best_fit, snr, rng)
    gaps = _gap_pixels()
    for arr in (f, e, best_fit):
        arr[gaps] = 0.0
    arrays = [
        np.asarray(a if a is not None else d, dtype=np.float32)
        for a, d in ((flux, f), (error, e), (model, best_fit))
    ]
    h0 = fits.Header()
    h0["OBJID"] = apogee_id
    h0["TELESCOP"] = telescope
    h0["FIELD"] = field
    hdus = [fits.PrimaryHDU(header=h0)]
    for data in arrays:
        hdu = fits.ImageHDU(data)
        if with_wcs:
            _wcs(hdu.header, APSTAR_CRVAL1, APSTAR_CDELT1)
        hdus.append(hdu)
    if with_table:
        cols = [
            fits.Column(name="APOGEE_ID", format="18A", array=[apogee_id]),
            fits.Column(name="TELESCOPE", format="8A", array=[telescope]),
            fits.Column(name="FIELD", format="16A", array=[field]),
            fits.Column(name="SNR", format="E", array=[snr]),
            fits.Column(name="TEFF", format="E", array=[teff]),
            fits.Column(name="LOGG", format="E", array=[logg]),
            fits.Column(name="M_H", format="E", array=[m_h]),
            fits.Column(name="ALPHA_M", format="E", array=[-9999.0]),
            fits.Column(name="FPARAM", format="9E", array=[np.zeros(9)]),
        ]
        hdus.append(fits.BinTableHDU.from_columns(cols))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


# --- apVisit ---------------------------------------------------------------------------------


def apvisit_wavelength(descending: bool = True) -> np.ndarray:
    """(3, 4096) observed vacuum wavelengths, chips red → blue, each decreasing (as real files)."""
    u = np.linspace(0.0, 1.0, APVISIT_NPIX)
    rows = []
    for start, end in APVISIT_CHIP_RANGES:
        # a mildly non-linear dispersion, as fitted by the pipeline
        rows.append(start + (end - start) * (u + 0.02 * u * (1.0 - u)))
    wave = np.array(rows)
    return wave if descending else wave[::-1, ::-1].copy()


def write_apvisit(
    path,
    vrad: float | None = -44.4,
    bc: float | None = 11.3,
    vhelio: float | None = None,
    apogee_id: str = DEFAULT_ID,
    snr: float = 60.0,
    seed: int = 0,
    telescope: str = "apo25m",
    field: str = "TESTFIELD",
    descending: bool = True,
    flux: np.ndarray | None = None,
    error: np.ndarray | None = None,
    pixmask: np.ndarray | None = None,
    wavelength: np.ndarray | None = None,
    with_table: bool = True,
    n_bad: int = 30,
) -> Path:
    """An apVisit: HDU1-4 flux, error, int16 PIXMASK, float64 wavelength (3 × 4096), observed
    frame: the rest template redshifted by ``vrad``.  Header VRAD/BC/VHELIO are written
    when not None (``vhelio`` defaults to vrad + bc); HDU5 a one-row visit table."""
    rng = np.random.default_rng(seed)
    wave = apvisit_wavelength(descending) if wavelength is None else np.asarray(wavelength)
    shift = 0.0 if vrad is None else vrad
    model = continuum(wave, 250.0) * rest_template(wave / doppler_factor(shift))
    f, e = _noisy(model, snr, rng)
    m = np.zeros(wave.shape, dtype=np.int16)
    for chip in range(wave.shape[0]):
        bad = rng.choice(wave.shape[1], size=n_bad, replace=False)
        m[chip, bad] = rng.choice([1, 2, 4096], size=n_bad)
    f = np.asarray(flux if flux is not None else f, dtype=np.float32)
    e = np.asarray(error if error is not None else e, dtype=np.float32)
    m = np.asarray(pixmask if pixmask is not None else m, dtype=np.int16)
    if vhelio is None and vrad is not None and bc is not None:
        vhelio = vrad + bc
    h0 = fits.Header()
    h0["PLATE"] = "5095"
    h0["TELESCOP"] = telescope
    h0["MJD5"] = 55844
    h0["FIBERID"] = 128
    h0["OBJID"] = apogee_id
    h0["RA"] = 19.66
    h0["DEC"] = 84.06
    h0["SNR"] = snr
    h0["STARFLAG"] = 0
    for key, value in (("BC", bc), ("VRAD", vrad), ("VHELIO", vhelio)):
        if value is not None:
            h0[key] = value
    hdus = [fits.PrimaryHDU(header=h0)]
    for data, unit in (
        (f, "Flux"),
        (e, "Flux Error"),
        (m, "Flag Mask"),
        (wave, "Wavelength (Ang)"),
    ):
        hdu = fits.ImageHDU(data)
        hdu.header["BUNIT"] = unit
        hdus.append(hdu)
    if with_table:
        cols = [
            fits.Column(name="APOGEE_ID", format="18A", array=[apogee_id]),
            fits.Column(name="TELESCOPE", format="6A", array=[telescope]),
            fits.Column(name="FIELD", format="16A", array=[field]),
            fits.Column(name="SNR", format="E", array=[snr]),
            fits.Column(name="VREL", format="E", array=[np.nan if vrad is None else vrad]),
        ]
        hdus.append(fits.BinTableHDU.from_columns(cols))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


# --- catalogs --------------------------------------------------------------------------------


def _catalog_base(ids, rng: np.random.Generator, telescope: str, field: str) -> list[fits.Column]:
    n = len(ids)
    flags = np.zeros(n, dtype=np.int64)
    flags[1::3] = 1 << 23  # STAR_BAD
    flag_names = np.where(flags > 0, "STAR_BAD,TEFF_WARN", "")
    return [
        fits.Column(name="APOGEE_ID", format="18A", array=list(ids)),
        fits.Column(name="TELESCOPE", format="8A", array=[telescope] * n),
        fits.Column(name="FIELD", format="16A", array=[field] * n),
        fits.Column(
            name="TARGET_ID", format="40A", array=[f"{telescope}.{field}.{i}" for i in ids]
        ),
        fits.Column(name="LOCATION_ID", format="J", array=np.arange(n) + 4000),
        fits.Column(name="RA", format="D", array=rng.uniform(0, 360, n)),
        fits.Column(name="DEC", format="D", array=rng.uniform(-90, 90, n)),
        fits.Column(name="SNR", format="E", array=rng.uniform(20, 400, n)),
        fits.Column(
            name="STARFLAG", format="J", array=(np.arange(n) % 4 == 2).astype(np.int32) * 4
        ),
        fits.Column(name="ASPCAPFLAG", format="K", array=flags),
        fits.Column(name="ASPCAPFLAGS", format="64A", array=list(flag_names)),
        fits.Column(name="VSCATTER", format="E", array=rng.uniform(0, 1, n)),
    ]


def write_allstar(
    path,
    ids,
    dr: int = 17,
    seed: int = 0,
    telescope: str = "apo25m",
    field: str = "TESTFIELD",
    sentinel_row: int | None = 0,
) -> Path:
    """An allStar catalog in the DR14, DR16 or DR17 column layout (see core.io.allstar).

    ``sentinel_row`` gets -9999 in TEFF_ERR (DR16/17: also MG_FE; DR14: X_H of Mg).
    """
    if dr not in (14, 16, 17):
        raise ValueError(f"dr must be 14, 16 or 17, got {dr}")
    ids = list(ids)
    n = len(ids)
    rng = np.random.default_rng(seed)
    cols = _catalog_base(ids, rng, telescope, field)
    teff = rng.uniform(3500, 6500, n)
    logg = rng.uniform(0.5, 5.0, n)
    m_h = rng.uniform(-1.5, 0.4, n)
    fe_h = m_h + rng.normal(0, 0.02, n)
    hdus = [fits.PrimaryHDU()]
    if dr == 14:
        param = np.column_stack(
            [teff, logg, rng.uniform(0.8, 2.0, n), m_h] + [rng.normal(0, 0.1, n)] * 3
        )
        cov = np.zeros((n, 7, 7))
        for k, sd in enumerate((80.0, 0.08, 0.05, 0.03, 0.04, 0.05, 0.02)):
            cov[:, k, k] = sd**2
        x_h = m_h[:, None] + rng.normal(0, 0.1, (n, len(DR14_ELEMENTS)))
        x_h[:, DR14_ELEMENTS.index("Fe")] = fe_h
        x_h_err = rng.uniform(0.01, 0.1, (n, len(DR14_ELEMENTS)))
        if sentinel_row is not None:
            cov[sentinel_row, 0, 0] = -9999.0
            x_h[sentinel_row, DR14_ELEMENTS.index("Mg")] = -9999.0
        cols += [
            fits.Column(name="PARAM", format="7E", array=param),
            fits.Column(name="PARAM_COV", format="49E", dim="(7,7)", array=cov),
            fits.Column(name="X_H", format=f"{len(DR14_ELEMENTS)}E", array=x_h),
            fits.Column(name="X_H_ERR", format=f"{len(DR14_ELEMENTS)}E", array=x_h_err),
        ]
        hdus.append(fits.BinTableHDU.from_columns(cols))
        symbols = [
            fits.Column(
                name="PARAM_SYMBOL",
                format="56A",
                dim="(8,7)",
                array=np.array([DR14_PARAMS], dtype="S8"),
            ),
            fits.Column(
                name="ELEM_SYMBOL",
                format=f"{5 * len(DR14_ELEMENTS)}A",
                dim=f"(5,{len(DR14_ELEMENTS)})",
                array=np.array([DR14_ELEMENTS], dtype="S5"),
            ),
            fits.Column(
                name="ELEMTOH",
                format=f"{len(DR14_ELEMENTS)}I",
                array=[np.ones(len(DR14_ELEMENTS), dtype=np.int16)],
            ),
        ]
        hdus.append(fits.BinTableHDU.from_columns(symbols))
    else:
        teff_err = rng.uniform(20, 100, n)
        if sentinel_row is not None:
            teff_err[sentinel_row] = -9999.0
        names = ("TEFF_SPEC", "LOGG_SPEC") if dr == 16 else ("TEFF", "LOGG")
        cols += [
            fits.Column(name=names[0], format="E", array=teff),
            fits.Column(name="TEFF_ERR", format="E", array=teff_err),
            fits.Column(name=names[1], format="E", array=logg),
            fits.Column(name="LOGG_ERR", format="E", array=rng.uniform(0.01, 0.1, n)),
            fits.Column(name="M_H", format="E", array=m_h),
            fits.Column(name="M_H_ERR", format="E", array=rng.uniform(0.005, 0.05, n)),
            fits.Column(name="VMICRO", format="E", array=rng.uniform(0.8, 2.0, n)),
            fits.Column(name="FE_H", format="E", array=fe_h),
            fits.Column(name="FE_H_ERR", format="E", array=rng.uniform(0.005, 0.05, n)),
            # Present in real DR16/17 files too; the named columns must win over it.
            fits.Column(name="X_H", format="26E", array=np.full((n, 26), 99.0)),
        ]
        for element in DR17_ELEMENTS:
            values = rng.normal(0.0, 0.1, n)
            if sentinel_row is not None and element == "MG":
                values[sentinel_row] = -9999.0
            cols += [
                fits.Column(name=f"{element}_FE", format="E", array=values),
                fits.Column(name=f"{element}_FE_ERR", format="E", array=rng.uniform(0.01, 0.1, n)),
                fits.Column(
                    name=f"{element}_FE_FLAG", format="J", array=np.zeros(n, dtype=np.int32)
                ),
            ]
        hdus.append(fits.BinTableHDU.from_columns(cols))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


def write_astronn_vac(path, ids, seed: int = 0, with_array_column: bool = True) -> Path:
    """An astroNN VAC table: IDs, TEFF/LOGG and [X/H] (+ _ERR), distance and age columns."""
    ids = list(ids)
    n = len(ids)
    rng = np.random.default_rng(seed)
    cols = [
        fits.Column(name="APOGEE_ID", format="18A", array=ids),
        fits.Column(name="LOCATION_ID", format="J", array=np.arange(n) + 4000),
        fits.Column(name="TELESCOPE", format="8A", array=["apo25m"] * n),
        fits.Column(name="FIELD", format="16A", array=["TESTFIELD"] * n),
        fits.Column(name="RA_APOGEE", format="D", array=rng.uniform(0, 360, n)),
        fits.Column(name="DEC_APOGEE", format="D", array=rng.uniform(-90, 90, n)),
        fits.Column(name="TEFF", format="E", array=rng.uniform(3500, 6500, n)),
        fits.Column(name="TEFF_ERR", format="E", array=rng.uniform(20, 100, n)),
        fits.Column(name="LOGG", format="E", array=rng.uniform(0.5, 5, n)),
        fits.Column(name="LOGG_ERR", format="E", array=rng.uniform(0.01, 0.1, n)),
    ]
    for element in VAC_ELEMENTS:
        values = rng.normal(-0.2, 0.2, n)
        values[0] = -9999.0 if element == "NA" else values[0]
        cols += [
            fits.Column(name=f"{element}_H", format="E", array=values),
            fits.Column(name=f"{element}_H_ERR", format="E", array=rng.uniform(0.01, 0.1, n)),
        ]
    cols += [
        fits.Column(name="dist", format="D", array=rng.uniform(100, 8000, n)),
        fits.Column(name="dist_error", format="D", array=rng.uniform(10, 500, n)),
        fits.Column(name="age", format="D", array=rng.uniform(1, 12, n)),
        fits.Column(name="source_id", format="K", array=rng.integers(1, 2**60, n)),
    ]
    if with_array_column:
        cols.append(fits.Column(name="astroNN", format="22E", array=rng.normal(size=(n, 22))))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(
        path, overwrite=True
    )
    return Path(path)


# --- contspec trio and user files --------------------------------------------------------------


def write_contspec_trio(
    directory,
    n: int,
    seed: int = 0,
    npix: int = 7514,
    mask_dtype=np.int32,
    prefix: str = "contspec_dr16",
) -> tuple[Path, Path, Path]:
    """``<prefix>_final.fits``, ``_err.fits``, ``_mask.fits``: N × npix primary images."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    template = rest_template(APOGEE_7514.wavelength)[:npix]
    flux = (template[None, :] + rng.normal(0, 0.01, (n, npix))).astype(np.float32)
    error = np.full((n, npix), 0.01, dtype=np.float32)
    mask = np.zeros((n, npix), dtype=mask_dtype)
    mask[:, ::97] = 4096
    paths = tuple(directory / f"{prefix}_{part}.fits" for part in ("final", "err", "mask"))
    for data, p in zip((flux, error, mask), paths, strict=True):
        fits.PrimaryHDU(data).writeto(p, overwrite=True)
    return paths


def write_generic(
    path, n: int = 4, npix: int = 7514, seed: int = 0, with_wavelength: bool = False
) -> Path:
    """A user file of spectra (HDF5 for .h5/.hdf5, else NPZ) with flux, error, mask, labels, ids."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    flux = (1.0 + rng.normal(0, 0.01, (n, npix))).astype(np.float32)
    error = np.full((n, npix), 0.01, dtype=np.float32)
    mask = np.zeros((n, npix), dtype=np.int32)
    mask[:, 5] = 1
    ids = np.array([f"2M{i:08d}+0000000" for i in range(n)])
    teff = rng.uniform(4000, 6000, n)
    logg = rng.uniform(1, 4, n)
    arrays = {
        "flux": flux,
        "error": error,
        "mask": mask,
        "ids": ids,
        "labels/TEFF": teff,
        "labels/LOGG": logg,
    }
    if with_wavelength:
        arrays["wavelength"] = (
            APOGEE_7514.wavelength if npix == 7514 else np.linspace(15000, 17000, npix)
        )
    if path.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "w") as h5:
            for key, value in arrays.items():
                h5[key] = value.astype("S") if value.dtype.kind == "U" else value
    else:
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def truncate_copy(src, dst, n_bytes: int) -> Path:
    """A copy of ``src`` cut to its first ``n_bytes`` bytes."""
    data = Path(src).read_bytes()[:n_bytes]
    Path(dst).write_bytes(data)
    return Path(dst)


def drop_hdus(src, dst, keep: int) -> Path:
    """A copy of a FITS file keeping only its first ``keep`` HDUs."""
    with fits.open(src) as hdul:
        fits.HDUList([h.copy() for h in hdul[:keep]]).writeto(dst, overwrite=True)
    return Path(dst)


__all__ = [
    "apvisit_wavelength", "continuum", "drop_hdus", "rest_template", "truncate_copy",
    "write_allstar", "write_apstar", "write_apvisit", "write_aspcapstar", "write_astronn_vac",
    "write_contspec_trio", "write_generic",
]  # fmt: skip


def write_apvisit_of(path, spec, vrad: float = -30.0):
    """An apVisit whose observed pixels carry ``spec`` (a store spectrum, rest frame) shifted
    by ``vrad``: a mock star seen as a single visit."""
    from core.grid import doppler_factor

    rest = apvisit_wavelength(True) / float(doppler_factor(vrad))
    good = spec.good()
    flux = np.interp(rest, spec.wavelength[good], spec.flux[good]) * 300.0
    error = np.interp(rest, spec.wavelength[good], spec.error[good]) * 300.0
    return write_apvisit(path, vrad=vrad, bc=0.0, flux=flux, error=error,
                         pixmask=np.zeros(rest.shape, np.int16), n_bad=0)
