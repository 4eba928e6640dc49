"""Train the spectrum VAE on a store: ``stellarscope train vae`` calls :func:`train_vae`.

A run directory holds::

    config.json, model.safetensors   the best model so far (lowest validation loss);
                                     core.models.load(run_dir) rebuilds it
    checkpoints/last.pt              full state after the latest epoch (--resume continues it)
    checkpoints/epoch-NNNN.pt        periodic copies
    training_log.csv                 every loss term per epoch, train and validation
    loss_curves.png                  the terms normalised to their first value

Resuming restores model, optimiser, scheduler, epoch counter and RNG; every epoch also
reseeds from (seed, epoch, rank), so an interrupted run continues exactly as an
uninterrupted one would have.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import models
from ..errors import BadDataError, StellarscopeError
from ..models.vae import SpectrumVAE, VAEConfig
from ..paths import resolve_store
from ..store import SpectraStore
from . import data as D
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from .decorrelate import decorrelate_latents
from .history import TrainingLog, plot_loss_curves
from .loop import (
    SCHEDULES,
    DistInfo,
    evaluate_epoch,
    init_distributed,
    make_optimizer,
    make_scheduler,
    train_epoch,
)
from .losses import ERROR_FLOOR, LOG_TERMS, vae_loss

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
LOG_FILE = "training_log.csv"
#: Present in the run directory while a run is going (a checkout's fresh file times are not).
RUNNING_FILE = "TRAINING_RUNNING"
CURVES_FILE = "loss_curves.png"

#: Settings a resumed run may change; everything else must match the checkpoint.
RESUME_ADJUSTABLE = ("epochs", "device", "progress", "cache_gb", "checkpoint_every",
                     "weights_dtype", "command", "store")


class TrainingSetupError(StellarscopeError):
    """A training run that cannot start as asked (existing run, nothing to resume …)."""


@dataclass
class VAETrainSettings:
    store: str
    out: str
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 50
    min_lr_factor: float = 0.05
    lr_decay: float = 0.95
    beta: float = 10.0
    gamma: float = 1000.0
    clip: float = 1.0
    val_fraction: float = 0.1
    split_seed: int = 0
    seed: int = 0
    preset: str = "compact"
    encoder_widths: list[int] | None = None
    decoder_widths: list[int] | None = None
    n_latent: int = 28
    labels: list[str] = field(default_factory=lambda: list(D.LABEL_NAMES))
    bad_bits: str = "astronn"
    max_rows: int | None = None
    stats_rows: int = 4000
    checkpoint_every: int = 10
    weights_dtype: str = "float32"
    device: str = "auto"
    amp: bool = True
    cache_gb: float = 4.0
    init_from: str | None = None
    #: absorb the linear label trend of μ into the saved model (see core.train.decorrelate)
    decorrelate: bool = True
    decorrelate_rows: int = 20_000
    progress: bool = True
    command: str | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("need epochs ≥ 1 and batch_size ≥ 2")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _epoch_seed(seed: int, epoch: int, rank: int, purpose: int = 0) -> int:
    """Torch seed of one epoch's noise draws (purpose 0 training, 1 validation)."""
    return int(np.random.SeedSequence([seed, purpose, epoch, rank]).generate_state(1)[0])


def _vae_loss_fn(beta: float, gamma: float):
    def loss_fn(model, batch):
        out = model(batch["flux"], batch["weight"] > 0, batch["labels"], batch["label_err"],
                    sample=True)
        return vae_loss(out, batch["flux"], batch["weight"], beta, gamma), batch["flux"].shape[0]
    return loss_fn


def _new_model(s: VAETrainSettings, store: SpectraStore) -> SpectrumVAE:
    overrides = {"n_pix": store.grid.n_pix, "grid": store.grid.name, "n_latent": s.n_latent,
                 "label_names": tuple(s.labels)}
    if s.encoder_widths:
        overrides["encoder_widths"] = tuple(s.encoder_widths)
    if s.decoder_widths:
        overrides["decoder_widths"] = tuple(s.decoder_widths)
    return SpectrumVAE(VAEConfig.preset(s.preset, **overrides))


def _install_scaling(model: SpectrumVAE, s: VAETrainSettings, store: SpectraStore,
                     train_rows: np.ndarray, labels: np.ndarray) -> None:
    """Flux and label scalings from the training rows only."""
    flux_mean, flux_scale = D.flux_statistics(store, train_rows, s.bad_bits, s.stats_rows,
                                              seed=s.seed)
    label_mean, label_std = D.label_statistics(labels[train_rows])
    model.set_scaling(flux_mean, flux_scale, label_mean, label_std)


