"""The spectral transformer as a :class:`~core.inference.predictor.Predictor`.

Each spectrum's good pixels are shuffled with a fixed seed (so a star always gets the same
answer) and cut into context-sized patches; every patch predicts each label's value and
log-variance, and the patches are combined by inverse predicted variance.  Catalog columns:

* ``TF_<LABEL>`` — the combined value; ``TF_<LABEL>_ERR`` — σ = √(K / Σ 1/σ_k²), the
  harmonic-mean predicted variance of the K patches (not shrunk by √K: the patches share
  the star and the model's errors, so they are not independent measurements);
* ``TF_NPIX`` — good pixels read (0: none, every other column NaN).

A model fine-tuned with ``--wave-range A B`` reads only that range here too (its config
records it); ``wave_range=`` when loading chooses another.

:meth:`TransformerPredictor.attention` gives the decoder cross-attention of one label query
over a spectrum's pixels (for the Attention view).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .. import models
from ..errors import BadDataError
from ..grid import Grid, get_grid
from ..models.transformer import SpectralTransformer
from ..spectrum import Spectrum
from .predictor import Column, Prediction, Predictor, SpectraBatch
from .prepare import autocast, choose_device, good_pixels

PREFIX = "TF"
#: seed of the pixel shuffle that cuts a spectrum into patches
PATCH_SEED = 0


def patches(good: np.ndarray, context: int, seed: int = PATCH_SEED) -> list[np.ndarray]:
    """Pixel indices of each patch of one spectrum: its good pixels, shuffled, in chunks."""
    idx = np.flatnonzero(good)
    idx = np.random.default_rng(seed).permutation(idx)
    return [idx[k:k + context] for k in range(0, idx.size, context)]


class TransformerPredictor(Predictor):
    """A loaded spectral transformer: numpy in, physical labels ± σ out."""

    family = "transformer"
    column_prefix = PREFIX

    def __init__(self, model: SpectralTransformer, model_dir: str = "", config: dict | None = None,
                 bad_bits: str = "astronn", amp: bool = False, patch_batch: int = 256,
                 wave_range=None):
        self.model = model.eval()
        self.model_dir = str(model_dir)
        self.device = model.device
        self.config = config or {"model_type": model.model_type}
        self.bad_bits, self.amp, self.patch_batch = bad_bits, amp, patch_batch
        c = model.config
        lo, hi = wave_range if wave_range is not None else (c.wave_min, c.wave_max)
        self.wave_range = (max(float(lo), c.wave_min), min(float(hi), c.wave_max))

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device | None = None,
             amp: bool = False, wave_range=None, **_ignored) -> TransformerPredictor:
        dev = torch.device("cpu") if device is None else choose_device(device)
        model, config = models.load_with_config(model_dir, dev)
        if not isinstance(model, SpectralTransformer):
            raise BadDataError(f"{model_dir}: expected a transformer, found model_type "
                               f"{config.get('model_type')!r}")
        if wave_range is None:  # the range it was (fine-)tuned on, if any
            wave_range = config.get("training", {}).get("settings", {}).get("wave_range")
        return cls(model, str(model_dir), config, amp=amp, wave_range=wave_range)

    # -- what it is ----------------------------------------------------------------------------
    @property
    def grid(self) -> Grid:
        return get_grid(self.model.config.grid)

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.model.label_names)

    @property
    def default_batch_size(self) -> int:
        return 64

    def columns(self) -> list[Column]:
        cols = []
        for name in self.label_names:
            cols += [Column(f"{PREFIX}_{name}"), Column(f"{PREFIX}_{name}_ERR")]
        return cols + [Column(f"{PREFIX}_NPIX", "int32", -1)]

    def note(self) -> dict:
        return {**super().note(), "source": "stellarscope infer transformer",
                "wave_range": list(self.wave_range), "context": self.model.config.context}

    def summary(self, columns: dict[str, np.ndarray]) -> dict:
        npix = columns[f"{PREFIX}_NPIX"]
        return {"unusable": int((npix == 0).sum())}

    # -- running -------------------------------------------------------------------------------
    def _good(self, batch: SpectraBatch) -> np.ndarray:
        good = good_pixels(batch.flux, batch.error, batch.pixmask, self.bad_bits)
        if batch.exclude is not None:
            good &= ~batch.excluded()
        wave = self.grid.wavelength
        lo, hi = self.wave_range
        return good & (wave >= lo) & (wave <= hi)

    def _patch_arrays(self, batch: SpectraBatch, good: np.ndarray):
        """Stacked patches of every spectrum: flux, error, wave, mask (n_patch, context) and
        the spectrum each belongs to, with the pixel indices of each patch."""
        ctx = self.model.config.context
        wave_grid = self.grid.wavelength.astype(np.float32)
        owner, pix = [], []
        for i in range(len(batch)):
            for p in patches(good[i], ctx):
                owner.append(i)
                pix.append(p)
        n = len(pix)
        flux = np.ones((n, ctx), np.float32)
        error = np.zeros((n, ctx), np.float32)
        wave = np.full((n, ctx), wave_grid[0], np.float32)
        mask = np.zeros((n, ctx), bool)
        for k, (i, p) in enumerate(zip(owner, pix, strict=True)):
            m = p.size
            flux[k, :m] = batch.flux[i, p]
            error[k, :m] = batch.error[i, p]
            wave[k, :m] = wave_grid[p]
            mask[k, :m] = True
        return flux, error, wave, mask, np.asarray(owner, np.int64), pix

    @torch.no_grad()
    def _run(self, flux, error, wave, mask, attention: bool = False):
        """Standardised (mean, logvar) per patch (and decoder attention maps if asked)."""
        dev, means, logvars, maps = self.device, [], [], []
        for k in range(0, len(flux), self.patch_batch):
            t = [torch.from_numpy(a[k:k + self.patch_batch]).to(dev)
                 for a in (flux, error, wave, mask)]
            with autocast(dev, self.amp):
                out = self.model(*t, return_attention=attention)
            means.append(out[0].float().cpu())
            logvars.append(out[1].float().cpu())
            if attention:
                maps.append([w.float().cpu() for w in out[2]])
        mean, logvar = torch.cat(means).numpy(), torch.cat(logvars).numpy()
        if attention:
            layers = [torch.cat([m[j] for m in maps]).numpy() for j in range(len(maps[0]))]
            return mean, logvar, layers
        return mean, logvar

    def predict_batch(self, batch: SpectraBatch) -> Prediction:
        good = self._good(batch)
        n_good = good.sum(axis=1)
        n, n_lab = len(batch), len(self.label_names)
        labels = np.full((n, n_lab), np.nan)
        labels_err = np.full((n, n_lab), np.nan)
        if n_good.any():
            flux, error, wave, mask, owner, _ = self._patch_arrays(batch, good)
            mean, logvar = self._run(flux, error, wave, mask)
            inv = np.exp(-logvar.astype(np.float64))          # 1/σ_k² (standardised)
            sum_inv = np.zeros((n, n_lab))
            sum_mean = np.zeros((n, n_lab))
            count = np.bincount(owner, minlength=n)[:, None].astype(np.float64)
            np.add.at(sum_inv, owner, inv)
            np.add.at(sum_mean, owner, inv * mean)
            used = n_good > 0
            z = sum_mean[used] / sum_inv[used]
            sz = np.sqrt(count[used] / sum_inv[used])
            std = self.model.label_std.cpu().numpy().astype(np.float64)
            labels[used] = z * std + self.model.label_mean.cpu().numpy()
            labels_err[used] = sz * std
        columns = {}
        for j, name in enumerate(self.label_names):
            columns[f"{PREFIX}_{name}"] = labels[:, j].astype(np.float32)
            columns[f"{PREFIX}_{name}_ERR"] = labels_err[:, j].astype(np.float32)
        columns[f"{PREFIX}_NPIX"] = n_good.astype(np.int32)
        return Prediction(columns, {"labels": labels, "labels_err": labels_err, "good": good,
                                    "n_good": n_good})

    def attention(self, spectrum: Spectrum | SpectraBatch, label: str | int,
                  layer: int = -1, head: int | None = None) -> np.ndarray:
        """Per-pixel attention (on :attr:`grid`, NaN where not read) of ``label``'s query in
        decoder ``layer`` (default: the last), averaged over heads unless ``head`` is given.
        Each patch's weights sum to 1 over its pixels, then are scaled by the patch's share
        of the pixels read, so the whole map sums to 1."""
        names = self.label_names
        if isinstance(label, str) and label not in names:
            raise ValueError(f"label {label!r} is not one of the model's {names}")
        j = names.index(label) if isinstance(label, str) else int(label)
        n_layers = self.model.config.decoder_layers
        if not -n_layers <= layer < n_layers:
            raise ValueError(f"layer {layer}: the model has {n_layers} decoder layers")
        batch = spectrum if isinstance(spectrum, SpectraBatch) else \
            SpectraBatch.from_spectrum(self.prepare_spectrum(spectrum)).on_grid(self.grid)
        good = self._good(batch)[:1]
        if not good.any():
            raise BadDataError("attention: the spectrum has no good pixel")
        flux, error, wave, mask, _, pix = self._patch_arrays(batch, good)
        _, _, layers = self._run(flux, error, wave, mask, attention=True)
        w = layers[layer][:, :, j, :]           # (patches, heads, context)
        w = w.mean(axis=1) if head is None else w[:, head]
        out = np.full(self.grid.n_pix, np.nan)
        total = good.sum()
        for k, p in enumerate(pix):
            out[p] = w[k, :p.size] * (p.size / total)
        return out

    def prepare_spectrum(self, spectrum: Spectrum) -> Spectrum:
        if spectrum.grid is None:
            raise BadDataError(f"{spectrum.label}: this model works on APOGEE grids; the spectrum "
                               f"is on its own wavelengths")
        return spectrum
