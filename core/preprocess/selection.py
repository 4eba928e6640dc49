"""Named quality cuts on an allStar-like catalog (pandas DataFrame with allStar names).

``SELECTIONS`` holds the samples of the seed systems:

``vae``        no STAR_BAD (ASPCAPFLAGS string, else ASPCAPFLAG bit 23), SNR > 200,
               4000 < TEFF < 5500, 0 < LOGG < 3.5, FE_H > −4 (the APOGEE DR16 VAE);
``spectrafm``  STARFLAG == 0, ASPCAPFLAG bit 23 unset, SNR > 200, VSCATTER < 1, then one
               row per APOGEE_ID, the one with the highest SNR (SpectraFM's DR17 sample);
``none``       every row.

Thresholds are fields of :class:`Selection`; override them by name
(``get_selection("vae", snr_min=100)``; ``None`` switches a cut off).  Comparisons are
strict and NaN fails them.  DR16 catalogs may call TEFF/LOGG ``TEFF_SPEC``/``LOGG_SPEC``;
either name is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd

from ..errors import BadDataError

STAR_BAD_BIT = 23
#: Columns tried in order for a quantity that changed name between data releases.
COLUMN_ALIASES = {"TEFF": ("TEFF", "TEFF_SPEC"), "LOGG": ("LOGG", "LOGG_SPEC")}


def _present(df: pd.DataFrame) -> set[str]:
    """Columns really in the catalog (core.io fills missing ones and lists them in attrs)."""
    missing = set(df.attrs.get("missing_columns", ()))
    return {c for c in df.columns if c not in missing}


def column(df: pd.DataFrame, name: str, purpose: str) -> pd.Series:
    """Catalog column ``name`` (or an alias); a clear error naming it when absent."""
    present = _present(df)
    for candidate in COLUMN_ALIASES.get(name, (name,)):
        if candidate in present:
            return df[candidate]
    tried = " or ".join(COLUMN_ALIASES.get(name, (name,)))
    raise BadDataError(f"the catalog has no {tried} column, needed for the cut {purpose!r}")


def _numeric(df, name, purpose) -> np.ndarray:
    return pd.to_numeric(column(df, name, purpose), errors="coerce").to_numpy(dtype=np.float64)


def star_bad(df: pd.DataFrame, prefer: tuple[str, ...] = ("ASPCAPFLAGS", "ASPCAPFLAG")) -> np.ndarray:
    """True where the star is STAR_BAD, from the first of ``prefer`` the catalog has."""
    present = _present(df)
    for name in prefer:
        if name not in present:
            continue
        values = df[name]
        if name == "ASPCAPFLAGS":
            return values.fillna("").astype(str).str.contains("STAR_BAD", regex=False).to_numpy()
        bits = pd.to_numeric(values, errors="coerce").fillna(0).astype(np.int64).to_numpy()
        return (bits >> STAR_BAD_BIT) & 1 == 1
    raise BadDataError(f"the catalog has no {' or '.join(prefer)} column, needed for the cut 'no STAR_BAD'")


@dataclass(frozen=True)
class CutCount:
    """One line of a selection report."""

    cut: str
    removed: int  #: rows this cut removes after the cuts above it
    failing: int  #: rows failing this cut on its own
    remaining: int


@dataclass(frozen=True)
class Selection:
    """Quality cuts; a ``None`` threshold (or False switch) leaves that cut out."""

    name: str = "custom"
    description: str = ""
    reject_star_bad: bool = False
    star_bad_columns: tuple[str, ...] = ("ASPCAPFLAGS", "ASPCAPFLAG")
    starflag_zero: bool = False
    snr_min: float | None = None
    teff_min: float | None = None
    teff_max: float | None = None
    logg_min: float | None = None
    logg_max: float | None = None
    feh_min: float | None = None
    vscatter_max: float | None = None
    dedup_by_id: bool = False

    def cuts(self) -> list[tuple[str, Callable[[pd.DataFrame], np.ndarray]]]:
        """(label, row test) pairs in the order they are applied; de-duplication comes last."""
        out: list[tuple[str, Callable]] = []
        if self.reject_star_bad:
            out.append(("no STAR_BAD", lambda df: ~star_bad(df, self.star_bad_columns)))
        if self.starflag_zero:
            out.append(("STARFLAG == 0",
                        lambda df: _numeric(df, "STARFLAG", "STARFLAG == 0") == 0))
        for label, col, op, value in (
            (f"SNR > {self.snr_min:g}" if self.snr_min is not None else "", "SNR", ">", self.snr_min),
            (f"TEFF > {self.teff_min:g}" if self.teff_min is not None else "", "TEFF", ">", self.teff_min),
            (f"TEFF < {self.teff_max:g}" if self.teff_max is not None else "", "TEFF", "<", self.teff_max),
            (f"LOGG > {self.logg_min:g}" if self.logg_min is not None else "", "LOGG", ">", self.logg_min),
            (f"LOGG < {self.logg_max:g}" if self.logg_max is not None else "", "LOGG", "<", self.logg_max),
            (f"FE_H > {self.feh_min:g}" if self.feh_min is not None else "", "FE_H", ">", self.feh_min),
            (f"VSCATTER < {self.vscatter_max:g}" if self.vscatter_max is not None else "",
             "VSCATTER", "<", self.vscatter_max),
        ):
            if value is not None:
                out.append((label, _threshold(col, op, float(value), label)))
        return out

    def _dedup(self, df: pd.DataFrame, keep: np.ndarray) -> np.ndarray:
        """Of the kept rows, only the highest-SNR row of each APOGEE_ID (first row on ties)."""
        ids = column(df, "APOGEE_ID", "one row per APOGEE_ID").astype(str).str.strip().to_numpy()
        snr = _numeric(df, "SNR", "one row per APOGEE_ID (highest SNR)")
        rows = np.nonzero(keep)[0]
        order = rows[np.lexsort((rows, -np.nan_to_num(snr[rows], nan=-np.inf), ids[rows]))]
        first = np.ones(order.size, dtype=bool)
        first[1:] = ids[order][1:] != ids[order][:-1]
        out = np.zeros(len(df), dtype=bool)
        out[order[first]] = True
        return out

    def report(self, df: pd.DataFrame) -> tuple[np.ndarray, list[CutCount]]:
        """The boolean row mask and, for every cut, how many rows it removes."""
        keep = np.ones(len(df), dtype=bool)
        counts = []
        for label, test in self.cuts():
            passed = np.asarray(test(df), dtype=bool)
            new = keep & passed
            counts.append(CutCount(label, int(keep.sum() - new.sum()), int((~passed).sum()),
                                   int(new.sum())))
            keep = new
        if self.dedup_by_id:
            new = self._dedup(df, keep)
            alone = self._dedup(df, np.ones(len(df), dtype=bool))
            counts.append(CutCount("one row per APOGEE_ID (highest SNR)",
                                   int(keep.sum() - new.sum()), int((~alone).sum()),
                                   int(new.sum())))
            keep = new
        return keep, counts

    def apply(self, df: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the catalog rows that pass every cut."""
        return self.report(df)[0]


