"""The one training loop of every model family: ``stellarscope train FAMILY`` runs :func:`train`.

A family supplies a :class:`TrainTask` — its settings, its model, its batches and its loss —
and this module does the rest.  A run directory holds::

    config.json, model.safetensors   the best model so far (lowest validation loss);
                                     core.models.load(run_dir) rebuilds it
    checkpoints/last.pt              full state after the latest epoch (--resume continues it)
    checkpoints/epoch-NNNN.pt        periodic copies
    training_log.csv                 every loss term per epoch, train and validation
    loss_curves.png                  the terms normalised to their first value
    TRAINING_RUNNING                 present while a run is going (the app reads it)

Resuming restores model, optimiser, scheduler, epoch counter and RNG; every epoch also
reseeds from (seed, epoch, rank), so an interrupted run continues exactly as an uninterrupted
one would have.  A checkpoint is written (atomically) after every epoch, so a killed run loses
at most the epoch in progress.  Under torchrun each rank trains on its shard of every step
(DDP: NCCL on GPUs, gloo on CPU); on CUDA the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .. import models
from ..errors import StellarscopeError
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
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

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
LOG_FILE = "training_log.csv"
#: Present in the run directory while a run is going (a checkout's fresh file times are not).
RUNNING_FILE = "TRAINING_RUNNING"
CURVES_FILE = "loss_curves.png"

#: Settings a resumed run may change; everything else must match the checkpoint.
RESUME_ADJUSTABLE = ("epochs", "device", "progress", "checkpoint_every", "weights_dtype",
                     "command", "store", "patience", "max_minutes", "out")


class TrainingSetupError(StellarscopeError):
    """A training run that cannot start as asked (existing run, nothing to resume …)."""


@dataclass
class TrainSettings:
    """Knobs every family shares; a family's settings class adds its own fields."""

    store: str = ""
    out: str = ""
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 50
    min_lr_factor: float = 0.05
    lr_decay: float = 0.95
    clip: float | None = 1.0
    seed: int = 0
    #: stop after this many epochs without a better validation loss (None: whole schedule)
    patience: int | None = None
    #: wall-clock budget in minutes: the run stops after the epoch that exceeds it (the
    #: schedule is epoch-based and does not follow the budget)
    max_minutes: float | None = None
    checkpoint_every: int = 10
    weights_dtype: str = "float32"
    device: str | None = "auto"
    amp: bool = True
    init_from: str | None = None
    progress: bool = True
    command: str | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("need epochs ≥ 1 and batch_size ≥ 2")

    def to_dict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))


def _jsonable(d: dict) -> dict:
    """Settings as JSON gives them back (tuples become lists), so comparisons are fair."""
    return json.loads(json.dumps(d))


