"""The embedded demo: the mock survey plus catalog columns from the shipped demo models.

``stellarscope demo`` (and ``make serve``) call :func:`build_demo`, which does only the
work that is missing: generate the mock survey if the store is absent, then run each
shipped model's whole-store inference if its columns are missing or came from other
weights (checked by the weights' SHA-256 recorded in the manifest).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .errors import StoreError

DEMO_N_STARS = 20_000
DEMO_SEED = 42

#: Families whose shipped demo runs over the demo store when it is built (through the shared
#: runner, with a progress bar), in this order.  The emulator's would be a fit of every star
#: (minutes of CPU): `infer emulator` or the Fit view's "Fit N selected" adds those columns on
#: demand.  The transformer reads every good pixel in 128-pixel patches (~59 per star): the
#: shipped compact-selector model runs at 46 spectra per CPU-second on one thread
#: (bench/transformer.py --whole-store-only; 13–15 spectra/s measured at load 7 on the 2-core
#: machine), so the 20,000 stars take about 3.6 min of two idle cores (computed from that rate).
#: The whole build from nothing, measured with the previous transformer (28 spectra per
#: CPU-second): 8.5 min wall, 650 s CPU (the transformer 7.9 min, with a test run beside it).
DEMO_FAMILIES = ("vae", "transformer")


@dataclass
class DemoStatus:
    store: Path
    generated: bool = False
    inferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def weights_sha256(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def _why_regenerate(path: Path) -> str | None:
    """Why the demo store at ``path`` must be (re)generated: missing or incomplete, or made
    with another mock physics or population than the shipped models are trained on (a store
    of an older release would show them spectra of another universe).  None: keep it."""
    from .mock import DEFAULT_PHYSICS, DEFAULT_POPULATION, store_physics, store_population
    from .store import SpectraStore

    try:
        store = SpectraStore.open(path)
    except StoreError:
        return "missing"
    if not store.is_mock:
        return None
    have = (store_physics(store), store_population(store))
    if have != (DEFAULT_PHYSICS, DEFAULT_POPULATION):
        return (f"{path} holds a mock with {have[0]} physics and the {have[1]} population; the "
                f"shipped models are trained on {DEFAULT_PHYSICS} / {DEFAULT_POPULATION}")
    return None


def build_demo(store_path=None, n_stars: int = DEMO_N_STARS, seed: int = DEMO_SEED,
               force: bool = False, progress: bool = True, log=print) -> DemoStatus:
    """Make sure the demo store exists and carries the shipped models' columns."""
    from .inference.runner import rank_device, run_store
    from .models.families import get_family
    from .store import SpectraStore

    store_path = Path(store_path) if store_path else paths.demo_store()
    status = DemoStatus(store=store_path)
    why = "forced" if force else _why_regenerate(store_path)
    if why not in (None, "missing", "forced"):
        log(f"Rebuilding the demo store: {why}")
    if why:
        from .mock import generate_mock_survey

        log(f"Generating the mock survey ({n_stars} stars, seed {seed}) in {store_path}")
        generate_mock_survey(store_path, n_stars=n_stars, seed=seed, progress=progress,
                             overwrite=True)
        status.generated = True
    store = SpectraStore.open(store_path)
    for name in DEMO_FAMILIES:
        family = get_family(name)
        model_dir = paths.SHIPPED_MODELS / family.demo
        if not (model_dir / "config.json").is_file():
            status.skipped.append(f"{family.demo}: no shipped weights in {model_dir}")
            continue
        digest = weights_sha256(model_dir)
        predictor = family.part("predictor").load(model_dir, rank_device(None))
        column = predictor.columns()[0].name
        note = store.manifest.get("columns", {}).get(column, {})
        if not force and not status.generated and note.get("model_sha256") == digest:
            continue
        log(f"Running {family.demo} over the {store.n_stars} stars of the demo store")
        run_store(predictor, store, progress=progress, note={"model_sha256": digest},
                  desc=f"{family.title} inference")
        store = SpectraStore.open(store_path)
        status.inferred.append(family.demo)
    return status


if __name__ == "__main__":  # pragma: no cover
    print(build_demo(), file=sys.stderr)
