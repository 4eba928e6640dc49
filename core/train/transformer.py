"""The spectral transformer as a training task of the shared trainer (:mod:`core.train.trainer`).

``stellarscope train transformer`` runs :data:`task`.  What is the transformer's own: every
batch shows each star a fresh random context of its good pixels (drawn with the trainer's
per-(epoch, rank) torch seed, so a resumed run draws the same), the loss is the Gaussian NLL
of the predicted value and log-variance with the catalog label errors added to the variance,
missing labels are masked, and scalings (flux centre/scale, label mean/std) come from the
training rows only.  Fine-tuning: ``--init-from`` (shared), ``--freeze encoder``,
``--wave-range A B`` (read only pixels between A and B Å), rehearsal (``--rehearse-store DIR
--rehearse-fraction F``: labelled stars of another store, e.g. the pre-training survey, mixed
into every training batch so the model does not forget them) and L2-SP (``--l2sp W``: a
penalty W/2·Σ(θ − θ₀)² on the distance from the ``--init-from`` weights θ₀).
``--val-draws K`` averages the validation loss over K context draws per star, steadier on a
small validation split; ``--val-whole`` instead judges each validation star as inference does
(every good pixel in context-sized patches, combined by inverse predicted variance), all
validation stars in one batch: the validation total is then the mean over labels of
log(mean squared error ÷ the starting model's) (0 = no better than where fine-tuning began),
so early stopping (``--patience``; the best epoch's weights are kept) weighs every label
alike and a large gain in one label cannot hide a loss in another as easily.
``--interpolate`` (with ``--val-whole``) ends a fine-tune by weight-space interpolation
θ₀ + α(θ − θ₀) between the starting and the best fine-tuned weights, α from 0 to 1 in
steps of 0.1 chosen on the same validation total (the idea of WiSE-FT: keep what the
pre-trained model did well while taking the gains of the fine-tune).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import BadDataError
from ..labels import is_missing
from ..models.transformer import PRESETS, SpectralTransformer, TransformerConfig, gaussian_nll
from ..paths import resolve_store
from ..store import SpectraStore
from . import data as D
from .trainer import TrainingSetupError, TrainSettings, TrainTask

FREEZABLE = ("embedding", "encoder", "decoder")


@dataclass
class TransformerTrainSettings(TrainSettings):
    """The shared knobs plus the transformer's own."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 100
    preset: str = "compact"
    context: int | None = None          # overrides the preset's context length
    encoder_layers: int | None = None   # override the preset's block counts
    decoder_layers: int | None = None
    wave_turns: float | None = None     # override the wavelength encoding's finest scale
    labels: list[str] = field(default_factory=lambda: list(D.LABEL_NAMES))
    val_fraction: float = 0.1
    split_seed: int = 0
    bad_bits: str = "astronn"
    max_rows: int | None = None
    freeze: list[str] = field(default_factory=list)
    wave_range: list[float] | None = None
    rehearse_store: str | None = None
    rehearse_fraction: float = 0.5
    rehearse_rows: int = 2000
    l2sp: float = 0.0
    val_draws: int = 1
    val_whole: bool = False
    interpolate: bool = False

    def __post_init__(self):
        super().__post_init__()
        bad = [f for f in self.freeze if f not in FREEZABLE]
        if bad:
            raise ValueError(f"--freeze takes {', '.join(FREEZABLE)}; got {bad}")
        if self.wave_range is not None:
            lo, hi = (float(v) for v in self.wave_range)
            if hi <= lo:
                raise ValueError(f"--wave-range needs A < B, got {lo} {hi}")
            self.wave_range = [lo, hi]
        if not 0.0 < self.rehearse_fraction < 1.0:
            raise ValueError(f"--rehearse-fraction must lie in (0, 1), got "
                             f"{self.rehearse_fraction}")
        if self.rehearse_rows < 1 or self.val_draws < 1:
            raise ValueError("--rehearse-rows and --val-draws must be at least 1")
        if self.l2sp < 0:
            raise ValueError(f"--l2sp must be ≥ 0, got {self.l2sp}")
        if self.interpolate and not (self.init_from and self.val_whole):
            raise TrainingSetupError("--interpolate chooses between the --init-from weights "
                                     "and the fine-tuned ones on the --val-whole total: pass "
                                     "both")
        if self.l2sp and not self.init_from:
            raise TrainingSetupError("--l2sp penalises the distance from the --init-from "
                                     "weights: pass --init-from MODEL_DIR")


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def _nonnegative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _parts(text: str) -> list[str]:
    parts = _names(text)
    bad = [f for f in parts if f not in FREEZABLE]
    if bad:
        raise argparse.ArgumentTypeError(f"--freeze takes {', '.join(FREEZABLE)}; got {bad}")
    return parts


