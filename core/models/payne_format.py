"""The Payne's network file (npz) ↔ :class:`~core.models.emulator.Emulator`.

The Payne stores a two-hidden-layer leaky-ReLU MLP as ``w_array_0..2`` (each shaped
[out, in]), ``b_array_0..2`` and the label scaling range ``x_min``/``x_max``.  We add
``label_names`` and ``grid`` (plain unicode arrays) so a round trip keeps the names; files
without them get The Payne's own 25-label order.  Files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import BadDataError, BadFileError
from ..grid import get_grid
from ..store.atomic import atomic_path
from .emulator import Emulator, EmulatorConfig

#: The Payne's APOGEE label order, in Stellarscope's allStar-style names ([X/H], not [X/Fe]).
PAYNE_LABELS = [
    "TEFF", "LOGG", "VMICRO", "C_H", "N_H", "O_H", "NA_H", "MG_H", "AL_H", "SI_H", "P_H", "S_H",
    "K_H", "CA_H", "TI_H", "V_H", "CR_H", "MN_H", "FE_H", "CO_H", "NI_H", "CU_H", "GE_H",
    "C12_C13", "VMACRO",
]
PAYNE_SLOPE = 0.01
N_LAYERS = 3


def export_payne(model: Emulator, out_path) -> Path:
    """Write ``model`` as a Payne npz; the network must be 2 hidden leaky-ReLU(0.01) layers."""
    if len(model.layers) != N_LAYERS:
        raise BadDataError(
            f"The Payne's format holds exactly 2 hidden layers; this emulator has "
            f"{len(model.layers) - 1}"
        )
    if abs(model.config.negative_slope - PAYNE_SLOPE) > 1e-12:
        raise BadDataError(
            f"The Payne uses leaky-ReLU slope {PAYNE_SLOPE}; this emulator uses "
            f"{model.config.negative_slope}"
        )
    arrays = {}
    for k, layer in enumerate(model.layers):
        arrays[f"w_array_{k}"] = layer.weight.detach().cpu().numpy().astype(np.float32)
        arrays[f"b_array_{k}"] = layer.bias.detach().cpu().numpy().astype(np.float32)
    lo, hi = model.bounds
    arrays["x_min"] = lo.astype(np.float64)
    arrays["x_max"] = hi.astype(np.float64)
    arrays["label_names"] = np.array(model.label_names, dtype=np.str_)
    arrays["grid"] = np.array(model.grid.name, dtype=np.str_)
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise BadDataError(f"{out_path}: a Payne network file must end in .npz")
    with atomic_path(out_path, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return out_path


def import_payne(path) -> Emulator:
    """Read a Payne npz into an :class:`Emulator` (no pickles are ever loaded)."""
    path = Path(path)
    if not path.is_file():
        raise BadFileError(path, "no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise BadFileError(path, f"not a readable npz file ({exc})") from exc
    need = [f"w_array_{k}" for k in range(N_LAYERS)] + [f"b_array_{k}" for k in range(N_LAYERS)]
    missing = [k for k in need + ["x_min", "x_max"] if k not in data]
    if missing:
        raise BadFileError(path, f"not a Payne network file: missing {', '.join(missing)}")
    if f"w_array_{N_LAYERS}" in data:
        raise BadFileError(path, "has more than 2 hidden layers (a fork's format); not supported")
    weights = [np.asarray(data[f"w_array_{k}"], dtype=np.float32) for k in range(N_LAYERS)]
    biases = [np.asarray(data[f"b_array_{k}"], dtype=np.float32) for k in range(N_LAYERS)]
    x_min = np.atleast_1d(np.asarray(data["x_min"], dtype=np.float64))
    x_max = np.atleast_1d(np.asarray(data["x_max"], dtype=np.float64))
    _check_shapes(path, weights, biases, x_min, x_max)
    n_labels, n_pix = weights[0].shape[1], weights[-1].shape[0]
    names = _label_names(path, data, n_labels)
    grid = _grid_name(path, data, n_pix)
    config = EmulatorConfig(
        label_names=names, x_min=x_min, x_max=x_max, grid=grid,
        hidden=tuple(w.shape[0] for w in weights[:-1]), negative_slope=PAYNE_SLOPE,
        preset="payne-import", training={"imported_from": str(path)},
    )
    model = Emulator(config)
    with torch.no_grad():
        for layer, w, b in zip(model.layers, weights, biases, strict=True):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    model.start_bank = _uniform_bank(x_min, x_max)
    return model.eval()


def _check_shapes(path, weights, biases, x_min, x_max) -> None:
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if w.ndim != 2 or b.ndim != 1 or w.shape[0] != b.shape[0]:
            raise BadFileError(path, f"layer {k}: w_array {w.shape} and b_array {b.shape} disagree")
        if k and w.shape[1] != weights[k - 1].shape[0]:
            raise BadFileError(
                path, f"layer {k} takes {w.shape[1]} inputs but layer {k - 1} gives {weights[k - 1].shape[0]}"
            )
    if x_min.shape != (weights[0].shape[1],) or x_max.shape != x_min.shape:
        raise BadFileError(
            path, f"x_min/x_max have shapes {x_min.shape}/{x_max.shape} for {weights[0].shape[1]} labels"
        )
    if not (np.all(np.isfinite(weights[-1])) and all(np.all(np.isfinite(w)) for w in weights)):
        raise BadFileError(path, "weights contain NaN or inf")


def _label_names(path, data, n_labels: int) -> list[str]:
    if "label_names" in data:
        names = [str(s) for s in np.atleast_1d(data["label_names"])]
        if len(names) != n_labels:
            raise BadFileError(path, f"{len(names)} label_names for a {n_labels}-label network")
        return names
    if n_labels == len(PAYNE_LABELS):
        return list(PAYNE_LABELS)
    return [f"LABEL_{i}" for i in range(n_labels)]


def _grid_name(path, data, n_pix: int) -> str:
    try:
        grid = get_grid(str(data["grid"])) if "grid" in data else get_grid(n_pix)
    except KeyError as exc:
        raise BadFileError(path, f"output of {n_pix} pixels matches no APOGEE grid ({exc})") from exc
    if grid.n_pix != n_pix:
        raise BadFileError(path, f"grid {grid.name} has {grid.n_pix} pixels, network gives {n_pix}")
    return grid.name


def _uniform_bank(x_min: np.ndarray, x_max: np.ndarray, n: int = 256, seed: int = 0) -> torch.Tensor:
    """Start points spread over the label box when no training labels came with the file."""
    u = np.random.default_rng(seed).uniform(0.1, 0.9, size=(n, x_min.size))
    return torch.tensor(x_min + u * (x_max - x_min), dtype=torch.float32)
