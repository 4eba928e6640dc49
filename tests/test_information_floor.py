"""The label-information floor of a mock star (core.evaluate.information)."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import BadDataError
from core.evaluate.information import cramer_rao, oracle_fit, synthesis_jacobian
from core.grid import get_grid
from core.mock.populations import draw_labels
from core.mock.synth import noiseless_flux

NAMES = ["TEFF", "LOGG", "FE_H", "VMICRO"]
GRID = get_grid("apogee7514")


@pytest.fixture(scope="module")
def star():
    cat = draw_labels(50, seed=11)
    giant = cat[(cat["TRUE_LOGG"] < 3.0) & (cat["TRUE_TEFF"] > 4300)].iloc[0]
    return giant[[c for c in cat.columns if c.startswith("TRUE_")]]


def test_the_bound_scales_with_the_noise_and_flags_labels_the_spectrum_ignores(star):
    truth = star.copy()
    truth["TRUE_UNUSED"] = 0.0  # the synthesis never reads it
    _, jac = synthesis_jacobian(truth, NAMES + ["UNUSED"], GRID, "apogee")
    error = np.full(GRID.n_pix, 0.01)
    good = np.ones(GRID.n_pix, bool)
    one = cramer_rao(jac, error, good)
    two = cramer_rao(jac, 2 * error, good)
    assert np.all(np.isfinite(one[:4])) and np.isnan(one[4])
    np.testing.assert_allclose(two[:4], 2 * one[:4], rtol=1e-9)
    # fewer pixels, less information
    half = good.copy()
    half[::2] = False
    assert np.all(cramer_rao(jac, error, half)[:4] > one[:4])


def test_the_oracle_recovers_the_truth_and_scatters_as_the_bound_says(star):
    flux0 = noiseless_flux(star.to_frame().T, GRID, physics="apogee")[0].astype(np.float64)
    error = np.full(GRID.n_pix, 1 / 60)  # S/N 60: σ_CR well above the finite-difference error
    good = np.ones(GRID.n_pix, bool)
    theta, sigma, chi2 = oracle_fit(flux0, error, good, star, NAMES, GRID, "apogee")
    truth = star[[f"TRUE_{n}" for n in NAMES]].to_numpy(float)
    assert np.all(np.abs(theta - truth) < 0.02 * sigma)  # noiseless: the truth itself
    assert chi2 < 1e-3
    rng = np.random.default_rng(3)
    fits = np.array([oracle_fit(flux0 + rng.normal(0, error), error, good, star, NAMES, GRID,
                                "apogee", iterations=2)[0] for _ in range(40)])
    spread = fits.std(0, ddof=1)
    # 40 draws: a sample σ lies within ±35 % of the true one with > 99 % probability
    np.testing.assert_allclose(spread, sigma, rtol=0.35)


def test_bad_input_is_refused(star):
    _, jac = synthesis_jacobian(star, NAMES, GRID, "apogee")
    with pytest.raises(BadDataError, match="good pixels"):
        cramer_rao(jac, np.full(GRID.n_pix, 0.01), np.zeros(GRID.n_pix, bool))
    with pytest.raises(BadDataError, match="TRUE_"):
        synthesis_jacobian(star.rename(lambda c: c.replace("TRUE_", "")), NAMES, GRID, "apogee")
    with pytest.raises(BadDataError, match="NOPE"):
        synthesis_jacobian(star, ["NOPE"], GRID, "apogee")


def test_the_oracle_stays_inside_the_synthesisers_range_and_never_raises_chi2(star):
    """Lines cubed at 2,600 K ask for a far cooler star than the synthesis can make (a full
    Gauss–Newton step in Teff alone goes ~900 K down): the iterate stops at the range's
    edge, and χ² does not rise."""
    from core.evaluate.information import ORACLE_TEFF_RANGE

    cool = star.copy()
    cool["TRUE_TEFF"] = 2600.0
    start = noiseless_flux(cool.to_frame().T, GRID, physics="apogee")[0].astype(np.float64)
    flux = start ** 3
    error = np.full(GRID.n_pix, 0.01)
    good = np.ones(GRID.n_pix, bool)
    theta, _, chi2 = oracle_fit(flux, error, good, cool, ["TEFF"], GRID, "apogee", iterations=3)
    assert ORACLE_TEFF_RANGE[0] <= theta[0] <= ORACLE_TEFF_RANGE[1]
    assert chi2 <= (((flux - start) / error) ** 2).sum() / (GRID.n_pix - 1)