class TrainTask:
    """What a model family gives the trainer.  Subclass it and fill in the marked parts.

    Required: ``settings_class``, :meth:`prepare` (read the data, split it; scalings from the
    training rows only), :meth:`new_model`, :meth:`sources` and :meth:`loss`.  The rest has
    defaults.  The trainer calls, in order: ``prepare`` → model (``new_model``, or the
    checkpoint's / ``--init-from``'s weights passed through :meth:`adopt`) → ``sources`` →
    epochs of ``loss`` → on each new best: :meth:`extra_config` and :meth:`before_save` →
    after the last epoch: :meth:`after_training` on the best saved model.
    """

    #: dataclass of the family's settings (a subclass of :class:`TrainSettings`)
    settings_class: ClassVar[type] = TrainSettings
    #: name in titles and messages
    title: ClassVar[str] = "model"
    #: loss terms written to training_log.csv, in column order ("total" is optimised)
    terms: ClassVar[tuple[str, ...]] = ("total",)
    #: terms drawn in loss_curves.png (default: all)
    curve_terms: ClassVar[tuple[str, ...] | None] = None
    #: family settings a resumed run may change besides :data:`RESUME_ADJUSTABLE`
    resume_adjustable: ClassVar[tuple[str, ...]] = ()
    #: model_type of checkpoints that do not name one (written before the shared trainer)
    model_type: ClassVar[str | None] = None

    def __init__(self, settings):
        if not isinstance(settings, self.settings_class):
            raise TypeError(f"{type(self).__name__} needs {self.settings_class.__name__}")
        self.settings = settings

    # -- CLI ---------------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Family-specific options (``dest`` = a settings field; default None = not given)."""

    # -- to fill in --------------------------------------------------------------------------
    def prepare(self, info: DistInfo) -> None:
        """Read the store, pick rows and split them (called once per run, on every rank)."""

    def new_model(self, info: DistInfo) -> torch.nn.Module:
        """A freshly initialised model (scalings from the training rows only)."""
        raise NotImplementedError

    def adopt(self, model: torch.nn.Module, source: str) -> torch.nn.Module:
        """Check a model loaded from a checkpoint or ``--init-from`` fits this run's data."""
        return model

    def sources(self, info: DistInfo) -> tuple[Any, Any]:
        """(training, validation) batch sources, sharded for this rank: each has
        ``batches(epoch, shuffle=True, drop_last=True)`` (seeded by epoch) and ``n_steps()``."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch) -> dict[str, torch.Tensor]:
        """Named loss terms of one batch, "total" among them (means per spectrum)."""
        raise NotImplementedError

    def batch_size_of(self, batch) -> int:
        """Spectra in a batch (weights the epoch means); default: length of its first tensor."""
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        return int(first.shape[0])

    def extra_config(self, model: torch.nn.Module, best: dict) -> dict:
        """What config.json records besides model_type and architecture."""
        return {"training": {"settings": self.settings.to_dict(), "best": best}}

    def before_save(self, model: torch.nn.Module, extra: dict) -> None:
        """Last changes to a copy of the best model before it is saved (may edit ``extra``)."""

    def after_training(self, model: torch.nn.Module, config: dict, summary: dict) -> dict | None:
        """Called with the saved best model and its config.json once the run ends; return the
        config keys to change (the others are kept) to save the (possibly changed) model
        again, or None."""
        return None

    def facts(self) -> dict:
        """Family figures added to the run summary (sizes of the split …)."""
        return {}

    @classmethod
    def report(cls, summary: dict) -> list[str]:
        """Lines the CLI prints about a finished run, after the shared one."""
        return []


# -- setting up a run ---------------------------------------------------------------------------

def _merge_resume(task_cls, saved: dict, given: dict):
    adjustable = set(RESUME_ADJUSTABLE) | set(task_cls.resume_adjustable)
    given = _jsonable(given)
    clash = {k: (saved.get(k), v) for k, v in given.items()
             if k not in adjustable and k in saved and saved[k] != v}
    if clash:
        detail = ", ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in clash.items())
        raise TrainingSetupError(f"--resume continues a run with its own settings ({detail}); "
                                 "start a new run with --init-from to change them")
    fields = {f.name for f in dataclasses.fields(task_cls.settings_class)}
    merged = {**saved, **{k: v for k, v in given.items() if k in adjustable}}
    return task_cls.settings_class(**{k: v for k, v in merged.items() if k in fields})


def model_from_checkpoint(ck: dict, where, default_type: str | None = None) -> torch.nn.Module:
    extra = ck["extra"]
    kind = extra.get("model_type", default_type)
    if not kind:
        raise TrainingSetupError(f"{where}: checkpoint does not say which model it holds")
    model = models.model_class(kind).from_architecture(extra["architecture"])
    model.load_state_dict(ck["model"])
    return model


def load_init(path: str, default_type: str | None = None) -> torch.nn.Module:
    """Starting weights for ``--init-from``: a saved model directory, a run directory or a
    checkpoint file."""
    p = Path(path)
    if p.is_dir() and (p / models.CONFIG_FILE).is_file():
        return models.load(p)
    if p.is_dir():
        p = p / CHECKPOINT_DIR / LAST_CHECKPOINT
    return model_from_checkpoint(load_checkpoint(p), p, default_type)


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP around ``model`` after giving every rank rank 0's buffers (the scalings)."""
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf, src=0)
    # buffers never change while training: no need to sync them on every forward
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in params
               else {"broadcast_buffers": False})
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[info.device.index] if info.device.type == "cuda" else None, **no_sync)


def epoch_seed(seed: int, epoch: int, rank: int, purpose: int = 0) -> int:
    """Torch seed of one epoch's random draws (purpose 0 training, 1 validation)."""
    return int(np.random.SeedSequence([seed, purpose, epoch, rank]).generate_state(1)[0])


