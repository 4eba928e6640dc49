"""The spectrum VAE as a training task of the shared trainer (:mod:`core.train.trainer`).

``stellarscope train vae`` runs :data:`task` through :func:`core.train.trainer.train`; this
module holds only what is the VAE's own: its settings, model construction and scalings, its
batches (the whole training split in memory when it fits, else streamed from the store), its
three-term loss, the config it saves, and the decorrelation of the latents at save time.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import BadDataError
from ..models.vae import PRESETS, SpectrumVAE, VAEConfig
from ..paths import resolve_store
from ..store import SpectraStore
from . import data as D
from .adversary import (
    CONTROL_MODES,
    LabelAdversary,
    control_array,
    control_columns,
    label_residuals,
)
from .conditional import ConditionalMoments
from .decorrelate import decorrelate_latents
from .losses import (
    ERROR_FLOOR,
    LOG_TERMS,
    offset_kl,
    vae_loss,
    with_dependence_penalty,
    with_per_latent_penalty,
)
from .trainer import (  # noqa: F401  (re-exported: the app and older callers import them here)
    CHECKPOINT_DIR,
    CURVES_FILE,
    LAST_CHECKPOINT,
    LOG_FILE,
    RUNNING_FILE,
    TrainingSetupError,
    TrainSettings,
    TrainTask,
    train,
    wrap_ddp,
)
from .trainer import wrap_ddp as _wrap_ddp  # noqa: F401


@dataclass
class VAETrainSettings(TrainSettings):
    """The shared knobs (:class:`TrainSettings`) plus the VAE's own."""

    beta: float = 10.0
    gamma: float = 1000.0
    val_fraction: float = 0.1
    split_seed: int = 0
    preset: str = "compact"
    encoder_widths: list[int] | None = None
    decoder_widths: list[int] | None = None
    n_latent: int = 28
    labels: list[str] = field(default_factory=lambda: list(D.LABEL_NAMES))
    bad_bits: str = "astronn"
    max_rows: int | None = None
    stats_rows: int = 4000
    cache_gb: float = 4.0
    #: absorb the linear label trend of μ into the saved model (see core.train.decorrelate)
    decorrelate: bool = True
    decorrelate_rows: int = 20_000
    #: decode with labels re-drawn from their errors on every pass (the seed's choice);
    #: False decodes with the catalog labels as they are (opt-in experiment)
    redraw_labels: bool = True
    #: weight of a kernel dependence (normalised HSIC) penalty between the latent means and
    #: the injected labels, per spectrum (0: off; opt-in experiment)
    hsic: float = 0.0
    #: the HSIC's second variable: the labels themselves (none) or what the catalog's other
    #: labels leave unexplained of them (auto: a mock's TRUE_* columns, else measured; or
    #: measured) — dependence on the legitimately encoded controls is then not penalised
    hsic_controls: str = "none"
    #: bandwidths of the HSIC's latent kernel, as multiples of the squared median distance
    #: (several: the mean of their kernels)
    hsic_scales: list[float] = field(default_factory=lambda: [1.0])
    #: with hsic_controls: measure the HSIC between [μ, controls] and the label residuals,
    #: so that latents which reveal a label only together with the controls are charged
    hsic_joint: bool = False
    #: weight of the mean over latents of the normalised HSIC between one latent mean and
    #: the injected labels (0: off)
    hsic_per_latent: float = 0.0
    #: label-correction latents δy (core.models.vae.VAEConfig.label_offsets): the decoder
    #: gets y + δy, δy with prior N(0, catalog error²) and weight 1 on its KL
    label_offsets: bool = False
    #: weight λ of the adversarial label predictor on the free latents (gradient reversal,
    #: core.train.adversary; 0: off)
    adversary: float = 0.0
    #: condition the adversary on the catalog's other labels (VMICRO, [X/Fe] …) and charge
    #: the encoder only for the R² the latents add beyond them: auto (a mock's TRUE_*
    #: columns, else the measured ones), measured, or none
    adversary_controls: str = "auto"
    #: epochs over which the adversary's weight ramps from 0 to λ
    adversary_warmup: float = 3.0
    #: optimiser steps of the adversary per VAE step, and its learning rate
    adversary_steps: int = 2
    adversary_lr: float = 2e-3
    #: weight λ of the conditional-moment penalty (core.train.conditional; 0: off): the share
    #: of μ's variance, and of its spread, that label terms explain beyond the controls
    cond_moments: float = 0.0
    #: its controls: auto (a mock's TRUE_* columns, else the measured ones) or measured
    cond_moments_controls: str = "auto"
    #: epochs over which its weight ramps from 0 to λ
    cond_moments_warmup: float = 1.0


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def _scales(text: str) -> list[float]:
    try:
        scales = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not scales or min(scales) <= 0:
        raise argparse.ArgumentTypeError(f"scales must be positive numbers, got {text!r}")
    return scales


