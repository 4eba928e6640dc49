"""The spectral emulator (The Payne's idea) as a training task of the shared trainer.

``stellarscope train emulator`` runs :data:`task` through :func:`core.train.trainer.train`.
This module holds only what is the emulator's own: which labels it learns, the in-memory
(labels, spectra, χ² weights) arrays, the model (label ranges from the training rows, output
bias at their mean spectrum, a bank of training labels to start fits), its loss — the masked,
error-aware mean squared residual, each pixel weighing 1/(σ² + floor²) (:mod:`core.chi2`) and
masked pixels nothing — and, once training ends, the per-pixel emulator error on the
validation spectra (observed scatter with the noise removed), which the fitter adds to σ.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..chi2 import ERROR_FLOOR, pixel_weights
from ..errors import BadDataError
from ..labels import is_missing
from ..models.emulator import PRESETS, Emulator, EmulatorConfig
from ..paths import resolve_store
from ..store import SpectraStore
from ..store.atomic import write_text_atomic
from . import data as D
from .trainer import LOG_FILE, TrainingSetupError, TrainTask, train
from .trainer import TrainSettings as _SharedSettings

#: The validation stars' APOGEE_IDs, one per line, saved beside the weights.
HELD_OUT_FILE = "held_out_ids.txt"
#: Where training labels and spectra come from (see ``--labels-from``).
LABEL_SOURCES = ("catalog", "truth", "noiseless")

#: allStar label columns an emulator learns when the store has them (besides any X_FE / X_H).
#: [M/H] stands in for [Fe/H] only when a store lacks FE_H: with both, the emulator would see
#: [M/H] only along the population's [M/H]–[Fe/H]–α relation, and fits drift along the
#: direction it never learned.
CORE_LABELS = ("TEFF", "LOGG", "FE_H", "VMICRO", "VMACRO", "VSINI", "C12_C13")
_ABUNDANCE = re.compile(r"^[A-Z][A-Z0-9]?_(FE|H)$")
_NOT_ABUNDANCES = ("FE_H", "M_H")


@dataclass
class EmulatorTrainSettings(_SharedSettings):
    """The shared knobs with the emulator's defaults, plus its own; the defaults train The
    Payne's 2×300 preset."""

    epochs: int = 300
    seed: int = 42
    warmup_steps: int = 10
    min_lr_factor: float = 0.01
    clip: float | None = None
    checkpoint_every: int = 50
    preset: str = "payne"
    hidden: tuple[int, ...] | None = None   # overrides the preset's layer widths
    labels: list[str] | None = None         # None: every label the store carries
    labels_from: str = "catalog"            # "catalog" or "truth" (a mock's TRUE_* columns)
    val_fraction: float = 0.1
    max_stars: int | None = None
    extra_stars: int = 0                    # noiseless only: stars drawn beyond the store's
    bank_size: int = 512
    max_missing: float = 0.5                # drop a label missing for more rows than this
    name: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.hidden is not None:
            self.hidden = tuple(int(h) for h in self.hidden)
        if self.labels_from not in LABEL_SOURCES:
            raise ValueError(f"labels_from must be one of {LABEL_SOURCES}, got "
                             f"{self.labels_from!r}")
        if self.extra_stars < 0:
            raise ValueError(f"extra_stars must be ≥ 0, got {self.extra_stars}")
        if self.extra_stars and self.labels_from != "noiseless":
            raise ValueError("extra stars are synthesised without noise: they need "
                             "labels_from='noiseless'")

    def layer_sizes(self) -> tuple[int, ...]:
        if self.hidden:
            return tuple(int(h) for h in self.hidden)
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r} (known: {sorted(PRESETS)})")
        return PRESETS[self.preset]


#: The name older callers use.
TrainSettings = EmulatorTrainSettings


@dataclass
class TrainData:
    """In-memory training arrays: physical labels, flux and χ² weights 1/(σ² + floor²)
    (0 = masked).

    ``weight`` is (N, P), or (N, 1) when every pixel of a row weighs the same (noiseless
    spectra: a per-pixel copy of a constant would double the memory).  Rows beyond
    ``rows.size`` are extra stars that are not in the store (``n_extra`` of them, last):
    they train, they never validate.
    """

    names: list[str]
    labels: np.ndarray
    flux: np.ndarray
    weight: np.ndarray
    rows: np.ndarray
    floor: float = ERROR_FLOOR
    dropped: dict = field(default_factory=dict)
    n_extra: int = 0


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
    cols = [n if labels_from == "catalog" else f"TRUE_{n}" for n in names]
    missing = [c for c in cols if c not in store.catalog.columns]
    if missing:
        raise BadDataError(f"{store.path}: catalog has no column(s) {missing}")
    return _label_table_of(store.catalog, names, labels_from)


