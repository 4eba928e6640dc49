"""core.fit.interactive: the numbers behind the Fit view's sliders, drawn mask and command."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from toy_emulator import HI, LO, NAMES, random_emulator

from core.fit.interactive import (
    LabelExplorer,
    catalog_start,
    clip_labels,
    element_lines,
    emulator_of,
    fit_command,
    fittable_elements,
    set_range,
    slider_specs,
    window_span,
)
from core.grid import APOGEE_7514

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def emu():
    return random_emulator()


def test_sliders_span_the_training_box_then_the_rv(emu):
    specs = slider_specs(emu)
    assert [s.name for s in specs] == [*NAMES, "RV"]
    np.testing.assert_allclose([s.start for s in specs[:-1]], LO)
    np.testing.assert_allclose([s.end for s in specs[:-1]], HI)
    assert specs[0].digits == 0 and specs[1].digits == 3 and specs[-1].start == -300
    clipped = clip_labels(emu, {"TEFF": 99999.0, "LOGG": 2.0})
    assert clipped["TEFF"] == HI[0] and clipped["LOGG"] == 2.0
    assert clipped["FE_H"] == pytest.approx((LO[2] + HI[2]) / 2)  # missing: mid-range


def test_catalog_start_skips_missing_values():
    meta = {"TEFF": 4800.0, "LOGG": -9999.0, "FE_H": np.nan, "MG_FE": "x"}
    assert catalog_start(meta, NAMES) == {"TEFF": 4800.0}


def test_explorer_matches_the_emulator_at_rest_and_shifts_with_rv(emu):
    labels = dict(zip(NAMES, (LO + HI) / 2, strict=True))
    explorer = LabelExplorer(emu)
    rest = explorer.spectrum(labels, 0.0)
    with torch.no_grad():
        direct = emu(torch.tensor(emu.scale((LO + HI) / 2)[None], dtype=torch.float32))
    np.testing.assert_allclose(rest, direct[0].numpy(), atol=1e-5)
    assert not np.allclose(explorer.spectrum(labels, 50.0), rest)


def test_drawn_ranges_in_either_order(emu):
    lam = APOGEE_7514.wavelength
    mask = np.zeros(lam.size, bool)
    assert set_range(mask, lam, lam[20], lam[10]) == 11
    assert set_range(mask, lam, lam[10], lam[20]) == 0  # already masked
    assert set_range(mask, lam, lam[15], lam[30], masked=False) == 6
    assert np.flatnonzero(mask).tolist() == list(range(10, 15))


def test_elements_lines_and_windows(emu):
    windows = pd.DataFrame({"element": ["Mg", "Mg", "Ca"], "start_vac": [15700.0, 15740.0, 16000.0],
                            "end_vac": [15705.0, 15745.0, 16004.0]})
    assert fittable_elements(emu, windows) == ["Mg"]  # no CA_FE label
    assert fittable_elements(emu, None) == []
    lines = pd.DataFrame({"wavelength_vac": [15700.0, 15800.0, 16000.0],
                          "kind": ["atomic", "molecular", "atomic"],
                          "element": ["Mg", "Mg", "Fe"]})
    sub, labels = element_lines(lines, emu, ["Mg", "Fe"])
    assert sub["wavelength_vac"].tolist() == [15700.0, 16000.0] and labels == ["MG_FE", "FE_H"]
    lo, hi = window_span([(15700.0, 15705.0), (15740.0, 15745.0)])
    assert lo == pytest.approx(15700.0 - 4.5) and hi == pytest.approx(15745.0 + 4.5)


def test_the_command_that_repeats_a_fit():
    cmd = fit_command(model_dir="/m/emu", store="/s", star="2M+1", continuum="degree 1",
                      fit_rv=False, element="Mg", mask_file="2M_fit_mask.csv")
    assert cmd == ("stellarscope fit --model /m/emu --store /s --star 2M+1 --continuum 1 "
                   "--rv 0 --element Mg --mask 2M_fit_mask.csv")
    assert fit_command(file="/tmp/up/apStar x.fits") == "stellarscope fit --file 'apStar x.fits'"


def test_the_emulator_inside_a_predictor(emu):
    assert emulator_of(emu) is emu and emulator_of(None) is None
    assert emulator_of(SimpleNamespace(emulator=emu)) is emu
    with pytest.raises(TypeError, match="holds no emulator"):
        emulator_of(SimpleNamespace(model=None))