def _model_from(path: str) -> SpectrumVAE:
    """Starting weights for --init-from: a saved model directory or a resume checkpoint."""
    p = Path(path)
    if p.is_dir() and (p / models.CONFIG_FILE).is_file():
        model = models.load(p)
    else:
        if p.is_dir():
            p = p / CHECKPOINT_DIR / LAST_CHECKPOINT
        ck = load_checkpoint(p)
        model = SpectrumVAE.from_architecture(ck["extra"]["architecture"])
        model.load_state_dict(ck["model"])
    if not isinstance(model, SpectrumVAE):
        raise TrainingSetupError(f"{path}: --init-from needs a VAE, found {type(model).__name__}")
    return model


def _check_grid(model: SpectrumVAE, store: SpectraStore, labels: list[str]) -> None:
    if model.config.n_pix != store.grid.n_pix:
        raise BadDataError(f"{store.path}: store grid {store.grid.name} ({store.grid.n_pix} px) "
                           f"does not match the model ({model.config.n_pix} px)")
    if list(model.config.label_names) != list(labels):
        raise TrainingSetupError(f"model labels {list(model.config.label_names)} differ from "
                                 f"the requested labels {labels}")


def model_extra_config(model: SpectrumVAE, s: VAETrainSettings, store: SpectraStore,
                       split: D.Split, best: dict) -> dict:
    """Everything but weights and architecture that config.json records about a VAE."""
    return {
        "label_names": list(model.config.label_names),
        "label_scaling": {"mean": model.label_mean.tolist(), "std": model.label_std.tolist()},
        "grid": {"name": store.grid.name, "n_pix": store.grid.n_pix},
        "error_floor": ERROR_FLOOR,
        "bad_bits": s.bad_bits,
        "training": {
            "store": str(store.path),
            "store_title": store.title,
            "store_kind": store.kind,
            "store_n_stars": store.n_stars,
            "store_provenance": store.manifest.get("provenance", {}),
            "n_train": int(len(split.train)),
            "n_validation": int(len(split.validation)),
            "split": {"method": "blake2b('<seed>:<APOGEE_ID>') < val_fraction",
                      "val_fraction": s.val_fraction, "seed": s.split_seed,
                      "max_rows": s.max_rows},
            "settings": s.to_dict(),
            "best": best,
            "torch": torch.__version__,
        },
    }


def _merge_resume(saved: dict, given: dict) -> VAETrainSettings:
    clash = {k: (saved.get(k), v) for k, v in given.items()
             if k not in RESUME_ADJUSTABLE and k in saved and saved[k] != v}
    if clash:
        detail = ", ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in clash.items())
        raise TrainingSetupError(f"--resume continues a run with its own settings ({detail}); "
                                 "start a new run with --init-from to change them")
    merged = {**saved, **{k: v for k, v in given.items() if k in RESUME_ADJUSTABLE}}
    return VAETrainSettings(**merged)


def _sources(s: VAETrainSettings, store, split, labels, label_err, info: DistInfo):
    n_rows = len(split.train) + len(split.validation)
    in_memory = n_rows * store.grid.n_pix * 8 <= s.cache_gb * 1e9
    common = {"device": info.device, "batch_size": s.batch_size, "bad_bits": s.bad_bits,
              "seed": s.seed, "world": info.world, "rank": info.rank}
    if in_memory:
        make = D.MemorySource.from_store
    else:
        make = D.StoreSource
    train = make(store, split.train, labels, label_err, **common)
    val = make(store, split.validation, labels, label_err, **common)
    return train, val, in_memory


def train_vae(settings: VAETrainSettings, *, resume: bool = False, overwrite: bool = False,
              given: dict | None = None) -> dict:
    """Run (or resume) a training run; returns a summary of figures.

    With ``resume`` the run's own settings come from ``OUT/checkpoints/last.pt``; ``given``
    (the options the user actually passed) may only change :data:`RESUME_ADJUSTABLE`.
    """
    out = Path(settings.out)
    last = out / CHECKPOINT_DIR / LAST_CHECKPOINT
    ck = None
    if resume:
        if not last.is_file():
            raise TrainingSetupError(f"{out}: nothing to resume (no {CHECKPOINT_DIR}/{LAST_CHECKPOINT})")
        ck = load_checkpoint(last)
        # the run directory is where the checkpoint was found, wherever it was first made
        settings = _merge_resume({**ck["settings"], "out": str(out)},
                                 given if given is not None else {})
    elif last.is_file() and not overwrite:
        raise TrainingSetupError(f"{out}: a training run exists here; pass --resume to continue "
                                 "it or --overwrite to start again")
    s = settings
    info = init_distributed(s.device)
    running = out / RUNNING_FILE
    try:
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            running.write_text(f"pid {os.getpid()}\n")
        return _run(s, info, out, ck)
    finally:
        if info.is_main:
            running.unlink(missing_ok=True)
        info.close()