class VAETask(TrainTask):
    """The conditional VAE: spectra + injected labels → latents → spectra."""

    settings_class = VAETrainSettings
    title = "VAE"
    terms = LOG_TERMS
    curve_terms = ("total", "recon", "kl", "mi", "chi2_nu")
    resume_adjustable = ("cache_gb",)
    model_type = "vae"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--beta", type=float, default=None,
                       help="weight β of the KL term (default 10; the seed started at 1)")
        p.add_argument("--gamma", type=float, default=None,
                       help="weight γ of the separability term (default 1000; the seed started at 1)")
        p.add_argument("--val-fraction", type=float, default=None,
                       help="fraction of stars held out for validation (0.1)")
        p.add_argument("--split-seed", type=int, default=None, help="seed of the star split (0)")
        p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="architecture preset (compact; seed = the seed's 7517→…→58 widths)")
        p.add_argument("--encoder-widths", type=_widths, default=None,
                       help="hidden widths of the encoder, e.g. 256,64 (decoder mirrors them)")
        p.add_argument("--decoder-widths", type=_widths, default=None, help="decoder widths")
        p.add_argument("--n-latent", type=int, default=None, help="free latents (28)")
        p.add_argument("--bad-bits", default=None, help="PIXMASK bad set: astronn or pipeline")
        p.add_argument("--max-rows", type=int, default=None,
                       help="use only the first N labelled rows")
        p.add_argument("--cache-gb", type=float, default=None,
                       help="hold the data in (device) memory when it needs less than this (4)")
        p.add_argument("--no-decorrelate", dest="decorrelate", action="store_const", const=False,
                       default=None, help="save the model without absorbing the linear label "
                       "trend of the latent means (reconstructions are the same either way)")
        p.add_argument("--no-label-redraw", dest="redraw_labels", action="store_const",
                       const=False, default=None, help="decode with the catalog labels as "
                       "they are instead of re-drawing them from their errors on every pass "
                       "(did not lower the probe's excess R² in bench/vae_independence.py: "
                       "Teff +0.40 vs +0.39 with the re-draw)")
        p.add_argument("--label-offsets", dest="label_offsets", action="store_const",
                       const=True, default=None, help="give the encoder one label-correction "
                       "latent δy per injected label (prior N(0, catalog error²)) and decode with "
                       "labels + δy in training, so that the free latents need not carry the "
                       "catalog's label errors; inference decodes the labels as given (δy = 0). "
                       "Experimental, not recommended: in bench/vae_independence.py δy grew to "
                       "10× the catalog errors (an extra channel, not a correction) and decoding "
                       "without it gave median χ²_ν 3.7")
        p.add_argument("--hsic", type=float, default=None,
                       help="weight of a normalised-HSIC penalty between latent means and "
                       "injected labels (non-linear dependence; default 0 = off; 3e5 "
                       "took the probe's Teff excess R² from 0.39 to 0.16 at median χ²_ν 1.14 "
                       "in bench/vae_independence.py)")
        p.add_argument("--hsic-scales", type=_scales, default=None, metavar="S1,S2,…",
                       help="bandwidths² of the HSIC's latent kernel as multiples of the median "
                       "squared distance between latent means (default 1; several average "
                       "their kernels, e.g. 0.1,1; with --hsic 3e5, 0.1,1 did worse than 1 in "
                       "bench/vae_independence.py: Teff excess 0.24, χ²_ν 1.21)")
        p.add_argument("--hsic-controls", choices=CONTROL_MODES, default=None,
                       help="penalise the HSIC between latent means and the label residuals "
                       "after a quadratic fit on the catalog's other labels (auto: a mock's "
                       "TRUE_* VMICRO, [X/Fe] …, measured ones on real data) instead of the "
                       "labels themselves (none, the default)")
        p.add_argument("--hsic-per-latent", type=float, default=None, metavar="λ",
                       help="weight of the mean over latents of the normalised HSIC between "
                       "each latent mean alone and the injected labels (default 0 = off); "
                       "it sees a label held by a single latent far better than --hsic.  "
                       "With --hsic 3e5, λ=1e6 took the Teff excess R² to 0.12 (from 0.16) "
                       "but the median χ²_ν to 1.31")
        p.add_argument("--hsic-joint", dest="hsic_joint", action="store_const", const=True,
                       default=None, help="with --hsic-controls: the HSIC's first variable is "
                       "[latent means, controls] instead of the latent means alone, which also "
                       "charges latents that give the labels away only together with the "
                       "controls (what the probe's excess R² measures; at λ=3e5 it did worse "
                       "than plain --hsic: Teff excess 0.26)")
        p.add_argument("--adversary", type=float, default=None, metavar="λ",
                       help="weight of an adversarial MLP that predicts the injected labels "
                       "from the free latents; the encoder is trained against it by gradient "
                       "reversal (default 0 = off; experimental: at 3000–30000 it did not lower the "
                       "probe's excess R² in bench/vae_independence.py)")
        p.add_argument("--adversary-controls", choices=CONTROL_MODES, default=None,
                       help="what the adversary sees besides the latents, so that the encoder "
                       "pays only for what they add: auto (default; a mock's TRUE_* VMICRO, "
                       "[X/Fe] …, the measured columns on real data), measured, none")
        p.add_argument("--adversary-warmup", type=float, default=None, metavar="EPOCHS",
                       help="epochs over which the adversary's weight ramps up (3)")
        p.add_argument("--adversary-steps", type=int, default=None,
                       help="adversary optimiser steps per training step (2)")
        p.add_argument("--cond-moments", type=float, default=None, metavar="λ",
                       help="weight of the conditional-moment penalty: the share of the latent "
                       "means' variance (and of their spread) that the injected labels explain "
                       "beyond the controls, from ridge fits refreshed every step "
                       "(core.train.conditional; default 0 = off).  With --hsic 3e5, λ=2e5 took "
                       "the Teff excess R² from 0.14 to 0.01-0.06 on the demo mock; the shipped "
                       "demo VAE uses it")
        p.add_argument("--cond-moments-controls", choices=("auto", "measured"), default=None,
                       help="its controls: auto (default; a mock's TRUE_* VMICRO, [X/Fe] …, "
                       "the measured columns on real data) or measured")
        p.add_argument("--cond-moments-warmup", type=float, default=None, metavar="EPOCHS",
                       help="epochs over which its weight ramps up (1)")

    # -- data ---------------------------------------------------------------------------------
    def prepare(self, info) -> None:
        s = self.settings
        self.store = store = SpectraStore.open(resolve_store(s.store))
        self.labels, self.label_err = D.label_arrays(store.catalog, s.labels, where=str(store.path))
        rows = D.labelled_rows(self.labels)
        if s.max_rows:
            rows = rows[: s.max_rows]
        self.split = D.checked_split(store, rows, s.val_fraction, s.split_seed, info.world,
                                     f"finite {', '.join(s.labels)}")
        self.control_names: list[str] = []
        if s.hsic and s.hsic_controls != "none":
            names = control_columns(store.catalog, s.labels, self.split.train, s.hsic_controls)
            if not names:
                raise TrainingSetupError(f"{store.path}: --hsic-controls {s.hsic_controls} "
                                         "found no control columns in the catalog")
            ctrl = control_array(store.catalog, names, self.split.train)
            mean, std = D.label_statistics(self.labels[self.split.train])
            y = (self.labels - np.asarray(mean)) / np.asarray(std)
            self.hsic_names = names
            self.hsic_target = torch.from_numpy(label_residuals(y, ctrl, self.split.train))
            self.hsic_controls = torch.from_numpy(ctrl)
        if s.hsic_joint and not (s.hsic and s.hsic_controls != "none"):
            raise TrainingSetupError("--hsic-joint needs --hsic λ and --hsic-controls auto or "
                                     "measured")
        if s.adversary:
            self.control_names = control_columns(store.catalog, s.labels, self.split.train,
                                                 s.adversary_controls)
            self.controls = torch.from_numpy(control_array(store.catalog, self.control_names,
                                                           self.split.train))
        if s.cond_moments:
            self.cm_names = control_columns(store.catalog, s.labels, self.split.train,
                                            s.cond_moments_controls)
            if not self.cm_names:
                raise TrainingSetupError(f"{store.path}: --cond-moments found no control "
                                         "columns (VMICRO, [X/Fe] …) in the catalog")
            self.cm_controls = torch.from_numpy(control_array(store.catalog, self.cm_names,
                                                              self.split.train))
        n_joint = s.n_latent + len(s.labels)
        if s.gamma and s.batch_size <= n_joint:
            raise TrainingSetupError(
                f"--batch-size {s.batch_size} per process is too small for the separability "
                f"term: its {n_joint}×{n_joint} covariance needs more than {n_joint} spectra per "
                "batch (or use --gamma 0)")

    def new_model(self, info) -> SpectrumVAE:
        s, store = self.settings, self.store
        overrides = {"n_pix": store.grid.n_pix, "grid": store.grid.name, "n_latent": s.n_latent,
                     "label_names": tuple(s.labels), "label_offsets": bool(s.label_offsets)}
        if s.encoder_widths:
            overrides["encoder_widths"] = tuple(s.encoder_widths)
        if s.decoder_widths:
            overrides["decoder_widths"] = tuple(s.decoder_widths)
        model = SpectrumVAE(VAEConfig.preset(s.preset, **overrides))
        if info.is_main:  # other ranks receive the scalings when DDP wraps the model
            rows = self.split.train  # scalings from the training rows only
            flux_mean, flux_scale = D.flux_statistics(store, rows, s.bad_bits, s.stats_rows,
                                                      seed=s.seed)
            label_mean, label_std = D.label_statistics(self.labels[rows])
            model.set_scaling(flux_mean, flux_scale, label_mean, label_std)
        return model

    def adopt(self, model, source: str) -> SpectrumVAE:
        s, store = self.settings, self.store
        if not isinstance(model, SpectrumVAE):
            raise TrainingSetupError(f"{source}: --init-from needs a VAE, found "
                                     f"{type(model).__name__}")
        if model.config.n_pix != store.grid.n_pix:
            raise BadDataError(f"{store.path}: store grid {store.grid.name} ({store.grid.n_pix} "
                               f"px) does not match the model ({model.config.n_pix} px)")
        if list(model.config.label_names) != list(s.labels):
            raise TrainingSetupError(f"model labels {list(model.config.label_names)} differ from "
                                     f"the requested labels {s.labels}")
        # the starting model fixes the architecture: record it, not the preset's widths
        self.settings = dataclasses.replace(
            s, encoder_widths=list(model.config.encoder_widths),
            decoder_widths=list(model.config.decoder_shape), n_latent=model.config.n_latent,
            label_offsets=model.config.label_offsets)
        return model

    def sources(self, info):
        s, store, split = self.settings, self.store, self.split
        n_rows = len(split.train) + len(split.validation)
        self.in_memory = n_rows * store.grid.n_pix * 8 <= s.cache_gb * 1e9
        make = D.MemorySource.from_store if self.in_memory else D.StoreSource
        common = {"device": info.device, "batch_size": s.batch_size, "bad_bits": s.bad_bits,
                  "seed": s.seed, "world": info.world, "rank": info.rank}
        self.train_src = make(store, split.train, self.labels, self.label_err, **common)
        val = make(store, split.validation, self.labels, self.label_err, **common)
        if s.hsic and s.hsic_controls != "none":
            self.hsic_target = self.hsic_target.to(info.device)
            self.hsic_controls = self.hsic_controls.to(info.device)
        if s.adversary:
            self.controls = self.controls.to(info.device)
            self.adversary = LabelAdversary(
                s.n_latent, len(s.labels), len(self.control_names), weight=s.adversary,
                warmup_steps=round(s.adversary_warmup * self.train_src.n_steps()),
                lr=s.adversary_lr, steps=s.adversary_steps, device=info.device, seed=s.seed)
        if s.cond_moments:
            self.cm_controls = self.cm_controls.to(info.device)
            self.cond = ConditionalMoments(
                s.n_latent, len(s.labels), len(self.cm_names), weight=s.cond_moments,
                warmup_steps=round(s.cond_moments_warmup * self.train_src.n_steps()),
                device=info.device)
        return self.train_src, val

    # -- loss and saving -------------------------------------------------------------------------
    def __init__(self, settings):
        super().__init__(settings)
        terms = LOG_TERMS
        if settings.hsic:  # logged only when the opt-in penalty is on
            terms = (*terms, "hsic", "hsic_term")
        if settings.hsic_per_latent:
            terms = (*terms, "hsic_latent", "hsic_latent_term")
        if settings.label_offsets:
            terms = (*terms, "kl_offset")
        if settings.adversary:
            terms = (*terms, "adv_r2", "adv_excess", "adv_term")
        if settings.cond_moments:
            terms = (*terms, "cm_mean", "cm_spread", "cm_term")
        self.terms = terms

    def loss(self, model, batch) -> dict:
        s = self.settings
        err = batch["label_err"] if s.redraw_labels else None
        out = model(batch["flux"], batch["weight"] > 0, batch["labels"], err, sample=True)
        terms = vae_loss(out, batch["flux"], batch["weight"], s.beta, s.gamma)
        raw = model.module if hasattr(model, "module") else model  # DDP wraps it
        if raw.config.label_offsets:
            kl = offset_kl(out["offset_mu"], out["offset_logvar"],
                           raw.scale_label_errors(batch["label_err"]))
            terms = {**terms, "total": terms["total"] + kl, "kl_offset": kl}
        if s.hsic:
            target = (raw.scale_labels(batch["labels"]) if s.hsic_controls == "none"
                      else self.hsic_target.index_select(0, batch["rows"]))
            first = out["mu"]
            if s.hsic_joint:
                first = torch.cat([first.float(),
                                   self.hsic_controls.index_select(0, batch["rows"])], dim=-1)
            terms = with_dependence_penalty(terms, first, target, s.hsic, tuple(s.hsic_scales))
        if s.hsic_per_latent:
            terms = with_per_latent_penalty(terms, out["mu"], raw.scale_labels(batch["labels"]),
                                            s.hsic_per_latent)
        if s.adversary:
            # each DDP rank trains its own heads on its own batches
            controls = self.controls.index_select(0, batch["rows"])
            adv = self.adversary.penalty(out["mu"], controls, raw.scale_labels(batch["labels"]),
                                         training=torch.is_grad_enabled())
            terms = {**terms, **adv, "total": terms["total"] + adv["adv_term"]}
        if s.cond_moments:
            cm = self.cond.penalty(out["mu"], self.cm_controls.index_select(0, batch["rows"]),
                                   raw.scale_labels(batch["labels"]),
                                   training=torch.is_grad_enabled())
            terms = {**terms, **cm, "total": terms["total"] + cm["cm_term"]}
        return terms

    def extra_config(self, model, best: dict) -> dict:
        extra = model_extra_config(model, self.settings, self.store, self.split, best)
        if self.settings.adversary:
            extra["training"]["adversary_controls"] = list(self.control_names)
        if self.settings.hsic and self.settings.hsic_controls != "none":
            extra["training"]["hsic_controls"] = list(self.hsic_names)
        if self.settings.cond_moments:
            extra["training"]["cond_moments_controls"] = list(self.cm_names)
        return extra

    def before_save(self, model, extra: dict) -> None:
        if self.settings.decorrelate:
            batches = self.train_src.batches(0, shuffle=False, drop_last=False)
            extra["decorrelation"] = decorrelate_latents(model, batches,
                                                         self.settings.decorrelate_rows)

    def after_training(self, model, config: dict, summary: dict) -> dict:
        """Percentiles of χ²_ν and of each latent μ over the validation stars, saved with the
        model: the app warns when a star lies outside them (:mod:`core.models.applicability`)."""
        record = {**config.get("training", {}),
                  "applicability": validation_percentiles(self.settings.out, self.store,
                                                          self.split.validation)}
        return {"training": record}

    def facts(self) -> dict:
        return {"in_memory": getattr(self, "in_memory", None), "n_train": len(self.split.train),
                "n_validation": len(self.split.validation)}

    @classmethod
    def report(cls, summary: dict) -> list[str]:
        best = summary["best"]
        if "val_chi2_nu" not in best:
            return []
        return [f"best validation χ²_ν {best['val_chi2_nu']:.3f}, MI {best['val_mi']:.3g}; "
                f"{summary.get('n_train')} training / {summary.get('n_validation')} validation "
                "spectra"]