def train(task: TrainTask, *, resume: bool = False, overwrite: bool = False,
          given: dict | None = None) -> dict:
    """Run (or resume) a training run of ``task``; returns a summary of figures.

    With ``resume`` the run's own settings come from ``OUT/checkpoints/last.pt``; ``given``
    (the options the user actually passed) may only change :data:`RESUME_ADJUSTABLE` and the
    task's ``resume_adjustable``.
    """
    out = Path(task.settings.out)
    if not task.settings.out:
        raise TrainingSetupError("no output directory (--out)")
    last = out / CHECKPOINT_DIR / LAST_CHECKPOINT
    ck = None
    if resume:
        if not last.is_file():
            raise TrainingSetupError(f"{out}: nothing to resume (no {CHECKPOINT_DIR}/"
                                     f"{LAST_CHECKPOINT})")
        ck = load_checkpoint(last)
        # the run directory is where the checkpoint was found, wherever it was first made
        settings = _merge_resume(type(task), {**ck["settings"], "out": str(out)},
                                 given if given is not None else {})
        task = type(task)(settings)
    elif out.is_dir() and any(p.name != RUNNING_FILE for p in out.iterdir()) and not overwrite:
        raise TrainingSetupError(f"{out}: a training run or model exists here; pass --resume to "
                                 "continue it or --overwrite to start again")
    info = init_distributed(task.settings.device)
    running = out / RUNNING_FILE
    try:
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if ck is None and overwrite:
                shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
            running.write_text(f"pid {os.getpid()}\n")
        return _run(task, info, out, ck)
    finally:
        if info.is_main:
            running.unlink(missing_ok=True)
        info.close()