def _run(s: VAETrainSettings, info: DistInfo, out: Path, ck: dict | None) -> dict:
    store = SpectraStore.open(resolve_store(s.store))
    catalog = store.catalog
    labels, label_err = D.label_arrays(catalog, s.labels, where=str(store.path))
    rows = D.labelled_rows(labels)
    if s.max_rows:
        rows = rows[: s.max_rows]
    split = D.split_rows(catalog, rows, s.val_fraction, s.split_seed)
    if len(split.train) < 2 * info.world or len(split.validation) == 0:
        raise BadDataError(f"{store.path}: {len(split.train)} training and "
                           f"{len(split.validation)} validation spectra with finite "
                           f"{', '.join(s.labels)}: too few to train (check the labels and "
                           "--val-fraction)")

    n_joint = s.n_latent + len(s.labels)
    if s.gamma and s.batch_size <= n_joint:
        raise TrainingSetupError(f"--batch-size {s.batch_size} per process is too small for the "
                                 f"separability term: its {n_joint}×{n_joint} covariance needs "
                                 f"more than {n_joint} spectra per batch (or use --gamma 0)")
    torch.manual_seed(s.seed)
    if ck is not None:
        model = SpectrumVAE.from_architecture(ck["extra"]["architecture"])
        model.load_state_dict(ck["model"])
    elif s.init_from:
        model = _model_from(s.init_from)
        # the starting model fixes the architecture: record it, not the preset's widths
        s = dataclasses.replace(s, encoder_widths=list(model.config.encoder_widths),
                                decoder_widths=list(model.config.decoder_shape),
                                n_latent=model.config.n_latent)
    else:
        model = _new_model(s, store)
        if info.is_main:  # other ranks receive the scalings when DDP wraps the model
            _install_scaling(model, s, store, split.train, labels)
    _check_grid(model, store, s.labels)
    model = model.to(info.device)
    net: torch.nn.Module = model
    if info.active:
        net = _wrap_ddp(model, info)

    train_src, val_src, in_memory = _sources(s, store, split, labels, label_err, info)
    steps_per_epoch = train_src.n_steps()
    sched_kw = {"schedule": s.schedule, "total_steps": s.epochs * steps_per_epoch,
                "warmup_steps": s.warmup_steps, "steps_per_epoch": steps_per_epoch,
                "min_factor": s.min_lr_factor, "decay": s.lr_decay}
    optimizer = make_optimizer(net.parameters(), s.lr)
    scheduler = make_scheduler(optimizer, **sched_kw)
    start_epoch, step, best = 0, 0, {"epoch": -1, "val_total": float("inf")}
    if ck is not None:
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scheduler.lr_lambdas[0].kw = sched_kw  # a longer run stretches the schedule
        start_epoch, step = ck["epoch"], ck["step"]
        best = ck["extra"]["best"]
        set_rng_state(ck["rng"])

    columns = (["epoch", "step", "seconds", "lr", "train_spectra_per_s"]
               + [f"train_{t}" for t in LOG_TERMS] + [f"val_{t}" for t in LOG_TERMS] + ["best"])
    log = TrainingLog(out / LOG_FILE, columns)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CHECKPOINT_DIR).mkdir(exist_ok=True)
        if ck is None:
            log.reset()
        else:
            log.truncate_after(start_epoch)
    info.barrier()

    loss_fn = _vae_loss_fn(s.beta, s.gamma)
    n_train_epoch = steps_per_epoch * s.batch_size * info.world
    summary: dict = {"out": str(out), "device": str(info.device), "world_size": info.world,
                     "rank": info.rank,
                     "in_memory": in_memory, "n_train": len(split.train),
                     "n_validation": len(split.validation), "start_epoch": start_epoch}
    t_run = time.perf_counter()
    for epoch in range(start_epoch, s.epochs):
        torch.manual_seed(_epoch_seed(s.seed, epoch, info.rank))
        t0 = time.perf_counter()
        train_terms = train_epoch(net, train_src.batches(epoch), loss_fn, optimizer, scheduler,
                                  names=LOG_TERMS, device=info.device, clip=s.clip, amp=s.amp,
                                  info=info, progress=s.progress and info.is_main,
                                  n_steps=steps_per_epoch, desc=f"epoch {epoch + 1}/{s.epochs}")
        seconds = time.perf_counter() - t0
        step += steps_per_epoch
        # a fixed validation noise draw makes epochs comparable for picking the best
        torch.manual_seed(_epoch_seed(s.seed, 0, info.rank, purpose=1))
        val_terms = evaluate_epoch(model, val_src.batches(0, shuffle=False, drop_last=False),
                                   loss_fn, names=LOG_TERMS, device=info.device, amp=s.amp,
                                   info=info)
        is_best = val_terms["total"] < best["val_total"]
        if is_best:
            best = {"epoch": epoch + 1, "val_total": val_terms["total"],
                    "val_chi2_nu": val_terms["chi2_nu"], "val_mi": val_terms["mi"]}
        row = {"epoch": epoch + 1, "step": step, "seconds": seconds,
               "lr": scheduler.get_last_lr()[0], "train_spectra_per_s": n_train_epoch / seconds,
               **{f"train_{k}": v for k, v in train_terms.items()},
               **{f"val_{k}": v for k, v in val_terms.items()}, "best": int(is_best)}
        if info.is_main:
            _save_epoch(s, out, model, optimizer, scheduler, epoch + 1, step, best, is_best,
                        store, split, log, row, train_src)
            if s.progress:
                print(f"epoch {epoch + 1}/{s.epochs}: train {train_terms['total']:.5g} "
                      f"(χ²_ν {train_terms['chi2_nu']:.3f})  val {val_terms['total']:.5g} "
                      f"(χ²_ν {val_terms['chi2_nu']:.3f}, MI {val_terms['mi']:.3g})  "
                      f"{n_train_epoch / seconds:.0f} spectra/s{'  *best' if is_best else ''}",
                      file=sys.stderr, flush=True)
        info.barrier()
        summary.update({"epochs": epoch + 1, "train": train_terms, "validation": val_terms,
                        "train_spectra_per_s": n_train_epoch / seconds})
    summary.update({"best": best, "seconds": time.perf_counter() - t_run})
    return summary


