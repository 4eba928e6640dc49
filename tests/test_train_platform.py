"""The shared training platform: a tiny family defined here trains, resumes, fine-tunes, runs
under DDP and gets a CLI; both real families survive a SIGKILL and resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from core import models
from core.models.families import FAMILIES, Family
from core.train import data as D
from core.train import trainer as T
from core.train.checkpoint import load_checkpoint
from core.train.synthetic import synthetic_store

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


# -- a whole model family in a few lines ---------------------------------------------------------

class Tiny(nn.Module):
    model_type = "tiny-test"

    def __init__(self, n_in: int = 3, n_out: int = 8):
        super().__init__()
        self.net = nn.Linear(n_in, n_out)
        self.register_buffer("offset", torch.zeros(n_out))  # a scaling from training rows

    def architecture(self) -> dict:
        return {"n_in": self.net.in_features, "n_out": self.net.out_features}

    @classmethod
    def from_architecture(cls, arch: dict) -> Tiny:
        return cls(**arch)

    def forward(self, x):
        return self.net(x) + self.offset


models.register_model_type(Tiny.model_type, Tiny)


@dataclass
class TinySettings(T.TrainSettings):
    n: int = 208
    warmup_steps: int = 2


class TinyTask(T.TrainTask):
    settings_class = TinySettings
    title = "tiny"
    terms = ("total", "mae")

    def prepare(self, info):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(self.settings.n, 3)).astype(np.float32)
        y = (x @ rng.normal(size=(3, 8)) + 5.0).astype(np.float32)
        self.train_rows, self.val_rows = {"x": x[16:], "y": y[16:]}, {"x": x[:16], "y": y[:16]}

    def new_model(self, info):
        model = Tiny()
        model.offset.copy_(torch.from_numpy(self.train_rows["y"].mean(0)))
        return model

    def sources(self, info):
        s = self.settings
        return tuple(D.MemorySource(a, info.device, s.batch_size, s.seed, info.world, info.rank)
                     for a in (self.train_rows, self.val_rows))

    def loss(self, model, batch):
        r = model(batch["x"]) - batch["y"]
        return {"total": r.square().mean(), "mae": r.abs().mean()}


def tiny(out, **kw) -> TinyTask:
    base = {"out": str(out), "epochs": 4, "batch_size": 16, "lr": 0.1, "progress": False}
    return TinyTask(TinySettings(**{**base, **kw}))


def _log(run) -> pd.DataFrame:
    return pd.read_csv(Path(run) / T.LOG_FILE)


def _same_weights(a, b) -> None:
    ka, kb = load_checkpoint(Path(a) / "checkpoints" / "last.pt"), \
        load_checkpoint(Path(b) / "checkpoints" / "last.pt")
    assert ka["epoch"] == kb["epoch"] and ka["step"] == kb["step"]
    for k, v in ka["model"].items():
        assert torch.equal(v, kb["model"][k]), k


def test_tiny_family_trains_and_saves_its_best_model(tmp_path):
    summary = T.train(tiny(tmp_path / "run", epochs=5))
    run = tmp_path / "run"
    log = _log(run)
    assert list(log["epoch"]) == [1, 2, 3, 4, 5]
    assert log["val_total"].iloc[-1] < 0.5 * log["val_total"].iloc[0]
    assert {"train_mae", "val_mae", "lr", "train_spectra_per_s", "best"} <= set(log.columns)
    assert (run / T.CURVES_FILE).is_file() and not (run / T.RUNNING_FILE).exists()
    model, config = models.load_with_config(run)
    assert isinstance(model, Tiny) and config["model_type"] == "tiny-test"
    best = int(log.loc[log["val_total"].idxmin(), "epoch"])
    assert summary["best"]["epoch"] == config["training"]["best"]["epoch"] == best
    # the saved model is the best epoch's, whatever came after it
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    if best != 5:
        assert not torch.equal(ck["model"]["net.weight"], model.net.weight)
    with pytest.raises(T.TrainingSetupError, match="--resume"):
        T.train(tiny(run))


def test_tiny_family_resumes_exactly_and_fine_tunes(tmp_path, monkeypatch):
    T.train(tiny(tmp_path / "full"))
    real, calls = T.train_epoch, []

    def interrupted(*args, **kw):  # Ctrl-C in the middle of the third epoch
        calls.append(1)
        if len(calls) == 3:
            next(iter(args[1]))
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(T, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.train(tiny(tmp_path / "cut"))
    monkeypatch.setattr(T, "train_epoch", real)
    assert not (tmp_path / "cut" / T.RUNNING_FILE).exists()
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 2
    T.train(tiny(tmp_path / "cut"), resume=True, given={})
    _same_weights(tmp_path / "full", tmp_path / "cut")
    drop = ["seconds", "train_spectra_per_s"]
    pd.testing.assert_frame_equal(_log(tmp_path / "full").drop(columns=drop),
                                  _log(tmp_path / "cut").drop(columns=drop))
    with pytest.raises(T.TrainingSetupError, match="init-from"):
        T.train(tiny(tmp_path / "cut"), resume=True, given={"lr": 1.0})
    # a longer run continues from the last epoch
    T.train(tiny(tmp_path / "cut", epochs=6), resume=True, given={"epochs": 6})
    assert list(_log(tmp_path / "cut")["epoch"]) == [1, 2, 3, 4, 5, 6]

    # fine-tuning from a saved model and from a checkpoint both start where those ended
    scratch = _log(tmp_path / "full")["train_total"].iloc[0]
    for source in (tmp_path / "full", tmp_path / "full" / "checkpoints" / "last.pt"):
        out = tmp_path / f"tuned-{source.name}"
        T.train(tiny(out, epochs=1, init_from=str(source)))
        assert _log(out)["train_total"].iloc[0] < 0.2 * scratch


def test_patience_stops_a_run_and_keeps_the_best(tmp_path):
    # lr 0: nothing improves after the first epoch
    summary = T.train(tiny(tmp_path / "p", epochs=10, lr=0.0, warmup_steps=0, patience=2))
    assert summary["epochs"] == 3 and summary["best"]["epoch"] == 1 and "stopped" in summary
    assert (tmp_path / "p" / T.CURVES_FILE).is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    T.train(tiny(out, epochs=2, device="cpu"))


def test_tiny_family_under_two_gloo_processes(tmp_path):
    T.train(tiny(tmp_path / "one", epochs=2))
    # fork: the workers inherit the imported torch instead of paying its start-up again
    torch.multiprocessing.start_processes(_ddp_worker,
                                          args=(2, _free_port(), str(tmp_path / "two")),
                                          nprocs=2, join=True, start_method="fork")
    one, two = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert list(two["epoch"]) == [1, 2] and np.isfinite(two["val_total"]).all()
    assert two["step"].iloc[0] == one["step"].iloc[0] // 2  # each step spans both ranks
    assert isinstance(models.load(tmp_path / "two"), Tiny)
    assert not (tmp_path / "two" / T.RUNNING_FILE).exists()


def test_a_new_family_gets_the_train_command(tmp_path, monkeypatch, capsys):
    from core.cli.main import main

    monkeypatch.setitem(FAMILIES, "tiny", Family(
        name="tiny", title="tiny test model", model_types=("tiny-test",),
        task=f"{__name__}:TinyTask"))
    out = tmp_path / "cli"
    assert main(["train", "tiny", "--out", str(out), "--epochs", "2", "--batch-size", "16",
                 "--lr", "0.03", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and summary["family"] == "tiny"
    assert main(["train", "tiny", "--out", str(out), "--epochs", "3", "--resume",
                 "--no-progress"]) == 0
    assert list(_log(out)["epoch"]) == [1, 2, 3]
    assert "trained 3 epochs" in capsys.readouterr().out
    settings = load_checkpoint(out / "checkpoints" / "last.pt")["settings"]
    assert settings["batch_size"] == 16 and settings["epochs"] == 3 and settings["lr"] == 0.03


# -- SIGKILL and resume, through the command line ------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("platform") / "syn", n=160, seed=5)


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "core.cli.main", "train", *args, "--threads", "1",
            "--no-progress", "--device", "cpu"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _kill_after_first_checkpoint(cmd: list[str], out: Path) -> int:
    """Start ``cmd``, SIGKILL it once a checkpoint exists; returns the checkpoint's epoch."""
    last = out / "checkpoints" / "last.pt"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not last.is_file():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    epoch = load_checkpoint(last)["epoch"]
    # the log runs at most one epoch ahead of the checkpoint (the one being saved)
    logged = list(_log(out)["epoch"])
    assert logged[: epoch] == list(range(1, epoch + 1)) and len(logged) <= epoch + 1
    return epoch


