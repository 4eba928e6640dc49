"""Generate a whole mock survey into a store, in chunks, deterministically for a seed."""

from __future__ import annotations

import sys
from pathlib import Path

from ..grid import APOGEE_7514, Grid, get_grid
from ..linelist import LINELIST_PATH, SKYLINES_PATH, file_sha256, load_linelist
from ..store import SpectraStore
from .physics import DEFAULT_PHYSICS, get_physics
from .populations import POPULATIONS, draw_labels
from .synth import synthesize

#: The label population of a new mock survey (the shipped demo models are trained on it).
DEFAULT_POPULATION = "dr17"
#: What a store without a population record was drawn from (written before populations existed).
LEGACY_POPULATION = "classic"

#: Bumped whenever the same seed would give different spectra or labels.
MOCK_VERSION = "1.0"
DEFAULT_CHUNK = 512
#: Rows per spectra file of the store: bounds the writer's memory (~150 MB per 2048 rows).
ROWS_PER_PART = 2048


def _title(seed: int, physics: str, population: str = DEFAULT_POPULATION) -> str:
    extra = ([] if physics == DEFAULT_PHYSICS else [f"{physics} physics"]) + (
        [] if population == DEFAULT_POPULATION else [f"{population} population"])
    return f"Mock APOGEE survey (seed {', '.join([str(seed)] + extra)})"


def store_population(store) -> str:
    """The named label population a mock store was drawn from ('classic' for older stores)."""
    from .physics import _provenance

    return str(_provenance(store).get("population", LEGACY_POPULATION))


def generate_mock_survey(out_dir, n_stars: int = 20_000, seed: int = 42, dtype: str = "float32",
                         progress: bool = True, chunk: int = DEFAULT_CHUNK,
                         grid: Grid | str = APOGEE_7514, overwrite: bool = False,
                         title: str | None = None, linelist_path=None,
                         physics: str = DEFAULT_PHYSICS,
                         population: str = DEFAULT_POPULATION) -> Path:
    """Write ``n_stars`` mock spectra and their catalog to a new store at ``out_dir``.

    The result depends only on ``seed``, ``n_stars``, the grid and the line list — not on
    ``chunk``, which only bounds memory.  The store's manifest has kind "mock survey" and its
    provenance records the seed, the generator version, the line list's SHA-256 and the
    physics set (``physics``, :mod:`.physics`; read back with :func:`.physics.store_physics`).
    The ``apogee`` physics adds its molecular forest to the shipped line list; with an
    explicit ``linelist_path`` it synthesises that list alone.  ``population`` names the
    label distribution (:data:`.populations.POPULATIONS`), also recorded.
    """
    if n_stars < 1:
        raise ValueError(f"n_stars must be ≥ 1, got {n_stars}")
    if chunk < 1:
        raise ValueError(f"chunk must be ≥ 1, got {chunk}")
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    phys = get_physics(physics)
    ll_path = Path(linelist_path) if linelist_path is not None else LINELIST_PATH
    linelist = load_linelist(ll_path)
    lines_record = {"linelist_file": ll_path.name, "linelist_sha256": file_sha256(ll_path)}
    if phys.synthesis == "apogee" and linelist_path is None:
        from .apogee import FOREST_PATH, apogee_linelist

        linelist = apogee_linelist()  # the shipped list + the molecular forest
        lines_record.update(forest_file=FOREST_PATH.name, forest_sha256=file_sha256(FOREST_PATH))
    elif phys.synthesis == "apogee2" and linelist_path is None:
        from .apogee import FOREST_PATH
        from .apogee2 import apogee2_linelist

        linelist = apogee2_linelist()  # + the CN forest, computed OH/CO (core.mock.molecules)
        lines_record.update(forest_file=FOREST_PATH.name, forest_sha256=file_sha256(FOREST_PATH),
                            molecules="core.mock.molecules (computed OH, 12CO, 13CO)")
    if population not in POPULATIONS:
        raise ValueError(f"unknown population {population!r} (known: {', '.join(POPULATIONS)})")
    labels = draw_labels(n_stars, seed, population=population)
    provenance = {
        "generator": "core.mock",
        "generator_version": MOCK_VERSION,
        "seed": int(seed),
        "n_stars": int(n_stars),
        "grid": g.name,
        **lines_record,
        "skylines_sha256": file_sha256(SKYLINES_PATH),
        **phys.record(),
        "population": population,
        "labels": "TRUE_* columns hold the labels the spectra were synthesised from; the "
                  "unprefixed label columns are TRUE + a draw from their _ERR",
    }
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_stars, desc="mock survey", unit="star", file=sys.stderr)
    writer = SpectraStore.create(
        out_dir, grid=g, kind="mock survey", title=title or _title(seed, phys.name, population),
        dtype=dtype, normalized=True, provenance=provenance,
        sources=[f"core.mock {MOCK_VERSION} seed={seed}"
                 + f" physics={phys.name} population={population}"],
        overwrite=overwrite,
        rows_per_part=max(chunk, ROWS_PER_PART),
    )
    try:
        with writer:
            for start in range(0, n_stars, chunk):
                rows = labels.iloc[start:start + chunk]
                flux, error, pixmask = synthesize(rows, grid=g, seed=seed, linelist=linelist,
                                                   physics=phys)
                writer.append(flux, error, pixmask, rows)
                if bar is not None:
                    bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    return Path(out_dir)
