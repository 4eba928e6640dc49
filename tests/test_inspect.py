"""``stellarscope inspect`` on files of every kind, on stores, and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fits_fixtures import (
    truncate_copy,
    write_allstar,
    write_apstar,
    write_apvisit,
    write_aspcapstar,
    write_contspec_trio,
    write_generic,
)

from core import paths
from core.cli.main import main
from core.errors import BadFileError
from core.grid import APOGEE_7514
from core.inspect import format_summary, summarize
from core.store import SpectraStore

REAL_APSTAR = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "apogee_real"
               / "apStar-dr17-2M17335483-2753043.fits")


def _inspect_json(capsys, path) -> dict:
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_real_apstar_summary(capsys):
    if not REAL_APSTAR.exists():
        pytest.skip(f"reference data {REAL_APSTAR} is absent (a fresh clone has no ../shared)")
    s = _inspect_json(capsys, REAL_APSTAR)
    assert s["kind"] == "apstar" and s["object"] == "2M17335483-2753043"
    assert s["pixels"] == 7514 and s["grid"] == "apogee7514"
    assert s["snr"] == pytest.approx(154.16, abs=0.01)
    assert s["wavelength_range"] == pytest.approx([15152.21, 16943.53], abs=0.01)
    assert s["file_normalized"] is False and s["continuum"].startswith("mask")
    # A cool, line-blanketed giant: most pixels sit in absorption, so the median of the
    # normalised flux is below 1 (astroNN's own DR17 mask gives 0.914 on this star).
    assert 0.88 < s["median_normalized_flux"] < 1.0
    assert 0.0 <= s["masked_fraction"] < 0.2


def test_fixture_spectra(tmp_path, capsys):
    a = write_apstar(tmp_path / "apStar-dr17-2M00000001+0000000.fits",
                     apogee_id="2M00000001+0000000", snr=88.0)
    s = _inspect_json(capsys, a)
    assert s["object"] == "2M00000001+0000000" and s["snr"] == 88.0
    assert s["telescope"] == "apo25m" and s["field"] == "TESTFIELD"
    assert s["masked_fraction"] == pytest.approx(20 / 7514, abs=1e-4)  # n_bad=20 flagged pixels

    asp = _inspect_json(capsys, write_aspcapstar(tmp_path / "aspcapStar-dr17-x.fits"))
    assert asp["kind"] == "aspcapstar" and asp["file_normalized"] is True
    assert asp["continuum"].startswith("from the file")
    assert 0.8 < asp["median_normalized_flux"] < 1.02

    vis = _inspect_json(capsys, write_apvisit(tmp_path / "apVisit-x.fits"))
    assert vis["kind"] == "apvisit" and vis["frame"] == "rest" and vis["rv_used"] == -44.4


def test_catalog_and_array_files(tmp_path, capsys):
    ids = [f"2M0000000{i}+0000000" for i in range(5)]
    cat = _inspect_json(capsys, write_allstar(tmp_path / "allStar-dr17-test.fits", ids))
    assert cat["kind"] == "allstar" and cat["n_rows"] == 5 and cat["release"] == 17
    assert "TEFF" in cat["columns"] and cat["unique_apogee_ids"] == 5

    flux, _, _ = write_contspec_trio(tmp_path / "cs", n=3)
    cs = _inspect_json(capsys, flux)
    assert cs["kind"] == "contspec" and cs["n_rows"] == 3 and cs["grid"] == "apogee7514"

    gen = _inspect_json(capsys, write_generic(tmp_path / "mine.npz", n=4))
    assert gen["kind"] == "generic" and gen["n_stars"] == 4 and "TEFF" in gen["columns"]


def test_store_summary_says_mock_survey(capsys):
    out = paths.stores_dir() / "inspect-mock"  # under the tests' private home
    n = 3
    with SpectraStore.create(out, kind="mock survey", sources=["generator"],
                             overwrite=True) as w:
        w.append(np.ones((n, APOGEE_7514.n_pix)), np.full((n, APOGEE_7514.n_pix), 0.01),
                 np.zeros((n, APOGEE_7514.n_pix), np.uint16),
                 pd.DataFrame({"APOGEE_ID": ["a", "b", "c"], "TEFF": [1.0, 2, 3],
                               "TEFF_ERR": [0.1] * 3}))
    assert main(["inspect", "inspect-mock"]) == 0  # a store name resolves under the home
    text = capsys.readouterr().out
    assert "mock survey" in text and "stars" in text and "apogee7514" in text
    s = summarize(out)
    assert s["n_stars"] == 3 and s["label_columns"] == ["TEFF"] and s["sources"] == ["generator"]
    assert "TEFF_ERR" in format_summary(s)


def test_bad_inputs_exit_1_naming_the_file(tmp_path, capsys):
    good = write_apstar(tmp_path / "apStar-dr17-2M00000001+0000000.fits")
    truncated = truncate_copy(good, tmp_path / "apStar-truncated.fits",
                              good.stat().st_size // 3)
    assert main(["inspect", str(truncated)]) == 1
    err = capsys.readouterr().err
    assert f"{truncated}: " in err and "truncated" in err

    assert main(["inspect", str(tmp_path / "absent.fits")]) == 1
    assert f"{tmp_path / 'absent.fits'}: no such file" in capsys.readouterr().err

    text = tmp_path / "notes.fits"
    text.write_text("hello")
    assert main(["inspect", str(text)]) == 1
    assert f"{text}: " in capsys.readouterr().err

    assert main(["inspect", str(tmp_path)]) == 1
    assert "not a Stellarscope store" in capsys.readouterr().err

    with pytest.raises(BadFileError):
        summarize(truncated)