def _wrap_ddp(model: SpectrumVAE, info: DistInfo) -> torch.nn.Module:
    """DDP around ``model`` after giving every rank rank 0's buffers (the scalings)."""
    import inspect

    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf, src=0)
    # buffers never change while training: no need to sync them on every forward
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in params
               else {"broadcast_buffers": False})
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[info.device.index] if info.device.type == "cuda" else None, **no_sync)


def _save_epoch(s, out, model, optimizer, scheduler, epoch, step, best, is_best, store, split,
                log, row, train_src) -> None:
    if is_best:
        # the saved copy may be re-expressed; the model being trained stays as it is, so a
        # resumed run continues exactly
        saved = copy.deepcopy(model)
        extra = model_extra_config(saved, s, store, split, best)
        if s.decorrelate:
            batches = train_src.batches(0, shuffle=False, drop_last=False)
            extra["decorrelation"] = decorrelate_latents(saved, batches, s.decorrelate_rows)
        models.save(saved, out, extra, weights_dtype=s.weights_dtype)
    log.append(row)
    ck_dir = out / CHECKPOINT_DIR
    last = save_checkpoint(ck_dir / LAST_CHECKPOINT, model_state=model.state_dict(),
                           optimizer_state=optimizer.state_dict(),
                           scheduler_state=scheduler.state_dict(), epoch=epoch, step=step,
                           settings=s.to_dict(),
                           extra={"architecture": model.architecture(), "best": best})
    periodic = bool(s.checkpoint_every) and epoch % s.checkpoint_every == 0
    if periodic:
        backup = ck_dir / f"epoch-{epoch:04d}.pt"
        tmp = ck_dir / f".{backup.name}.tmp"
        shutil.copyfile(last, tmp)
        os.replace(tmp, backup)
    if periodic or epoch == s.epochs:  # drawing takes a second: not every epoch
        plot_loss_curves(log.read(), out / CURVES_FILE, ["total", "recon", "kl", "mi", "chi2_nu"],
                         title=f"VAE training ({store.title})")
