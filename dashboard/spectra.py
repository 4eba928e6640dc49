"""Numbers behind the spectrum plots and downloads (numpy/pandas only, no Panel)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from core.chi2 import reduced_chi2
from core.errors import BadDataError
from core.grid import decode_pixmask
from core.labels import LABELS
from core.spectrum import Spectrum

WAVE_LABEL = "Wavelength [Å, vacuum]"
#: Survey information shown in the star's side table after the labels (core.labels.LABELS).
INFO_ROWS = ("SNR", "TELESCOPE", "FIELD", "RA", "DEC", "POPULATION")


def gap_breaks(wavelength: np.ndarray) -> np.ndarray:
    """Indices i where a gap (chip gap, > 1.5 pixel steps) lies between pixel i-1 and i."""
    lw = np.log10(np.asarray(wavelength, dtype=np.float64))
    if lw.size < 3:
        return np.zeros(0, dtype=np.int64)
    step = np.diff(lw)
    return np.nonzero(step > 1.5 * np.median(step))[0] + 1


def with_gaps(wavelength: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Plot columns with a NaN row inserted at every gap so lines do not bridge chips."""
    breaks = gap_breaks(wavelength)
    # float32 keeps 0.002 Å at 17000 Å, ten times finer than a pixel, at half the bytes
    out = {"wave": np.insert(np.asarray(wavelength, dtype=np.float32), breaks, np.nan)}
    for name, values in columns.items():
        v = np.asarray(values, dtype=np.float32)
        out[name] = np.insert(v, breaks, np.nan)
    return out


def band_patch(wavelength: np.ndarray, lo: np.ndarray, hi: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Outline of a ±σ band as one ``patch`` (x, y): a closed polygon per chip, NaN-separated
    (Bokeh draws NaN-separated pieces of one patch separately, so no band bridges a gap)."""
    wave = np.asarray(wavelength, dtype=np.float64)
    edges = np.concatenate([[0], gap_breaks(wave), [wave.size]])
    xs, ys = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if xs:
            xs.append([np.nan])
            ys.append([np.nan])
        xs.append(np.concatenate([wave[a:b], wave[a:b][::-1]]))
        ys.append(np.concatenate([hi[a:b], lo[a:b][::-1]]))
    if not xs:
        return {"x": np.zeros(0), "y": np.zeros(0, np.float32)}
    return {"x": np.concatenate(xs).astype(np.float32),
            "y": np.concatenate(ys).astype(np.float32)}


def error_band(spectrum: Spectrum, center: np.ndarray | None = None, cap: float = 0.5
               ) -> dict[str, np.ndarray]:
    """The ±1σ band of a spectrum (around ``center``, default its flux) as a patch outline.

    Bad pixels get no band (their error is a placeholder); σ is capped so one huge error
    does not hide the plot.
    """
    c = spectrum.flux if center is None else np.asarray(center, dtype=np.float32)
    err = np.where(spectrum.bad(), 0.0, np.minimum(spectrum.error, cap)).astype(np.float32)
    c = np.where(np.isfinite(c), c, np.nan)
    return band_patch(spectrum.wavelength, c - err, c + err)


def chip_images(wavelength: np.ndarray, rows: np.ndarray) -> list[dict]:
    """Split (n_rows, n_pix) values at the chip gaps and resample each chip onto a uniform
    wavelength step, so an image glyph (which assumes even spacing) puts every pixel in place.

    Returns one dict per chip: ``x`` (left edge), ``dw`` (width, Å) and ``image`` (n_rows, m).
    """
    wave = np.asarray(wavelength, dtype=np.float64)
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float32))
    edges = np.concatenate([[0], gap_breaks(wave), [wave.size]])
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        w = wave[a:b]
        step = (w[-1] - w[0]) / max(w.size - 1, 1)
        uniform = w[0] + step * np.arange(w.size)
        image = np.stack([np.interp(uniform, w, r[a:b]) for r in rows]).astype(np.float32)
        out.append({"x": float(w[0] - step / 2), "dw": float(w[-1] - w[0] + step),
                    "image": image})
    return out


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Half-open [start, stop) index ranges of contiguous True values."""
    f = np.asarray(flags, dtype=bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], f, [0]]))
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist(),
                    strict=True))