def _run(task: TrainTask, info: DistInfo, out: Path, ck: dict | None) -> dict:
    s = task.settings
    torch.manual_seed(s.seed)
    task.prepare(info)
    if ck is not None:
        model = task.adopt(model_from_checkpoint(ck, out / CHECKPOINT_DIR / LAST_CHECKPOINT,
                                                 task.model_type), "the checkpoint")
    elif s.init_from:
        model = task.adopt(load_init(s.init_from, task.model_type), s.init_from)
    else:
        model = task.new_model(info)
    s = task.settings  # adopt may record the starting model's architecture
    model = model.to(info.device)
    net: torch.nn.Module = wrap_ddp(model, info) if info.active else model

    train_src, val_src = task.sources(info)
    steps_per_epoch = train_src.n_steps()
    sched_kw = {"schedule": s.schedule, "total_steps": s.epochs * steps_per_epoch,
                "warmup_steps": s.warmup_steps, "steps_per_epoch": steps_per_epoch,
                "min_factor": s.min_lr_factor, "decay": s.lr_decay}
    optimizer = make_optimizer(net.parameters(), s.lr)
    scheduler = make_scheduler(optimizer, **sched_kw)
    start_epoch, step, best = 0, 0, {"epoch": 0, "val_total": float("inf")}
    if ck is not None:
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scheduler.lr_lambdas[0].kw = sched_kw  # a longer run stretches the schedule
        start_epoch, step = ck["epoch"], ck["step"]
        best = ck["extra"]["best"]
        set_rng_state(ck["rng"])

    terms = tuple(task.terms)
    columns = (["epoch", "step", "seconds", "lr", "train_spectra_per_s"]
               + [f"train_{t}" for t in terms] + [f"val_{t}" for t in terms] + ["best"])
    log = TrainingLog(out / LOG_FILE, columns)
    if info.is_main:
        (out / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        if ck is None:
            log.reset()
        else:
            log.truncate_after(start_epoch)
    info.barrier()

    def loss_fn(m, batch):
        return task.loss(m, batch), task.batch_size_of(batch)

    n_train_epoch = steps_per_epoch * s.batch_size * info.world
    summary: dict = {"out": str(out), "family": task.title, "device": str(info.device),
                     "world_size": info.world, "rank": info.rank, "start_epoch": start_epoch,
                     "epochs": start_epoch}
    t_run = time.perf_counter()
    for epoch in range(start_epoch, s.epochs):
        if s.patience is not None and epoch - best["epoch"] >= s.patience:
            summary["stopped"] = f"no better validation loss in {s.patience} epochs"
            break
        torch.manual_seed(epoch_seed(s.seed, epoch, info.rank))
        t0 = time.perf_counter()
        train_terms = train_epoch(net, train_src.batches(epoch), loss_fn, optimizer, scheduler,
                                  names=terms, device=info.device, clip=s.clip, amp=s.amp,
                                  info=info, progress=s.progress and info.is_main,
                                  n_steps=steps_per_epoch, desc=f"epoch {epoch + 1}/{s.epochs}")
        seconds = time.perf_counter() - t0
        step += steps_per_epoch
        # a fixed validation draw makes epochs comparable for picking the best
        torch.manual_seed(epoch_seed(s.seed, 0, info.rank, purpose=1))
        val_terms = evaluate_epoch(model, val_src.batches(0, shuffle=False, drop_last=False),
                                   loss_fn, names=terms, device=info.device, amp=s.amp,
                                   info=info)
        is_best = val_terms["total"] < best["val_total"]
        if is_best:
            best = {"epoch": epoch + 1, **{f"val_{k}": v for k, v in val_terms.items()}}
        row = {"epoch": epoch + 1, "step": step, "seconds": seconds,
               "lr": scheduler.get_last_lr()[0], "train_spectra_per_s": n_train_epoch / seconds,
               **{f"train_{k}": v for k, v in train_terms.items()},
               **{f"val_{k}": v for k, v in val_terms.items()}, "best": int(is_best)}
        if info.is_main:
            _save_epoch(task, out, model, optimizer, scheduler, epoch + 1, step, best, is_best,
                        log, row)
            if s.progress:
                print(f"epoch {epoch + 1}/{s.epochs}: train {train_terms['total']:.5g}  val "
                      f"{val_terms['total']:.5g}  {n_train_epoch / seconds:.0f} spectra/s"
                      f"{'  *best' if is_best else ''}", file=sys.stderr, flush=True)
        info.barrier()
        summary.update({"epochs": epoch + 1, "train": train_terms, "validation": val_terms,
                        "train_spectra_per_s": n_train_epoch / seconds})
        if s.max_minutes and epoch + 1 < s.epochs and _over_budget(t_run, s.max_minutes, info):
            summary["stopped"] = f"time budget of {s.max_minutes} minutes spent"
            break
    summary.update({"best": best, "seconds": time.perf_counter() - t_run})
    if info.is_main:
        if summary.get("stopped") and summary["epochs"] > start_epoch:
            # the last epoch's save did not draw the curves
            plot_loss_curves(log.read(), out / CURVES_FILE, list(task.curve_terms or terms),
                             title=f"{task.title} training")
        hook = type(task).after_training is not TrainTask.after_training
        if hook and (out / models.CONFIG_FILE).is_file():
            saved, config = models.load_with_config(out, info.device)
            extra = task.after_training(saved, config, summary)
            if extra is not None:
                # the hook returns what changes; everything else the config held is kept
                kept = {k: v for k, v in config.items() if k not in models.RESERVED_CONFIG_KEYS}
                models.save(saved, out, {**kept, **extra}, weights_dtype=s.weights_dtype)
    info.barrier()
    summary.update(task.facts())
    return summary


def _over_budget(t_run: float, minutes: float, info: DistInfo) -> bool:
    # every rank must stop after the same epoch: rank 0's clock decides
    over = torch.tensor([float(time.perf_counter() - t_run > 60 * minutes)], device=info.device)
    if info.active:
        import torch.distributed as dist

        dist.broadcast(over, src=0)
    return bool(over.item())


def _save_epoch(task: TrainTask, out: Path, model, optimizer, scheduler, epoch: int, step: int,
                best: dict, is_best: bool, log: TrainingLog, row: dict) -> None:
    s = task.settings
    if is_best:
        # the saved copy may be re-expressed; the model being trained stays as it is, so a
        # resumed run continues exactly
        saved = copy.deepcopy(model)
        extra = task.extra_config(saved, best)
        task.before_save(saved, extra)
        models.save(saved, out, extra, weights_dtype=s.weights_dtype)
    log.append(row)
    ck_dir = out / CHECKPOINT_DIR
    last = save_checkpoint(ck_dir / LAST_CHECKPOINT, model_state=model.state_dict(),
                           optimizer_state=optimizer.state_dict(),
                           scheduler_state=scheduler.state_dict(), epoch=epoch, step=step,
                           settings=s.to_dict(),
                           extra={"model_type": model.model_type,
                                  "architecture": model.architecture(), "best": best})
    periodic = bool(s.checkpoint_every) and epoch % s.checkpoint_every == 0
    if periodic:
        backup = ck_dir / f"epoch-{epoch:04d}.pt"
        tmp = ck_dir / f".{backup.name}.tmp"
        shutil.copyfile(last, tmp)
        os.replace(tmp, backup)
    if periodic or epoch == s.epochs:  # drawing takes a second: not every epoch
        plot_loss_curves(log.read(), out / CURVES_FILE, list(task.curve_terms or task.terms),
                         title=f"{task.title} training")
