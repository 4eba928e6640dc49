"""The README's "Fitting your own APOGEE stars" path, end to end, on a small fixture release:
ingest an allStar + aspcapStar tree, train an emulator on the store's ASPCAP labels, fit the
held-out stars and compare with ASPCAP, fit one file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.cli.main import main
from tests.survey_fixture import write_fixture_survey

LABELS = ["TEFF", "LOGG", "FE_H"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    allstar, spectra, labels = write_fixture_survey(root / "dr17", n=150, seed=3)
    store, model = root / "store", root / "emulator"
    assert main(["ingest", "--allstar", str(allstar), "--spectra-dir", str(spectra),
                 "--out", str(store), "--no-progress"]) == 0
    assert main(["train", "emulator", "--store", str(store), "--out", str(model),
                 "--labels", ",".join(LABELS), "--val-fraction", "0.2", "--epochs", "600",
                 "--hidden", "64,64", "--seed", "1"]) == 0
    return root, store, model, labels


def test_held_out_stars_are_recorded_and_not_trained_on(release):
    root, store, model, labels = release
    held = (model / "held_out_ids.txt").read_text().split()
    assert len(held) == 30 and len(set(held)) == 30
    assert set(held) <= set(labels.APOGEE_ID)
    config = json.loads((model / "config.json").read_text())
    assert config["training"]["n_val"] == 30 and config["training"]["n_train"] == 120


def test_compare_with_aspcap_on_held_out_stars(release, capsys):
    root, store, model, labels = release
    out = root / "eval"
    assert main(["evaluate", "emulator", "--store", str(store), "--model", str(model),
                 "--held-out", "--reference", "catalog", "--out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["held_out"] and record["n_stars"] == 30 and record["reference"] == "catalog"
    assert not (model / "calibration.json").exists()  # nothing written into the model
    overall = record["accuracy"][0]
    assert overall["snr_bin"] == "all" and overall["n_stars"] == 30
    assert sum(r["n_stars"] for r in record["accuracy"][1:]) == 30
    # a data-driven emulator from 120 stars must beat guessing the catalog mean by far
    for name in LABELS:
        spread = 1.4826 * np.median(np.abs(labels[name] - labels[name].median()))
        assert overall[name]["scatter"] < 0.3 * spread, (name, overall[name], spread)
        assert abs(overall[name]["bias"]) < 0.15 * spread, (name, overall[name])


def test_fit_one_file_of_the_release(release, capsys):
    root, store, model, labels = release
    held = (model / "held_out_ids.txt").read_text().split()
    star = labels.set_index("APOGEE_ID").loc[held[0]]
    path = next((root / "dr17" / "spectra").rglob(f"aspcapStar-dr17-{held[0]}.fits"))
    assert main(["fit", "--file", str(path), "--model", str(model), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["star"] == held[0]
    assert abs(result["labels"]["TEFF"] - star.TEFF) < 500
    assert abs(result["labels"]["FE_H"] - star.FE_H) < 0.3
    assert result["catalog"]["TEFF"] == pytest.approx(star.TEFF, abs=1)


def test_held_out_needs_the_list(release, tmp_path, capsys):
    root, store, model, labels = release
    import shutil

    copy = tmp_path / "old-emulator"
    shutil.copytree(model, copy)
    (copy / "held_out_ids.txt").unlink()
    assert main(["evaluate", "emulator", "--store", str(store), "--model", str(copy),
                 "--held-out", "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert "held_out_ids.txt" in err and "held-out star list" in err
