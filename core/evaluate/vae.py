"""Diagnostics of a trained VAE on a store (seed section 5.5), for ``stellarscope evaluate vae``.

Held-out rows are the stars the training split put in validation (the same hash of
APOGEE_ID), so the figures are for spectra the model never trained on.  Written to the
output directory:

* ``summary.json`` — median χ²_ν, the largest |corr| between a free latent and an injected
  label (from μ, and from sampled z′ as the seed did), counts, file list;
* ``chi2_hist.png`` and ``chi2_nu.csv`` — reduced χ² of decode(μ, labels) per spectrum;
* ``residuals.csv`` / ``residuals.png`` — per-pixel mean and std of flux − model, raw and
  divided by the error;
* ``latent_corr.csv`` / ``latent_corr.png`` — Pearson matrix of the 31 latents [μ, labels];
* ``label_corr.csv`` / ``label_corr.png`` — its 31×3 block against the injected labels;
* ``corner_data.csv`` / ``corner_bins.csv`` — sampled z′ of stars in low/middle/high
  terciles of each label (for corner plots) and the per-bin means;
* ``probe.csv`` — the nonlinear probe (:mod:`core.evaluate.probe`): how well an MLP, k-NN and
  a linear fit predict each injected label from the free latents μ, from the controls (the
  store's labels the model is not given: VMICRO, [X/Fe] …, their ``TRUE_*`` versions on a
  mock) and from both, trained on one half of the evaluated stars and scored on the other.
  Its excess R² = R²(controls + latents) − R²(controls), beside the shuffled-latent baseline,
  is the summary's ``probe_excess_r2``: the Pearson check only sees linear trends;
* the swap check (:mod:`core.evaluate.swap`): decode star A's latents with star B's labels
  and read the labels back with a reader trained on real spectra; the slope of read vs
  injected label differences is the summary's ``swap_slope`` (1 when decoded spectra follow
  their labels, < 1 when the latents keep star A's labels).

Which stars: ``rows="held-out"`` (the default) takes the validation split of the model's
training when the store is its training store, else every labelled star (none was seen).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import chi2 as C
from ..errors import BadDataError
from ..inference.prepare import choose_device
from ..inference.vae import N_PARAMS, load_vae, run_batch
from ..labels import LABELS, clean
from ..paths import resolve_store
from ..store import SpectraStore
from ..store.atomic import atomic_path, write_json_atomic
from ..train import data as D
from .output import check_output_dir, output_dir
from .probe import latent_probe, probe_table
from .swap import swap_check

#: Label columns that restate an injected label and so are no fair control for it.
RESTATES = {"FE_H": ("M_H",), "M_H": ("FE_H",)}
#: The probe's default star cap (its MLPs take minutes per 10,000 stars on a CPU).
PROBE_MAX_STARS = 20_000
#: A control column missing for more than this fraction of the evaluated stars is not used.
MAX_MISSING_CONTROL = 0.2


def is_training_store(store: SpectraStore, config: dict) -> bool:
    """True when ``store`` holds the data the model was trained on: the same directory, or a
    store with the same recorded provenance (a mock regenerated with the same seed and size)."""
    training = config.get("training", {})
    where = training.get("store")
    if where:
        try:
            if Path(where).resolve() == Path(store.path).resolve():
                return True
        except OSError:
            pass
    prov = training.get("store_provenance") or {}
    return bool(prov) and prov == (store.manifest.get("provenance") or {})


def held_out_rows(store: SpectraStore, config: dict, labels: np.ndarray, which: str = "held-out"
                  ) -> np.ndarray:
    """Labelled rows to evaluate: ``held-out`` (the validation stars of the model's split on
    its training store, every star on another store), ``validation`` or ``all``."""
    rows = D.labelled_rows(labels)
    if which == "held-out":
        which = "validation" if is_training_store(store, config) else "all"
    if which == "all":
        return rows
    if which != "validation":
        raise ValueError(f"rows must be 'held-out', 'validation' or 'all', got {which!r}")
    split = config.get("training", {}).get("split")
    if not split:
        return rows  # no record of a split: nothing was held out, say so in the summary
    return D.split_rows(store.catalog, rows, split["val_fraction"], split["seed"]).validation


def probe_controls(catalog: pd.DataFrame, injected, rows: np.ndarray, explicit=None
                   ) -> tuple[list[str], np.ndarray, dict]:
    """Control columns for the probe, their values on ``rows`` and the columns left out.

    Default: every label column of :data:`core.labels.LABELS` the model is not given (nor
    one that restates an injected label, such as M_H for FE_H), as its ``TRUE_*`` version
    where the store has one (a mock); a column missing for more than 20 % of the rows is
    left out.  ``explicit`` names the columns instead (all are used).
    """
    dropped: dict[str, str] = {}
    if explicit is not None:
        absent = [c for c in explicit if c not in catalog.columns]
        if absent:
            raise BadDataError(f"catalog has no probe control column(s) {', '.join(absent)}")
        names = list(explicit)
    else:
        skip = set(injected) | {r for n in injected for r in RESTATES.get(n, ())}
        names = []
        for label in LABELS:
            if label in skip:
                continue
            col = f"TRUE_{label}" if f"TRUE_{label}" in catalog.columns else label
            if col in catalog.columns:
                names.append(col)
    values = {c: clean(pd.to_numeric(catalog[c], errors="coerce").to_numpy()[rows])
              for c in names}
    if explicit is None:
        for c in list(names):
            missing = float(np.isnan(values[c]).mean()) if len(rows) else 1.0
            if missing > MAX_MISSING_CONTROL:
                dropped[c] = f"missing for {missing:.0%} of the stars"
                names.remove(c)
    arr = (np.column_stack([values[c] for c in names]) if names
           else np.zeros((len(rows), 0)))
    return names, arr, dropped


def pearson(x: np.ndarray) -> np.ndarray:
    """Correlation matrix of the columns of ``x`` (constant columns give 0, not NaN)."""
    x = x - x.mean(axis=0)
    sd = np.sqrt((x**2).mean(axis=0))
    sd = np.where(sd > 0, sd, np.inf)
    return (x.T @ x / len(x)) / np.outer(sd, sd)


def evaluate_vae(store_or_path, model_dir, out_dir=None, rows: str = "held-out",
                 batch_size: int = 1024, device=None, max_spectra: int | None = None,
                 corner_per_bin: int = 500, seed: int = 0, progress: bool = True,
                 probe: bool = True, probe_control_columns: list[str] | None = None,
                 probe_max_stars: int | None = PROBE_MAX_STARS, swap: bool = True,
                 swap_max_stars: int = 4000) -> dict:
    """Compute and write the diagnostics; returns the summary (also in summary.json).

    ``out_dir`` defaults to ``$STELLARSCOPE_HOME/evaluations/<model>-<UTC time>``; the model
    directory is never written.  ``rows="held-out"`` evaluates every star the model never
    trained on: its validation split on its training store, every star on another store
    (``max_spectra`` draws a subset).  ``probe`` adds the nonlinear latent probe (controls:
    :func:`probe_controls`, or ``probe_control_columns``) on the evaluated stars, or a
    random ``probe_max_stars`` of them (None: all).  ``swap`` adds the swap check on up to
    ``swap_max_stars`` of them.
    """
    if out_dir:
        check_output_dir(out_dir)  # before the work, not after it
    store = store_or_path if isinstance(store_or_path, SpectraStore) \
        else SpectraStore.open(resolve_store(store_or_path))
    dev = choose_device(None if device is None else str(device))
    model, config = load_vae(model_dir, dev)
    names = list(model.config.label_names)
    n_lat = model.config.n_latent
    labels, label_err = D.label_arrays(store.catalog, names, str(store.path))
    training_store = is_training_store(store, config)
    sel = held_out_rows(store, config, labels, rows)
    rng = np.random.default_rng(seed)
    if max_spectra and len(sel) > max_spectra:
        sel = np.sort(rng.choice(sel, max_spectra, replace=False))
    if len(sel) < 3:
        raise BadDataError(f"{store.path}: only {len(sel)} labelled {rows} spectra to evaluate")
    out = output_dir(out_dir, model_dir)  # never inside the (shipped) model directory
    bad_bits = config.get("bad_bits", "astronn")
    floor = float(config.get("error_floor", C.ERROR_FLOOR))

    n_pix = model.config.n_pix
    sums = {k: np.zeros(n_pix) for k in ("n", "r", "r2", "rn", "rn2")}
    chi2_nu = np.empty(len(sel), np.float32)
    mus = np.empty((len(sel), n_lat), np.float32)
    z_samp = np.empty((len(sel), n_lat), np.float32)
    u_samp = np.empty((len(sel), len(names)), np.float32)
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def read(chunk_rows):
        return D.prepare_arrays(store.read(chunk_rows), labels, label_err, bad_bits, floor)

    chunks = [sel[i:i + batch_size] for i in range(0, len(sel), batch_size)]
    at = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(sel), desc="VAE evaluation", unit="spectra", disable=not progress,
               dynamic_ncols=True)
    for arrays in D.prefetched(read, chunks):
        b = len(arrays["rows"])
        res = run_batch(model, arrays["flux"], arrays["weight"], arrays["labels"], dev)
        w = torch.as_tensor(arrays["weight"], device=dev)
        good = (w > 0).double()
        r = res["resid"].double()
        rn = r * w.double().sqrt()  # residual in units of the (floored) error
        for key, val in (("n", good), ("r", r), ("r2", r**2), ("rn", rn), ("rn2", rn**2)):
            sums[key] += val.sum(0).cpu().numpy()
        chi2_nu[at:at + b] = C.reduced(res["chi2"], res["n_good"], N_PARAMS).cpu().numpy()
        mu = res["mu"].cpu()
        mus[at:at + b] = mu.numpy()
        # z′ as the decoder sees it in training: z = μ + σε, u = y + σ_y ε′ (z-scored)
        eps = torch.randn(mu.shape, generator=gen)
        z_samp[at:at + b] = (mu + res["sigma"].cpu() * eps).numpy()
        y = model.scale_labels(torch.as_tensor(arrays["labels"], device=dev)).cpu()
        ye = model.scale_label_errors(torch.as_tensor(arrays["label_err"], device=dev)).cpu()
        u_samp[at:at + b] = (y + ye * torch.randn(y.shape, generator=gen)).numpy()
        at += b
        bar.update(b)
    bar.close()
    seconds = time.perf_counter() - t0

    y_z = ((labels[sel] - model.label_mean.cpu().numpy()) / model.label_std.cpu().numpy())
    corr = pearson(np.column_stack([mus, y_z]).astype(np.float64))
    corr_s = pearson(np.column_stack([z_samp, u_samp]).astype(np.float64))
    block = corr[:n_lat, n_lat:]
    k_max, l_max = np.unravel_index(np.argmax(np.abs(block)), block.shape)
    latent_names = [f"Z{k:02d}" for k in range(n_lat)] + [f"U_{n}" for n in names]

    files = _write_tables(out, store, sel, chi2_nu, sums, corr, latent_names, names,
                          z_samp, u_samp, labels, corner_per_bin, rng)
    files += _write_plots(out, store, chi2_nu, sums, corr, latent_names, names, n_lat)
    probe_res = None
    if probe:
        pick = np.arange(len(sel))
        if probe_max_stars and len(sel) > probe_max_stars:
            pick = np.sort(np.random.default_rng(seed).choice(len(sel), probe_max_stars,
                                                              replace=False))
        probe_res = _probe(store, sel[pick], mus[pick], labels[sel[pick]], names,
                           probe_control_columns, seed, progress)
        if "skipped" not in probe_res:
            files.append(_write_csv(pd.DataFrame(probe_table(probe_res)), out / "probe.csv"))
    swap_res = None
    if swap:
        if progress:
            print(f"swap check: {min(len(sel), swap_max_stars)} stars …", file=sys.stderr)
        swap_res = swap_check(model, store, sel, labels, label_err, bad_bits=bad_bits,
                              floor=floor, device=dev, seed=seed, max_stars=swap_max_stars)
    finite = np.isfinite(chi2_nu)
    split_known = bool(config.get("training", {}).get("split"))
    summary = {
        "store": str(store.path), "model": str(model_dir), "rows": rows,
        "training_store": training_store,
        "held_out": (not training_store) or (rows != "all" and split_known),
        "n_spectra": int(len(sel)),
        "median_chi2_nu": float(np.median(chi2_nu[finite])),
        "chi2_nu_p16_p84": [float(v) for v in np.percentile(chi2_nu[finite], [16, 84])],
        "fraction_chi2_nu_below_1.5": float((chi2_nu[finite] < 1.5).mean()),
        "max_abs_corr": float(abs(block[k_max, l_max])),
        "max_abs_corr_at": [latent_names[k_max], names[l_max]],
        "max_abs_corr_sampled": float(np.abs(corr_s[:n_lat, n_lat:]).max()),
        "mean_abs_resid": float(np.nanmean(np.abs(sums["r"] / np.maximum(sums["n"], 1)))),
        **_probe_headline(probe_res),
        "probe": probe_res,
        **({"swap_slope": swap_res["swap_slope"]} if swap_res and "swap_slope" in swap_res
           else {}),
        "swap": swap_res,
        "seconds": round(seconds, 2),
        "spectra_per_s": round(len(sel) / seconds, 1),
        "out_dir": str(out), "files": files,
    }
    write_json_atomic(out / "summary.json", summary)
    if progress:
        print(f"VAE evaluation on {len(sel)} {rows} spectra: median χ²_ν "
              f"{summary['median_chi2_nu']:.3f}, max |corr(latent, label)| "
              f"{summary['max_abs_corr']:.3f} -> {out}", file=sys.stderr)
    return summary


def _probe(store, sel, mus, targets, names, explicit, seed, progress) -> dict:
    """The nonlinear probe of the free latents (see core.evaluate.probe)."""
    ctrl_names, ctrl, dropped = probe_controls(store.catalog, names, sel, explicit)
    if progress:
        print(f"latent probe: {len(sel)} stars, {len(ctrl_names)} controls …", file=sys.stderr)
    try:
        res = latent_probe(mus, targets, ctrl, target_names=names, control_names=ctrl_names,
                           seed=seed)
    except ValueError as e:  # too few stars for two halves worth fitting
        return {"skipped": str(e), "controls": ctrl_names}
    res["controls_dropped"] = dropped
    res["targets_source"] = "the catalog's injected label values"
    res["latents_source"] = "μ of the free latents (decode(μ, labels) inputs)"
    return res


def _probe_headline(res: dict | None) -> dict:
    """The probe's figures of merit for the top of the summary (MLP excess R² per label)."""
    if not res or "skipped" in res or "mlp" not in res:
        return {}
    mlp = res["mlp"]
    worst = max(mlp, key=lambda t: mlp[t]["excess_r2"])
    return {"probe_excess_r2": {t: v["excess_r2"] for t, v in mlp.items()},
            "probe_shuffled_excess_r2": {t: v["shuffled_excess_r2"] for t, v in mlp.items()},
            "probe_partial_r2": {t: v["partial_r2"] for t, v in mlp.items()},
            "probe_r2_latents": {t: v["r2_latents"] for t, v in mlp.items()},
            "probe_max_excess_r2": mlp[worst]["excess_r2"], "probe_max_excess_r2_at": worst}