def masked_spans(wavelength: np.ndarray, bad: np.ndarray) -> dict[str, np.ndarray]:
    """Wavelength spans (x0, x1) covering contiguous runs of bad pixels, edge to edge."""
    wave = np.asarray(wavelength, dtype=np.float64)
    if wave.size == 0:
        return {"x0": np.zeros(0), "x1": np.zeros(0)}
    half = np.diff(wave) / 2
    first = half[0] if half.size else 0.1
    last = half[-1] if half.size else 0.1
    left = np.concatenate([[wave[0] - first], wave[1:] - half])
    right = np.concatenate([wave[:-1] + half, [wave[-1] + last]])
    spans = runs(bad)
    return {"x0": np.array([left[a] for a, _ in spans], dtype=np.float64),
            "x1": np.array([right[b - 1] for _, b in spans], dtype=np.float64)}


def robust_range(values: np.ndarray, good: np.ndarray | None = None, lo_q: float = 0.5,
                 hi_q: float = 99.5, pad: float = 0.08) -> tuple[float, float]:
    """A y-range that ignores the worst outliers (bad pixels would flatten the spectrum)."""
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v) if good is None else (np.asarray(good, dtype=bool) & np.isfinite(v))
    if not keep.any():
        return (0.0, 1.2)
    lo, hi = np.percentile(v[keep], [lo_q, hi_q])
    span = max(hi - lo, 1e-3)
    return float(lo - pad * span), float(hi + pad * span)


def flux_range(flux: np.ndarray, good: np.ndarray | None = None, hi_q: float = 99.5,
               pad: float = 0.06) -> tuple[float, float]:
    """A y-range for a spectrum that keeps its deepest line cores.

    The bottom is the lowest value that two neighbouring good pixels reach (the minimum of
    the pairwise maxima), so a line core of two or more pixels stays in view while a lone
    dead pixel does not stretch the axis; the top is a high percentile, as spikes (sky lines,
    cosmic rays) go upwards.
    """
    v = np.asarray(flux, dtype=np.float64)
    keep = np.isfinite(v) if good is None else (np.asarray(good, dtype=bool) & np.isfinite(v))
    if keep.sum() < 3:
        return robust_range(v, keep)
    w = np.where(keep, v, np.nan)
    pairs = np.fmax(w[:-1], w[1:])  # NaN only where both are bad
    both = keep[:-1] & keep[1:]
    lo = float(np.min(pairs[both])) if both.any() else float(np.nanmin(w))
    hi = float(np.percentile(v[keep], hi_q))
    span = max(hi - lo, 1e-3)
    return lo - pad * span, hi + pad * span


def element_window(windows: pd.DataFrame | None, element: str, index: int):
    """Window ``index`` (wrapping) of ``element``'s windows, in wavelength order:
    (start, end, all its window starts, all ends, index, count); None without windows."""
    if windows is None:
        return None
    w = windows[windows["element"] == element].sort_values("start_vac")
    if not len(w):
        return None
    lo, hi = w["start_vac"].to_numpy(float), w["end_vac"].to_numpy(float)
    i = int(index) % len(w)
    pad = max(0.75 * (hi[i] - lo[i]), 6.0)
    return lo[i] - pad, hi[i] + pad, lo, hi, i, len(w)


