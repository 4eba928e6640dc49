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


def spectrum_like_store(path, ids: list[str], rvs: list[float], seed: int = 1):
    """Stars observed through :func:`spectrum_like_emulator` at the given RVs (noise 0.01),
    stored as a mock survey with TRUE_* labels; returns (emulator, true labels)."""
    import pandas as pd

    from core.fit.forward import ForwardModel
    from core.store import SpectraStore

    emu = spectrum_like_emulator()
    rng = np.random.default_rng(seed)
    n = len(ids)
    truth = LO + (0.2 + 0.6 * rng.random((n, len(NAMES)))) * (HI - LO)
    fwd = ForwardModel(emu)
    p = torch.zeros(n, fwd.n_params)
    p[:, :len(NAMES)] = torch.tensor(emu.scale(truth), dtype=torch.float32)
    p[:, len(NAMES)] = torch.tensor(rvs, dtype=torch.float32)
    with torch.no_grad():
        flux = fwd.evaluate(p, jacobian=False)[0].numpy()
    flux = flux + rng.normal(0, 0.01, flux.shape).astype(np.float32)
    cat = pd.DataFrame({"APOGEE_ID": list(ids), "SNR": 100.0})
    for k, name in enumerate(NAMES):
        cat[name], cat[f"{name}_ERR"], cat[f"TRUE_{name}"] = truth[:, k], 0.01, truth[:, k]
    with SpectraStore.create(path, kind="mock survey") as w:
        w.append(flux, np.full_like(flux, 0.01), np.zeros(flux.shape, np.uint16), cat)
    return emu, truth
