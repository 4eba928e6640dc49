"""Where Stellarscope keeps data, stores and models: ``$STELLARSCOPE_HOME`` (~/.stellarscope)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS = PROJECT_ROOT / "assets"
LINELIST_DIR = ASSETS / "linelists"
SHIPPED_MODELS = ASSETS / "models"

DEMO_STORE_NAME = "mock-survey"


def home() -> Path:
    """The data home; created on first use."""
    path = Path(os.environ.get("STELLARSCOPE_HOME", Path.home() / ".stellarscope")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stores_dir() -> Path:
    p = home() / "stores"
    p.mkdir(parents=True, exist_ok=True)
    return p


def models_dir() -> Path:
    p = home() / "models"
    p.mkdir(parents=True, exist_ok=True)
    return p


def demo_store() -> Path:
    return stores_dir() / DEMO_STORE_NAME


def resolve_store(path: str | os.PathLike | None) -> Path:
    """A store path as given, else a store name under the home, else the demo store."""
    if path is None:
        return demo_store()
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute() or os.sep in str(path):
        return p
    return stores_dir() / str(path)
