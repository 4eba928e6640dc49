"""Spectral emulator: stellar labels → continuum-normalised spectrum (The Payne's idea).

Labels are scaled to [−0.5, 0.5] by the training range, ``x_s = (x − x_min)/(x_max − x_min) − 0.5``,
and an MLP with leaky-ReLU hidden layers maps them to one flux per pixel of an APOGEE grid.
Saved through :mod:`core.models` as ``config.json`` (model_type "emulator"; the architecture
holds label names, ranges, grid and layer sizes; ``training`` the training record) +
``model.safetensors`` (weights, the per-pixel validation error spectrum and a bank of training
label vectors used to start fits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import BadDataError, BadFileError
from ..grid import Grid, get_grid

MODEL_TYPE = "emulator"

#: Hidden-layer widths by preset.  "payne" (The Payne's 2×300 network) is the default: on the
#: 20,000-star mock survey, 35 minutes of CPU training gave it a median validation emulator
#: error of 0.0019 against 0.0022 for "wide" (2×512), whose validation loss stopped improving
#: at epoch 114 of 183.  "wide" may pay off with more stars or a GPU's epochs.
PRESETS: dict[str, tuple[int, ...]] = {
    "payne": (300, 300),
    "wide": (512, 512),
}


@dataclass
class EmulatorConfig:
    """Everything needed to rebuild an emulator besides its weights."""

    label_names: list[str]
    x_min: list[float]
    x_max: list[float]
    grid: str = "apogee7514"
    hidden: tuple[int, ...] = PRESETS["payne"]
    negative_slope: float = 0.01
    preset: str = "payne"
    #: Per-label systematic error added in quadrature to fit σ (see core.fit.calibrate).
    error_floor: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def __post_init__(self):
        self.label_names = [str(n) for n in self.label_names]
        self.x_min = [float(v) for v in self.x_min]
        self.x_max = [float(v) for v in self.x_max]
        self.hidden = tuple(int(h) for h in self.hidden)
        self.grid = get_grid(self.grid).name
        n = len(self.label_names)
        if n == 0:
            raise BadDataError("an emulator needs at least one label")
        if len(set(self.label_names)) != n:
            raise BadDataError(f"duplicated label names: {self.label_names}")
        if len(self.x_min) != n or len(self.x_max) != n:
            raise BadDataError(
                f"{n} labels but {len(self.x_min)} x_min and {len(self.x_max)} x_max values"
            )
        span = np.asarray(self.x_max) - np.asarray(self.x_min)
        if not np.all(np.isfinite(span)) or np.any(span <= 0):
            bad = [nm for nm, s in zip(self.label_names, span, strict=True) if not s > 0]
            raise BadDataError(f"label range must be finite with x_max > x_min; bad: {bad}")
        self.error_floor = {str(k): float(v) for k, v in (self.error_floor or {}).items()}
        bad = [k for k, v in self.error_floor.items()
               if k not in self.label_names or not np.isfinite(v) or v < 0]
        if bad:
            raise BadDataError(f"error_floor must give finite σ ≥ 0 for known labels; bad: {bad}")
        if not self.hidden or min(self.hidden) < 1:
            raise BadDataError(f"hidden layer sizes must be positive, got {self.hidden}")

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    def to_json(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: dict) -> EmulatorConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class Emulator(nn.Module):
    """MLP from scaled labels (…, L) to normalised flux (…, n_pix)."""

    model_type = MODEL_TYPE

    def __init__(self, config: EmulatorConfig, n_bank: int = 0):
        super().__init__()
        self.config = config
        sizes = (config.n_labels, *config.hidden, self.grid.n_pix)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        x_min = torch.tensor(config.x_min, dtype=torch.float64)
        x_max = torch.tensor(config.x_max, dtype=torch.float64)
        self.register_buffer("x_min", x_min, persistent=False)
        self.register_buffer("x_span", x_max - x_min, persistent=False)
        #: Emulator error per pixel measured on validation spectra (noise removed); 0 if unknown.
        self.register_buffer("pixel_error", torch.zeros(self.grid.n_pix))
        #: Physical label vectors from the training set, used to seed fits.
        self.register_buffer("start_bank", torch.zeros(n_bank, config.n_labels))

    # -- registry hooks (core.models.save / load) ------------------------------------------
    def architecture(self) -> dict:
        arch = self.config.to_json()
        arch.pop("training", None)
        arch["n_bank"] = int(self.start_bank.shape[0])
        return arch

    @classmethod
    def from_architecture(cls, arch: dict) -> Emulator:
        return cls(EmulatorConfig.from_json(arch), n_bank=int(arch.get("n_bank", 0)))

    @classmethod
    def load_saved(cls, path, config: dict, device) -> Emulator:
        from .io import WEIGHTS_FILE, read_weights

        path = Path(path)
        try:
            model = cls.from_architecture(config.get("architecture", {}))
        except (TypeError, KeyError, ValueError) as exc:
            raise BadFileError(path / "config.json", f"invalid emulator architecture ({exc})") from exc
        model.config.training = dict(config.get("training", {}))
        try:
            model.load_state_dict(read_weights(path / WEIGHTS_FILE), strict=True)
        except RuntimeError as exc:
            raise BadFileError(path / WEIGHTS_FILE, f"weights do not match config.json ({exc})") from None
        return model.to(device).eval()

    # -- shape ------------------------------------------------------------------------------
    @property
    def grid(self) -> Grid:
        return get_grid(self.config.grid)

    @property
    def label_names(self) -> list[str]:
        return list(self.config.label_names)

    @property
    def n_labels(self) -> int:
        return self.config.n_labels

    @property
    def n_pix(self) -> int:
        return self.grid.n_pix

    @property
    def device(self) -> torch.device:
        return self.layers[0].weight.device

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Training range (x_min, x_max) of the labels, physical units."""
        return np.asarray(self.config.x_min), np.asarray(self.config.x_max)

    # -- label scaling ----------------------------------------------------------------------
    def scale(self, labels):
        """Physical labels → [−0.5, 0.5] over the training range (numpy or torch)."""
        if isinstance(labels, torch.Tensor):
            lo = self.x_min.to(labels.device, labels.dtype)
            span = self.x_span.to(labels.device, labels.dtype)
            return (labels - lo) / span - 0.5
        lo, hi = self.bounds
        return (np.asarray(labels, dtype=np.float64) - lo) / (hi - lo) - 0.5

    def unscale(self, scaled):
        """Inverse of :meth:`scale`."""
        if isinstance(scaled, torch.Tensor):
            lo = self.x_min.to(scaled.device, scaled.dtype)
            span = self.x_span.to(scaled.device, scaled.dtype)
            return (scaled + 0.5) * span + lo
        lo, hi = self.bounds
        return (np.asarray(scaled, dtype=np.float64) + 0.5) * (hi - lo) + lo

    def label_vector(self, labels: dict) -> np.ndarray:
        """Physical label vector from a {name: value} mapping holding every label."""
        missing = [n for n in self.label_names if n not in labels]
        if missing:
            raise BadDataError(f"labels missing for this emulator: {missing}")
        return np.array([float(labels[n]) for n in self.label_names])

    # -- evaluation -------------------------------------------------------------------------
    def forward(self, x_scaled: torch.Tensor) -> torch.Tensor:
        h = x_scaled
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < last:
                h = torch.nn.functional.leaky_relu(h, self.config.negative_slope)
        return h

    def forward_with_jacobian(
        self, x_scaled: torch.Tensor, columns: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flux (B, P) and its exact Jacobian d flux / d x_scaled (B, P, C) in one pass.

        Forward-mode through the MLP: the tangent of each hidden layer is carried as an
        (h, B, C) array so every layer is one large matrix product, which costs about C
        forward passes.  ``columns`` picks which inputs to differentiate against (all when None).
        """
        h = x_scaled
        n = h.shape[0]
        first = self.layers[0].weight
        tangent = first if columns is None else first[:, columns]
        c = tangent.shape[1]
        tangent = tangent.unsqueeze(1).expand(-1, n, -1)
        slope = self.config.negative_slope
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i:
                width = tangent.shape[0]
                tangent = (layer.weight @ tangent.reshape(width, n * c)).reshape(-1, n, c)
            h = layer(h)
            if i < last:
                gain = torch.where(h > 0, 1.0, slope).to(h.dtype)
                h = h * gain
                tangent = tangent * gain.T.unsqueeze(-1)
        return h, tangent.permute(1, 0, 2)

    @torch.no_grad()
    def predict(self, labels) -> np.ndarray:
        """Spectra (N, n_pix) or (n_pix,) for physical labels (N, L), (L,) or a dict."""
        if isinstance(labels, dict):
            labels = self.label_vector(labels)
        arr = np.asarray(labels, dtype=np.float64)
        if arr.shape[-1] != self.n_labels:
            raise BadDataError(f"expected {self.n_labels} labels, got shape {arr.shape}")
        x = torch.as_tensor(self.scale(arr), dtype=torch.float32, device=self.device)
        return self(x).cpu().numpy()


# -- persistence (through the shared model registry in core.models) ------------------------


def save_emulator(model: Emulator, path, extra: dict | None = None,
                  weights_dtype: str = "float32") -> Path:
    """Write ``config.json`` + ``model.safetensors`` into the directory ``path``.

    ``extra`` is merged into the config's ``training`` record (command, metrics …).
    """
    from . import save

    training = {**model.config.training, **(extra or {})}
    return save(model, path, extra_config={"training": training}, weights_dtype=weights_dtype)


def load_emulator(path, device: str | torch.device | None = None) -> Emulator:
    """Load an emulator saved by :func:`save_emulator` (safetensors, never a pickle)."""
    from . import load_with_config

    path = Path(path)
    if not path.is_dir():
        raise BadFileError(path, "no such model directory")
    model, config = load_with_config(path, device or "cpu")
    if not isinstance(model, Emulator):
        raise BadFileError(path, f"model_type is {config.get('model_type')!r}, not an emulator")
    return model
