"""The spectral transformer as a :class:`~core.inference.predictor.Predictor`.

Each spectrum's good pixels are shuffled with a fixed seed (so a star always gets the same
answer) and cut into context-sized patches; every patch predicts each label's value and
log-variance, and the patches are combined by inverse predicted variance.  Catalog columns:

* ``TF_<LABEL>`` — the combined value; ``TF_<LABEL>_ERR`` — σ = √(K / Σ 1/σ_k²), the
  harmonic-mean predicted variance of the K patches (not shrunk by √K: the patches share
  the star and the model's errors, so they are not independent measurements);
* ``TF_NPIX`` — good pixels read (0: none, every other column NaN).

Speed: every star's patches are batched with other stars' into passes of ``patch_batch``
patches through the model's inference plan (:class:`~core.models.transformer.InferencePlan`,
equal to the forward to float rounding), the wavelength encoding of the grid is computed
once, and on the CPU the passes run on ``threads`` worker threads (default: torch's count)
with one torch thread each.

A model fine-tuned with ``--wave-range A B`` reads only that range here too (its config
records it); ``wave_range=`` when loading chooses another.

:meth:`TransformerPredictor.attention` gives the decoder cross-attention of one label query
over a spectrum's pixels (for the Attention view).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .. import models
from ..chi2 import ERROR_FLOOR
from ..errors import BadDataError
from ..grid import Grid, get_grid
from ..models.transformer import SpectralTransformer
from ..spectrum import Spectrum
from .predictor import Column, Prediction, Predictor, SpectraBatch
from .prepare import autocast, choose_device, good_pixels

PREFIX = "TF"
#: seed of the pixel shuffle that cuts a spectrum into patches
PATCH_SEED = 0
#: patches per forward pass on the CPU (4096 tokens: matmuls big enough to be efficient,
#: activations small enough to stay in cache); on a GPU
CPU_PATCH_BATCH, GPU_PATCH_BATCH = 32, 1024


def patches(good: np.ndarray, context: int, seed: int = PATCH_SEED) -> list[np.ndarray]:
    """Pixel indices of each patch of one spectrum: its good pixels, shuffled, in chunks."""
    idx = np.flatnonzero(good)
    idx = np.random.default_rng(seed).permutation(idx)
    return [idx[k:k + context] for k in range(0, idx.size, context)]


def patch_arrays(flux: np.ndarray, error: np.ndarray, wavelength: np.ndarray, good: np.ndarray,
                 context: int):
    """Every spectrum's patches stacked: flux, error, wave, mask (n_patch, context), the
    spectrum each patch belongs to and each patch's pixel indices (n_patch, context; valid
    where mask).  ``wavelength`` is (P,) shared or (B, P) per spectrum.  Gathered in one
    fancy-indexing step per array, not per patch."""
    n = len(good)
    owner, pix, valid = [], [], []
    for i in range(n):
        idx = np.random.default_rng(PATCH_SEED).permutation(np.flatnonzero(good[i]))
        k = -(-idx.size // context)
        if k == 0:
            continue
        padded = np.zeros(k * context, np.int64)
        padded[:idx.size] = idx
        ok = np.zeros(k * context, bool)
        ok[:idx.size] = True
        owner.append(np.full(k, i, np.int64))
        pix.append(padded.reshape(k, context))
        valid.append(ok.reshape(k, context))
    if not owner:
        empty = np.zeros((0, context), np.float32)
        return (empty, empty, empty, np.zeros((0, context), bool), np.zeros(0, np.int64),
                np.zeros((0, context), np.int64))
    owner, pix, mask = np.concatenate(owner), np.concatenate(pix), np.concatenate(valid)
    rows = owner[:, None]
    f = np.where(mask, flux[rows, pix], 1.0).astype(np.float32)
    # the error the model was trained on: σ with the χ² error floor (core.chi2) added
    e = np.where(mask, np.hypot(error[rows, pix], ERROR_FLOOR), 0.0).astype(np.float32)
    wv = np.asarray(wavelength)
    w = (wv[rows, pix] if wv.ndim == 2 else wv[pix]).astype(np.float32)
    # padding slots sit at a real wavelength of their spectrum (pixel index 0 → inside range)
    first = pix[:, :1]
    w = np.where(mask, w, (wv[rows, first] if wv.ndim == 2 else wv[first]).astype(np.float32))
    return f, e, w, mask, owner, pix


class TransformerPredictor(Predictor):
    """A loaded spectral transformer: numpy in, physical labels ± σ out."""

    family = "transformer"
    column_prefix = PREFIX

    def __init__(self, model: SpectralTransformer, model_dir: str = "", config: dict | None = None,
                 bad_bits: str = "astronn", amp: bool = False, patch_batch: int | None = None,
                 wave_range=None, threads: int | None = None):
        self.model = model.eval()
        self.model_dir = str(model_dir)
        self.device = model.device
        self.config = config or {"model_type": model.model_type}
        self.bad_bits, self.amp = bad_bits, amp
        self.patch_batch = patch_batch or (CPU_PATCH_BATCH if self.device.type == "cpu"
                                           else GPU_PATCH_BATCH)
        #: CPU worker threads of whole-spectrum inference (None: torch's thread count)
        self.threads = threads
        self._wave_table: torch.Tensor | None = None
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
        """Stacked patches of every spectrum of ``batch`` (see :func:`patch_arrays`)."""
        return patch_arrays(batch.flux, batch.error, self.grid.wavelength, good,
                            self.model.config.context)

    def prepare(self, batch: SpectraBatch) -> SpectraBatch:
        """Good pixels and patches, on the runner's read-ahead thread."""
        good = self._good(batch)
        batch.prepared = {"good": good, "patches": _full_first(self._patch_arrays(batch, good))}
        return batch

    def wave_table(self) -> torch.Tensor:
        """(P, width) wavelength encoding of the model grid's pixels, computed once: whole-store
        inference gathers it instead of evaluating sines for every token."""
        if self._wave_table is None:
            wave = torch.from_numpy(self.grid.wavelength.astype(np.float32)).to(self.device)
            with torch.inference_mode():
                self._wave_table = self.model.wave_encoding(wave)
        return self._wave_table

    def _forward(self, flux, error, wave, mask, pix=None) -> tuple[np.ndarray, np.ndarray]:
        """Standardised (mean, logvar) of every patch through the model's fast path
        (:class:`~core.models.transformer.InferencePlan`), ``patch_batch`` patches per pass;
        with ``pix`` (pixel indices on the model grid) the wavelength encoding comes from
        :meth:`wave_table`.  On the CPU the passes are spread over worker threads."""
        if not len(flux):
            n_lab = len(self.label_names)
            return np.zeros((0, n_lab), np.float32), np.zeros((0, n_lab), np.float32)
        self.model.check_inputs(torch.from_numpy(wave), torch.from_numpy(mask))
        plan = self.model.inference_plan()
        table = None if pix is None else self.wave_table()
        dev, size = self.device, self.patch_batch

        @torch.inference_mode()  # thread-local: entered in each worker
        def one(k: int):
            t = [torch.from_numpy(a[k:k + size]).to(dev) for a in (flux, error, wave, mask)]
            idx = None if table is None else torch.from_numpy(pix[k:k + size]).to(dev)
            code = None if idx is None else table.index_select(0, idx.flatten()).view(
                *idx.shape, -1)
            with autocast(dev, self.amp):
                mean, logvar = plan(*t, wave_code=code)
            return mean.float().cpu(), logvar.float().cpu()

        starts = range(0, len(flux), size)
        if dev.type == "cpu":
            parts = _threaded(one, starts, min(self.threads or torch.get_num_threads(),
                                               len(starts)))
        else:
            parts = [one(k) for k in starts]
        return (torch.cat([p[0] for p in parts]).numpy(),
                torch.cat([p[1] for p in parts]).numpy())

    @torch.inference_mode()
    def _run(self, flux, error, wave, mask, attention: bool = False):
        """Standardised (mean, logvar) per patch; with ``attention`` also the encoder's and
        the decoder's attention maps per layer (numpy, patches stacked): from the inference
        plan when no encoder block mixes pixels, else from the model's explicit path."""
        if not attention:
            return self._forward(flux, error, wave, mask)
        dev, means, logvars, enc, dec = self.device, [], [], [], []
        # without pixel mixing the fast path's own softmax weights are every map needed
        plan = self.model.inference_plan()
        plan = plan if plan.gives_weights else None
        for k in range(0, len(flux), self.patch_batch):
            t = [torch.from_numpy(a[k:k + self.patch_batch]).to(dev)
                 for a in (flux, error, wave, mask)]
            with autocast(dev, self.amp), torch.inference_mode():
                if plan is None:
                    mean, logvar, e, d = self.model.attention_weights(*t)
                else:
                    (mean, logvar, d), e = plan(*t, weights=True), []
            enc.append([w.float().cpu() for w in e])
            dec.append([w.float().cpu() for w in d])
            means.append(mean.float().cpu())
            logvars.append(logvar.float().cpu())
        mean, logvar = torch.cat(means).numpy(), torch.cat(logvars).numpy()

        def stack(parts):
            return [torch.cat([m[j] for m in parts]).numpy() for j in range(len(parts[0]))]
        return mean, logvar, stack(enc) if enc[0] else [], stack(dec)

    def _combine(self, mean, logvar, owner, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Physical labels and σ per spectrum from its patches, by inverse predicted variance
        (NaN for a spectrum without patches)."""
        n_lab = len(self.label_names)
        labels = np.full((n, n_lab), np.nan)
        labels_err = np.full((n, n_lab), np.nan)
        inv = np.exp(-logvar.astype(np.float64))          # 1/σ_k² (standardised)
        sum_inv = np.zeros((n, n_lab))
        sum_mean = np.zeros((n, n_lab))
        count = np.bincount(owner, minlength=n)[:, None].astype(np.float64)
        np.add.at(sum_inv, owner, inv)
        np.add.at(sum_mean, owner, inv * mean)
        used = count[:, 0] > 0
        z = sum_mean[used] / sum_inv[used]
        sz = np.sqrt(count[used] / sum_inv[used])
        std = self.model.label_std.cpu().numpy().astype(np.float64)
        labels[used] = z * std + self.model.label_mean.cpu().numpy()
        labels_err[used] = sz * std
        return labels, labels_err

    def predict_batch(self, batch: SpectraBatch) -> Prediction:
        prepared = batch.prepared if batch.prepared and "patches" in batch.prepared \
            else self.prepare(batch).prepared
        good = prepared["good"]
        n_good = good.sum(axis=1)
        n, n_lab = len(batch), len(self.label_names)
        labels = np.full((n, n_lab), np.nan)
        labels_err = np.full((n, n_lab), np.nan)
        if n_good.any():
            flux, error, wave, mask, owner, pix = prepared["patches"]
            mean, logvar = self._forward(flux, error, wave, mask, pix)
            labels, labels_err = self._combine(mean, logvar, owner, n)
        columns = {}
        for j, name in enumerate(self.label_names):
            columns[f"{PREFIX}_{name}"] = labels[:, j].astype(np.float32)
            columns[f"{PREFIX}_{name}_ERR"] = labels_err[:, j].astype(np.float32)
        columns[f"{PREFIX}_NPIX"] = n_good.astype(np.int32)
        return Prediction(columns, {"labels": labels, "labels_err": labels_err, "good": good,
                                    "n_good": n_good})

    # -- spectra on their own pixels -----------------------------------------------------------
    def own_good(self, spectrum: Spectrum) -> np.ndarray:
        """Pixels of a spectrum on its own wavelengths that the model reads."""
        s = spectrum
        good = good_pixels(s.flux[None], s.error[None], s.pixmask[None], self.bad_bits)[0]
        lo, hi = self.wave_range
        return good & (s.wavelength >= lo) & (s.wavelength <= hi)

    def predict_pixels(self, spectrum: Spectrum) -> dict:
        """Labels ± σ of a spectrum read on its own pixels (any wavelengths inside the
        encoding's range, e.g. an apVisit's shifted to the rest frame): no resampling."""
        good = self.own_good(spectrum)
        if not good.any():
            raise BadDataError(f"{spectrum.label}: no good pixel inside the model's "
                               f"{self.wave_range[0]:.0f}–{self.wave_range[1]:.0f} Å")
        flux, error, wave, mask, owner, _ = patch_arrays(
            spectrum.flux[None], spectrum.error[None], spectrum.wavelength, good[None],
            self.model.config.context)
        mean, logvar = self._forward(flux, error, wave, mask)
        labels, labels_err = self._combine(mean, logvar, owner, 1)
        return {"labels": labels[0], "labels_err": labels_err[0], "good": good,
                "n_good": int(good.sum()), "spectrum": spectrum,
                "columns": {f"{PREFIX}_{n}": float(labels[0, j])
                            for j, n in enumerate(self.label_names)}}

    def attention(self, spectrum: Spectrum | SpectraBatch, label: str | int,
                  layer: int = -1, head: int | None = None) -> np.ndarray:
        """Per-pixel attention (on the spectrum's pixels, NaN where not read) of ``label``'s
        query in decoder ``layer`` (default: the last), averaged over heads unless ``head``
        is given; the whole map sums to 1.  See :mod:`core.inference.attention` for every
        layer, head, the rollout and the catalog mean."""
        from .attention import star_attention

        att = star_attention(self, spectrum)
        return att.map(label, layer, head, relative=False)

    def predict_spectrum(self, spectrum: Spectrum, exclude=None) -> dict:
        """As :meth:`Predictor.predict_spectrum`; a spectrum on its own wavelengths (grid
        None: an apVisit's rest-frame pixels) is read on those pixels (:meth:`predict_pixels`)."""
        if spectrum.grid is None:
            if exclude is not None:
                raise BadDataError(f"{spectrum.label}: a pixel mask needs a spectrum on a grid")
            return self.predict_pixels(spectrum)
        return super().predict_spectrum(spectrum, exclude)

    def prepare_spectrum(self, spectrum: Spectrum) -> Spectrum:
        if spectrum.grid is None:
            raise BadDataError(f"{spectrum.label}: this model works on APOGEE grids; the spectrum "
                               f"is on its own wavelengths")
        return spectrum


def _full_first(arrays):
    """Patch arrays reordered so that full patches come first: passes over full patches need
    no key mask (only a spectrum's last patch is partial)."""
    mask = arrays[3]
    order = np.argsort(~mask.all(axis=1), kind="stable")
    return tuple(a[order] for a in arrays)


def _threaded(fn, items, workers: int) -> list:
    """``fn`` over ``items`` on ``workers`` threads (inline for one) with one torch thread
    each: torch's own threads meet at a barrier in every op, so on a shared CPU one
    descheduled thread stalls them all (measured 5–10× slower than one thread under load);
    independent workers don't wait for each other.  Torch's thread count is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers <= 1:
            return [fn(k) for k in items]
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(before)
