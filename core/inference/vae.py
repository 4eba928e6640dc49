"""The spectrum VAE as a :class:`~core.inference.predictor.Predictor`: one spectrum at a time
for the app (:class:`VAEPredictor`: encode, decode, sensitivity, :meth:`predict_spectrum`)
and a whole store through the shared runner (:func:`infer_store`, ``stellarscope infer vae``).

Catalog columns written:

* ``VAE_Z00`` … ``VAE_Z27`` — latent means μ; ``VAE_S00`` … — latent σ;
* ``VAE_CHI2`` — reduced χ² (:mod:`core.chi2`: error floor in quadrature, χ²/n_good; the
  encoder is not a per-spectrum fit, so no parameters are subtracted) of the
  reconstruction decode(μ, labels) over good pixels;
* ``VAE_RESID_RMS`` — RMS of flux − reconstruction over good pixels;
* ``VAE_FLAG`` — bit flags: 1 non-finite flux/error pixels (left out of the fit),
  2 unusable (no good pixel or a missing label; every other column is NaN).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .. import chi2 as C
from .. import models
from ..errors import BadDataError
from ..grid import Grid, get_grid
from ..labels import is_missing
from ..models.vae import SpectrumVAE
from ..spectrum import Spectrum
from .predictor import Column, Prediction, Predictor, SpectraBatch
from .prepare import autocast, choose_device, good_pixels, label_arrays

FLAG_NONFINITE = 1
FLAG_UNUSABLE = 2
COLUMN_PREFIX = "VAE"
ERROR_FLOOR = C.ERROR_FLOOR
#: Parameters subtracted from the good pixels in χ²_ν (the encoder fits nothing per star).
N_PARAMS = 0


def latent_columns(n_latent: int, prefix: str = COLUMN_PREFIX) -> tuple[list[str], list[str]]:
    """Names of the μ and σ columns (2-digit latent indices)."""
    return ([f"{prefix}_Z{k:02d}" for k in range(n_latent)],
            [f"{prefix}_S{k:02d}" for k in range(n_latent)])


def load_vae(model_dir, device) -> tuple[SpectrumVAE, dict]:
    model, config = models.load_with_config(model_dir, device)
    if not isinstance(model, SpectrumVAE):
        raise BadDataError(f"{model_dir}: expected a VAE, found model_type "
                           f"{config.get('model_type')!r}")
    return model, config


@torch.no_grad()
def run_batch(model: SpectrumVAE, flux, weight, labels, device: torch.device, amp: bool = False
              ) -> dict[str, torch.Tensor]:
    """μ, σ, reconstruction decode(μ, labels), χ² and residual sums for prepared arrays.

    Rows whose labels are not finite are computed with the mean labels (so nothing turns
    NaN); the caller marks them unusable.
    """
    flux = torch.as_tensor(flux, device=device)
    weight = torch.as_tensor(weight, device=device)
    labels = torch.as_tensor(labels, device=device)
    labels = torch.where(torch.isfinite(labels), labels, model.label_mean)
    good = weight > 0
    with autocast(device, amp):
        mu, logvar = model.encode(flux, good, model.scale_labels(labels))
        recon = model.decode(mu, model.scale_labels(labels))
    mu, logvar, recon = mu.float(), logvar.float(), recon.float()
    resid = torch.where(good, flux - recon, torch.zeros((), device=device))
    r2 = resid.square()
    # Σ w r² over good pixels, as core.chi2.chi2_sum, sharing the squared residuals
    return {"mu": mu, "sigma": torch.exp(0.5 * logvar), "recon": recon, "resid": resid,
            "chi2": (weight * r2).sum(dim=-1), "n_good": good.sum(dim=-1),
            "resid_ss": r2.sum(dim=-1)}


class VAEPredictor(Predictor):
    """A loaded VAE with numpy in, numpy out; labels in physical units throughout."""

    family = "vae"
    column_prefix = COLUMN_PREFIX

    def __init__(self, model: SpectrumVAE, config: dict, device: torch.device,
                 model_dir: str = "", amp: bool = False, prefix: str = COLUMN_PREFIX):
        self.model = model.eval()
        self.config = config
        self.device = device
        self.model_dir = model_dir
        self.amp = amp
        self.prefix = prefix
        self.bad_bits = config.get("bad_bits", "astronn")
        self.error_floor = float(config.get("error_floor", ERROR_FLOOR))

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device | None = None,
             amp: bool = False, prefix: str = COLUMN_PREFIX) -> VAEPredictor:
        """Load a saved VAE; ``device`` None means the CPU (one spectrum at a time)."""
        dev = torch.device("cpu") if device is None else choose_device(device)
        model, config = load_vae(model_dir, dev)
        return cls(model, config, dev, str(model_dir), amp, prefix)

    # -- what the model is ---------------------------------------------------------------------
    @property
    def n_latent(self) -> int:
        return self.model.config.n_latent

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.model.config.label_names)

    @property
    def grid(self) -> Grid:
        return get_grid(self.model.config.grid)

    @property
    def label_mean(self) -> np.ndarray:
        return self.model.label_mean.cpu().numpy().copy()

    @property
    def label_std(self) -> np.ndarray:
        return self.model.label_std.cpu().numpy().copy()

    # -- the Predictor interface ---------------------------------------------------------------
    def columns(self) -> list[Column]:
        z_cols, s_cols = latent_columns(self.n_latent, self.prefix)
        p = self.prefix
        return ([Column(c) for c in z_cols + s_cols]
                + [Column(f"{p}_CHI2"), Column(f"{p}_RESID_RMS"),
                   Column(f"{p}_FLAG", "int16", 0)])

    def note(self) -> dict:
        return {"model": str(self.model_dir), "model_type": "vae", "n_latent": self.n_latent,
                "labels": list(self.label_names)}

    def check_store(self, store) -> None:
        super().check_store(store)
        label_arrays(store.catalog.head(0), self.label_names, str(store.path))

    def summary(self, columns: dict[str, np.ndarray]) -> dict:
        flags = columns[f"{self.prefix}_FLAG"]
        chi2 = columns[f"{self.prefix}_CHI2"]
        return {"n_flag_nonfinite": int(((flags & FLAG_NONFINITE) != 0).sum()),
                "n_flag_unusable": int(((flags & FLAG_UNUSABLE) != 0).sum()),
                "median_chi2_nu": float(np.nanmedian(chi2)) if np.isfinite(chi2).any() else None}

    def prepare(self, batch: SpectraBatch) -> SpectraBatch:
        labels, _ = label_arrays(batch.catalog, self.label_names, "catalog rows")
        good = good_pixels(batch.flux, batch.error, batch.pixmask, self.bad_bits)
        if batch.exclude is not None:
            good &= ~batch.excluded()
        with np.errstate(invalid="ignore"):
            nonfinite = ~(np.isfinite(batch.flux) & np.isfinite(batch.error)).all(axis=1)
        batch.prepared = {
            "labels": labels, "good": good, "nonfinite": nonfinite,
            "flux": np.where(good, batch.flux, np.float32(0.0)).astype(np.float32, copy=False),
            "weight": C.pixel_weights(batch.error, good, self.error_floor)}
        return batch

    def predict_batch(self, batch: SpectraBatch) -> Prediction:
        prep = batch.prepared if batch.prepared is not None else self.prepare(batch).prepared
        labels, good, nonfinite = prep["labels"], prep["good"], prep["nonfinite"]
        out = run_batch(self.model, prep["flux"], prep["weight"], labels, self.device, self.amp)
        n_good = out["n_good"].cpu().numpy()
        usable = (n_good > 0) & np.isfinite(labels).all(axis=1)
        flags = (np.where(nonfinite, FLAG_NONFINITE, 0)
                 | np.where(usable, 0, FLAG_UNUSABLE)).astype(np.int16)
        chi2_nu = C.reduced(out["chi2"], out["n_good"], N_PARAMS).cpu().numpy()
        rms = np.sqrt(out["resid_ss"].cpu().numpy() / np.maximum(n_good, 1))
        mu, sigma = out["mu"].cpu().numpy(), out["sigma"].cpu().numpy()
        nan = np.float32(np.nan)
        mu = np.where(usable[:, None], mu, nan).astype(np.float32)
        sigma = np.where(usable[:, None], sigma, nan).astype(np.float32)
        chi2_nu = np.where(usable, chi2_nu, nan).astype(np.float32)
        rms = np.where(usable, rms, nan).astype(np.float32)
        z_cols, s_cols = latent_columns(self.n_latent, self.prefix)
        p = self.prefix
        columns = {**{c: mu[:, i] for i, c in enumerate(z_cols)},
                   **{c: sigma[:, i] for i, c in enumerate(s_cols)},
                   f"{p}_CHI2": chi2_nu, f"{p}_RESID_RMS": rms, f"{p}_FLAG": flags}
        outputs = {"model": out["recon"].cpu().numpy(), "good": good, "chi2_nu": chi2_nu,
                   "n_good": n_good, "flags": flags, "resid_rms": rms, "latents": mu,
                   "latents_err": sigma, "labels": labels}
        return Prediction(columns, outputs)

    def predict_spectrum(self, spectrum: Spectrum, exclude=None, labels=None) -> dict:
        """Reconstruction, χ²_ν (as in VAE_CHI2), latents … of one spectrum on the VAE's grid.

        ``labels`` replace the catalog's; missing or NaN labels raise a clear error.
        """
        y = self._labels(spectrum, labels)
        self._prepared(spectrum)  # the clear errors of encode()
        meta = {**spectrum.meta, **dict(zip(self.label_names, y.tolist(), strict=True))}
        return super().predict_spectrum(spectrum.copy(meta=meta), exclude)

    # -- inputs --------------------------------------------------------------------------------
    def _check_spectrum(self, spectrum: Spectrum) -> None:
        if spectrum.n_pix != self.model.config.n_pix or (
                spectrum.grid is not None and spectrum.grid != self.grid.name):
            raise BadDataError(f"{spectrum.label}: the VAE works on the {self.grid.name} grid "
                               f"({self.model.config.n_pix} px); this spectrum has "
                               f"{spectrum.n_pix} px on {spectrum.grid or 'no named grid'}")

    def _labels(self, spectrum: Spectrum, labels) -> np.ndarray:
        if labels is None:
            missing = [n for n in self.label_names if spectrum.meta.get(n) is None]
            if missing:
                raise BadDataError(f"{spectrum.label}: no {', '.join(missing)} in its catalog row; "
                                   "the VAE encoder needs them (pass labels=...)")
            labels = [spectrum.meta[n] for n in self.label_names]
        arr = np.asarray(labels, dtype=np.float64).reshape(-1)
        if arr.size != len(self.label_names):
            raise BadDataError(f"expected {len(self.label_names)} labels "
                               f"({', '.join(self.label_names)}), got {arr.size}")
        if not np.isfinite(arr).all():
            bad = [n for n, v in zip(self.label_names, arr, strict=True) if not np.isfinite(v)]
            raise BadDataError(f"{spectrum.label}: label(s) {', '.join(bad)} are missing or NaN; "
                               "the VAE encoder needs finite "
                               f"{', '.join(self.label_names)}")
        return arr.astype(np.float32)

    def _prepared(self, spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray]:
        self._check_spectrum(spectrum)
        good = good_pixels(spectrum.flux, spectrum.error, spectrum.pixmask, self.bad_bits)
        if not good.any():
            raise BadDataError(f"{spectrum.label}: every pixel is masked, NaN/inf or has no error")
        flux = np.where(good, spectrum.flux, np.float32(0.0)).astype(np.float32)
        return flux, C.pixel_weights(spectrum.error, good, self.error_floor)

    # -- the model -----------------------------------------------------------------------------
    def encode(self, spectrum: Spectrum, labels=None) -> dict[str, np.ndarray]:
        """μ and σ of the free latents, and the labels used (physical units)."""
        y = self._labels(spectrum, labels)
        flux, weight = self._prepared(spectrum)
        out = run_batch(self.model, flux[None], weight[None], y[None], self.device, amp=False)
        return {"mu": out["mu"][0].cpu().numpy(), "sigma": out["sigma"][0].cpu().numpy(),
                "labels": y}

    @torch.no_grad()
    def decode(self, z, labels) -> np.ndarray:
        """Flux from latents (n_latent,) or (B, n_latent) and physical labels (3,) or (B, 3)."""
        z_t = torch.as_tensor(np.asarray(z, dtype=np.float32), device=self.device)
        y_t = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=self.device)
        single = z_t.ndim == 1
        z_t, y_t = torch.atleast_2d(z_t), torch.atleast_2d(y_t)
        if z_t.shape[-1] != self.n_latent or y_t.shape[-1] != len(self.label_names):
            raise BadDataError(f"decode needs z with {self.n_latent} and labels with "
                               f"{len(self.label_names)} values per row, got {tuple(z_t.shape)} "
                               f"and {tuple(y_t.shape)}")
        if y_t.shape[0] == 1 and z_t.shape[0] > 1:
            y_t = y_t.expand(z_t.shape[0], -1)
        flux = self.model.decode(z_t, self.model.scale_labels(y_t)).float().cpu().numpy()
        return flux[0] if single else flux

    def reconstruct(self, spectrum: Spectrum, labels=None) -> np.ndarray:
        """decode(μ, labels) for one spectrum."""
        enc = self.encode(spectrum, labels)
        return self.decode(enc["mu"], enc["labels"])

    def sensitivity(self, z, labels) -> np.ndarray:
        """∂flux/∂z_k at (z, labels): an (n_latent, n_pix) float32 array (exact Jacobian)."""
        z_t = torch.as_tensor(np.asarray(z, dtype=np.float32).reshape(-1), device=self.device)
        y_t = torch.as_tensor(np.asarray(labels, dtype=np.float32).reshape(-1), device=self.device)
        if z_t.numel() != self.n_latent:
            raise BadDataError(f"sensitivity needs {self.n_latent} latents, got {z_t.numel()}")
        with torch.no_grad():
            jac = self.model.decoder_jacobian(z_t, self.model.scale_labels(y_t))
        return jac.float().cpu().numpy()

    def on_focus(self, spectrum: Spectrum, catalog_row: dict | None = None) -> dict:
        """The reconstruction, χ²_ν and encoding the app shows for the star on screen."""
        return focus_outputs(self, spectrum, catalog_row)


def infer_store(store_or_path, model_dir, batch_size: int = 1024, device=None,
                progress: bool = True, amp: bool = False, prefix: str = COLUMN_PREFIX,
                extra_note: dict | None = None, write: bool = True) -> dict:
    """Run the VAE over every row of a store and write its columns to the catalog.

    The shared runner (:func:`core.inference.runner.run_store`) streams the store
    ``batch_size`` rows at a time, so memory stays constant whatever the store size;
    ``device`` None picks CUDA when present.  ``amp`` runs the network under bf16 autocast
    on CUDA (faster, slightly coarser latents).  Returns figures: spectra/s, seconds, flag
    counts, median reduced χ².
    """
    from .runner import rank_device, run_store

    predictor = VAEPredictor.load(model_dir, rank_device(device), amp=amp, prefix=prefix)
    return run_store(predictor, store_or_path, batch_size=batch_size, progress=progress,
                     write=write, note=extra_note, desc="VAE inference")


# -- what the app shows of the focused star -----------------------------------------------------


def _known(v) -> bool:
    """A usable label value: a number, finite, not APOGEE's "no value" sentinel."""
    try:
        return not bool(is_missing(float(v)))
    except (TypeError, ValueError):
        return False


