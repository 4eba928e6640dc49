"""What APOGEE file names and folders say about a file: its kind, star and telescope."""

from __future__ import annotations

import re
from pathlib import Path

TELESCOPES = ("apo25m", "lco25m", "apo1m")

#: File-name patterns of the per-star and per-visit products (apStar/asStar are APO/LCO).
_KIND_PATTERNS = (
    ("aspcapstar", re.compile(r"^aspcapStar", re.IGNORECASE)),
    ("apstar", re.compile(r"^(apStar|asStar)", re.IGNORECASE)),
    ("apvisit", re.compile(r"^(apVisit|asVisit)", re.IGNORECASE)),
    ("allstar", re.compile(r"^allStar", re.IGNORECASE)),
    ("astronn_vac", re.compile(r"astroNN", re.IGNORECASE)),
    ("contspec", re.compile(r"^contspec", re.IGNORECASE)),
)

# 2MASS-style IDs (2M17335483-2753043) and the APOGEE-2 "AP…" ids of stars without 2MASS.
_APOGEE_ID = re.compile(r"(2M\d{8}[+-]\d{7}|AP\d{8}[+-]\d{7})")


def kind_from_name(path) -> str | None:
    """The product kind a file name announces, or None."""
    name = Path(path).name
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(name):
            return kind
    return None


def apogee_id_from_name(path) -> str | None:
    match = _APOGEE_ID.search(Path(path).name)
    return match.group(1) if match else None


def telescope_from_path(path) -> str | None:
    """The telescope folder a DR17 file sits in (``…/apo25m/<field>/apStar-….fits``), else
    lco25m for the southern ``as…`` products; None when the path does not tell."""
    p = Path(path)
    for part in reversed(p.resolve().parts[:-1]):
        if part in TELESCOPES:
            return part
    if p.name.startswith(("asStar", "asVisit")):
        return "lco25m"
    return None


def field_from_path(path) -> str | None:
    """The field folder directly below a telescope folder, if the path has that layout."""
    parts = Path(path).resolve().parts
    if len(parts) >= 3 and parts[-3] in TELESCOPES:
        return parts[-2]
    return None