def freeze(model: SpectralTransformer, parts) -> None:
    """Stop training the named parts (embedding: value embedding; encoder; decoder: blocks,
    label queries and heads)."""
    groups = {"embedding": [model.value_embed], "encoder": [model.encoder],
              "decoder": [model.decoder, model.head_norm, model.head]}
    for part in parts:
        for module in groups[part]:
            for p in module.parameters():
                p.requires_grad_(False)
        if part == "decoder":
            model.label_queries.requires_grad_(False)


def ids_sha256(catalog, rows) -> str:
    """Fingerprint of the training stars (their sorted APOGEE_IDs): evaluations recognise
    them in a copy of the training store elsewhere (core.evaluate.transformer)."""
    import hashlib

    ids = sorted(catalog["APOGEE_ID"].astype(str).to_numpy()[np.asarray(rows)])
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def draw_context(good: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, mask) of a random draw of up to ``context`` good pixels per row (torch RNG:
    the trainer seeds it per epoch and rank)."""
    scores = torch.rand(good.shape, device=good.device)
    scores = torch.where(good, scores, torch.full_like(scores, -1.0))
    idx = scores.topk(min(context, good.shape[1]), dim=1).indices
    return idx, good.gather(1, idx)


class TransformerTask(TrainTask):
    """Pixel tokens + wavelength encoding → labels with uncertainties."""

    settings_class = TransformerTrainSettings
    title = "transformer"
    terms = ("total", "mse")
    model_type = "transformer"

    def __init__(self, settings):
        super().__init__(settings)
        # the distance from the starting weights is logged when it is penalised
        self.terms = type(self).terms + (("l2sp",) if settings.l2sp else ())
        self.reference: dict[str, torch.Tensor] = {}

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="compact (CPU-sized, default); compact-local (its encoder reads "
                       "each pixel alone); compact-selector (the shipped demo's: token-wise "
                       "encoder, values blind to wavelength so attention is the only wavelength "
                       "selection, 8 heads, 1 Å encoding); spectrafm (context 512, width 256, "
                       "2 encoder + 3 decoder blocks)")
        p.add_argument("--context", type=int, default=None,
                       help="pixels per star per step (default: the preset's)")
        p.add_argument("--encoder-layers", type=int, default=None,
                       help="encoder blocks (default: the preset's; 0 = the label queries read "
                       "the pixel tokens directly, so their attention is where they read)")
        p.add_argument("--decoder-layers", type=int, default=None,
                       help="decoder blocks (default: the preset's)")
        p.add_argument("--wave-turns", type=float, default=None,
                       help="radians the fastest wavelength sinusoid turns across the encoding's "
                       "range (default 1000: a 12.6 Å period over 2000 Å; more resolves "
                       "single lines)")
        p.add_argument("--labels", type=_names, default=None,
                       help="comma-separated labels (default TEFF,LOGG,FE_H); missing values "
                       "are left out of the loss")
        p.add_argument("--val-fraction", type=float, default=None,
                       help="fraction of stars held out for validation (0.1)")
        p.add_argument("--split-seed", type=int, default=None, help="seed of the star split (0)")
        p.add_argument("--bad-bits", default=None, help="PIXMASK bad set: astronn or pipeline")
        p.add_argument("--max-rows", type=int, default=None, help="use only the first N rows")
        p.add_argument("--freeze", type=_parts, default=None,
                       help=f"parts not trained when fine-tuning: {', '.join(FREEZABLE)}")
        p.add_argument("--wave-range", type=float, nargs=2, metavar=("A", "B"), default=None,
                       help="read only pixels between A and B Å (vacuum)")
        p.add_argument("--rehearse-store", default=None, metavar="DIR",
                       help="rehearsal when fine-tuning: labelled stars of this store (same "
                       "grid, e.g. the pre-training survey) are mixed into every training batch "
                       "so the model keeps what it knew; validation stays on --store")
        p.add_argument("--rehearse-fraction", type=_fraction, default=None, metavar="F",
                       help="fraction of every training batch's spectra drawn from "
                       "--rehearse-store (0.5): each --batch-size stars of --store get "
                       "round(B·F/(1−F)) rehearsal stars")
        p.add_argument("--rehearse-rows", type=_positive, default=None, metavar="N",
                       help="rehearsal stars held in memory, a seeded sample of the store's "
                       "labelled stars (2000)")
        p.add_argument("--l2sp", type=_nonnegative, default=None, metavar="W",
                       help="L2-SP: add W/2·Σ(θ−θ₀)² over the trained weights to the training "
                       "loss, θ₀ the --init-from weights (0 = off); validation loss leaves it "
                       "out")
        p.add_argument("--val-draws", type=_positive, default=None, metavar="K",
                       help="random pixel contexts per validation star, averaged (1); more "
                       "makes early stopping on a small validation split steadier")
        p.add_argument("--val-whole", action="store_const", const=True, default=None,
                       help="validate on whole spectra as inference reads them (all good "
                       "pixels in patches, combined by inverse variance), all validation stars "
                       "in one batch: the validation total is the mean over labels of "
                       "log(mean squared error / the --init-from model's), 0 = no gain (from "
                       "scratch: / the label variance)")
        p.add_argument("--interpolate", action="store_const", const=True, default=None,
                       help="after fine-tuning, save θ₀ + α(θ − θ₀) between the --init-from "
                       "weights θ₀ and the best fine-tuned θ, α in 0, 0.1 … 1 chosen by the "
                       "--val-whole total (needs --init-from and --val-whole)")

    # -- data ---------------------------------------------------------------------------------
    def prepare(self, info) -> None:
        s = self.settings
        self.store = store = SpectraStore.open(resolve_store(s.store))
        self.labels, self.label_err = D.label_arrays(store.catalog, s.labels, where=str(store.path))
        self.labels[is_missing(self.labels)] = np.nan   # APOGEE's -9999 is no value
        self.label_err[is_missing(self.label_err)] = np.nan
        rows = np.nonzero(np.isfinite(self.labels).any(axis=1))[0].astype(np.int64)
        if s.max_rows:
            rows = rows[: s.max_rows]
        self.split = D.checked_split(store, rows, s.val_fraction, s.split_seed, info.world,
                                     f"any of {', '.join(s.labels)}")
        wave = store.grid.wavelength.astype(np.float32)
        self.use = np.ones(wave.size, bool)
        if s.wave_range:
            self.use = (wave >= s.wave_range[0]) & (wave <= s.wave_range[1])
            if not self.use.any():
                raise BadDataError(f"{store.path}: no pixel of the {store.grid.name} grid lies in "
                                   f"--wave-range {s.wave_range[0]} {s.wave_range[1]} Å")
        self.wave = wave
        self.rehearse_rows = None
        if s.rehearse_store:
            self._prepare_rehearsal()

    def _prepare_rehearsal(self) -> None:
        s = self.settings
        rs = self.rehearse = SpectraStore.open(resolve_store(s.rehearse_store))
        if rs.grid.name != self.store.grid.name:
            raise BadDataError(f"{rs.path}: rehearsal store on the {rs.grid.name} grid, "
                               f"--store {self.store.path} on {self.store.grid.name}")
        labels, err = D.label_arrays(rs.catalog, s.labels, where=str(rs.path))
        labels[is_missing(labels)] = np.nan
        err[is_missing(err)] = np.nan
        rows = np.nonzero(np.isfinite(labels).any(axis=1))[0].astype(np.int64)
        if rows.size == 0:
            raise BadDataError(f"{rs.path}: no star with any of {', '.join(s.labels)} to "
                               "rehearse")
        rng = np.random.default_rng([s.seed, 11])
        self.rehearse_rows = np.sort(rng.permutation(rows)[: s.rehearse_rows])
        self.rehearse_labels, self.rehearse_err = labels, err

    def _flux_scaling(self) -> tuple[float, float]:
        """Median and spread of good training flux (a sample of rows).  The spread is the
        standard deviation within the 0.5–99.5 % quantiles, not a MAD: most pixels are
        continuum, so a MAD would measure the noise and put every line far out in the tail."""
        s = self.settings
        rows = np.sort(np.random.default_rng(s.seed).permutation(self.split.train)[:2000])
        vals = []
        for b in self.store.iter_batches(512, rows=rows):
            good = D.good_pixels(b.flux, b.error, b.pixmask, s.bad_bits) & self.use
            vals.append(b.flux[good])
        v = np.concatenate(vals) if vals else np.zeros(0)
        if v.size == 0:
            raise BadDataError(f"{self.store.path}: the training rows have no good pixel")
        lo, hi = np.quantile(v, [0.005, 0.995])
        v = v[(v >= lo) & (v <= hi)]
        return float(np.median(v)), float(v.std()) or 1.0

    def new_model(self, info) -> SpectralTransformer:
        s = self.settings
        over = {"label_names": tuple(s.labels), "grid": self.store.grid.name}
        if s.context:
            over["context"] = s.context
        for name in ("encoder_layers", "decoder_layers", "wave_turns"):
            if getattr(s, name) is not None:
                over[name] = getattr(s, name)
        model = SpectralTransformer(TransformerConfig.preset_config(s.preset, **over))
        if info.is_main:  # other ranks receive the scalings when DDP wraps the model
            center, scale = self._flux_scaling()
            mean, std = D.label_statistics(self.labels[self.split.train])
            model.set_scaling(center, scale, mean, std)
        return self._ready(model)

    def adopt(self, model, source: str) -> SpectralTransformer:
        if not isinstance(model, SpectralTransformer):
            raise TrainingSetupError(f"{source}: needs a transformer, found {type(model).__name__}")
        if list(model.label_names) != list(self.settings.labels):
            raise TrainingSetupError(f"{source}: the transformer predicts {list(model.label_names)}"
                                     f", this run {self.settings.labels}; pass --labels "
                                     f"{','.join(model.label_names)}")
        return self._ready(model)

    def _ready(self, model: SpectralTransformer) -> SpectralTransformer:
        c = model.config
        w = self.wave[self.use]
        if w.min() < c.wave_min or w.max() > c.wave_max:
            raise BadDataError(f"{self.store.path}: wavelengths {w.min():.0f}–{w.max():.0f} Å "
                               f"outside the model's encoding range {c.wave_min:.0f}–"
                               f"{c.wave_max:.0f} Å")
        freeze(model, self.settings.freeze)
        # pixels drawn per star: the run's --context, else the model's (a fine-tune may differ)
        self.context = self.settings.context or c.context
        if self.settings.l2sp:
            self._set_reference(model)
        if self.settings.val_whole and self.settings.init_from:
            self._set_val_reference()
        return model

    def _set_val_reference(self) -> None:
        """Per-label squared error of the starting (--init-from) model on the validation
        stars: the unit of the --val-whole total."""
        from .trainer import load_init

        start = load_init(self.settings.init_from, self.model_type).eval()
        src = D.MemorySource.from_store(self.store, self.split.validation, self.labels,
                                        self.label_err, torch.device("cpu"),
                                        self.settings.batch_size, self.settings.bad_bits)
        self.wave_t = torch.from_numpy(self.wave)
        self.use_t = torch.from_numpy(self.use)
        sq, n = 0.0, 0.0
        with torch.no_grad():
            for batch in src.batches(0, shuffle=False, drop_last=False):
                err2, present = self._whole_errors(start, batch)
                sq = sq + err2.sum(0)
                n = n + present.sum(0)
        self.val_reference = (sq / n.clamp(min=1)).clamp(min=1e-12)

    def _set_reference(self, model: SpectralTransformer) -> None:
        """θ₀ of L2-SP: always the --init-from weights (a resumed run reloads them)."""
        from .trainer import load_init

        start = load_init(self.settings.init_from, self.model_type)
        ref = dict(start.named_parameters())
        self.reference = {name: ref[name].detach().clone() for name, p in
                          model.named_parameters() if p.requires_grad}

    def l2sp_distance(self, model) -> torch.Tensor:
        """Σ(θ − θ₀)² over the trained weights."""
        core = model.module if hasattr(model, "module") else model
        total = torch.zeros((), device=core.device)
        for name, p in core.named_parameters():
            ref = self.reference.get(name)
            if ref is not None:
                if ref.device != p.device:
                    ref = self.reference[name] = ref.to(p.device)
                total = total + (p.float() - ref.float()).pow(2).sum()
        return total

    def sources(self, info):
        s = self.settings
        self.wave_t = torch.from_numpy(self.wave).to(info.device)
        self.use_t = torch.from_numpy(self.use).to(info.device)

        def source(rows, store=self.store, labels=self.labels, err=self.label_err):
            return D.MemorySource.from_store(store, rows, labels, err, info.device,
                                             s.batch_size, s.bad_bits, s.seed, info.world,
                                             info.rank)

        train = source(self.split.train)
        if self.rehearse_rows is not None:
            extra = source(self.rehearse_rows, self.rehearse, self.rehearse_labels,
                           self.rehearse_err)
            f = s.rehearse_fraction
            train = D.MixedSource(train, extra, max(1, round(s.batch_size * f / (1 - f))),
                                  s.seed, info.rank)
        if s.val_whole:  # one batch: its total is a function of every validation star
            val = D.MemorySource.from_store(self.store, self.split.validation, self.labels,
                                            self.label_err, info.device,
                                            max(2, -(-len(self.split.validation) // info.world)),
                                            s.bad_bits, s.seed, info.world, info.rank)
            self.val_source = val
            return train, val
        return train, source(self.split.validation)

    def after_training(self, model, config: dict, summary: dict) -> dict | None:
        """--interpolate: move the saved best weights toward the starting ones by the α that
        the validation total prefers; record the curve."""
        if not self.settings.interpolate:
            return None
        from .trainer import load_init

        start = dict(load_init(self.settings.init_from, self.model_type).named_parameters())
        tuned = {k: p.detach().clone() for k, p in model.named_parameters()}
        batch = next(self.val_source.batches(0, shuffle=False, drop_last=False))
        model.eval()
        curve = {}
        with torch.no_grad():
            for alpha in np.round(np.linspace(0.0, 1.0, 11), 2):
                for k, p in model.named_parameters():
                    ref = start[k].to(p.device, p.dtype)
                    p.copy_(ref + float(alpha) * (tuned[k] - ref))
                curve[float(alpha)] = float(self._whole_terms(model, batch)["total"])
            best = min(curve, key=curve.get)
            for k, p in model.named_parameters():
                ref = start[k].to(p.device, p.dtype)
                p.copy_(ref + best * (tuned[k] - ref))
        training = {**config.get("training", {}),
                    "interpolation": {"alpha": best, "val_total": curve[best],
                                      "val_total_by_alpha": curve}}
        summary["interpolation_alpha"] = best
        return {"training": training}

    # -- loss ---------------------------------------------------------------------------------
    def _whole_errors(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared standardised error per star and label of the whole-spectrum prediction
        (the inference path's patches and inverse-variance combination) and where a label
        is present."""
        from ..inference.transformer import patch_arrays

        core = model.module if hasattr(model, "module") else model
        good = ((batch["weight"] > 0) & self.use_t.to(batch["weight"].device)).cpu().numpy()
        n = good.shape[0]
        zeros = np.zeros(good.shape, np.float32)
        *_, mask, owner, pix = patch_arrays(zeros, zeros, self.wave, good, self.context)
        dev = batch["flux"].device
        owner_t, pix_t = torch.from_numpy(owner).to(dev), torch.from_numpy(pix).to(dev)
        mask_t = torch.from_numpy(mask).to(dev)
        flux = batch["flux"][owner_t[:, None], pix_t]
        error = batch["weight"][owner_t[:, None], pix_t].clamp(min=1e-12).rsqrt()
        wave = self.wave_t.to(dev)[pix_t]
        means, logvars = [], []
        for k in range(0, len(owner), 256):
            sl = slice(k, k + 256)
            m, lv = model(flux[sl], error[sl], wave[sl], mask_t[sl])
            means.append(m.float())
            logvars.append(lv.float())
        mean, inv = torch.cat(means), torch.exp(-torch.cat(logvars))
        n_lab = mean.shape[1]
        sum_inv = torch.zeros(n, n_lab, device=dev).index_add_(0, owner_t, inv)
        sum_mean = torch.zeros(n, n_lab, device=dev).index_add_(0, owner_t, inv * mean)
        z = sum_mean / sum_inv.clamp(min=1e-30)
        y = core.scale_labels(batch["labels"])
        has = torch.zeros(n, dtype=torch.bool, device=dev)
        has[owner_t] = True
        present = torch.isfinite(y) & has[:, None]
        err2 = torch.where(present, (z - torch.nan_to_num(y)) ** 2, torch.zeros_like(z))
        return err2, present

    def _whole_terms(self, model, batch) -> dict:
        err2, present = self._whole_errors(model, batch)
        per_label = err2.sum(0) / present.sum(0).clamp(min=1)
        ref = getattr(self, "val_reference", None)
        ref = torch.ones_like(per_label) if ref is None else ref.to(per_label.device)
        seen = present.any(0)
        return {"total": torch.log(per_label / ref)[seen].mean(), "mse": per_label[seen].mean()}

    def loss(self, model, batch) -> dict:
        if model.training:
            terms = self._nll(model, batch)
        elif self.settings.val_whole:
            terms = self._whole_terms(model, batch)
        else:  # validation: the mean over --val-draws context draws
            draws = [self._nll(model, batch) for _ in range(self.settings.val_draws)]
            terms = {k: torch.stack([d[k] for d in draws]).mean() for k in draws[0]}
        if self.settings.l2sp:
            dist = self.l2sp_distance(model)
            terms["l2sp"] = dist.detach()
            if model.training:
                terms["total"] = terms["total"] + 0.5 * self.settings.l2sp * dist
        return terms

    def _nll(self, model, batch) -> dict:
        good = (batch["weight"] > 0) & self.use_t
        idx, mask = draw_context(good, self.context)
        flux = batch["flux"].gather(1, idx)
        # σ back from the χ² weight (error floor included)
        error = batch["weight"].gather(1, idx).clamp(min=1e-12).rsqrt()
        wave = self.wave_t[idx]
        # a row with no good pixel would be refused by the model: it learns nothing anyway
        keep = mask.any(dim=1)
        core = model.module if hasattr(model, "module") else model
        labels, err = batch["labels"], torch.nan_to_num(batch["label_err"])
        present = torch.isfinite(labels) & keep[:, None]
        mask = mask | ~keep[:, None]
        mean, logvar = model(flux, error, wave, mask)
        y = core.scale_labels(labels)
        nll, r2 = gaussian_nll(mean.float(), logvar.float(), y, err / core.label_std, present)
        n = present.sum().clamp(min=1)
        return {"total": nll / n, "mse": (r2 / n).detach()}

    def extra_config(self, model, best: dict) -> dict:
        s = self.settings
        return {"training": {"settings": s.to_dict(), "best": best, "store": str(self.store.path),
                             "n_train": int(self.split.train.size),
                             "n_val": int(self.split.validation.size),
                             "train_ids_sha256": ids_sha256(self.store.catalog,
                                                            self.split.train),
                             **({"rehearse_store": str(self.rehearse.path),
                                 "n_rehearse": int(self.rehearse_rows.size)}
                                if self.rehearse_rows is not None else {})}}

    def facts(self) -> dict:
        out = {"labels": list(self.settings.labels), "n_train": int(self.split.train.size),
               "n_val": int(self.split.validation.size)}
        if self.rehearse_rows is not None:
            out["n_rehearse"] = int(self.rehearse_rows.size)
        return out

    @classmethod
    def report(cls, summary: dict) -> list[str]:
        lines = [f"{summary['n_train']} training / {summary['n_val']} validation stars, labels "
                 f"{', '.join(summary['labels'])}"]
        if "n_rehearse" in summary:
            lines.append(f"{summary['n_rehearse']} rehearsal stars mixed into training batches")
        return lines


#: The family registry's training task (core.models.families: "core.train.transformer:task").
task = TransformerTask
