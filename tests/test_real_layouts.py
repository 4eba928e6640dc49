"""Every APOGEE DR17 file layout reads, inspects, fits and uploads.

Synthetic files in each layout (tests/fits_fixtures.py) go through ``stellarscope inspect``,
``stellarscope fit --file --json`` with the shipped demo emulator, and the app's upload
parser; the real files in ../shared/data/apogee_real do the same when present.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fits_fixtures import write_apstar, write_apstar_dr17, write_apvisit, write_aspcapstar

from core.cli.main import main
from core.paths import SHIPPED_MODELS
from core.preprocess.policy import prepare_file_spectrum

DEMO = SHIPPED_MODELS / "emulator-demo"
REAL = ("apStar-dr17-2M17335483-2753043.fits", "apVisit-r13-5095-55844-128.fits")
ID = "2M17335483-2753043"

#: layout name → (writer, expected ROW_KIND or None for readers without rows)
LAYOUTS = {
    "apstar_dr17_single_two_rows": (lambda p: write_apstar_dr17(p, n_visits=1), "single visit"),
    "apstar_dr17_single_one_row": (lambda p: write_apstar_dr17(p, n_visits=1, n_rows=1),
                                   "single visit"),
    "apstar_dr17_multi": (lambda p: write_apstar_dr17(p, n_visits=3),
                          "combined (global weighting)"),
    "apstar_1d": (lambda p: write_apstar(p, n_visits=1), "single visit"),
    "apvisit": (lambda p: write_apvisit(p), None),
    "aspcapstar": (lambda p: write_aspcapstar(p), None),
}
_PREFIX = {"apvisit": "apVisit-dr17-5095-55844-128", "aspcapstar": f"aspcapStar-dr17-{ID}"}


def _write(tmp_path, layout):
    name = _PREFIX.get(layout, f"apStar-dr17-{ID}") + ".fits"
    writer, _ = LAYOUTS[layout]
    return writer(tmp_path / name)


@pytest.fixture(scope="module")
def demo_model():
    assert (DEMO / "config.json").is_file(), f"the shipped demo emulator is missing at {DEMO}"
    return DEMO


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_inspect_every_layout(tmp_path, capsys, layout):
    path = _write(tmp_path, layout)
    assert main(["inspect", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["what"] == "spectrum" and s["pixels"] == 7514
    # the fixtures' random line list falls on some shipped continuum pixels: ≈ 1, not exactly
    assert 0.7 < s["median_normalized_flux"] < 1.4
    assert s["masked_fraction"] < 0.2
    kind = LAYOUTS[layout][1]
    if kind is not None:
        assert s["row_kind"] == kind


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fit_file_every_layout(tmp_path, capsys, demo_model, layout):
    path = _write(tmp_path, layout)
    assert main(["fit", "--model", str(demo_model), "--file", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pix"] > 5000 and np.isfinite(out["chi2_nu"])
    assert all(v is not None and np.isfinite(v) for v in out["labels"].values())
    # a synthetic line list the demo emulator never saw: a mismatch, reported as one
    if out["chi2_nu"] > 3:
        assert "MODEL_MISMATCH" in out["flag_names"]


def test_single_visit_row_one_is_never_used(tmp_path):
    """DR17's all-zero second row of a single-visit apStar is skipped, wherever it sits."""
    path = write_apstar_dr17(tmp_path / "apStar-a.fits", n_visits=1)
    spec = prepare_file_spectrum(path)
    assert spec.meta["ROW"] == 0 and "row 1 all zero" in spec.meta["ROW_NOTE"]
    swapped = write_apstar_dr17(tmp_path / "apStar-b.fits", n_visits=1, empty_rows=(0,))
    spec = prepare_file_spectrum(swapped)
    assert spec.meta["ROW"] == 1 and np.median(spec.flux[spec.good()]) > 0.5


def test_multi_visit_with_empty_global_row_uses_pixel_weighted_row(tmp_path):
    path = write_apstar_dr17(tmp_path / "apStar-c.fits", n_visits=3, empty_rows=(1,))
    spec = prepare_file_spectrum(path)
    assert spec.meta["ROW"] == 0 and spec.meta["ROW_KIND"] == "combined (pixel weighting)"


def test_upload_accepts_the_single_visit_layout(tmp_path):
    """The app's upload parser (core.io + the file policy) takes DR17's two-row single visit."""
    from dashboard.views.upload import read_upload

    path = write_apstar_dr17(tmp_path / "x.fits", n_visits=1, seed=3)
    name = f"apStar-dr17-{ID}.fits"
    spec = read_upload(name, path.read_bytes())
    assert spec.normalized and spec.meta["SOURCE"] == name
    assert spec.meta["ROW_KIND"] == "single visit" and spec.meta["ROW"] == 0
    good = spec.good()
    assert good.sum() > 7000 and 0.7 < np.median(spec.flux[good]) < 1.4


# --- the real files -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL)
def test_real_files_inspect_and_fit(capsys, demo_model, name):
    from reference import shared_path

    path = shared_path("data", "apogee_real", name)
    assert main(["inspect", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["pixels"] == 7514
    assert main(["fit", "--model", str(demo_model), "--file", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pix"] > 5000 and np.isfinite(out["chi2_nu"])
    if out["chi2_nu"] > 3:
        assert "MODEL_MISMATCH" in out["flag_names"]


def test_real_apstar_uses_the_global_weighted_combination():
    from reference import shared_path

    spec = prepare_file_spectrum(shared_path("data", "apogee_real", REAL[0]))
    assert spec.meta["ROW"] == 1 and spec.meta["ROW_KIND"] == "combined (global weighting)"
    assert "globally weighted" in spec.meta["ROW_NOTE"] and spec.meta["VISITS_IN_FILE"] == 3
