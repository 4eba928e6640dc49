"""The embedded demo: the mock survey plus catalog columns from the shipped demo models.

``stellarscope demo`` (and ``make serve``) call :func:`build_demo`, which does only the
work that is missing: generate the mock survey if the store is absent, then run each
shipped model's whole-store inference if its columns are missing or came from other
weights (checked by the weights' SHA-256 recorded in the manifest).
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .errors import StoreError

DEMO_N_STARS = 20_000
DEMO_SEED = 42

#: Shipped demo models: (folder under assets/models, inference function, a column it writes).
DEMO_MODELS = [
    ("vae-demo", "core.inference.vae:infer_store", "VAE_CHI2"),
]


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


def _store_complete(path: Path) -> bool:
    from .store import SpectraStore

    try:
        SpectraStore.open(path)
        return True
    except StoreError:
        return False


def build_demo(store_path=None, n_stars: int = DEMO_N_STARS, seed: int = DEMO_SEED,
               force: bool = False, progress: bool = True, log=print) -> DemoStatus:
    """Make sure the demo store exists and carries the shipped models' columns."""
    from .store import SpectraStore

    store_path = Path(store_path) if store_path else paths.demo_store()
    status = DemoStatus(store=store_path)
    if force or not _store_complete(store_path):
        from .mock import generate_mock_survey

        log(f"Generating the mock survey ({n_stars} stars, seed {seed}) in {store_path}")
        generate_mock_survey(store_path, n_stars=n_stars, seed=seed, progress=progress,
                             overwrite=True)
        status.generated = True
    store = SpectraStore.open(store_path)
    for folder, func_ref, column in DEMO_MODELS:
        model_dir = paths.SHIPPED_MODELS / folder
        if not (model_dir / "config.json").is_file():
            status.skipped.append(f"{folder}: no shipped weights in {model_dir}")
            continue
        digest = weights_sha256(model_dir)
        note = store.manifest.get("columns", {}).get(column, {})
        if not force and not status.generated and note.get("model_sha256") == digest:
            continue
        log(f"Running {folder} over the {store.n_stars} stars of the demo store")
        module, func = func_ref.split(":")
        infer = getattr(importlib.import_module(module), func)
        infer(store, model_dir, progress=progress, extra_note={"model_sha256": digest})
        store = SpectraStore.open(store_path)
        status.inferred.append(folder)
    return status


if __name__ == "__main__":  # pragma: no cover
    print(build_demo(), file=sys.stderr)