def condition_labels(vae, spectrum: Spectrum, catalog_row: dict | None = None
                     ) -> tuple[np.ndarray, str]:
    """The labels to condition the VAE on, and where they came from.

    The spectrum's own metadata first, then its catalog row (an uploaded star that the store
    knows), else the training set's mean labels, said so plainly in the side table.
    """
    names = tuple(getattr(vae, "label_names", ()))
    for source, where in ((spectrum.meta, "catalog labels"), (catalog_row or {}, "store catalog")):
        values = [source.get(n) for n in names]
        if all(_known(v) for v in values):
            return np.asarray(values, dtype=np.float32), where
    return np.asarray(vae.label_mean, dtype=np.float32), "training-set mean (file has no labels)"


def focus_outputs(vae, spectrum: Spectrum, catalog_row: dict | None = None) -> dict:
    """The VAE's view of one spectrum, from the predictor's own ``predict_spectrum`` (the
    one χ² of :mod:`core.chi2`, so the side table's χ²_ν equals the catalog's VAE_CHI2).

    The :meth:`~core.inference.predictor.Predictor.on_focus` of a VAE: the reconstruction as
    an overlay, side-table numbers, and the encoding (mu, sigma, labels) under ``extra``.
    """
    labels, where = condition_labels(vae, spectrum, catalog_row)
    out = vae.predict_spectrum(spectrum, labels=labels)
    recon = np.asarray(out["model"], np.float32).reshape(-1)
    if recon.size != spectrum.n_pix:
        raise BadDataError(f"the VAE works on {recon.size} pixels, {spectrum.label} has "
                           f"{spectrum.n_pix}")
    encoding = {"mu": np.asarray(out["latents"], np.float32).reshape(-1),
                "sigma": np.asarray(out["latents_err"], np.float32).reshape(-1),
                "labels": np.asarray(labels, np.float32).reshape(-1)}
    outputs = {"VAE χ²_ν": float(out["chi2_nu"]), "VAE RMS residual": float(out["resid_rms"]),
               "VAE labels from": where}
    return {"models": {"VAE reconstruction": recon}, "outputs": outputs,
            "extra": {"encoding": encoding}}