def _label_table_of(cat: pd.DataFrame, names: list[str], labels_from: str) -> np.ndarray:
    cols = [n if labels_from == "catalog" else f"TRUE_{n}" for n in names]
    table = cat[cols].to_numpy(dtype=np.float64, copy=True)
    table[is_missing(table)] = np.nan
    return table


def load_training_data(store: SpectraStore, settings: EmulatorTrainSettings) -> TrainData:
    """Pick labels and rows, then read spectra into memory with their χ² weights."""
    if settings.labels_from == "noiseless" and store.kind != "mock survey":
        raise BadDataError(f"{store.path}: --labels-from noiseless re-synthesises a mock "
                           f"survey's spectra; this store is a {store.kind!r}")
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
    if settings.labels_from == "noiseless":
        truth = store.catalog.iloc[rows]
        labels = table[rows]
        if settings.extra_stars:
            extra = _extra_truth(store, settings.extra_stars, settings.seed)
            truth = pd.concat([truth, extra], ignore_index=True)
            labels = np.concatenate([labels, _label_table_of(extra, names, "truth")])
        flux, weight = _noiseless_spectra(store, truth, settings.progress)
        return TrainData(names, labels, flux, weight, rows, ERROR_FLOOR, dropped,
                         n_extra=settings.extra_stars)
    flux = np.empty((rows.size, store.grid.n_pix), np.float32)
    weight = np.empty_like(flux)
    start = 0
    for batch in tqdm(store.iter_batches(2048, rows=rows), desc="reading spectra", unit="batch",
                      file=sys.stderr, disable=not settings.progress or None):
        n = len(batch)
        good = D.good_pixels(batch.flux, batch.error, batch.pixmask, "astronn")
        flux[start:start + n] = np.where(good, batch.flux, 1.0)
        weight[start:start + n] = pixel_weights(batch.error, good)
        start += n
    return TrainData(names, table[rows], flux, weight, rows, ERROR_FLOOR, dropped)


def _extra_truth(store: SpectraStore, n: int, seed: int) -> pd.DataFrame:
    """``n`` more stars of the store's mock population, drawn with a seed of their own.

    The Payne's training set is as large as the synthesis allows; a mock survey's own stars
    are a few ten thousand.  The seed mixes the training seed with the store's, so the extra
    stars never repeat the store's (nor another store's of a different seed).
    """
    from ..mock.physics import _provenance
    from ..mock.populations import draw_labels
    from ..mock.survey import store_population

    store_seed = int(_provenance(store).get("seed", 0))
    mixed = int(np.random.SeedSequence([store_seed, int(seed), 0xE7A5]).generate_state(1)[0])
    return draw_labels(n, seed=mixed, population=store_population(store))


