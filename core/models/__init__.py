"""Saved models: one directory per model, ``model.safetensors`` + ``config.json``.

Any model class can be saved and rebuilt here if it

* has a class attribute ``model_type`` (the key in :data:`MODEL_TYPES`),
* returns its constructor settings as a JSON-ready dict from ``architecture()``,
* rebuilds itself from that dict with the classmethod ``from_architecture(arch)``.

``config.json`` holds ``model_type``, ``architecture`` and whatever the caller adds through
``extra_config`` (label scaling, grid, training provenance …).  No pickles are involved.

A class that reads its own files instead may define the classmethod
``load_saved(path, config, device) -> model``; :func:`load` then calls that.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
from pathlib import Path

import torch

from ..errors import BadFileError
from .io import (
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    read_config,
    read_weights,
    write_config,
    write_weights,
)

#: model_type → model class, or "module:ClassName" imported on first use.  Modules add
#: their own entry; an unknown type is also looked for in ``core.models.<model_type>``.
MODEL_TYPES: dict[str, type | str] = {
    "vae": "core.models.vae:SpectrumVAE",
    "emulator": "core.models.emulator:Emulator",
    "transformer": "core.models.transformer:SpectralTransformer",
}

#: Keys of config.json that ``extra_config`` may not replace.
_RESERVED = ("format", "version", "model_type", "architecture", "weights_dtype")
#: Every config key :func:`save` writes itself (the reserved ones plus its time and version).
RESERVED_CONFIG_KEYS = (*_RESERVED, "saved", "stellarscope_version")


def register_model_type(name: str, cls: type | str) -> None:
    MODEL_TYPES[name] = cls


def model_class(model_type: str) -> type:
    """The class registered for ``model_type`` (importing its module when needed)."""
    entry = MODEL_TYPES.get(model_type)
    if entry is None:
        try:
            importlib.import_module(f"{__name__}.{model_type}")
        except ModuleNotFoundError:
            pass
        entry = MODEL_TYPES.get(model_type)
    if entry is None:
        raise KeyError(f"unknown model_type {model_type!r} (known: {sorted(MODEL_TYPES)})")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        MODEL_TYPES[model_type] = entry
    return entry


def save(model: torch.nn.Module, path: str | os.PathLike, extra_config: dict | None = None,
         weights_dtype: str = "float32") -> Path:
    """Write ``model`` to the directory ``path``; returns the directory.

    ``weights_dtype`` "float16"/"bfloat16" halves the file (parameters only; buffers stay
    float32); :func:`load` upcasts.
    """
    from .. import __version__

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    extra = dict(extra_config or {})
    clash = [k for k in _RESERVED if k in extra]
    if clash:
        raise ValueError(f"extra_config may not set {clash}")
    config = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model_type": model.model_type,
        "architecture": model.architecture(),
        "weights_dtype": weights_dtype,
        "saved": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "stellarscope_version": __version__,
        **extra,
    }
    # only trained parameters are narrowed: buffers hold scalings (mean flux …) whose
    # float16 rounding would show up in every reconstruction
    params = {name for name, _ in model.named_parameters()}
    # weights first: config.json is the commit point a reader looks for
    write_weights(path / WEIGHTS_FILE, model.state_dict(), dtype=weights_dtype, narrow=params,
                  metadata={"model_type": model.model_type})
    write_config(path / CONFIG_FILE, config)
    return path


def load_with_config(path: str | os.PathLike, device: str | torch.device = "cpu"
                     ) -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved model (eval mode, float32, on ``device``) and return it with its config."""
    path = Path(path)
    config = read_config(path)
    if int(config.get("version", 1)) > FORMAT_VERSION:
        raise BadFileError(path / CONFIG_FILE, f"model format version {config['version']} is newer "
                           f"than this Stellarscope understands ({FORMAT_VERSION})")
    try:
        cls = model_class(config["model_type"])
    except KeyError as exc:
        raise BadFileError(path / CONFIG_FILE, str(exc.args[0])) from None
    if hasattr(cls, "load_saved"):
        return cls.load_saved(path, config, device), config
    model = cls.from_architecture(config.get("architecture", {}))
    state = read_weights(path / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BadFileError(path / WEIGHTS_FILE, f"weights do not match the config's architecture "
                           f"({exc})") from None
    model = model.to(device).eval()
    return model, config


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild any saved model from its directory (see :func:`load_with_config`)."""
    return load_with_config(path, device)[0]


from .families import (  # noqa: E402  (families import io lazily)
    FAMILIES,
    Family,
    ModelNotFoundError,
    find,
    get_family,
    register_family,
)

__all__ = [
    "FAMILIES", "Family", "ModelNotFoundError", "find", "get_family", "register_family",
    "MODEL_TYPES", "register_model_type", "model_class", "save", "load", "load_with_config",
    "read_config", "CONFIG_FILE", "WEIGHTS_FILE",
]