def _threshold(col: str, op: str, value: float, label: str):
    def test(df: pd.DataFrame) -> np.ndarray:
        x = _numeric(df, col, label)
        with np.errstate(invalid="ignore"):
            return x > value if op == ">" else x < value

    return test


SELECTIONS: dict[str, Selection] = {
    "vae": Selection(
        name="vae",
        description="APOGEE DR16 VAE sample: no STAR_BAD, SNR > 200, 4000 < TEFF < 5500, "
        "0 < LOGG < 3.5, FE_H > -4",
        reject_star_bad=True,
        star_bad_columns=("ASPCAPFLAGS", "ASPCAPFLAG"),
        snr_min=200.0, teff_min=4000.0, teff_max=5500.0, logg_min=0.0, logg_max=3.5,
        feh_min=-4.0,
    ),
    "spectrafm": Selection(
        name="spectrafm",
        description="SpectraFM DR17 sample: STARFLAG == 0, ASPCAPFLAG bit 23 (STAR_BAD) unset, "
        "SNR > 200, VSCATTER < 1, one row per APOGEE_ID keeping the highest SNR",
        reject_star_bad=True,
        star_bad_columns=("ASPCAPFLAG", "ASPCAPFLAGS"),
        starflag_zero=True, snr_min=200.0, vscatter_max=1.0, dedup_by_id=True,
    ),
    "none": Selection(name="none", description="every row"),
}


def get_selection(name: str | Selection, **overrides) -> Selection:
    """A named selection, with thresholds replaced by ``overrides`` (e.g. ``snr_min=100``)."""
    if isinstance(name, Selection):
        base = name
    else:
        try:
            base = SELECTIONS[str(name).lower()]
        except KeyError:
            raise KeyError(f"unknown selection {name!r} (known: {sorted(SELECTIONS)})") from None
    allowed = {f.name for f in fields(Selection)} - {"name"}
    unknown = set(overrides) - allowed
    if unknown:
        raise TypeError(
            f"selection {base.name!r} has no setting {', '.join(sorted(unknown))} "
            f"(settings: {', '.join(sorted(allowed))})"
        )
    return replace(base, **overrides) if overrides else base


def format_report(counts: list[CutCount], n_rows: int) -> str:
    """The report as aligned text lines, for the CLI."""
    width = max([len(c.cut) for c in counts] + [len("catalog rows")])
    lines = [f"{'catalog rows':<{width}}  {n_rows:>9}"]
    for c in counts:
        lines.append(f"{c.cut:<{width}}  {'-' + str(c.removed):>9}  -> {c.remaining}"
                     f"   (fails alone: {c.failing})")
    return "\n".join(lines)
