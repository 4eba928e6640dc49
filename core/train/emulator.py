"""Train a spectral emulator on a store's (labels, spectra).

The loss is the masked, error-aware mean squared residual: each pixel weighs
1/(σ² + floor²) and masked pixels weigh nothing, so the same code trains on noisy ingested
APOGEE spectra and on the mock survey.  The weights with the lowest validation loss are
kept.  The per-pixel emulator error on the validation spectra (observed scatter with the
noise removed) is saved with the model; the fitter adds it to σ.
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import BadDataError
from ..models.emulator import PRESETS, Emulator, EmulatorConfig, default_device, save_emulator
from ..store import SpectraStore

#: allStar label columns an emulator learns when the store has them (besides any X_FE / X_H).
#: [M/H] stands in for [Fe/H] only when a store lacks FE_H: with both, the emulator would see
#: [M/H] only along the population's [M/H]–[Fe/H]–α relation, and fits drift along the
#: direction it never learned.
CORE_LABELS = ("TEFF", "LOGG", "FE_H", "VMICRO", "VMACRO", "VSINI", "C12_C13")
_ABUNDANCE = re.compile(r"^[A-Z][A-Z0-9]?_(FE|H)$")
_NOT_ABUNDANCES = ("FE_H", "M_H")
#: allStar writes −9999 for "no value".
MISSING_BELOW = -9000.0


@dataclass
class TrainSettings:
    """Knobs of :func:`train_emulator`; the defaults train The Payne's 2×300 preset."""

    preset: str = "payne"
    hidden: tuple[int, ...] | None = None   # overrides the preset's layer widths
    labels: list[str] | None = None         # None: every label the store carries
    labels_from: str = "catalog"            # "catalog" or "truth" (a mock's TRUE_* columns)
    epochs: int = 300
    batch_size: int = 256
    lr: float = 1e-3
    min_lr: float = 1e-5
    val_fraction: float = 0.1
    max_stars: int | None = None
    error_floor: float = 0.005              # σ floor so very high-SNR pixels do not dominate
    patience: int | None = None             # stop after this many epochs without a better
    #                                         validation loss (None: run the whole schedule)
    max_minutes: float | None = None        # time budget; the LR schedule follows it
    seed: int = 42
    device: str | None = None
    amp: bool = True                        # bf16 autocast on CUDA
    bank_size: int = 512
    max_missing: float = 0.5                # drop a label missing for more rows than this
    weights_dtype: str = "float32"          # "float16" halves the file (shipped demo models)
    name: str = ""

    def layer_sizes(self) -> tuple[int, ...]:
        if self.hidden:
            return tuple(int(h) for h in self.hidden)
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r} (known: {sorted(PRESETS)})")
        return PRESETS[self.preset]


@dataclass
class TrainData:
    """In-memory training arrays: physical labels, flux and per-pixel weights 1/σ (0 = masked)."""

    names: list[str]
    labels: np.ndarray
    flux: np.ndarray
    weight: np.ndarray
    rows: np.ndarray
    floor: float = 0.0
    dropped: dict = field(default_factory=dict)


def available_labels(store: SpectraStore) -> list[str]:
    """Label columns the store carries (with _ERR), in a stable, allStar-like order.

    Teff, log g, [Fe/H] (else [M/H]), v_micro (v_macro, v sin i, ¹²C/¹³C) and every [X/Fe]
    or [X/H]; ask for others, [M/H] included, with ``TrainSettings.labels``.
    """
    cols = store.label_columns()
    core = [c for c in CORE_LABELS if c in cols]
    if "FE_H" not in cols and "M_H" in cols:
        core.insert(2 if len(core) >= 2 else len(core), "M_H")
    abund = [c for c in cols if _ABUNDANCE.match(c) and c not in _NOT_ABUNDANCES]
    return core + abund


def _label_table(store: SpectraStore, names: list[str], labels_from: str) -> np.ndarray:
    cat = store.catalog
    if labels_from not in ("catalog", "truth"):
        raise ValueError(f"labels_from must be 'catalog' or 'truth', got {labels_from!r}")
    cols = [f"TRUE_{n}" if labels_from == "truth" else n for n in names]
    missing = [c for c in cols if c not in cat.columns]
    if missing:
        raise BadDataError(f"{store.path}: catalog has no column(s) {missing}")
    table = cat[cols].to_numpy(dtype=np.float64, copy=True)
    table[~np.isfinite(table) | (table < MISSING_BELOW)] = np.nan
    return table


