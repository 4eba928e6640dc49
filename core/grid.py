"""APOGEE wavelength grids, chips, velocities, air/vacuum and PIXMASK bits.

All wavelengths are vacuum Ångström unless a function says otherwise.  The
apStar grid is log-linear: log10 λ_i = 4.179 + 6e-6 · i for i = 0 … 8574, so a
Doppler shift is a uniform shift in pixels (≈ 4.14 km/s per pixel).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

C_KMS = 299_792.458

APSTAR_CRVAL1 = 4.179
APSTAR_CDELT1 = 6e-6
APSTAR_NPIX = 8575

#: Velocity width of one apStar pixel (km/s).
KMS_PER_PIXEL = C_KMS * (10**APSTAR_CDELT1 - 1.0)


def apstar_wavelength(index: np.ndarray | int | None = None) -> np.ndarray:
    """Vacuum wavelength (Å) of apStar pixel(s); all 8575 when ``index`` is None."""
    i = np.arange(APSTAR_NPIX) if index is None else np.asarray(index, dtype=np.float64)
    return 10.0 ** (APSTAR_CRVAL1 + APSTAR_CDELT1 * i)


def apstar_pixel(wavelength: np.ndarray | float) -> np.ndarray:
    """Fractional apStar pixel index of a vacuum wavelength (Å)."""
    return (np.log10(np.asarray(wavelength, dtype=np.float64)) - APSTAR_CRVAL1) / APSTAR_CDELT1


@dataclass(frozen=True)
class Grid:
    """A fixed pixel grid: a named subset of apStar pixels split into chips.

    ``chips`` holds the half-open apStar pixel ranges kept by the grid, blue to
    red.  ``index`` maps grid pixel → apStar pixel.
    """

    name: str
    chips: tuple[tuple[int, int], ...]
    description: str = ""
    _index: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        idx = np.concatenate([np.arange(a, b) for a, b in self.chips]).astype(np.int64)
        idx.setflags(write=False)
        object.__setattr__(self, "_index", idx)

    @property
    def index(self) -> np.ndarray:
        return self._index

    @property
    def n_pix(self) -> int:
        return int(self._index.size)

    @property
    def wavelength(self) -> np.ndarray:
        return apstar_wavelength(self._index)

    @property
    def chip_names(self) -> tuple[str, ...]:
        return ("blue", "green", "red")[: len(self.chips)]

    def chip_slices(self) -> list[slice]:
        """Slices of this grid's pixels, one per chip."""
        out, start = [], 0
        for a, b in self.chips:
            out.append(slice(start, start + (b - a)))
            start += b - a
        return out

    def chip_of(self, pixel: np.ndarray | int) -> np.ndarray:
        """Chip number (0, 1, 2) of grid pixel(s)."""
        bounds = np.cumsum([b - a for a, b in self.chips])
        return np.searchsorted(bounds, np.asarray(pixel), side="right")

    def from_apstar(self, arr: np.ndarray) -> np.ndarray:
        """Take this grid's pixels from array(s) whose last axis is the 8575 apStar grid."""
        arr = np.asarray(arr)
        if arr.shape[-1] != APSTAR_NPIX:
            raise ValueError(
                f"expected {APSTAR_NPIX} apStar pixels on the last axis, got shape {arr.shape}"
            )
        return arr[..., self._index]

    def to_apstar(self, arr: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Place grid-pixel array(s) back on the 8575 grid, filling the gaps."""
        arr = np.asarray(arr)
        out = np.full(arr.shape[:-1] + (APSTAR_NPIX,), fill, dtype=arr.dtype)
        out[..., self._index] = arr
        return out

    def pixel_of(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Nearest grid pixel of a vacuum wavelength, or -1 when it falls in a gap/outside."""
        ap = np.rint(apstar_pixel(wavelength)).astype(np.int64)
        pos = np.searchsorted(self._index, ap)
        pos_c = np.clip(pos, 0, self.n_pix - 1)
        return np.where(self._index[pos_c] == ap, pos_c, -1)

    def contains(self, wavelength: np.ndarray | float) -> np.ndarray:
        return self.pixel_of(wavelength) >= 0


APSTAR = Grid("apstar8575", ((0, APSTAR_NPIX),), "full apStar grid with chip gaps")
APOGEE_7514 = Grid(
    "apogee7514",
    ((246, 3274), (3585, 6080), (6344, 8335)),
    "gap-removed grid of DR13-DR17 (astroNN, SpectraFM, APOGEE VAE)",
)
APOGEE_7214 = Grid(
    "apogee7214",
    ((322, 3242), (3648, 6048), (6412, 8306)),
    "gap-removed grid of DR11-DR12 (The Payne)",
)

GRIDS = {g.name: g for g in (APOGEE_7514, APOGEE_7214, APSTAR)}
_BY_SIZE = {g.n_pix: g for g in GRIDS.values()}


def get_grid(name_or_npix: str | int) -> Grid:
    """Look a grid up by name (``apogee7514``) or by pixel count (7514)."""
    if isinstance(name_or_npix, (int, np.integer)):
        if int(name_or_npix) in _BY_SIZE:
            return _BY_SIZE[int(name_or_npix)]
        raise KeyError(f"no APOGEE grid has {name_or_npix} pixels (known: {sorted(_BY_SIZE)})")
    key = str(name_or_npix).lower()
    if key in GRIDS:
        return GRIDS[key]
    if key.isdigit():
        return get_grid(int(key))
    raise KeyError(f"unknown grid {name_or_npix!r} (known: {sorted(GRIDS)})")


# --- velocities -------------------------------------------------------------------------------


def velocity_per_pixel(grid: Grid = APSTAR) -> np.ndarray:
    """Velocity step (km/s) from each pixel to the next on ``grid`` (constant on apStar)."""
    lam = apstar_wavelength(np.arange(APSTAR_NPIX + 1))
    dv = C_KMS * (lam[1:] / lam[:-1] - 1.0)
    return dv[grid.index]


def doppler_factor(rv_kms: float | np.ndarray) -> np.ndarray:
    """Relativistic λ_obs/λ_rest for a radial velocity (positive = receding)."""
    beta = np.asarray(rv_kms, dtype=np.float64) / C_KMS
    return np.sqrt((1.0 + beta) / (1.0 - beta))


# --- air / vacuum (IAU standard, Morton 2000 / Ciddor 1996 refractive index) -------------------


def vac_to_air(wavelength_vac: np.ndarray | float) -> np.ndarray:
    """Vacuum → air wavelength (Å)."""
    lam = np.asarray(wavelength_vac, dtype=np.float64)
    s2 = (1e4 / lam) ** 2
    n = 1.0 + 0.0000834254 + 0.02406147 / (130.0 - s2) + 0.00015998 / (38.9 - s2)
    return lam / n


def air_to_vac(wavelength_air: np.ndarray | float) -> np.ndarray:
    """Air → vacuum wavelength (Å); inverse of :func:`vac_to_air` to < 1e-8 Å."""
    lam_air = np.asarray(wavelength_air, dtype=np.float64)
    lam = lam_air.copy()
    for _ in range(4):  # fixed-point iteration converges quadratically here
        lam = lam * lam_air / vac_to_air(lam)
    return lam


# --- PIXMASK ----------------------------------------------------------------------------------

PIXMASK_BITS: dict[int, str] = {
    0: "BADPIX",
    1: "CRPIX",
    2: "SATPIX",
    3: "UNFIXABLE",
    4: "BADDARK",
    5: "BADFLAT",
    6: "BADERR",
    7: "NOSKY",
    8: "LITTROW_GHOST",
    9: "PERSIST_HIGH",
    10: "PERSIST_MED",
    11: "PERSIST_LOW",
    12: "SIG_SKYLINE",
    13: "SIG_TELLURIC",
    14: "NOT_ENOUGH_PSF",
}
PIXMASK_VALUE = {name: 1 << bit for bit, name in PIXMASK_BITS.items()}

#: astroNN's (and the APOGEE VAE's) bad set: bits 0-7 and SIG_SKYLINE → 4351.
ASTRONN_BAD_BITS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 12)
#: The APOGEE pipeline's "badval": bits 0-7 and NOT_ENOUGH_PSF → 16639.
PIPELINE_BAD_BITS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 14)
BAD_BIT_SETS = {"astronn": ASTRONN_BAD_BITS, "pipeline": PIPELINE_BAD_BITS}
DEFAULT_BAD_BITS = ASTRONN_BAD_BITS


