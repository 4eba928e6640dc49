"""Resume checkpoints: one ``torch.save`` file of tensors, numbers and strings only.

Everything needed to continue a run exactly — model, optimiser and scheduler state, epoch and
step counters, RNG states, the run's settings (as JSON text) — goes in one file, written
through a temporary file and a rename and read back with ``weights_only=True`` (no pickles).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import BadFileError
from ..store.atomic import atomic_path

CHECKPOINT_FORMAT = "stellarscope-checkpoint"
CHECKPOINT_VERSION = 1


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, *, model_state: dict, optimizer_state: dict,
                    scheduler_state: dict, epoch: int, step: int, settings: dict,
                    extra: dict | None = None) -> Path:
    """Write a resume checkpoint; ``settings``/``extra`` must be JSON-ready."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": {k: v.detach().to("cpu") for k, v in model_state.items()},
        "optimizer": optimizer_state,
        "scheduler": scheduler_state,
        "epoch": int(epoch),
        "step": int(step),
        "rng": rng_state(),
        "settings_json": json.dumps(settings),
        "extra_json": json.dumps(extra or {}),
    }
    path = Path(path)
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint; ``settings`` and ``extra`` come back as dicts."""
    path = Path(path)
    if not path.is_file():
        raise BadFileError(path, "no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise BadFileError(path, f"not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BadFileError(path, "not a Stellarscope training checkpoint")
    if int(payload.get("version", 0)) > CHECKPOINT_VERSION:
        raise BadFileError(path, f"checkpoint version {payload['version']} is newer than this "
                           "Stellarscope understands")
    payload["settings"] = json.loads(payload.pop("settings_json"))
    payload["extra"] = json.loads(payload.pop("extra_json"))
    return payload
