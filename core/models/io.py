"""Model files on disk: ``model.safetensors`` (tensors) + ``config.json`` (everything else).

Both are written through a temporary file and a rename, so a reader never sees half a model.
Weights may be stored in a narrower float type (float16/bfloat16) to keep shipped models
small; :func:`read_weights` upcasts them back to float32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import BadFileError
from ..store.atomic import atomic_path, write_json_atomic

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "stellarscope-model"
FORMAT_VERSION = 1

_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def storage_dtype(name: str) -> torch.dtype:
    try:
        return _STORAGE_DTYPES[name]
    except KeyError:
        raise ValueError(f"weights dtype must be one of {sorted(_STORAGE_DTYPES)}, got {name!r}") from None


def write_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                  dtype: str = "float32", narrow: set[str] | None = None,
                  metadata: dict[str, str] | None = None) -> Path:
    """Save tensors to a safetensors file, floating ones in ``narrow`` (all when None) as ``dtype``.

    Integer tensors, and floating ones left out of ``narrow`` (scalings that need full
    precision), stay as they are.
    """
    target = storage_dtype(dtype)
    out = {}
    for name, t in tensors.items():
        t = t.detach().to("cpu")
        if t.is_floating_point() and (narrow is None or name in narrow):
            t = t.to(target)
        out[name] = t.contiguous()
    path = Path(path)
    with atomic_path(path, ".safetensors") as tmp:
        save_file(out, str(tmp), metadata=metadata)
    return path


def read_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file, upcasting float16/bfloat16 tensors to float32."""
    path = Path(path)
    if not path.is_file():
        raise BadFileError(path, "no such weights file")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadFileError(path, f"not a readable safetensors file ({exc})") from exc
    return {k: (v.float() if v.is_floating_point() else v).to(device) for k, v in tensors.items()}


def write_config(path: str | os.PathLike, config: dict) -> Path:
    path = Path(path)
    write_json_atomic(path, config)
    return path


def read_config(path: str | os.PathLike) -> dict:
    """Read a model's ``config.json`` (``path`` may be the model directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.is_file():
        raise BadFileError(path, "no such model config (expected a model directory with config.json)")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadFileError(path, f"unreadable model config ({exc})") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise BadFileError(path, "model config has no 'model_type' field")
    return config