def _resume(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _check_finished(out: Path, epochs: int, kind: type) -> None:
    assert list(_log(out)["epoch"]) == list(range(1, epochs + 1))  # no gaps, no duplicates
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == epochs
    assert isinstance(models.load(out), kind)
    assert not (out / T.RUNNING_FILE).exists()


def test_emulator_survives_sigkill_and_resumes_exactly(store, tmp_path):
    from core.models.emulator import Emulator
    from core.train.emulator import TrainSettings, train_emulator

    epochs = 30
    opts = ["--store", str(store.path), "--epochs", str(epochs), "--hidden", "32,32",
            "--batch-size", "32", "--lr", "3e-3", "--seed", "3"]
    out = tmp_path / "killed"
    first = _kill_after_first_checkpoint(_cli("emulator", *opts, "--out", str(out)), out)
    assert 1 <= first < epochs
    _resume(_cli("emulator", "--out", str(out), "--resume"))
    _check_finished(out, epochs, Emulator)
    assert float(models.load(out).pixel_error.max()) > 0  # the after-training step ran

    # the same run without the kill ends with the very same weights
    train_emulator(store, tmp_path / "whole",
                   TrainSettings(epochs=epochs, hidden=(32, 32), batch_size=32, lr=3e-3, seed=3,
                                 device="cpu"), progress=False)
    _same_weights(out, tmp_path / "whole")
    drop = ["seconds", "train_spectra_per_s"]
    pd.testing.assert_frame_equal(_log(out).drop(columns=drop),
                                  _log(tmp_path / "whole").drop(columns=drop))


def test_vae_survives_sigkill_and_resumes(store, tmp_path):
    from core.models.vae import SpectrumVAE

    epochs = 12
    out = tmp_path / "vae"
    opts = ["--store", str(store.path), "--epochs", str(epochs), "--encoder-widths", "16,8",
            "--batch-size", "32", "--warmup-steps", "2", "--val-fraction", "0.2",
            "--no-decorrelate"]
    first = _kill_after_first_checkpoint(_cli("vae", *opts, "--out", str(out)), out)
    assert 1 <= first < epochs
    _resume(_cli("vae", "--out", str(out), "--resume"))
    _check_finished(out, epochs, SpectrumVAE)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["best"]["epoch"] == int(
        _log(out).loc[_log(out)["val_total"].idxmin(), "epoch"])
