"""Device choice, DDP set-up, optimiser/schedule and the epoch loops shared by trainers.

A script started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) joins a process
group — NCCL on CUDA, gloo on CPU — and each rank trains on its share of every step; the
same script runs unchanged as a single process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..device import autocast, choose_device  # noqa: F401  (trainers take them from here)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    started_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def close(self) -> None:
        if self.started_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_preference: str | None = "auto") -> DistInfo:
    """Join the torchrun process group when there is one; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = choose_device(device_preference)
    if world <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    started = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        started = True
    return DistInfo(rank, world, local_rank, device, started)


def make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, amsgrad=True)


SCHEDULES = ("cosine", "exponential", "constant")


def lr_factor(step: int, *, schedule: str, total_steps: int, warmup_steps: int,
              steps_per_epoch: int, min_factor: float, decay: float) -> float:
    """Multiplier of the base learning rate at optimiser step ``step``.

    Linear warm-up, then ``cosine`` (down to ``min_factor`` at the last step),
    ``exponential`` (× ``decay`` per epoch, floored at ``min_factor``) or ``constant``.
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "exponential":
        return max(min_factor, decay ** (step / max(1, steps_per_epoch)))
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        t = min(1.0, (step - warmup_steps) / span)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r} (known: {SCHEDULES})")


class StepSchedule:
    """The LambdaLR multiplier as an object: its state_dict entry is plain numbers and
    strings, so checkpoints load with ``weights_only=True``."""

    def __init__(self, **kw):
        self.kw = kw

    def __call__(self, step: int) -> float:
        return lr_factor(step, **self.kw)


def make_scheduler(optimizer, **kw) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, StepSchedule(**kw))


class Meter:
    """Batch-size-weighted sums of loss terms, kept on the device until read."""

    def __init__(self, names: Iterable[str], device: torch.device):
        self.names = tuple(names)
        self.sums = torch.zeros(len(self.names) + 1, dtype=torch.float64, device=device)

    def add(self, terms: dict[str, torch.Tensor], n: int) -> None:
        vals = torch.stack([terms[k].detach().double() for k in self.names])
        self.sums[:-1] += vals * n
        self.sums[-1] += n

    def result(self, info: DistInfo | None = None) -> dict[str, float]:
        sums = self.sums.clone()
        if info is not None:
            info.all_reduce_sum(sums)
        n = float(sums[-1])
        return {k: (float(v) / n if n else float("nan")) for k, v in zip(self.names, sums[:-1],
                                                                          strict=True)}


LossFn = Callable[[torch.nn.Module, dict], tuple[dict[str, torch.Tensor], int]]


def train_epoch(model: torch.nn.Module, batches: Iterable[dict], loss_fn: LossFn, optimizer,
                scheduler, *, names: Iterable[str], device: torch.device, clip: float | None,
                amp: bool = True, info: DistInfo | None = None, progress: bool = False,
                n_steps: int | None = None, desc: str = "train") -> dict[str, float]:
    """One pass of optimiser steps; returns the mean of each term over the epoch's spectra."""
    model.train()
    meter = Meter(names, device)
    bar = tqdm(total=n_steps, desc=desc, unit="batch", leave=False, disable=not progress,
               dynamic_ncols=True)
    for i, batch in enumerate(batches):
        with autocast(device, amp):
            terms, n = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        meter.add(terms, n)
        bar.update(1)
        if progress and i % 20 == 0:  # reading a loss waits for the device: not every step
            bar.set_postfix(loss=f"{float(terms['total'].detach()):.4g}")
    bar.close()
    return meter.result(info)


@torch.no_grad()
def evaluate_epoch(model: torch.nn.Module, batches: Iterable[dict], loss_fn: LossFn, *,
                   names: Iterable[str], device: torch.device, amp: bool = True,
                   info: DistInfo | None = None) -> dict[str, float]:
    """Mean of each term over the batches, without gradients (summed over DDP ranks)."""
    model.eval()
    meter = Meter(names, device)
    for batch in batches:
        with autocast(device, amp):
            terms, n = loss_fn(model, batch)
        meter.add(terms, n)
    return meter.result(info)