def residuals(spectrum: Spectrum, model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(data − model, (data − model)/σ), NaN at the spectrum's bad pixels."""
    model = np.asarray(model, dtype=np.float32)
    if model.shape != spectrum.flux.shape:
        raise BadDataError(f"{spectrum.label}: model has {model.size} pixels, "
                           f"the spectrum has {spectrum.n_pix}")
    bad = spectrum.bad()
    diff = np.where(bad, np.nan, spectrum.flux - model).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = np.where(bad, np.nan, diff / spectrum.error).astype(np.float32)
    return diff, pull


def fit_statistics(spectrum: Spectrum, model: np.ndarray, n_params: int = 0) -> dict[str, float]:
    """χ²_ν (:func:`core.chi2.reduced_chi2`, the catalog's χ²: error floor in quadrature) and
    RMS residual of a model over the spectrum's good pixels."""
    diff, _ = residuals(spectrum, model)
    good = np.isfinite(diff)
    chi2_nu, n = reduced_chi2(spectrum.flux, spectrum.error, model, good, n_params)
    rms = float(np.sqrt(np.mean(diff[good] ** 2))) if n > n_params else float("nan")
    return {"chi2_nu": chi2_nu, "resid_rms": rms, "n_good": n}


def label_table(spectrum: Spectrum | None, outputs: dict | None = None) -> pd.DataFrame:
    """The side table: catalog labels (value ± error unit), survey info, then model outputs.

    A mock survey knows its true labels: they get a third column.
    """
    rows = []
    meta = spectrum.meta if spectrum is not None else {}
    for col, (name, unit) in LABELS.items():
        if col in meta and _finite(meta[col]):
            err = meta.get(f"{col}_ERR")
            if _finite(err) and float(err) > 0:
                d = _decimals(err)
                text = f"{float(meta[col]):.{d}f} ± {float(err):.{d}f} {unit}"
            else:
                d, text = 3, f"{_fmt(meta[col])} {unit}"
            true = meta.get(f"TRUE_{col}")
            rows.append((name, text.strip(), f"{float(true):.{d}f}" if _finite(true) else ""))
    for col in INFO_ROWS:
        v = meta.get(col)
        if v is not None and (not isinstance(v, float) or _finite(v)):
            unit = " deg" if col in ("RA", "DEC") else ""
            rows.append(("S/N" if col == "SNR" else col.title(), f"{_fmt(v)}{unit}", ""))
    if spectrum is not None:
        rows.append(("masked pixels", f"{100 * spectrum.masked_fraction():.1f} %", ""))
    for name, value in (outputs or {}).items():
        rows.append((name, _fmt(value), ""))
    table = pd.DataFrame(rows, columns=["quantity", "value", "true"])
    return table if table["true"].astype(bool).any() else table.drop(columns="true")


def _finite(v) -> bool:
    try:
        return v is not None and bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def _decimals(error) -> int:
    """Decimals that show an error to two significant digits: 59 → 0, 0.053 → 3."""
    return max(0, 1 - int(np.floor(np.log10(float(error)))))


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        a = abs(float(v))
        if a == 0 or 1e-3 <= a < 1e5:
            return f"{float(v):.4g}" if a < 100 else f"{float(v):.1f}"
        return f"{float(v):.3e}"
    return str(v)


# -- downloads -------------------------------------------------------------------------------


def spectrum_table(spectrum: Spectrum, models: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per pixel: wavelength, flux, error, mask bits, bad flag, each model, residuals."""
    bad = spectrum.bad()
    table = pd.DataFrame({
        "wavelength_vac": spectrum.wavelength,
        "flux": spectrum.flux,
        "error": spectrum.error,
        "pixmask": spectrum.pixmask.astype(np.int32),
        "bad": bad,
    })
    for name, flux in (models or {}).items():
        key = _column_name(name)
        diff, pull = residuals(spectrum, flux)
        table[key] = np.asarray(flux, dtype=np.float32)
        table[f"{key}_resid"] = diff
        table[f"{key}_pull"] = pull
    return table


def _column_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def csv_bytes(spectrum: Spectrum, models: dict | None = None) -> io.BytesIO:
    buf = io.StringIO()
    buf.write(f"# Stellarscope export of {spectrum.label}; wavelength in vacuum Angstrom\n")
    spectrum_table(spectrum, models).to_csv(buf, index=False, float_format="%.6g")
    return io.BytesIO(buf.getvalue().encode())


#: Flux unit of spectra that are not continuum-normalised (APOGEE apStar/apVisit FLUX).
APOGEE_FLUX_UNIT = "1e-17 erg/(s cm2 Angstrom)"


def column_units(spectrum: Spectrum, columns) -> dict[str, tuple[str, str]]:
    """(TUNIT, description) of each :func:`spectrum_table` column; '' for a dimensionless one."""
    flux_unit = "" if spectrum.normalized else str(spectrum.meta.get("BUNIT") or APOGEE_FLUX_UNIT)
    what = "continuum-normalised flux" if spectrum.normalized else "flux"
    known = {"wavelength_vac": ("Angstrom", "vacuum wavelength"),
             "flux": (flux_unit, what), "error": (flux_unit, f"1-sigma error of the {what}"),
             "pixmask": ("", "APOGEE PIXMASK bits"), "bad": ("", "pixel not used (mask)")}
    out = {}
    for col in columns:
        if col in known:
            out[col] = known[col]
        elif col.endswith("_pull"):
            out[col] = ("", f"(data - {col[:-5]})/sigma")
        elif col.endswith("_resid"):
            out[col] = (flux_unit, f"data - {col[:-6]}")
        else:
            out[col] = (flux_unit, f"model {col}")
    return out


def fits_bytes(spectrum: Spectrum, models: dict | None = None,
               provenance: dict[str, str] | None = None) -> io.BytesIO:
    """A FITS binary table of :func:`spectrum_table` (TTYPE/TUNIT per column), with the
    star's metadata and the models in the primary header: ``MODELS`` lists the model
    columns, ``MODELn``/``MODSRCn`` name each and where it came from (``provenance``:
    model name → its source, e.g. the model directory and family)."""
    from astropy.io import fits
    from astropy.table import Table

    table = spectrum_table(spectrum, models)
    hdu = fits.table_to_hdu(Table.from_pandas(table))
    hdu.name = "SPECTRUM"
    for i, (col, (unit, text)) in enumerate(column_units(spectrum, table.columns).items(), 1):
        hdu.header[f"TTYPE{i}"] = (col, text[:47])
        hdu.header[f"TUNIT{i}"] = (unit, "dimensionless" if not unit else "unit")
    primary = fits.PrimaryHDU()
    for key, value in spectrum.meta.items():
        if isinstance(value, (str, int, float, bool, np.number)) and len(key) <= 8:
            if isinstance(value, float) and not np.isfinite(value):
                continue
            if isinstance(value, str) and not value.isascii():
                continue
            primary.header[key.upper()] = value if not isinstance(value, str) else value[:60]
    primary.header["ORIGIN"] = ("Stellarscope", "written by the Stellarscope dashboard")
    primary.header["WAVEUNIT"] = ("Angstrom", "vacuum wavelengths")
    primary.header["NORMALIZ"] = (bool(spectrum.normalized), "flux continuum-normalised")
    primary.header["MODELS"] = ", ".join(models or {}) or "none"
    for i, name in enumerate(models or {}, 1):
        primary.header[f"MODEL{i}"] = (name[:68], f"column {_column_name(name)}")
        source = (provenance or {}).get(name)
        if source:
            primary.header[f"MODSRC{i}"] = (_ascii(source)[:68], f"source of MODEL{i}")
    buf = io.BytesIO()
    fits.HDUList([primary, hdu]).writeto(buf)
    buf.seek(0)
    return buf


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def describe_pixmask(value: int) -> str:
    return ", ".join(decode_pixmask(value)) or "none"


def zoom_groups(grid, windows: pd.DataFrame | None, elements=None) -> dict[str, dict[str, str]]:
    """Options of a "Zoom to" select: the whole spectrum, each chip, each element's windows
    (only ``elements`` when given)."""
    zoom = {"Whole spectrum": "whole"}
    for i, name in enumerate(grid.chip_names):
        zoom[f"{name.title()} chip"] = f"chip:{i}"
    groups = {"Spectrum": zoom}
    if windows is not None and len(windows):
        els = sorted(set(windows["element"]) & set(elements) if elements is not None
                     else set(windows["element"]))
        if els:
            groups["Element windows"] = {f"{el} windows": f"el:{el}" for el in els}
    return groups


def zoom_span(key: str, grid, windows: pd.DataFrame | None):
    """(start, end, window starts, window ends) of a :func:`zoom_groups` key, or None."""
    none = np.zeros(0)
    if key == "whole":
        lam = grid.wavelength
        return lam[0] - 5, lam[-1] + 5, none, none
    if key.startswith("chip:"):
        lam = grid.wavelength[grid.chip_slices()[int(key[5:])]]
        return lam[0] - 2, lam[-1] + 2, none, none
    if key.startswith("el:") and windows is not None:
        w = windows[windows["element"] == key[3:]]
        if len(w):
            lo, hi = w["start_vac"].to_numpy(), w["end_vac"].to_numpy()
            pad = 0.1 * max(hi.max() - lo.min(), 10.0)
            return lo.min() - pad, hi.max() + pad, lo, hi
    return None
