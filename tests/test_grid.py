import numpy as np
import pytest
from reference import shared_path

from core import grid as G


def test_apstar_grid_formula_and_ends():
    lam = G.apstar_wavelength()
    assert lam.size == 8575
    assert lam[0] == pytest.approx(15100.80, abs=0.01)
    assert lam[-1] == pytest.approx(16999.81, abs=0.01)
    assert np.allclose(np.log10(lam), 4.179 + 6e-6 * np.arange(8575))
    assert G.KMS_PER_PIXEL == pytest.approx(4.142, abs=0.002)


def test_gap_removed_grids():
    assert G.APOGEE_7514.n_pix == 7514
    assert G.APOGEE_7214.n_pix == 7214
    assert [s.stop - s.start for s in G.APOGEE_7514.chip_slices()] == [3028, 2495, 1991]
    assert [s.stop - s.start for s in G.APOGEE_7214.chip_slices()] == [2920, 2400, 1894]
    w = G.APOGEE_7514.wavelength
    assert w[0] == pytest.approx(15152.21, abs=0.01) and w[-1] == pytest.approx(16943.53, abs=0.01)
    assert G.get_grid(7514) is G.APOGEE_7514 and G.get_grid("apogee7214") is G.APOGEE_7214
    with pytest.raises(KeyError):
        G.get_grid(1234)


def test_7514_grid_matches_reference_csv():
    ref = np.loadtxt(shared_path("data", "reference", "apogee_wavelength_7514.csv"), delimiter=",",
                     ndmin=1)
    ref = ref.ravel()
    assert ref.size == 7514
    assert np.allclose(G.APOGEE_7514.wavelength, ref, rtol=0, atol=1e-3)


def test_apstar_roundtrip_and_pixel_lookup():
    g = G.APOGEE_7514
    full = np.arange(8575, dtype=float)
    sub = g.from_apstar(full)
    assert np.array_equal(sub, g.index)
    back = g.to_apstar(sub, fill=-1)
    assert back[0] == -1 and back[246] == 246 and back[3274] == -1
    assert g.pixel_of(g.wavelength[[0, 3028, 7513]]).tolist() == [0, 3028, 7513]
    assert g.pixel_of(G.apstar_wavelength(3300)) == -1  # in the blue-green gap
    assert g.chip_of([0, 3027, 3028, 5523, 7513]).tolist() == [0, 0, 1, 2, 2]
    with pytest.raises(ValueError):
        g.from_apstar(np.zeros(100))


def test_velocity_per_pixel_constant():
    dv = G.velocity_per_pixel(G.APOGEE_7514)
    assert np.allclose(dv, G.KMS_PER_PIXEL, rtol=1e-9)
    assert G.doppler_factor(0.0) == 1.0
    assert G.doppler_factor(G.KMS_PER_PIXEL) == pytest.approx(10**6e-6, rel=1e-8)


def test_air_vacuum():
    # Known H-band conversion: vacuum 16000 Å is about 4.37 Å longer than in air
    assert 16000 - G.vac_to_air(16000.0) == pytest.approx(4.37, abs=0.02)
    lam = np.linspace(15100, 17000, 50)
    assert np.allclose(G.air_to_vac(G.vac_to_air(lam)), lam, atol=1e-8)


def test_pixmask_bit_sets():
    assert G.bitmask_value(G.ASTRONN_BAD_BITS) == 4351
    assert G.bitmask_value(G.PIPELINE_BAD_BITS) == 16639
    m = np.array([0, 1 << 12, 1 << 14, 1 << 9])
    assert G.bad_pixels(m).tolist() == [False, True, False, False]
    assert G.bad_pixels(m, "pipeline").tolist() == [False, False, True, False]
    assert G.bad_pixels(m, ["PERSIST_HIGH"]).tolist() == [False, False, False, True]
    assert G.decode_pixmask(4097) == ["BADPIX", "SIG_SKYLINE"]
    with pytest.raises(KeyError):
        G.resolve_bad_bits("nonsense")
