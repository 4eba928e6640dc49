"""Build the molecular forest of the 'apogee' mock physics: ``apogee_hband_forest.csv``.

Run from the repository root::

    .venv/bin/python assets/linelists/build_forest.py

The shipped ``apogee_hband_lines.csv`` keeps only the strongest computed CN (14 per 100 Å)
and ¹²CO (360) lines.  A cool giant's H band is blanketed by many more: this file adds the
next ones of the same computations (:func:`build_linelists.cn_rows`,
:func:`build_linelists.co_rows`: CN red system A²Π–X²Σ⁺ Δv = −1 from textbook constants,
positions approximate; ¹²CO Δv = 3 from Dunham coefficients), so the forest keeps its band
structure.  Lines already in the shipped list are left out.

Two further facts keep the forest close to real spectra:

* narrow ASPCAP carbon and nitrogen windows (``apogee_element_windows.csv``, ≤ 3 Å) are
  centred on real CO and CN features: a CO (C windows redward of the 3-0 band head) or CN
  line is placed at each centre not already covered;
* the computed CN positions are only good to a few Å, so a computed CN line that would land
  within one pixel of the shipped continuum pixels (pixels that are continuum in real APOGEE
  spectra) is left out rather than put where real stars have no line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from build_linelists import HI, LO, cn_rows, co_rows, write_csv  # noqa: E402

sys.path.insert(0, str(HERE.parents[1]))
from core.grid import APOGEE_7514  # noqa: E402
from core.preprocess.contmask import load_continuum_mask  # noqa: E402

#: CN lines kept per 100 Å and the number of CO lines (the shipped list keeps 14 and 360).
CN_PER_BIN = 50
CO_LINES = 1200
#: Widest ASPCAP window whose centre is taken as one line's position (Å).
WINDOW_MAX_WIDTH = 3.0
#: The ¹²CO 3-0 band head (vacuum Å): no CO absorption blueward of it.
CO_HEAD_30 = 15581.7


def window_rows(have_lam: np.ndarray) -> list[dict]:
    """CO / CN lines at the centres of narrow C and N windows not already covered."""
    w = pd.read_csv(HERE / "apogee_element_windows.csv", comment="#")
    w = w[w["element"].isin(["C", "N"]) & (w["end_vac"] - w["start_vac"] <= WINDOW_MAX_WIDTH)]
    rows = []
    for el, lo, hi in w[["element", "start_vac", "end_vac"]].to_numpy():
        centre = 0.5 * (lo + hi)
        if have_lam.size and np.min(np.abs(have_lam - centre)) < 0.3:
            continue
        have_lam = np.append(have_lam, centre)
        if el == "C" and centre > CO_HEAD_30:
            rows.append(dict(wavelength_vac=centre, species="CO", element="C", ion=0,
                             excitation_potential=0.6, log_gf=-5.3, informs="C_FE;TEFF;LOGG",
                             kind="molecular", note="CO at the centre of an ASPCAP C window; "
                             "χ and gf typical"))
        else:
            rows.append(dict(wavelength_vac=centre, species="CN", element="N", ion=0,
                             excitation_potential=0.8, log_gf=-1.3, informs="N_FE;C_FE",
                             kind="molecular", note=f"CN at the centre of an ASPCAP {el} window; "
                             "χ and gf typical"))
    return rows


def off_continuum(rows: list[dict]) -> list[dict]:
    """Computed CN lines that do not fall within a pixel of a real-continuum pixel."""
    cont = np.nonzero(load_continuum_mask(APOGEE_7514))[0]
    out = []
    for r in rows:
        if r["species"] == "CN" and "computed" in r["note"]:
            p = APOGEE_7514.pixel_of(r["wavelength_vac"])
            if p >= 0 and np.min(np.abs(cont - p)) <= 1:
                continue
        out.append(r)
    return out


def main() -> int:
    shipped = pd.read_csv(HERE / "apogee_hband_lines.csv", comment="#")
    have = set(zip(shipped["species"], shipped["wavelength_vac"].round(3), strict=True))
    rows = [r for r in cn_rows(per_bin=CN_PER_BIN) + co_rows(max_lines=CO_LINES)
            if r["kind"] == "molecular"]
    rows = off_continuum(rows)
    mol = shipped[shipped["kind"] == "molecular"]["wavelength_vac"].to_numpy()
    rows += window_rows(np.concatenate([mol, [r["wavelength_vac"] for r in rows
                                              if r["species"] == "CO"]]))
    df = pd.DataFrame(rows)
    df = df[(df["wavelength_vac"] >= LO) & (df["wavelength_vac"] <= HI)]
    df["wavelength_vac"] = df["wavelength_vac"].round(3)
    df["excitation_potential"] = df["excitation_potential"].astype(float).round(3)
    df["log_gf"] = pd.to_numeric(df["log_gf"]).round(3)
    keep = [(s, w) not in have for s, w in zip(df["species"], df["wavelength_vac"], strict=True)]
    df = df[keep].sort_values(["wavelength_vac", "species"], kind="stable").reset_index(drop=True)
    write_csv(df, HERE / "apogee_hband_forest.csv", [
        "Stellarscope H-band molecular forest for the 'apogee' mock physics; wavelength medium: "
        "vacuum; units: Angstrom, eV",
        "Same columns as apogee_hband_lines.csv; lines not in that list. CN positions "
        "approximate (textbook constants), CO from Dunham coefficients",
        "Built by assets/linelists/build_forest.py",
    ])
    print(f"{len(df)} forest lines ({df.groupby('species').size().to_dict()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
