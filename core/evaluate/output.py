"""Where evaluations write: only where the user says, or under ``$STELLARSCOPE_HOME``.

Shipped model directories (``assets/models/…``) are part of the source tree and are never
written: an evaluation's files go to ``--out DIR`` or to
``$STELLARSCOPE_HOME/evaluations/<model-name>-<UTC time>``, and a calibration is saved into a
model only when the model's directory is the user's own and writable (else into a copy).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path

from ..errors import BadFileError


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def shipped(path) -> bool:
    """True for a path inside the shipped models (``assets/models``)."""
    from ..paths import SHIPPED_MODELS

    return _inside(Path(path), SHIPPED_MODELS)


def not_writable_reason(model_dir) -> str:
    """Why ``model_dir`` must not be written ("" when it may be)."""
    path = Path(model_dir)
    if shipped(path):
        return "is a shipped model (assets/models is part of Stellarscope and is never written)"
    if not os.access(path, os.W_OK) or any(
            f.exists() and not os.access(f, os.W_OK) for f in path.glob("*.json")):
        return "is read-only"
    return ""


def evaluations_dir() -> Path:
    from ..paths import home

    return home() / "evaluations"


def default_output_dir(model_dir) -> Path:
    """``$STELLARSCOPE_HOME/evaluations/<model-name>-<UTC time>`` (a fresh directory)."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = evaluations_dir() / f"{Path(model_dir).resolve().name}-{stamp}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def check_output_dir(out) -> Path:
    """``out`` as a Path; BadFileError when it lies inside the shipped models."""
    path = Path(out).expanduser()
    if shipped(path):
        raise BadFileError(path, "is inside the shipped models (assets/models), which are "
                                 "never written; choose another --out")
    return path


def output_dir(out, model_dir) -> Path:
    """The directory an evaluation writes to, created: ``out`` or the default."""
    path = check_output_dir(out) if out else default_output_dir(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_copy_target(dst) -> Path:
    """``dst`` as a Path if a model copy may go there (new or empty, not shipped)."""
    dst = Path(dst).expanduser()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise BadFileError(dst, "already exists and is not empty; choose a new directory")
    if shipped(dst):
        raise BadFileError(dst, "is inside the shipped models (assets/models), which are "
                                "never written")
    return dst


def copy_model(src, dst) -> Path:
    """Copy the model directory ``src`` to a new ``dst`` (which must not exist or be empty),
    through a temporary sibling and a rename, so ``dst`` is never half written."""
    src, dst = Path(src), check_copy_target(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # only the model itself: config, weights, notes; not evaluations or checkpoints
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("eval-*", "evaluation*",
                                                                "checkpoint*", ".*"))
        for f in tmp.rglob("*"):  # a copy of a read-only model is the user's to change
            f.chmod(f.stat().st_mode | 0o200)
        tmp.chmod(tmp.stat().st_mode | 0o700)
        if dst.exists():
            dst.rmdir()
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