def bitmask_value(bits) -> int:
    """Integer mask with the given bit numbers (or bit names) set."""
    value = 0
    for b in bits:
        if isinstance(b, str):
            value |= PIXMASK_VALUE[b.upper()]
        else:
            value |= 1 << int(b)
    return value


def resolve_bad_bits(bad_bits="astronn") -> tuple[int, ...]:
    """Accept a named set ('astronn', 'pipeline') or an iterable of bit numbers/names."""
    if isinstance(bad_bits, str):
        try:
            return BAD_BIT_SETS[bad_bits.lower()]
        except KeyError:
            raise KeyError(
                f"unknown bad-bit set {bad_bits!r} (known: {sorted(BAD_BIT_SETS)})"
            ) from None
    out = []
    for b in bad_bits:
        out.append(int(np.log2(PIXMASK_VALUE[b.upper()])) if isinstance(b, str) else int(b))
    return tuple(out)


def bad_pixels(pixmask: np.ndarray, bad_bits="astronn") -> np.ndarray:
    """Boolean array, True where any of the bad bits is set."""
    value = bitmask_value(resolve_bad_bits(bad_bits))
    return (np.asarray(pixmask).astype(np.int64) & value) != 0


def decode_pixmask(value: int) -> list[str]:
    """Names of the bits set in one PIXMASK value."""
    return [name for bit, name in PIXMASK_BITS.items() if int(value) & (1 << bit)]