def _write_csv(df: pd.DataFrame, path: Path, index: bool = False) -> str:
    with atomic_path(path, ".csv") as tmp:
        df.to_csv(tmp, index=index, float_format="%.6g")
    return path.name


def _write_tables(out, store, sel, chi2_nu, sums, corr, latent_names, names, z_samp, u_samp,
                  labels, per_bin, rng) -> list[str]:
    files = []
    ids = store.catalog["APOGEE_ID"].astype(str).to_numpy()[sel]
    files.append(_write_csv(pd.DataFrame({"row": sel, "APOGEE_ID": ids, "chi2_nu": chi2_nu}),
                            out / "chi2_nu.csv"))
    n = np.maximum(sums["n"], 1)
    mean, mean_n = sums["r"] / n, sums["rn"] / n
    std = np.sqrt(np.maximum(sums["r2"] / n - mean**2, 0))
    std_n = np.sqrt(np.maximum(sums["rn2"] / n - mean_n**2, 0))
    none = sums["n"] == 0
    for a in (mean, mean_n, std, std_n):
        a[none] = np.nan
    files.append(_write_csv(pd.DataFrame({
        "pixel": np.arange(len(mean)), "wavelength": store.grid.wavelength,
        "n_good": sums["n"].astype(np.int64), "resid_mean": mean, "resid_std": std,
        "resid_norm_mean": mean_n, "resid_norm_std": std_n}), out / "residuals.csv"))
    files.append(_write_csv(pd.DataFrame(corr, index=latent_names, columns=latent_names),
                            out / "latent_corr.csv", index=True))
    files.append(_write_csv(pd.DataFrame(corr[:, -len(names):], index=latent_names,
                                         columns=names), out / "label_corr.csv", index=True))
    frames, means = [], []
    cols = latent_names
    for j, name in enumerate(names):
        v = labels[sel, j]
        edges = np.quantile(v, [0, 1 / 3, 2 / 3, 1])
        for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            inside = np.nonzero((v >= lo) & ((v < hi) if b < 2 else (v <= hi)))[0]
            if not len(inside):
                continue
            pick = inside if len(inside) <= per_bin else rng.choice(inside, per_bin, replace=False)
            zz = np.column_stack([z_samp[pick], u_samp[pick]])
            df = pd.DataFrame(zz, columns=cols)
            df.insert(0, "hi", hi)
            df.insert(0, "lo", lo)
            df.insert(0, "bin", b)
            df.insert(0, "label", name)
            frames.append(df)
            means.append({"label": name, "bin": b, "lo": lo, "hi": hi, "n": len(inside),
                          **dict(zip(cols, np.column_stack([z_samp[inside], u_samp[inside]])
                                     .mean(0), strict=True))})
    files.append(_write_csv(pd.concat(frames, ignore_index=True), out / "corner_data.csv"))
    files.append(_write_csv(pd.DataFrame(means), out / "corner_bins.csv"))
    return files


