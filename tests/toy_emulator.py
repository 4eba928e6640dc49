"""A toy spectral world shared by the emulator, fitter and Fit-view tests: four labels, a
line list whose depths vary smoothly with them, and small emulators on that label box."""

from __future__ import annotations

import numpy as np
import torch

from core.grid import APOGEE_7514
from core.models.emulator import Emulator, EmulatorConfig

NAMES = ["TEFF", "LOGG", "FE_H", "MG_FE"]
LO = np.array([3800.0, 0.5, -1.5, -0.2])
HI = np.array([6200.0, 4.8, 0.4, 0.4])


def toy_flux(labels: np.ndarray, n_lines: int = 120, seed: int = 3) -> np.ndarray:
    """Absorption lines whose depths vary smoothly with the labels (a stand-in for a mock)."""
    rng = np.random.default_rng(seed)
    pix = np.arange(APOGEE_7514.n_pix)
    centres = rng.uniform(5, pix.size - 5, n_lines)
    coef = rng.normal(0, 1.2, (n_lines, 4))
    base = rng.normal(-1.0, 0.7, n_lines)
    x = (np.atleast_2d(labels) - LO) / (HI - LO) - 0.5
    depth = 0.6 / (1 + np.exp(-(base + x @ coef.T)))
    profile = np.exp(-0.5 * ((pix[None, :] - centres[:, None]) / 1.6) ** 2)
    return np.exp(-depth @ profile).astype(np.float32)


def random_emulator(hidden=(16, 16), grid="apogee7514", seed=0) -> Emulator:
    """An untrained emulator on the toy label box."""
    torch.manual_seed(seed)
    cfg = EmulatorConfig(label_names=NAMES, x_min=LO, x_max=HI, grid=grid, hidden=hidden)
    return Emulator(cfg).eval()


def spectrum_like_emulator(seed: int = 3) -> Emulator:
    """An untrained emulator whose output looks like a normalised spectrum (near 0.9, shallow
    features) and that carries a bank of fit starts, for view and browser tests."""
    emu = random_emulator(seed=seed)
    with torch.no_grad():
        emu.layers[-1].weight.mul_(0.3)
        emu.layers[-1].bias.fill_(0.9)
    emu.start_bank = torch.tensor(LO + np.random.default_rng(0).random((32, 4)) * (HI - LO),
                                  dtype=torch.float32)
    return emu.eval()
