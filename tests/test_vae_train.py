"""Training the VAE: data alignment, the split, learning, exact resume, init-from, DDP."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from core.train import data as D
from core.train.checkpoint import load_checkpoint
from core.train.synthetic import synthetic_store
from core.train.vae import TrainingSetupError, VAETrainSettings, train_vae

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("vae-train") / "syn", n=240, seed=3)


def settings(store, out, **kw) -> VAETrainSettings:
    base = {"store": str(store.path), "out": str(out), "epochs": 2, "batch_size": 32,
            "encoder_widths": [16, 8], "warmup_steps": 2, "val_fraction": 0.2,
            "progress": False, "stats_rows": 200, "lr": 5e-3}
    return VAETrainSettings(**{**base, **kw})


def test_batches_keep_each_spectrum_with_its_mask_errors_and_labels(store):
    labels, errs = D.label_arrays(store.catalog)
    rows = np.arange(10, 200)
    for source in (D.MemorySource.from_store(store, rows, labels, errs, torch.device("cpu"), 25),
                   D.StoreSource(store, rows, labels, errs, torch.device("cpu"), 25, block=2)):
        seen = []
        for batch in source.batches(epoch=3):
            r = batch["rows"].numpy()
            seen.append(r)
            ref = store.read(r)
            good = D.good_pixels(ref.flux, ref.error, ref.pixmask)
            assert np.array_equal(batch["weight"].numpy() > 0, good)
            assert np.allclose(batch["flux"].numpy()[good], ref.flux[good])
            # core.chi2: the floor adds in quadrature
            assert np.allclose(batch["weight"].numpy()[good], 1 / (ref.error[good] ** 2 + 0.005**2))
            assert np.array_equal(batch["labels"].numpy(), labels[r])
        seen = np.concatenate(seen)
        assert not np.array_equal(seen, np.sort(seen))  # shuffled …
        assert len(np.unique(seen)) == len(seen) == 175  # … without repeats; last partial dropped


def test_epoch_order_is_reproducible_and_sharded_evenly():
    a = D.epoch_chunks(103, 10, world=2, rank=0, epoch=4, seed=1, shuffle=True, drop_last=True)
    b = D.epoch_chunks(103, 10, world=2, rank=1, epoch=4, seed=1, shuffle=True, drop_last=True)
    assert len(a) == len(b) == 5 and all(len(x) == 10 for x in a + b)
    assert not set(np.concatenate(a)) & set(np.concatenate(b))
    again = D.epoch_chunks(103, 10, world=2, rank=0, epoch=4, seed=1, shuffle=True, drop_last=True)
    assert all(np.array_equal(x, y) for x, y in zip(a, again, strict=True))
    val = D.epoch_chunks(3, 10, world=2, rank=1, epoch=0, seed=1, shuffle=False, drop_last=False)
    assert [list(c) for c in val] == [[1]]


def test_split_is_by_star_and_stable():
    cat = pd.DataFrame({"APOGEE_ID": [f"2M{i % 50:05d}" for i in range(200)]})
    split = D.split_rows(cat, np.arange(200), 0.3, seed=7)
    ids = cat["APOGEE_ID"].to_numpy()
    assert not set(ids[split.train]) & set(ids[split.validation])
    assert 0.1 < len(split.validation) / 200 < 0.5
    shuffled = D.split_rows(cat.iloc[::-1].reset_index(drop=True), np.arange(200), 0.3, seed=7)
    assert set(ids[split.validation]) == set(cat.iloc[::-1]["APOGEE_ID"].to_numpy()[shuffled.validation])


def test_short_training_lowers_validation_loss_and_writes_a_run(store, tmp_path):
    summary = train_vae(settings(store, tmp_path / "run", epochs=4))
    assert not (tmp_path / "run" / "TRAINING_RUNNING").exists()  # the run marker is gone
    log = pd.read_csv(tmp_path / "run" / "training_log.csv")
    assert list(log["epoch"]) == [1, 2, 3, 4]
    assert log["val_total"].iloc[-1] < 0.95 * log["val_total"].iloc[0]
    assert log["val_total"].is_monotonic_decreasing
    for term in ("recon", "kl", "mi", "kl_term", "sep_term", "chi2_nu"):
        assert np.isfinite(log[f"train_{term}"]).all() and np.isfinite(log[f"val_{term}"]).all()
    for name in ("config.json", "model.safetensors", "loss_curves.png", "checkpoints/last.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    assert summary["best"]["epoch"] == int(log.loc[log["val_total"].idxmin(), "epoch"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["n_train"] == summary["n_train"]
    assert config["decorrelation"]["max_abs_corr_after"] < 1e-3
    # the validation stars' χ²_ν and latent percentiles, as the catalog columns would hold them
    from core.inference.predictor import SpectraBatch
    from core.inference.vae import VAEPredictor
    from core.models.applicability import judge, reference

    app = config["training"]["applicability"]
    assert app["n_stars"] == summary["n_validation"] and len(app["latents"]) == 28
    assert app["vae_chi2"] == sorted(app["vae_chi2"]) and app["vae_chi2"][2] > 0
    pred = VAEPredictor.load(tmp_path / "run")
    rows = np.arange(len(store))
    chi2 = pred.predict_batch(SpectraBatch.from_store(store, store.read(rows))).columns["VAE_CHI2"]
    assert app["vae_chi2"][0] >= chi2.min() - 1e-6 and app["vae_chi2"][-1] <= chi2.max() + 1e-6
    ref = reference(tmp_path / "run")
    assert ref["source"] == "saved with the model"
    assert judge(ref, vae_chi2=app["vae_chi2"][2]) == []
    assert any("χ²_ν" in r for r in judge(ref, vae_chi2=50 * app["vae_chi2"][-1]))
    with pytest.raises(TrainingSetupError, match="--resume"):
        train_vae(settings(store, tmp_path / "run"))
    with pytest.raises(TrainingSetupError, match="batch-size"):
        train_vae(settings(store, tmp_path / "small", batch_size=24))


def _state(path):
    return load_checkpoint(path)


def test_resume_continues_exactly_like_an_uninterrupted_run(store, tmp_path, monkeypatch):
    train_vae(settings(store, tmp_path / "full", epochs=3))

    import core.train.trainer as trainer  # the shared loop runs the epochs

    real, calls = trainer.train_epoch, []

    def interrupted(*args, **kw):  # Ctrl-C half-way through the third epoch
        calls.append(1)
        if len(calls) == 3:
            batches = iter(args[1])
            next(batches)
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_vae(settings(store, tmp_path / "cut", epochs=3))
    monkeypatch.setattr(trainer, "train_epoch", real)
    assert _state(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 2
    train_vae(settings(store, tmp_path / "cut", epochs=3), resume=True, given={})
    full = _state(tmp_path / "full" / "checkpoints" / "last.pt")
    cut = _state(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert full["epoch"] == cut["epoch"] == 3 and full["step"] == cut["step"]
    for k, v in full["model"].items():
        assert torch.equal(v, cut["model"][k]), k
    a = pd.read_csv(tmp_path / "full" / "training_log.csv").drop(columns=["seconds",
                                                                            "train_spectra_per_s"])
    b = pd.read_csv(tmp_path / "cut" / "training_log.csv").drop(columns=["seconds",
                                                                           "train_spectra_per_s"])
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(TrainingSetupError, match="init-from"):
        train_vae(settings(store, tmp_path / "cut", epochs=4), resume=True,
                  given={"epochs": 4, "beta": 5.0})


def test_init_from_starts_from_saved_weights_with_new_weights(store, tmp_path):
    train_vae(settings(store, tmp_path / "base", epochs=1))
    s = settings(store, tmp_path / "tuned", epochs=1, beta=3.0, gamma=50.0,
                 init_from=str(tmp_path / "base"), encoder_widths=None)
    summary = train_vae(s)
    assert summary["start_epoch"] == 0
    log = pd.read_csv(tmp_path / "tuned" / "training_log.csv")
    base = pd.read_csv(tmp_path / "base" / "training_log.csv")
    # starting from trained weights beats the first epoch from scratch
    assert log["train_recon"].iloc[0] < base["train_recon"].iloc[0]
    assert log["val_sep_term"].iloc[0] == pytest.approx(50.0 * log["val_mi"].iloc[0], rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, kw: dict) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    train_vae(VAETrainSettings(**kw))


def _shapes(run_dir) -> dict:
    with safe_open(str(run_dir / "model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def test_ddp_with_two_cpu_processes_gives_the_same_result_shape(store, tmp_path):
    kw = settings(store, tmp_path / "one", epochs=1, batch_size=40).to_dict()
    train_vae(VAETrainSettings(**kw))
    kw2 = {**kw, "out": str(tmp_path / "two")}
    # fork: the workers inherit the imported torch instead of paying its start-up again
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, _free_port(), kw2), nprocs=2,
                                          join=True, start_method="fork")
    one, two = tmp_path / "one", tmp_path / "two"
    assert _shapes(one) == _shapes(two)
    log1 = pd.read_csv(one / "training_log.csv")
    log2 = pd.read_csv(two / "training_log.csv")
    assert list(log1.columns) == list(log2.columns) and len(log1) == len(log2) == 1
    # each step spans both ranks: half the steps of the single process
    assert log2["step"].iloc[0] == log1["step"].iloc[0] // 2
    assert np.isfinite(log2["val_total"]).all()


def _wrap_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from core.models.vae import SpectrumVAE, VAEConfig
    from core.train.loop import init_distributed
    from core.train.vae import _wrap_ddp

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank)})
    info = init_distributed("cpu")
    model = SpectrumVAE(VAEConfig(encoder_widths=(8, 4)))
    if rank == 0:  # only the first process computes the scalings
        model.set_scaling(torch.full((7514,), 0.9), torch.full((7514,), 0.02),
                          [4800.0, 2.4, -0.3], [500.0, 1.0, 0.4])
    _wrap_ddp(model, info)
    torch.save({k: v for k, v in model.named_buffers()}, f"{out}/rank{rank}.pt")
    dist.barrier()
    info.close()


def test_ddp_gives_every_rank_the_scalings_of_rank_zero(tmp_path):
    torch.multiprocessing.start_processes(_wrap_worker, args=(2, _free_port(), str(tmp_path)),
                                          nprocs=2, join=True, start_method="fork")
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a["label_mean"][0] == 4800.0
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_kernel_dependence_sees_non_linear_dependence_that_correlation_misses():
    from core.train.losses import kernel_dependence

    g = torch.Generator().manual_seed(0)
    y = torch.randn(256, 3, generator=g)
    leaky = torch.cat([y**2 - 1, y**3 - 3 * y], dim=1)  # no linear trend in y
    noise = torch.randn(256, 6, generator=g)
    assert float(kernel_dependence(leaky, y)) > 0.3
    assert float(kernel_dependence(noise, y)) < 0.1


def test_opt_in_label_redraw_and_hsic_options_train_and_log(store, tmp_path):
    default = train_vae(settings(store, tmp_path / "plain"))
    assert "hsic" not in pd.read_csv(tmp_path / "plain" / "training_log.csv").columns
    run = tmp_path / "hsic"
    summary = train_vae(settings(store, run, hsic=100.0, redraw_labels=False))
    log = pd.read_csv(run / "training_log.csv")
    assert {"train_hsic", "val_hsic", "train_hsic_term"} <= set(log.columns)
    assert np.isfinite(log["val_hsic"]).all() and (log["val_hsic"] >= 0).all()
    saved = json.loads((run / "config.json").read_text())["training"]["settings"]
    assert saved["hsic"] == 100.0 and saved["redraw_labels"] is False
    assert np.isfinite(summary["best"]["val_total"]) and np.isfinite(default["best"]["val_total"])


def test_per_latent_dependence_singles_out_a_label_held_by_one_latent_of_many():
    from core.train.losses import kernel_dependence, per_latent_dependence

    g = torch.Generator().manual_seed(0)
    y = torch.randn(256, 3, generator=g)
    leaky = torch.cat([torch.sin(2 * y[:, :1]), torch.randn(256, 27, generator=g)], dim=1)
    noise = torch.randn(256, 28, generator=g)
    # the kernel on all 28 latents hardly tells the leaky set from noise …
    assert abs(float(kernel_dependence(leaky, y)) - float(kernel_dependence(noise, y))) < 0.05
    # … the one-latent kernel does: 0.2 for the leaky latent against ~0.02 for noise
    assert float(per_latent_dependence(leaky[:, :1], y)) > 0.15
    assert float(per_latent_dependence(noise, y)) < 0.03
    assert float(per_latent_dependence(leaky, y)) > float(per_latent_dependence(noise, y)) + 0.005
    # the fast formula is the normalised HSIC of each column (bandwidth² = 2 × variance)
    col = leaky[:, :1].double()
    n = 256
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k = h @ torch.exp(-torch.cdist(col, col).pow(2) / (2 * col.var())) @ h
    d2 = torch.cdist(y.double(), y.double()).pow(2)
    med = d2[~torch.eye(n, dtype=torch.bool)].median()
    ell = h @ torch.exp(-d2 / med) @ h
    ref = (k * ell).sum() / torch.sqrt((k * k).sum() * (ell * ell).sum())
    assert float(per_latent_dependence(leaky[:, :1], y)) == pytest.approx(float(ref), rel=1e-4)
    # a narrower latent bandwidth is an option of the full kernel; 1 is the default
    assert float(kernel_dependence(leaky, y, (1.0,))) == float(kernel_dependence(leaky, y))


def test_hsic_variants_train_log_and_refuse_a_joint_kernel_without_controls(store, tmp_path):
    run = tmp_path / "pl"
    train_vae(settings(store, run, hsic=100.0, hsic_per_latent=100.0, hsic_scales=[0.1, 1.0]))
    log = pd.read_csv(run / "training_log.csv")
    assert {"train_hsic_latent", "val_hsic_latent", "val_hsic_latent_term"} <= set(log.columns)
    assert np.isfinite(log["val_hsic_latent"]).all() and (log["val_hsic_latent"] >= 0).all()
    saved = json.loads((run / "config.json").read_text())["training"]["settings"]
    assert saved["hsic_per_latent"] == 100.0 and saved["hsic_scales"] == [0.1, 1.0]
    with pytest.raises(TrainingSetupError, match="--hsic-joint needs"):
        train_vae(settings(store, tmp_path / "j", hsic=100.0, hsic_joint=True))
