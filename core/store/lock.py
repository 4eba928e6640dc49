"""The inter-process write lock of a store: one writer at a time updates catalog and manifest.

Every catalog/manifest update (``append``, ``add_columns``, replacing a store) runs inside
:func:`store_lock`; a second writer waits for it (up to ``timeout`` seconds) and then re-reads
the store from disk, so it never writes over what the first one committed.  Readers take no
lock: the manifest is replaced atomically and names the catalog file it belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import StoreError

LOCK_NAME = ".lock"
#: Seconds a writer waits for another one; a catalog rewrite takes well under a second.
DEFAULT_TIMEOUT = 120.0
# A short poll keeps the wait after a release small (filelock's default is 50 ms).
_POLL = 0.005


def lock_path(store_dir: str | os.PathLike) -> Path:
    return Path(store_dir) / LOCK_NAME


@contextmanager
def store_lock(store_dir: str | os.PathLike, timeout: float | None = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold the store's write lock; StoreError when it cannot be had within ``timeout`` s
    (``None`` waits forever) or the store directory is not writable."""
    path = lock_path(store_dir)
    lock = FileLock(str(path), timeout=-1 if timeout is None else float(timeout),
                    poll_interval=_POLL, mode=0o666)
    try:
        lock.acquire()
    except Timeout:
        raise StoreError(
            f"{store_dir}: another process has been writing this store for more than "
            f"{timeout:g} s (lock file {path}); nothing was written, try again when it is done"
        ) from None
    except OSError as exc:
        raise StoreError(f"{store_dir}: cannot take the store's write lock ({exc.strerror or exc}); "
                         "is the store directory writable?") from None
    try:
        yield
    finally:
        lock.release()