def _write_plots(out, store, chi2_nu, sums, corr, latent_names, names, n_lat) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, name):
        with atomic_path(out / name, ".png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        return name

    files = []
    finite = chi2_nu[np.isfinite(chi2_nu)]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    lo, hi = max(finite.min(), 1e-2), max(finite.max(), 2.0)
    ax.hist(finite, bins=np.geomspace(lo, hi, 60), color="0.35")
    ax.axvline(np.median(finite), color="C3", label=f"median {np.median(finite):.3f}")
    ax.axvline(1.0, color="C0", ls="--", lw=1, label="χ²_ν = 1")
    ax.set_xscale("log")
    ax.set_xlabel("reduced χ² of the reconstruction")
    ax.set_ylabel("spectra")
    ax.legend()
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.96)
    files.append(save(fig, "chi2_hist.png"))

    n = np.maximum(sums["n"], 1)
    mean, mean_n = sums["r"] / n, sums["rn"] / n
    std = np.sqrt(np.maximum(sums["r2"] / n - mean**2, 0))
    std_n = np.sqrt(np.maximum(sums["rn2"] / n - mean_n**2, 0))
    wl = store.grid.wavelength.copy()
    # NaN at the first pixel of each chip after the first: no lines drawn across chip gaps
    for sl in store.grid.chip_slices()[1:]:
        wl[sl.start] = np.nan
    fig, axes = plt.subplots(2, 1, figsize=(10, 5), dpi=110, sharex=True)
    axes[0].plot(wl, std, lw=0.5, color="0.6", label="std")
    axes[0].plot(wl, mean, lw=0.5, color="C3", label="mean")
    axes[0].set_ylabel("flux − model")
    axes[1].plot(wl, std_n, lw=0.5, color="0.6", label="std")
    axes[1].plot(wl, mean_n, lw=0.5, color="C3", label="mean")
    axes[1].axhline(1.0, color="C0", ls="--", lw=0.8)
    axes[1].set_ylabel("(flux − model) / σ")
    axes[1].set_xlabel("vacuum wavelength (Å)")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper right")
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.97, hspace=0.08)
    files.append(save(fig, "residuals.png"))

    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=110)
    masked = np.where(np.tril(np.ones_like(corr, dtype=bool)), corr, np.nan)
    im = ax.imshow(masked, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(latent_names)), latent_names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(latent_names)), latent_names, fontsize=6)
    ax.axhline(n_lat - 0.5, color="k", lw=0.6)
    ax.axvline(n_lat - 0.5, color="k", lw=0.6)
    fig.colorbar(im, ax=ax, label="Pearson r")
    ax.set_title("latent correlations [μ, injected labels]")
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.95)
    files.append(save(fig, "latent_corr.png"))

    block = corr[:, n_lat:]
    fig, ax = plt.subplots(figsize=(3.6, 7), dpi=110)
    im = ax.imshow(block, cmap="RdBu_r", vmin=-0.2, vmax=0.2, aspect="auto")
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_yticks(range(len(latent_names)), latent_names, fontsize=6)
    ax.axhline(n_lat - 0.5, color="k", lw=0.6)
    fig.colorbar(im, ax=ax, label="Pearson r (±0.2)")
    ax.set_title("latent vs injected label", fontsize=9)
    fig.subplots_adjust(left=0.25, right=0.8, bottom=0.06, top=0.96)
    files.append(save(fig, "label_corr.png"))
    return files
