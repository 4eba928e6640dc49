"""The swap check (core.evaluate.swap): decoded spectra follow the injected labels or not.

A small linear world: spectra = A·labels + B·nuisance + noise.  An *honest* model's latents
hold the nuisance only and its decoder uses the labels it is given: the swap slope is 1.  A
*leaky* model's latents also hold the labels and its decoder takes half of each label from
them: decoded with star B's labels, its spectra sit half-way to star A's, slope ½.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from core.evaluate.swap import swap_check

torch.set_num_threads(1)
N, P = 900, 120
NAMES = ("TEFF", "LOGG", "FE_H")


class FakeStore:
    """What swap_check reads of a store: a catalog and ``read(rows)``."""

    def __init__(self, flux, catalog):
        self.flux, self.catalog = flux, catalog

    def read(self, rows):
        rows = np.asarray(rows)
        f = self.flux[rows]
        return SimpleNamespace(flux=f, error=np.full_like(f, 0.01),
                               pixmask=np.zeros(f.shape, np.uint16), rows=rows)


class LinearVAE:
    """encode/decode of a linear world; ``leak`` is the share of each label the decoder
    takes from the latents instead of from its label input."""

    def __init__(self, a, b, leak: float):
        self.a, self.b, self.leak = torch.as_tensor(a), torch.as_tensor(b), leak
        self.config = SimpleNamespace(label_names=NAMES)

    def eval(self):
        return self

    def scale_labels(self, labels):
        return torch.as_tensor(labels, dtype=torch.float64)

    def standardise_flux(self, flux, good):
        return torch.where(good, flux, torch.zeros((), dtype=flux.dtype))

    def encode(self, flux, good, y):
        # recover labels and nuisance exactly from the noiseless part by least squares
        m = torch.cat([self.a, self.b], 0).to(flux.dtype)  # (3 + 2, P)
        coef = torch.linalg.lstsq(m.T, flux.T).solution.T  # (n, 5)
        lat = coef[:, 3:] if self.leak == 0 else coef  # leaky latents also hold the labels
        return lat, torch.zeros_like(lat)

    def decode(self, z, u):
        z, u = z.double(), u.double()
        lab = u if self.leak == 0 else (1 - self.leak) * u + self.leak * z[:, :3]
        return lab @ self.a + z[:, -2:] @ self.b


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(5)
    y = rng.normal(size=(N, 3))
    c = rng.normal(size=(N, 2))
    a, b = rng.normal(size=(3, P)), rng.normal(size=(2, P))
    flux = (y @ a + c @ b + 0.01 * rng.normal(size=(N, P))).astype(np.float32)
    cat = pd.DataFrame({"APOGEE_ID": [f"S{i}" for i in range(N)],
                        **{n: y[:, j] for j, n in enumerate(NAMES)}})
    return FakeStore(flux, cat), y, a, b


@pytest.mark.parametrize("leak, lo, hi", [(0.0, 0.93, 1.07), (0.5, 0.4, 0.6)])
def test_swap_slope_is_one_for_an_honest_decoder_and_lower_for_leaky_latents(world, leak, lo,
                                                                              hi):
    store, y, a, b = world
    model = LinearVAE(a, b, leak)
    res = swap_check(model, store, np.arange(N), y, np.zeros_like(y), bad_bits="astronn",
                     floor=0.0, device="cpu", seed=0, max_stars=N, n_components=8)
    assert res["n_pairs"] == N - N // 2
    assert res["reader_targets"] == list(NAMES)  # no TRUE_* columns: the catalog labels
    for name in NAMES:
        assert res["reader_r2"][name] > 0.95, res  # the reader itself works
        assert lo < res["swap_slope"][name] < hi, (leak, res["swap_slope"])


def test_swap_check_refuses_too_few_stars(world):
    store, y, a, b = world
    res = swap_check(LinearVAE(a, b, 0.0), store, np.arange(50), y, np.zeros_like(y),
                     bad_bits="astronn", floor=0.0, device="cpu")
    assert "skipped" in res