#: The family registry's training task (core.models.families: "core.train.vae:task").
task = VAETask


def validation_percentiles(model_dir, store: SpectraStore, rows: np.ndarray,
                           max_rows: int = 5000, chunk: int = 512) -> dict:
    """VAE_CHI2 and VAE_Z.. percentiles (as the catalog columns would hold them) of up to
    ``max_rows`` of ``rows``, for ``training.applicability``."""
    from ..inference.predictor import SpectraBatch
    from ..inference.vae import VAEPredictor
    from ..models.applicability import PERCENTILES

    predictor = VAEPredictor.load(model_dir)
    rows = np.sort(np.random.default_rng(0).permutation(np.asarray(rows))[:max_rows])
    chi2, latents = [], []
    names = [f"{predictor.prefix}_Z{k:02d}" for k in range(predictor.n_latent)]
    for start in range(0, rows.size, chunk):
        batch = SpectraBatch.from_store(store, store.read(rows[start:start + chunk]))
        cols = predictor.predict_batch(batch).columns
        chi2.append(cols[f"{predictor.prefix}_CHI2"])
        latents.append(np.column_stack([cols[n] for n in names]))
    chi2, latents = np.concatenate(chi2), np.vstack(latents)

    def pct(v):
        v = v[np.isfinite(v)]
        return np.percentile(v, PERCENTILES).round(5).tolist() if v.size else None

    return {"vae_chi2": pct(chi2), "latents": [pct(latents[:, k]) for k in range(len(names))],
            "percentiles": list(PERCENTILES), "n_stars": int(rows.size),
            "stars": "validation stars of the training store"}


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


def train_vae(settings: VAETrainSettings, *, resume: bool = False, overwrite: bool = False,
              given: dict | None = None) -> dict:
    """Run (or resume) a VAE training run through the shared trainer; returns its summary."""
    return train(VAETask(settings), resume=resume, overwrite=overwrite, given=given)


__all__ = ["LOG_FILE", "RUNNING_FILE", "VAETask", "VAETrainSettings", "model_extra_config",
           "task", "train_vae"]