def load_training_data(store: SpectraStore, settings: TrainSettings) -> TrainData:
    """Pick labels and rows, then read spectra into memory with their loss weights."""
    names = list(settings.labels) if settings.labels else available_labels(store)
    if not names:
        raise BadDataError(f"{store.path}: the catalog holds no label columns (TEFF, LOGG, …)")
    table = _label_table(store, names, settings.labels_from)
    missing = np.isnan(table).mean(0)
    dropped = {}
    if not settings.labels:  # labels the user did not ask for by name may be dropped
        keep = missing <= settings.max_missing
        dropped = {n: float(m) for n, m, k in zip(names, missing, keep, strict=True) if not k}
        names = [n for n, k in zip(names, keep, strict=True) if k]
        table = table[:, keep]
    rows = np.nonzero(np.isfinite(table).all(1))[0]
    if settings.max_stars and rows.size > settings.max_stars:
        rng = np.random.default_rng(settings.seed)
        rows = np.sort(rng.choice(rows, settings.max_stars, replace=False))
    if rows.size < 20:
        raise BadDataError(
            f"{store.path}: only {rows.size} stars have every label {names}; need at least 20"
        )
    flux = np.empty((rows.size, store.grid.n_pix), np.float32)
    weight = np.empty_like(flux)
    start = 0
    for batch in tqdm(store.iter_batches(2048, rows=rows), desc="reading spectra", unit="batch",
                      file=sys.stderr, disable=None):
        n = len(batch)
        good = ~(_bad(batch.pixmask) | ~np.isfinite(batch.flux) | ~np.isfinite(batch.error)
                 | (batch.error <= 0))
        err = np.where(good, batch.error, 1.0)
        flux[start:start + n] = np.where(good, batch.flux, 1.0)
        weight[start:start + n] = good / np.sqrt(err**2 + settings.error_floor**2)
        start += n
    return TrainData(names, table[rows], flux, weight, rows, settings.error_floor, dropped)


def _bad(pixmask: np.ndarray) -> np.ndarray:
    from ..grid import bad_pixels

    return bad_pixels(pixmask, "astronn")


