"""Build the molecular forest of the 'apogee' mock physics: ``apogee_hband_forest.csv``.

Run from the repository root::

    .venv/bin/python assets/linelists/build_forest.py

The shipped ``apogee_hband_lines.csv`` keeps only the strongest computed CN (14 per 100 Å)
and ¹²CO (360) lines.  A cool giant's H band is blanketed by many more: this file adds the
next ones of the same computations (:func:`build_linelists.cn_rows`,
:func:`build_linelists.co_rows`: CN red system A²Π–X²Σ⁺ Δv = −1 from textbook constants,
positions approximate; ¹²CO Δv = 3 from Dunham coefficients), so the forest keeps its band
structure.  Lines already in the shipped list are left out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_linelists import HI, LO, cn_rows, co_rows, write_csv  # noqa: E402

#: CN lines kept per 100 Å and the number of CO lines (the shipped list keeps 14 and 360).
CN_PER_BIN = 50
CO_LINES = 1200


def main() -> int:
    shipped = pd.read_csv(HERE / "apogee_hband_lines.csv", comment="#")
    have = set(zip(shipped["species"], shipped["wavelength_vac"].round(3), strict=True))
    rows = [r for r in cn_rows(per_bin=CN_PER_BIN) + co_rows(max_lines=CO_LINES)
            if r["kind"] == "molecular"]
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
