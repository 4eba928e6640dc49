"""The one on-disk format every Stellarscope tool reads: see :mod:`core.store.store`."""

from .lock import store_lock
from .manifest import CATALOG, FORMAT_NAME, FORMAT_VERSION, KINDS, MANIFEST, read_manifest
from .store import (
    Batch,
    SpectraStore,
    StoreWriter,
    check_replaceable,
    create_store,
    open_store,
)
from .verify import VerifyReport, verify_store

__all__ = [
    "Batch", "SpectraStore", "StoreWriter", "create_store", "open_store", "read_manifest",
    "check_replaceable", "store_lock", "verify_store", "VerifyReport",
    "CATALOG", "MANIFEST", "FORMAT_NAME", "FORMAT_VERSION", "KINDS",
]