def _mean_spectrum(data: TrainData, rows: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Mean flux over the good pixels of ``rows`` (1 where no row has a good pixel)."""
    total = np.zeros(data.flux.shape[1])
    count = np.zeros(data.flux.shape[1])
    for k in range(0, rows.size, chunk):
        sel = rows[k:k + chunk]
        good = data.weight[sel] > 0
        total += np.where(good, data.flux[sel], 0.0).sum(0)
        count += good.sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), 1.0).astype(np.float32)


def cosine_lr(done: float, lr: float, min_lr: float) -> float:
    """Cosine decay from ``lr`` to ``min_lr`` as training goes from 0 to 1 done.

    "Done" is the larger of the epoch fraction and the fraction of the time budget, so a run
    cut short by ``max_minutes`` still ends at the low learning rate that fine-tunes it.
    """
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(max(done, 0.0), 1.0)))


def _weighted_mse(pred, flux, weight):
    w2 = weight.square()
    return (w2 * (pred - flux).square()).sum() / (weight > 0).sum().clamp(min=1)


def train_emulator(store: SpectraStore | str | Path, out_dir, settings: TrainSettings | None = None,
                   *, command: str = "", progress: bool = True) -> dict:
    """Train, keep the best-validation weights, save to ``out_dir``; returns the training record."""
    s = settings or TrainSettings()
    store = store if isinstance(store, SpectraStore) else SpectraStore.open(store)
    torch.manual_seed(s.seed)
    device = torch.device(s.device) if s.device else default_device()
    data = load_training_data(store, s)
    n = data.labels.shape[0]
    rng = np.random.default_rng(s.seed)
    perm = rng.permutation(n)
    n_val = max(1, int(round(s.val_fraction * n)))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    x_min = data.labels[train_idx].min(0)
    x_max = data.labels[train_idx].max(0)
    x_max = np.where(x_max > x_min, x_max, x_min + 1e-6)  # a constant label still scales
    config = EmulatorConfig(label_names=data.names, x_min=x_min, x_max=x_max, grid=store.grid.name,
                            hidden=s.layer_sizes(), preset=s.preset if not s.hidden else "custom")
    model = Emulator(config).to(device)
    with torch.no_grad():  # start from the mean spectrum: the network learns the departures
        model.layers[-1].bias.copy_(torch.from_numpy(_mean_spectrum(data, train_idx)))
    bank = data.labels[rng.choice(train_idx, min(s.bank_size, train_idx.size), replace=False)]
    model.start_bank = torch.tensor(bank, dtype=torch.float32, device=device)

    x_all = torch.tensor(model.scale(data.labels), dtype=torch.float32)
    flux_all = torch.from_numpy(data.flux)
    w_all = torch.from_numpy(data.weight)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    steps_per_epoch = math.ceil(train_idx.size / s.batch_size)
    use_amp = s.amp and device.type == "cuda"
    best = {"loss": math.inf, "epoch": -1, "state": None}
    history = []
    t0 = time.time()
    bar = tqdm(range(s.epochs), desc="training emulator", unit="epoch", file=sys.stderr,
               disable=not progress or None)
    for epoch in bar:
        model.train()
        order = torch.from_numpy(rng.permutation(train_idx))
        total = 0.0
        for k in range(steps_per_epoch):
            idx = order[k * s.batch_size:(k + 1) * s.batch_size]
            x, f, w = (t[idx].to(device, non_blocking=True) for t in (x_all, flux_all, w_all))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                pred = model(x)
            loss = _weighted_mse(pred.float(), f, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            done = (epoch + (k + 1) / steps_per_epoch) / s.epochs
            if s.max_minutes:
                done = max(done, (time.time() - t0) / (60 * s.max_minutes))
            for group in opt.param_groups:
                group["lr"] = cosine_lr(done, s.lr, s.min_lr)
            opt.step()
            total += float(loss.detach()) * idx.numel()
        val = _evaluate(model, x_all, flux_all, w_all, val_idx, device)
        history.append({"epoch": epoch, "train": total / train_idx.size, "val": val})
        if val < best["loss"]:
            best = {"loss": val, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        bar.set_postfix(train=f"{total / train_idx.size:.3g}", val=f"{val:.3g}",
                        best=best["epoch"])
        if s.patience is not None and epoch - best["epoch"] >= s.patience:
            break
        if s.max_minutes and time.time() - t0 > 60 * s.max_minutes:
            break  # the learning rate has reached its floor by now
    model.load_state_dict(best["state"])
    model.eval()
    pixel_error, summary = validation_error(model, data, val_idx, device)
    model.pixel_error = torch.tensor(pixel_error, dtype=torch.float32, device=device)
    record = {
        "name": s.name or Path(out_dir).name,
        "store": str(store.path),
        "store_title": store.title,
        "store_kind": store.kind,
        "command": command,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()},
        "labels_from": s.labels_from,
        "dropped_labels": data.dropped,
        "n_train": int(train_idx.size),
        "n_val": int(val_idx.size),
        "epochs_run": len(history),
        "best_epoch": int(best["epoch"]),
        "best_val_loss": float(best["loss"]),
        "seconds": round(time.time() - t0, 1),
        "device": str(device),
        "validation": summary,
        "history": history,
    }
    save_emulator(model, out_dir, extra=record, weights_dtype=s.weights_dtype)
    return record


@torch.no_grad()
def _evaluate(model, x_all, flux_all, w_all, idx, device, batch: int = 1024) -> float:
    model.eval()
    num, den = 0.0, 0.0
    for k in range(0, idx.size, batch):
        sel = torch.from_numpy(idx[k:k + batch])
        x, f, w = (t[sel].to(device) for t in (x_all, flux_all, w_all))
        pred = model(x)
        num += float((w.square() * (pred - f).square()).sum())
        den += float((w > 0).sum())
    return num / max(den, 1.0)


@torch.no_grad()
def validation_error(model: Emulator, data: TrainData, idx: np.ndarray, device,
                     batch: int = 1024) -> tuple[np.ndarray, dict]:
    """Per-pixel emulator error on validation spectra: √max(⟨r²⟩ − ⟨σ²⟩, 0) over good pixels."""
    p = model.n_pix
    sum_r2, sum_var, count = np.zeros(p), np.zeros(p), np.zeros(p)
    sum_abs = np.zeros(p)
    x_all = model.scale(data.labels)
    for k in range(0, idx.size, batch):
        sel = idx[k:k + batch]
        pred = model(torch.tensor(x_all[sel], dtype=torch.float32, device=device)).cpu().numpy()
        w = data.weight[sel]
        good = w > 0
        r = np.where(good, pred - data.flux[sel], 0.0)
        var = np.where(good, 1.0 / np.where(good, w, 1.0) ** 2 - data.floor**2, 0.0)
        sum_r2 += (r * r).sum(0)
        sum_abs += np.abs(r).sum(0)
        sum_var += var.sum(0)
        count += good.sum(0)
    c = np.maximum(count, 1)
    rms = np.sqrt(sum_r2 / c)
    noise = np.sqrt(sum_var / c)
    emu_err = np.sqrt(np.maximum(sum_r2 / c - sum_var / c, 0.0))
    emu_err[count == 0] = 0.0
    summary = {
        "residual_rms_median": float(np.median(rms[count > 0])),
        "noise_rms_median": float(np.median(noise[count > 0])),
        "emulator_error_median": float(np.median(emu_err[count > 0])),
        "emulator_error_p95": float(np.percentile(emu_err[count > 0], 95)),
        "mean_abs_residual": float(sum_abs.sum() / c.sum()),
    }
    return emu_err.astype(np.float32), summary
