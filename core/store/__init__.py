"""The one on-disk format every Stellarscope tool reads: see :mod:`core.store.store`."""

from .manifest import CATALOG, FORMAT_NAME, FORMAT_VERSION, KINDS, MANIFEST, read_manifest
from .store import Batch, SpectraStore, StoreWriter, create_store, open_store

__all__ = [
    "Batch", "SpectraStore", "StoreWriter", "create_store", "open_store", "read_manifest",
    "CATALOG", "MANIFEST", "FORMAT_NAME", "FORMAT_VERSION", "KINDS",
]