def _noiseless_spectra(store: SpectraStore, truth: pd.DataFrame, progress: bool,
                       chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Spectra synthesised without noise, with the store's physics, from ``truth``'s TRUE_*
    labels (rows of the store's catalog, and any extra stars).

    The Payne learns from noiseless model spectra: the emulator then reaches the accuracy of
    the synthesis rather than that of the survey's noise.  Every pixel counts, with the χ²
    weight of the error floor alone (no noise, no masked pixels), one weight per row.
    """
    from ..mock.synth import noiseless_flux

    physics = mock_physics(store)
    n = len(truth)
    flux = np.empty((n, store.grid.n_pix), np.float32)
    for start in tqdm(range(0, n, chunk), desc="noiseless spectra", unit="chunk",
                      file=sys.stderr, disable=not progress or None):
        part = truth.iloc[start:start + chunk]
        flux[start:start + len(part)] = (
            noiseless_flux(part, store.grid, physics=physics) if physics != "classic"
            else noiseless_flux(part, store.grid))
    weight = np.full((n, 1), 1.0 / ERROR_FLOOR**2, np.float32)
    return flux, weight


def mock_physics(store: SpectraStore) -> str:
    """The named physics a mock store was synthesised with ('classic' for older stores)."""
    try:
        from ..mock.physics import store_physics
    except ImportError:
        return "classic"
    return store_physics(store)


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


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated label names, got {text!r}")
    return names


class EmulatorTask(TrainTask):
    """Labels → spectrum MLP trained on a store's (labels, spectra)."""

    settings_class = EmulatorTrainSettings
    title = "emulator"
    terms = ("total", "resid_rms")
    resume_adjustable = ("name",)
    model_type = "emulator"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="payne: The Payne's 2×300 leaky-ReLU network (default; the more "
                       "accurate on the mock survey for a CPU budget); wide: 2×512")
        p.add_argument("--hidden", type=_widths, default=None,
                       help="custom hidden widths, e.g. 512,512")
        p.add_argument("--labels", type=_names, default=None,
                       help="comma-separated labels (default: all the store has)")
        p.add_argument("--labels-from", choices=list(LABEL_SOURCES), default=None,
                       help="catalog: the catalog's labels and observed spectra; truth: a mock "
                       "survey's TRUE_* labels with its observed (noisy) spectra; noiseless: "
                       "TRUE_* labels with the mock's spectra re-synthesised without noise (as "
                       "The Payne trains on model spectra; mock surveys only)")
        p.add_argument("--val-fraction", type=float, default=None,
                       help="fraction of stars held out for validation (0.1)")
        p.add_argument("--max-stars", type=int, default=None, help="train on a random subset")
        p.add_argument("--extra-stars", type=int, default=None,
                       help="with --labels-from noiseless: also train on this many more stars "
                       "drawn from the store's mock population (their own seed) and "
                       "synthesised without noise; validation stays on the store's stars")

    # -- data ---------------------------------------------------------------------------------
    def prepare(self, info) -> None:
        s = self.settings
        self.store = store = SpectraStore.open(resolve_store(s.store))
        self.data = data = load_training_data(store, s)
        n = data.rows.size  # the store's stars; extra stars (after them) only train
        self.rng = np.random.default_rng(s.seed)
        perm = self.rng.permutation(n)
        n_val = max(1, int(round(s.val_fraction * n)))
        extra = np.arange(n, n + data.n_extra)
        self.val_idx = np.sort(perm[:n_val])
        self.train_idx = np.concatenate([np.sort(perm[n_val:]), extra])

    def new_model(self, info) -> Emulator:
        s, data, train_idx = self.settings, self.data, self.train_idx
        x_min = data.labels[train_idx].min(0)  # label ranges from the training rows only
        x_max = data.labels[train_idx].max(0)
        x_max = np.where(x_max > x_min, x_max, x_min + 1e-6)  # a constant label still scales
        config = EmulatorConfig(label_names=data.names, x_min=x_min, x_max=x_max,
                                grid=self.store.grid.name, hidden=s.layer_sizes(),
                                preset=s.preset if not s.hidden else "custom")
        bank = data.labels[self.rng.choice(train_idx, min(s.bank_size, train_idx.size),
                                           replace=False)]
        model = Emulator(config, n_bank=len(bank))
        with torch.no_grad():  # start from the mean spectrum: the network learns the departures
            model.layers[-1].bias.copy_(torch.from_numpy(_mean_spectrum(data, train_idx)))
            model.start_bank.copy_(torch.as_tensor(bank, dtype=torch.float32))
        self.model = model
        return model

    def adopt(self, model, source: str) -> Emulator:
        if not isinstance(model, Emulator):
            raise TrainingSetupError(f"{source}: --init-from needs an emulator, found "
                                     f"{type(model).__name__}")
        if model.grid.name != self.store.grid.name:
            raise BadDataError(f"{self.store.path}: store grid {self.store.grid.name} does not "
                               f"match the emulator's {model.grid.name}")
        if model.label_names != self.data.names:
            raise TrainingSetupError(f"{source}: the emulator learns {model.label_names}, this "
                                     f"run {self.data.names}; pass --labels "
                                     f"{','.join(model.label_names)}")
        self.model = model
        return model

    def sources(self, info):
        s, data = self.settings, self.data
        # label scaling of the model being trained (a fine-tuned one keeps its ranges)
        x = self.model.scale(data.labels).astype(np.float32)

        # one set of tensors for both sources: subsets are index views, not copies of the
        # spectra (a copy per split doubled the peak memory of a large store)
        tensors = D.to_tensors({"x": x, "flux": data.flux, "weight": data.weight,
                                "rows": np.arange(len(x), dtype=np.int64)}, info.device)

        def source(idx):
            return D.MemorySource(tensors, info.device, s.batch_size, s.seed, info.world,
                                  info.rank, index=idx)

        return source(self.train_idx), source(self.val_idx)

    # -- loss and saving -------------------------------------------------------------------------
    def loss(self, model, batch) -> dict:
        pred = model(batch["x"]).float()
        w = batch["weight"]
        good = w > 0
        r2 = torch.where(good, pred - batch["flux"], torch.zeros((), device=w.device)).square()
        n_good = good.expand_as(r2).sum().clamp(min=1)  # weight may be one column per row
        total = (w * r2).sum() / n_good
        return {"total": total, "resid_rms": (r2.sum() / n_good).detach().sqrt()}

    def record(self) -> dict:
        s, store = self.settings, self.store
        return {
            "name": s.name or Path(s.out).name,
            "store": str(store.path),
            "store_title": store.title,
            "store_kind": store.kind,
            "command": s.command or "",
            "settings": s.to_dict(),
            "labels_from": s.labels_from,
            "dropped_labels": self.data.dropped,
            "n_train": int(self.train_idx.size),
            "n_val": int(self.val_idx.size),
            "n_extra": int(self.data.n_extra),
        }

    def extra_config(self, model, best: dict) -> dict:
        return {"training": {**self.record(), "best_epoch": int(best["epoch"]),
                             # as training_log.csv writes it (8 digits)
                             "best_val_loss": float(f"{best['val_total']:.8g}")}}

    def after_training(self, model, config: dict, summary: dict) -> dict:
        """The per-pixel validation error of the best model, saved with it, and the held-out
        stars' IDs (``evaluate emulator --held-out`` fits only those)."""
        ids = self.store.catalog["APOGEE_ID"].to_numpy()[self.data.rows[self.val_idx]]
        write_text_atomic(Path(self.settings.out) / HELD_OUT_FILE,
                          "".join(f"{i}\n" for i in ids))
        device = model.device
        pixel_error, self.pixel_error = validation_error(model, self.data, self.val_idx, device)
        model.pixel_error = torch.tensor(pixel_error, dtype=torch.float32, device=device)
        record = {**config.get("training", {}), "epochs_run": summary["epochs"],
                  "seconds": round(summary["seconds"], 1), "device": summary["device"],
                  "validation": self.pixel_error}
        return {"training": record}

    def facts(self) -> dict:
        out = {"labels": list(self.data.names), "n_train": int(self.train_idx.size),
               "n_val": int(self.val_idx.size), "n_validation": int(self.val_idx.size)}
        if hasattr(self, "pixel_error"):
            out["pixel_error"] = self.pixel_error
        return out

    @classmethod
    def report(cls, summary: dict) -> list[str]:
        lines = [f"{summary['n_train']} training / {summary['n_val']} validation stars, labels "
                 f"{', '.join(summary['labels'])}"]
        if "pixel_error" in summary:
            v = summary["pixel_error"]
            lines.append(f"validation: median emulator error {v['emulator_error_median']:.4f}, "
                         f"residual rms {v['residual_rms_median']:.4f} "
                         f"(noise {v['noise_rms_median']:.4f})")
        return lines


#: The family registry's training task (core.models.families: "core.train.emulator:task").
task = EmulatorTask


def train_emulator(store: SpectraStore | str | Path, out_dir, settings: EmulatorTrainSettings | None = None,
                   *, command: str = "", progress: bool = True, resume: bool = False,
                   overwrite: bool = True) -> dict:
    """Train through the shared trainer into ``out_dir``; returns the saved training record
    with ``history`` (the per-epoch training log) added."""
    import dataclasses

    import pandas as pd

    s = settings or EmulatorTrainSettings()
    path = store.path if isinstance(store, SpectraStore) else store
    s = dataclasses.replace(s, store=str(path), out=str(out_dir), progress=progress,
                            command=command or s.command)
    summary = train(EmulatorTask(s), resume=resume, overwrite=overwrite and not resume)
    from ..models.io import read_config

    record = dict(read_config(out_dir).get("training", {}))
    log = pd.read_csv(Path(out_dir) / LOG_FILE)
    record["history"] = [{"epoch": int(r.epoch), "train": float(r.train_total),
                          "val": float(r.val_total)} for r in log.itertuples()]
    record["summary"] = summary
    return record


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
        var = np.where(good, 1.0 / np.where(good, w, 1.0) - data.floor**2, 0.0)
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
