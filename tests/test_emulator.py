"""Emulator model, persistence, The Payne's npz format, training and its CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from toy_emulator import HI, LO, NAMES, random_emulator, toy_flux  # noqa: E402

from core.errors import BadDataError, BadFileError
from core.grid import APOGEE_7214, APOGEE_7514, PIXMASK_VALUE
from core.models import load as load_any
from core.models.emulator import PRESETS, Emulator, EmulatorConfig, load_emulator, save_emulator
from core.models.payne_format import PAYNE_LABELS, export_payne, import_payne
from core.store import SpectraStore
from core.train.emulator import TrainSettings, available_labels, train_emulator

torch.set_num_threads(1)

def make_toy_store(path, n: int, seed: int = 0, snr: float = 100.0):
    rng = np.random.default_rng(seed)
    labels = LO + rng.random((n, 4)) * (HI - LO)
    flux = toy_flux(labels)
    error = np.full_like(flux, 1 / snr)
    noisy = flux + rng.normal(0, 1 / snr, flux.shape).astype(np.float32)
    cat = pd.DataFrame({"APOGEE_ID": [f"T{i:05d}" for i in range(n)], "SNR": snr})
    for k, name in enumerate(NAMES):
        cat[name] = labels[:, k] + rng.normal(0, 0.001 * (HI[k] - LO[k]), n)
        cat[f"{name}_ERR"] = 0.001 * (HI[k] - LO[k])
        cat[f"TRUE_{name}"] = labels[:, k]
    with SpectraStore.create(path, kind="mock survey") as w:
        w.append(noisy, error, np.zeros(flux.shape, np.uint16), cat)
    return SpectraStore.open(path)


QUICK = TrainSettings(hidden=(24, 24), epochs=6, batch_size=64, lr=3e-3, patience=50)


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    return make_toy_store(tmp_path_factory.mktemp("toy") / "store", 240)


# -- model ------------------------------------------------------------------------------------


def test_scaling_maps_training_range_to_half_unit_box():
    emu = random_emulator()
    assert np.allclose(emu.scale(LO), -0.5) and np.allclose(emu.scale(HI), 0.5)
    x = LO + np.random.default_rng(1).random((5, 4)) * (HI - LO)
    assert np.allclose(emu.unscale(emu.scale(x)), x)
    t = torch.tensor(x)
    assert torch.allclose(emu.unscale(emu.scale(t)), t)


def test_jacobian_matches_autograd():
    emu = random_emulator(hidden=(12, 9, 7))
    x = torch.randn(5, 4) * 0.3
    with torch.no_grad():
        flux, jac = emu.forward_with_jacobian(x)
        _, jac_cols = emu.forward_with_jacobian(x, torch.tensor([0, 2]))
    auto = torch.func.vmap(torch.func.jacfwd(emu))(x)
    assert torch.allclose(flux, emu(x), atol=1e-6)
    assert torch.allclose(jac, auto, atol=1e-5)
    assert torch.allclose(jac_cols, auto[:, :, [0, 2]], atol=1e-5)


def test_predict_accepts_dict_and_checks_label_count():
    emu = random_emulator()
    spec = emu.predict(dict(zip(NAMES, (LO + HI) / 2, strict=True)))
    assert spec.shape == (APOGEE_7514.n_pix,)
    with pytest.raises(BadDataError, match="expected 4 labels"):
        emu.predict(np.zeros(3))
    with pytest.raises(BadDataError, match="labels missing"):
        emu.predict({"TEFF": 5000.0})


def test_config_rejects_empty_or_degenerate_ranges():
    with pytest.raises(BadDataError, match="x_max > x_min"):
        EmulatorConfig(label_names=["TEFF"], x_min=[5000], x_max=[5000])
    with pytest.raises(BadDataError, match="duplicated"):
        EmulatorConfig(label_names=["A", "A"], x_min=[0, 0], x_max=[1, 1])


def test_presets_include_the_payne_network():
    assert PRESETS["payne"] == (300, 300)
    n_params = sum(p.numel() for p in Emulator(EmulatorConfig(
        label_names=[f"L{i}" for i in range(25)], x_min=[0] * 25, x_max=[1] * 25,
        grid="apogee7214")).parameters())
    assert n_params == 25 * 300 + 300 + 300 * 300 + 300 + 300 * 7214 + 7214  # ≈ 2.27 M


def test_save_load_round_trip(tmp_path):
    emu = random_emulator()
    emu.pixel_error = torch.linspace(0, 0.01, emu.n_pix)
    emu.start_bank = torch.tensor(LO + 0.5 * (HI - LO), dtype=torch.float32)[None].repeat(3, 1)
    save_emulator(emu, tmp_path / "m", extra={"note": "x"})
    back = load_emulator(tmp_path / "m")
    generic = load_any(tmp_path / "m")
    x = LO + np.random.default_rng(2).random((4, 4)) * (HI - LO)
    assert np.array_equal(back.predict(x), emu.predict(x))
    assert isinstance(generic, Emulator) and np.array_equal(generic.predict(x), emu.predict(x))
    assert torch.equal(back.pixel_error, emu.pixel_error)
    assert back.start_bank.shape == (3, 4)
    assert back.config.training["note"] == "x"
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["model_type"] == "emulator" and raw["architecture"]["label_names"] == NAMES


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(BadFileError, match="no such model directory"):
        load_emulator(tmp_path / "missing")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(BadFileError, match=str(tmp_path / "m")):
        load_emulator(tmp_path / "m")


# -- The Payne's format -----------------------------------------------------------------------


def test_payne_export_import_reproduces_spectra(tmp_path):
    emu = random_emulator(hidden=PRESETS["payne"])
    with torch.no_grad():  # give the output layer realistic scale
        emu.layers[-1].bias.fill_(1.0)
    out = export_payne(emu, tmp_path / "net.npz")
    back = import_payne(out)
    x = LO + np.random.default_rng(3).random((16, 4)) * (HI - LO)
    assert np.max(np.abs(back.predict(x) - emu.predict(x))) < 1e-6
    assert back.label_names == NAMES and back.grid.name == "apogee7514"
    with np.load(out, allow_pickle=False) as npz:
        assert npz["w_array_0"].shape == (300, 4)  # [out, in], as The Payne stores them
        assert npz["w_array_2"].shape == (APOGEE_7514.n_pix, 300)


def test_payne_file_in_the_upstream_layout_is_read_with_its_label_order(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "w_array_0": rng.normal(size=(8, 25)), "b_array_0": rng.normal(size=8),
        "w_array_1": rng.normal(size=(8, 8)), "b_array_1": rng.normal(size=8),
        "w_array_2": rng.normal(size=(APOGEE_7214.n_pix, 8)) * 0.01,
        "b_array_2": np.ones(APOGEE_7214.n_pix),
        "x_min": np.zeros(25), "x_max": np.arange(1, 26.0),
    }
    np.savez(tmp_path / "upstream.npz", **arrays)
    emu = import_payne(tmp_path / "upstream.npz")
    assert emu.label_names == PAYNE_LABELS and emu.grid.name == "apogee7214"
    x = rng.uniform(0, 1, 25)
    xs = x / arrays["x_max"] - 0.5
    h = np.einsum("ij,j->i", arrays["w_array_0"], xs) + arrays["b_array_0"]
    h = np.where(h > 0, h, 0.01 * h)
    h = np.einsum("ij,j->i", arrays["w_array_1"], h) + arrays["b_array_1"]
    h = np.where(h > 0, h, 0.01 * h)
    ref = np.einsum("ij,j->i", arrays["w_array_2"], h) + arrays["b_array_2"]
    assert np.max(np.abs(emu.predict(x) - ref)) < 1e-5


def test_payne_import_refuses_pickles_and_incomplete_files(tmp_path):
    np.savez(tmp_path / "obj.npz", w_array_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BadFileError, match="obj.npz"):
        import_payne(tmp_path / "obj.npz")
    np.savez(tmp_path / "part.npz", w_array_0=np.zeros((2, 2)))
    with pytest.raises(BadFileError, match="missing .*b_array_0"):
        import_payne(tmp_path / "part.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadFileError, match="junk.npz"):
        import_payne(tmp_path / "junk.npz")


def test_payne_export_needs_two_hidden_layers(tmp_path):
    with pytest.raises(BadDataError, match="2 hidden layers"):
        export_payne(random_emulator(hidden=(8, 8, 8)), tmp_path / "x.npz")


# -- training ---------------------------------------------------------------------------------


def test_training_records_ranges_validation_error_and_best_epoch(toy_store, tmp_path):
    record = train_emulator(toy_store, tmp_path / "m", QUICK, progress=False)
    emu = load_emulator(tmp_path / "m")
    assert emu.label_names == available_labels(toy_store) == NAMES
    labels = toy_store.catalog[NAMES].to_numpy()
    lo, hi = emu.bounds
    assert np.all(lo >= labels.min(0) - 1e-9) and np.all(hi <= labels.max(0) + 1e-9)
    assert record["n_train"] + record["n_val"] == len(toy_store)
    losses = [h["val"] for h in record["history"]]
    assert record["best_val_loss"] == min(losses) < losses[0]
    # epochs count from 1, as in training_log.csv
    assert record["best_epoch"] == record["history"][int(np.argmin(losses))]["epoch"]
    assert [h["epoch"] for h in record["history"]] == list(range(1, 7))
    err = emu.pixel_error.numpy()
    assert err.shape == (APOGEE_7514.n_pix,) and np.all(err >= 0) and err.max() > 0
    assert emu.start_bank.shape[1] == 4


def test_training_ignores_masked_pixels(tmp_path):
    clean = make_toy_store(tmp_path / "clean", 120, seed=5)
    batch = clean.read_all()
    rng = np.random.default_rng(0)
    bad = rng.random(batch.flux.shape) < 0.1
    flux = np.where(bad, 1e6, batch.flux).astype(np.float32)
    mask = np.where(bad, PIXMASK_VALUE["BADPIX"], 0).astype(np.uint16)
    with SpectraStore.create(tmp_path / "dirty", kind="mock survey") as w:
        w.append(flux, batch.error, mask, clean.catalog)
    q = TrainSettings(hidden=(8, 8), epochs=2, batch_size=32)
    with SpectraStore.create(tmp_path / "masked", kind="mock survey") as w:
        w.append(batch.flux, batch.error, mask, clean.catalog)
    train_emulator(tmp_path / "dirty", tmp_path / "a", q, progress=False)
    train_emulator(tmp_path / "masked", tmp_path / "b", q, progress=False)
    a, b = load_emulator(tmp_path / "a"), load_emulator(tmp_path / "b")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_default_labels_follow_the_issue_list(tmp_path):
    def store_with(columns):
        cat = pd.DataFrame({"APOGEE_ID": ["A", "B"]})
        for c in columns:
            cat[c], cat[f"{c}_ERR"] = [1.0, 2.0], 0.1
        cat["SNR"] = 100.0
        flux = np.ones((2, APOGEE_7514.n_pix), np.float32)
        path = tmp_path / "_".join(columns)
        with SpectraStore.create(path) as w:
            w.append(flux, flux * 0.01, np.zeros(flux.shape, np.uint16), cat)
        return SpectraStore.open(path)

    both = store_with(["MG_FE", "M_H", "FE_H", "LOGG", "TEFF", "VMICRO", "CE_H"])
    assert available_labels(both) == ["TEFF", "LOGG", "FE_H", "VMICRO", "MG_FE", "CE_H"]
    only_mh = store_with(["TEFF", "LOGG", "M_H", "AL_FE"])
    assert available_labels(only_mh) == ["TEFF", "LOGG", "M_H", "AL_FE"]


def test_training_with_truth_labels_and_clear_errors(toy_store, tmp_path):
    s = TrainSettings(hidden=(8, 8), epochs=1, labels=["TEFF", "LOGG"], labels_from="truth")
    train_emulator(toy_store, tmp_path / "t", s, progress=False)
    assert load_emulator(tmp_path / "t").label_names == ["TEFF", "LOGG"]
    with pytest.raises(BadDataError, match="no column"):
        train_emulator(toy_store, tmp_path / "u", TrainSettings(labels=["NOPE"], epochs=1),
                       progress=False)


# -- CLI --------------------------------------------------------------------------------------


def test_cli_train_export_import_round_trip(toy_store, tmp_path, capsys):
    from core.cli.main import main

    model = tmp_path / "emu"
    assert main(["train", "emulator", "--store", str(toy_store.path), "--out", str(model),
                 "--hidden", "8,8", "--epochs", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["labels"] == NAMES and summary["n_val"] > 0
    assert main(["train", "emulator", "--store", str(toy_store.path), "--out", str(model),
                 "--epochs", "1"]) == 1  # refuses to overwrite
    npz = tmp_path / "emu.npz"
    assert main(["export-payne", str(model), str(npz)]) == 0
    assert main(["import-payne", str(npz), str(tmp_path / "back")]) == 0
    a, b = load_emulator(model), load_emulator(tmp_path / "back")
    x = LO + np.random.default_rng(4).random((8, 4)) * (HI - LO)
    assert np.max(np.abs(a.predict(x) - b.predict(x))) < 1e-6
