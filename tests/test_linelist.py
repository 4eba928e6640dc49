"""The shipped H-band line list, element windows, sky lines and the Brackett series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import BadFileError
from core.grid import APOGEE_7214, APOGEE_7514, air_to_vac
from core.linelist import (
    LINE_COLUMNS,
    brackett_wavelengths,
    element_window_mask,
    lines_in_range,
    load_element_windows,
    load_linelist,
    load_sky_lines,
)

LABEL_ELEMENTS = ("C", "N", "O", "Na", "Mg", "Al", "Si", "S", "K", "Ca", "Ti", "V", "Cr", "Mn",
                  "Co", "Ni", "Fe")


def test_brackett_series_from_the_rydberg_formula():
    assert abs(brackett_wavelengths(11) - 16811.1) < 1.0
    lam = brackett_wavelengths(np.arange(11, 22))
    assert np.all(np.diff(lam) < 0)  # higher members crowd towards the series limit
    # the series limit 4²/R_H lies at 14588.2 Å in vacuum (14584.2 Å in air)
    assert abs(brackett_wavelengths(100_000) - 14588.2) < 0.3
    # Brγ (7 → 4) in vacuum is 21661.2 Å
    assert abs(brackett_wavelengths(7) - 21661.2) < 0.5
    with pytest.raises(ValueError):
        brackett_wavelengths(4)


def test_line_list_columns_elements_and_range():
    ll = load_linelist()
    assert tuple(ll.columns) == LINE_COLUMNS
    assert len(ll) > 300
    assert set(LABEL_ELEMENTS) <= set(ll["element"])
    assert ll["wavelength_vac"].between(15100.0, 17000.0).all()
    assert ll["wavelength_vac"].is_monotonic_increasing
    assert set(ll["kind"]) == {"atomic", "molecular", "bandhead", "hydrogen"}
    assert set(ll["ion"]) <= {0, 1}
    assert {"OH", "CN", "CO", "H I", "Fe I", "Ti II"} <= set(ll["species"])
    # many OH lines, a molecular forest, and unknown gf left blank
    assert (ll["species"] == "OH").sum() >= 50
    assert (ll["kind"] == "molecular").sum() >= 300
    assert ll["log_gf"].isna().any() and ll["log_gf"].notna().sum() > 600
    assert (ll["informs"].str.len() > 0).all()


def test_line_list_is_in_vacuum():
    ll = load_linelist()
    assert ll.attrs["medium"] == "vacuum"
    mg = ll[ll["species"] == "Mg I"]["wavelength_vac"].to_numpy()
    # the Mg I triplet line at 15740.716 Å (air) appears at its vacuum wavelength only
    vac = float(air_to_vac(15740.716))
    assert np.min(np.abs(mg - vac)) < 0.01
    assert np.min(np.abs(mg - 15740.716)) > 3.0
    br = ll[ll["kind"] == "hydrogen"]["wavelength_vac"].to_numpy()
    assert np.min(np.abs(br - brackett_wavelengths(11))) < 0.01
    assert len(br) == 11  # Br11 … Br21 fall in 15100–17000 Å


def test_co_band_heads():
    heads = lines_in_range(15100, 17000, kinds="bandhead")
    assert len(heads) == 7 and (heads["species"] == "CO").all()
    # ¹²CO (3-0) head near 1.5582 µm and (6-3) near 1.6189 µm (vacuum)
    lam = heads["wavelength_vac"].to_numpy()
    assert np.min(np.abs(lam - 15582.0)) < 2.0
    assert np.min(np.abs(lam - 16189.0)) < 2.0


def test_lines_in_range_filters():
    sel = lines_in_range(16700, 16800, elements=["Al"])
    assert len(sel) >= 3 and (sel["element"] == "Al").all()
    assert sel["wavelength_vac"].between(16700, 16800).all()
    oh = lines_in_range(15100, 17000, elements="OH")
    assert (oh["species"] == "OH").all() and len(oh) >= 50
    assert lines_in_range(15500, 15400).empty


def test_element_windows_and_masks():
    win = load_element_windows()
    assert set(LABEL_ELEMENTS) <= set(win["element"])
    assert (win["end_vac"] >= win["start_vac"]).all()
    for el in LABEL_ELEMENTS:
        mask = element_window_mask(APOGEE_7514, el)
        assert mask.shape == (7514,) and mask.any(), el
        lam = APOGEE_7514.wavelength[mask]
        rows = win[win["element"] == el]
        inside = np.zeros(lam.size, dtype=bool)
        for a, b in rows[["start_vac", "end_vac"]].to_numpy():
            inside |= (lam >= a - 0.2) & (lam <= b + 0.2)
        assert inside.all(), el
    # Mg lines sit inside Mg windows; other grids work too
    mg = element_window_mask(APOGEE_7514, "mg")
    assert mg[APOGEE_7514.pixel_of(air_to_vac(15740.716))]
    assert element_window_mask(APOGEE_7214, "Fe").sum() > 1000
    with pytest.raises(KeyError):
        element_window_mask(APOGEE_7514, "Xx")


def test_sky_lines_fall_in_range():
    sky = load_sky_lines()
    assert len(sky) >= 20
    assert sky["wavelength_vac"].between(15100, 17000).all()
    assert set(sky["brightness_class"]) <= {1, 2, 3}


def test_bad_files_name_the_file_and_problem(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(BadFileError, match="nope.csv"):
        load_linelist(missing)
    air = tmp_path / "air.csv"
    air.write_text("# medium: air\n" + ",".join(LINE_COLUMNS) + "\n"
                   "15000,Fe I,Fe,0,5,0,FE_H,atomic,x\n")
    with pytest.raises(BadFileError, match="vacuum"):
        load_linelist(air)
    short = tmp_path / "short.csv"
    pd.DataFrame({"wavelength_vac": [15500.0]}).to_csv(short, index=False)
    with pytest.raises(BadFileError, match="lacks the column"):
        load_linelist(short)
    kind = tmp_path / "kind.csv"
    kind.write_text("# medium: vacuum\n" + ",".join(LINE_COLUMNS) + "\n"
                    "15500,Fe I,Fe,0,5,0,FE_H,weird,x\n")
    with pytest.raises(BadFileError, match="unknown line kind"):
        load_linelist(kind)


def test_apogee_forest_list():
    """The molecular forest of the 'apogee' physics: vacuum, molecular only, in range, not a
    copy of the shipped list's lines, and with CO band structure (lines pile up redward of
    each Δv = 3 band head)."""
    from core.linelist import LINELIST_DIR
    from core.mock.apogee import FOREST_PATH, apogee_linelist

    assert FOREST_PATH.parent == LINELIST_DIR
    forest = load_linelist(FOREST_PATH)
    assert forest.attrs["medium"] == "vacuum"
    assert set(forest["kind"]) == {"molecular"} and set(forest["species"]) == {"CN", "CO"}
    assert forest["wavelength_vac"].between(15100, 17000).all()
    shipped = load_linelist()
    both = forest.merge(shipped, on=["species", "wavelength_vac"])
    assert both.empty
    full = apogee_linelist()
    assert len(full) == len(forest) + len(shipped)
    co = full[(full["species"] == "CO") & (full["kind"] == "molecular")]["wavelength_vac"]
    # the 3-0 band head at 15581.7 Å: no CO line blueward, many just redward
    assert (co < 15580.0).sum() == 0
    assert ((co > 15581.0) & (co < 15600.0)).sum() >= 20
