"""The spectral transformer family: model, training task, predictor, CLI (tiny sizes, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from core import models
from core.chi2 import ERROR_FLOOR
from core.cli.main import main as cli
from core.errors import BadDataError
from core.inference.predictor import SpectraBatch
from core.inference.transformer import TransformerPredictor, patch_arrays, patches
from core.models.transformer import SpectralTransformer, TransformerConfig
from core.store import SpectraStore
from core.train import trainer as T
from core.train.synthetic import synthetic_arrays, synthetic_store
from core.train.transformer import TransformerTask, TransformerTrainSettings, draw_context

TINY = {"context": 32, "width": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 2,
        "ffn": 32, "dropout": 0.0}


def tiny(**kw) -> SpectralTransformer:
    torch.manual_seed(0)
    return SpectralTransformer(TransformerConfig(**{**TINY, **kw})).eval()


def tokens(b=3, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    flux = 1 - 0.3 * torch.rand(b, n, generator=g)
    error = 0.01 + 0.01 * torch.rand(b, n, generator=g)
    wave = 15200 + 1500 * torch.rand(b, n, generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    return flux, error, wave, mask


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("tf") / "store", n=120, seed=2)


# -- model -------------------------------------------------------------------------------------

def test_wavelength_encoding_differs_by_wavelength_and_is_absent_on_label_tokens():
    m = tiny()
    enc = m.wave_encoding(torch.tensor([15200.0, 15200.22, 16500.0]))
    assert not torch.allclose(enc[0], enc[1], atol=1e-4)
    assert not torch.allclose(enc[0], enc[2], atol=1e-2)
    one = torch.ones(1, 2)
    tok = m.embed_pixels(one, 0.01 * one, torch.tensor([[15200.0, 16500.0]]))
    assert not torch.allclose(tok[0, 0], tok[0, 1])           # same flux, other place
    # label queries are the learned vectors themselves: no wavelength term
    assert torch.equal(m.label_tokens(2)[1], m.label_queries)
    # and the prediction depends on where the pixels are
    flux, error, wave, mask = tokens()
    assert not torch.allclose(m(flux, error, wave, mask)[0], m(flux, error, wave + 200, mask)[0])


def test_predictions_do_not_depend_on_pixel_order():
    m = tiny()
    flux, error, wave, mask = tokens()
    mask[1, 20:] = False
    perm = torch.randperm(flux.shape[1], generator=torch.Generator().manual_seed(1))
    a = m(flux, error, wave, mask)
    b = m(flux[:, perm], error[:, perm], wave[:, perm], mask[:, perm])
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_masked_pixels_get_no_attention_and_do_not_change_the_answer():
    m = tiny()
    flux, error, wave, mask = tokens()
    mask[:, 10:15] = False
    mean, logvar, maps = m(flux, error, wave, mask, return_attention=True)
    assert len(maps) == 2 and maps[0].shape == (3, 2, 3, 32)
    for w in maps:
        assert torch.all(w[..., 10:15] == 0)
    flux2 = flux.clone()
    flux2[:, 10:15] = 50.0   # garbage under the mask
    torch.testing.assert_close(m(flux2, error, wave, mask)[0], mean)


def test_explicit_attention_sums_to_one_and_matches_the_fast_path():
    m = tiny()
    flux, error, wave, mask = tokens()
    mask[0, 5:] = False
    fast = m(flux, error, wave, mask)
    mean, logvar, maps = m(flux, error, wave, mask, return_attention=True)
    torch.testing.assert_close(fast[0], mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast[1], logvar, atol=1e-5, rtol=1e-5)
    for w in maps:
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))


def scrambled(m: SpectralTransformer, seed: int = 3) -> SpectralTransformer:
    """``m`` with every bias, layer-norm gain and shift made non-trivial (fresh ones are 1
    and 0, which would hide a wrongly folded gain or shift)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(p + 0.3 * torch.randn(p.shape, generator=g))
    return m


def test_inference_plan_agrees_with_the_forward_and_explicit_paths():
    m = scrambled(tiny(label_names=("TEFF", "LOGG", "FE_H", "MG_FE"), context=48))
    m.set_scaling(0.95, 0.07, [4800.0, 2.5, -0.2, 0.1], [400.0, 0.9, 0.3, 0.1])
    flux, error, wave, mask = tokens(b=5, n=48, seed=2)
    plan = m.inference_plan()
    with torch.inference_mode():
        for partial in (False, True):
            if partial:
                mask[1, 7:] = False
                mask[4, :40] = False
            ref = m(flux, error, wave, mask)
            explicit = m.attention_weights(flux, error, wave, mask)[:2]
            fast = plan(flux, error, wave, mask)
            coded = plan(flux, error, None, mask, wave_code=m.wave_encoding(wave))
            for got in (fast, coded):
                for a, b, c in zip(got, ref, explicit, strict=True):
                    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
                    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)
        # masked pixels still do not count
        flux[1, 7:] = 50.0
        torch.testing.assert_close(plan(flux, error, wave, mask)[0], fast[0])


def test_bad_inputs_get_clear_errors():
    m = tiny()
    flux, error, wave, mask = tokens()
    with pytest.raises(BadDataError, match="outside the encoding's declared range"):
        m(flux, error, wave - 1000, mask)
    mask[1] = False
    with pytest.raises(BadDataError, match="every pixel masked"):
        m(flux, error, wave, mask)
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="unknown transformer preset"):
        TransformerConfig.preset_config("huge")


def test_spectrafm_preset_has_the_published_sizes():
    c = TransformerConfig.preset_config("spectrafm")
    assert (c.context, c.width, c.encoder_layers, c.decoder_layers) == (512, 256, 2, 3)


def test_a_model_trained_on_one_line_looks_at_that_line():
    """Label = depth of one line in a flat spectrum: after training, the decoder's attention and
    the prediction's flux gradient sit on the line's wavelengths."""
    rng = np.random.default_rng(0)
    n, p, at = 256, 64, 40
    wave = np.linspace(15300.0, 15320.0, p).astype(np.float32)
    depth = rng.uniform(0.0, 0.8, n).astype(np.float32)
    line = np.exp(-0.5 * ((np.arange(p) - at) / 1.0) ** 2).astype(np.float32)
    flux = 1 - depth[:, None] * line + 0.01 * rng.standard_normal((n, p)).astype(np.float32)
    torch.manual_seed(0)
    m = SpectralTransformer(TransformerConfig(label_names=("DEPTH",), context=p, width=32, heads=2,
                                              encoder_layers=0, decoder_layers=1, ffn=64,
                                              dropout=0.0))
    m.set_scaling(1.0, 0.05, [0.4], [0.23])
    f, e = torch.from_numpy(flux), torch.full((n, p), 0.01)
    w, mask = torch.from_numpy(wave).expand(n, p), torch.ones(n, p, dtype=torch.bool)
    y = m.scale_labels(torch.from_numpy(depth)[:, None])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(200):
        idx = torch.randint(0, n, (32,))
        mean, _ = m(f[idx], e[idx], w[idx], mask[idx])
        loss = (mean - y[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():  # it learned the label, not only its spread
        pred = m(f[:128], e[:128], w[:128], mask[:128])[0][:, 0]
    r = np.corrcoef(pred.numpy(), depth[:128])[0, 1]
    assert r > 0.9, r
    near = slice(at - 3, at + 4)
    _, _, maps = m(f[:32], e[:32], w[:32], mask[:32], return_attention=True)
    att = maps[0].mean(dim=(0, 1))[0]                   # mean over stars and heads
    assert att[near].sum() > 3 * (7 / p), att
    fg = f[:32].clone().requires_grad_(True)
    m(fg, e[:32], w[:32], mask[:32])[0].sum().backward()
    g = fg.grad.abs().mean(0)
    assert g[near].sum() > 0.5 * g.sum()


# -- training ----------------------------------------------------------------------------------

def test_context_draw_takes_only_good_pixels_and_varies_with_the_seed():
    good = torch.zeros(2, 100, dtype=torch.bool)
    good[0, :50] = True
    good[1, 10:15] = True
    torch.manual_seed(0)
    idx, mask = draw_context(good, 20)
    assert mask[0].all() and (idx[0] < 50).all() and len(set(idx[0].tolist())) == 20
    assert mask[1].sum() == 5 and set(idx[1][mask[1]].tolist()) == set(range(10, 15))
    torch.manual_seed(1)
    assert set(draw_context(good, 20)[0][0].tolist()) != set(idx[0].tolist())


def _settings(store, out, **kw):
    base = {"store": str(store.path), "out": str(out), "epochs": 6, "batch_size": 16, "lr": 2e-3,
            "warmup_steps": 5, "context": 48, "progress": False, "device": "cpu", "seed": 1,
            "checkpoint_every": 100}
    return TransformerTrainSettings(**{**base, **kw})


def test_short_training_lowers_the_validation_loss_and_saves_a_loadable_model(store, tmp_path):
    task = TransformerTask(_settings(store, tmp_path / "run", preset="compact"))
    T.train(task)
    log = pd.read_csv(tmp_path / "run" / T.LOG_FILE)
    assert log["val_total"].min() < log["val_total"].iloc[0] - 0.05, log
    model, config = models.load_with_config(tmp_path / "run")
    assert isinstance(model, SpectralTransformer) and config["model_type"] == "transformer"
    # scalings come from the training rows
    train_rows = task.split.train
    assert np.isclose(float(model.label_mean[0]), store.catalog["TEFF"].to_numpy()[train_rows].mean(),
                      rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    m = tiny(label_names=("TEFF", "MG_FE"))
    m.set_scaling(0.9, 0.05, [4800.0, 0.1], [400.0, 0.05])
    models.save(m, tmp_path / "m")
    back = models.load(tmp_path / "m")
    assert back.config == m.config
    x = tokens()
    for a, b in zip(m(*x), back(*x), strict=True):
        torch.testing.assert_close(a, b)


def test_missing_labels_are_left_out_of_the_loss(tmp_path):
    arrays = synthetic_arrays(60, seed=5)
    arrays["catalog"].loc[:4, "LOGG"] = -9999.0         # APOGEE's "no value"
    with SpectraStore.create(tmp_path / "s", kind="generic", title="sentinels") as w:
        w.append(arrays["flux"], arrays["error"], arrays["pixmask"], arrays["catalog"])
    store = SpectraStore.open(tmp_path / "s")
    task = TransformerTask(_settings(store, tmp_path / "r"))
    task.prepare(type("Info", (), {"world": 1})())
    assert np.isnan(task.labels[:5, 1]).all() and np.isfinite(task.labels[5:]).all()
    info = type("Info", (), {"is_main": True, "device": torch.device("cpu"), "world": 1,
                             "rank": 0})()
    model = task.new_model(info)
    batch = next(task.sources(info)[0].batches(0))
    torch.manual_seed(0)
    full = task.loss(model, batch)
    batch["labels"][:, 1] = float("nan")
    torch.manual_seed(0)
    part = task.loss(model, batch)
    assert torch.isfinite(part["total"]) and not torch.isclose(full["total"], part["total"])


# -- CLI and predictor -------------------------------------------------------------------------

def test_cli_train_resume_infer_and_predictor(tmp_path, capsys):
    store = synthetic_store(tmp_path / "small", n=48, seed=4)
    run = tmp_path / "tf"
    common = ["--store", str(store.path), "--out", str(run), "--batch-size", "8", "--context",
              "128", "--no-progress", "--seed", "1", "--device", "cpu"]
    assert cli(["train", "transformer", *common, "--epochs", "1"]) == 0
    assert cli(["train", "transformer", *common, "--epochs", "2", "--resume"]) == 0
    assert list(pd.read_csv(run / T.LOG_FILE)["epoch"]) == [1, 2]
    capsys.readouterr()
    assert cli(["infer", "transformer", "--store", str(store.path), "--model", str(run),
                "--json", "--batch-size", "40"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["n_spectra"] == len(store)
    cat = SpectraStore.open(store.path).catalog
    for col in ("TF_TEFF", "TF_TEFF_ERR", "TF_LOGG", "TF_FE_H_ERR"):
        assert np.isfinite(cat[col]).all() and (col[-4:] != "_ERR" or (cat[col] > 0).all())

    pred = TransformerPredictor.load(run)
    s = SpectraStore.open(store.path)
    b = s.read(np.array([0, 5]))
    one = pred.predict_batch(SpectraBatch.from_store(s, b))
    assert np.allclose(one.columns["TF_TEFF"], cat["TF_TEFF"].to_numpy()[[0, 5]])
    # the app's single-spectrum path gives the catalog row's numbers
    out = pred.predict_spectrum(s.spectrum(5))
    assert out["columns"]["TF_LOGG"] == pytest.approx(float(cat.loc[5, "TF_LOGG"]), rel=1e-5)
    assert np.allclose(out["labels_err"][1], cat.loc[5, "TF_LOGG_ERR"], rtol=1e-5)
    att_spec = pred.attention(s.spectrum(3), "TEFF")
    # attention over one spectrum: sums to 1 over the pixels read, NaN elsewhere
    batch = SpectraBatch.from_store(s, s.read(np.array([3])))
    att = pred.attention(batch, "LOGG")
    good = pred._good(batch)[0]
    assert np.isnan(att[~good]).all() and np.isclose(np.nansum(att), 1.0, atol=1e-4)
    assert (att[good] >= 0).all()
    assert np.allclose(att_spec, pred.attention(batch, "TEFF"), equal_nan=True)
    with pytest.raises(ValueError, match="not one of"):
        pred.attention(batch, "MG_FE")
    with pytest.raises(ValueError, match="decoder layers"):
        pred.attention(batch, "LOGG", layer=7)


def test_patches_are_combined_by_inverse_variance(tmp_path):
    m = tiny(label_names=("TEFF",), context=16)
    m.set_scaling(1.0, 0.1, [4800.0], [400.0])
    pred = TransformerPredictor(m)
    rng = np.random.default_rng(0)
    p = pred.grid.n_pix
    flux = (1 - 0.2 * rng.random((1, p))).astype(np.float32)
    error = np.full((1, p), 0.01, np.float32)
    mask = np.zeros((1, p), np.uint16)
    exclude = np.ones(p, bool)
    exclude[1000:1040] = False                     # 40 pixels → patches of 16, 16, 8
    batch = SpectraBatch(np.array([0]), flux, error, mask, pd.DataFrame({"A": [0]}),
                         pred.grid.name, exclude)
    out = pred.predict_batch(batch)
    parts = patches(~exclude, 16)
    assert [len(q) for q in parts] == [16, 16, 8]
    wave = pred.grid.wavelength
    mu, inv = [], []
    for q in parts:
        # the model reads σ with the χ² error floor, as in training (core.chi2.pixel_weights)
        err = np.hypot(error[0, q], ERROR_FLOOR)
        t = [torch.tensor(a[None], dtype=torch.float32) for a in (flux[0, q], err, wave[q])]
        mean, logvar = m(*t, torch.ones(1, len(q), dtype=torch.bool))
        mu.append(float(mean.detach()))
        inv.append(float(torch.exp(-logvar.detach())))
    mu, inv = np.array(mu), np.array(inv)
    expect = (mu * inv).sum() / inv.sum() * 400 + 4800
    assert np.isclose(out.columns["TF_TEFF"][0], expect, rtol=1e-5)
    assert np.isclose(out.columns["TF_TEFF_ERR"][0], np.sqrt(3 / inv.sum()) * 400, rtol=1e-4)
    assert out.columns["TF_NPIX"][0] == 40


def _per_star_reference(pred: TransformerPredictor, batch: SpectraBatch):
    """Labels ± σ the way the predictor computed them before its fast path: each star's
    patches through the model's standard forward, combined."""
    good = pred._good(batch)
    out = np.full((len(batch), len(pred.label_names)), np.nan), \
        np.full((len(batch), len(pred.label_names)), np.nan)
    for i in range(len(batch)):
        f, e, w, mask, owner, _ = patch_arrays(batch.flux[i:i + 1], batch.error[i:i + 1],
                                               pred.grid.wavelength, good[i:i + 1],
                                               pred.model.config.context)
        with torch.no_grad():
            mean, logvar = pred.model(*(torch.from_numpy(a) for a in (f, e, w, mask)))
        lab, err = pred._combine(mean.numpy(), logvar.numpy(), owner, 1)
        out[0][i], out[1][i] = lab[0], err[0]
    return out


def test_batched_fast_inference_equals_the_per_star_path_on_any_thread_count(store):
    m = scrambled(tiny(context=64))
    m.set_scaling(1.0, 0.1, [4800.0, 2.5, -0.2], [400.0, 0.9, 0.3])
    s = SpectraStore.open(store.path)
    b = s.read(np.arange(12))
    pixmask = b.pixmask.copy()
    pixmask[3, 100:2000] |= 1          # stars with fewer good pixels: other patch counts
    pixmask[7, ::3] |= 1
    batch = SpectraBatch(b.rows, b.flux, b.error, pixmask, s.catalog.iloc[:12], s.grid.name)
    ref_labels, ref_err = _per_star_reference(TransformerPredictor(m), batch)
    before = torch.get_num_threads()
    outs = []
    for threads in (1, 2, 3):
        pred = TransformerPredictor(m, threads=threads, patch_batch=7)
        outs.append(pred.predict_batch(batch))
        assert torch.get_num_threads() == before          # restored after the workers
    for out in outs:
        std = m.label_std.numpy()
        assert np.allclose(out.outputs["labels"] / std, ref_labels / std, rtol=0, atol=1e-5)
        assert np.allclose(out.outputs["labels_err"], ref_err, rtol=1e-5)
        # the threads share the same passes: the same numbers, not merely close ones
        assert np.array_equal(out.outputs["labels"], outs[0].outputs["labels"])
    assert outs[0].columns["TF_NPIX"][3] == outs[0].outputs["good"][3].sum() < 6000


def test_shipped_model_fast_path_agrees_with_the_explicit_path(store):
    """The demo weights (whatever training produced them) through the fast path and through
    the explicit path that returns attention maps: the same labels to float rounding."""
    from core.models.families import get_family
    from core.paths import SHIPPED_MODELS

    model_dir = SHIPPED_MODELS / get_family("transformer").demo
    if not (model_dir / "config.json").is_file():
        pytest.skip(f"no shipped transformer weights in {model_dir}")
    pred = TransformerPredictor.load(model_dir)
    s = SpectraStore.open(store.path)
    batch = SpectraBatch.from_store(s, s.read(np.arange(3)))
    fast = pred.predict_batch(batch).outputs
    good = pred._good(batch)
    f, e, w, mask, owner, _ = patch_arrays(batch.flux, batch.error, pred.grid.wavelength, good,
                                           pred.model.config.context)
    mean, logvar, _, _ = pred._run(f, e, w, mask, attention=True)
    labels, labels_err = pred._combine(mean, logvar, owner, len(batch))
    std = pred.model.label_std.numpy()
    assert np.allclose(fast["labels"] / std, labels / std, rtol=0, atol=1e-5)
    assert np.allclose(fast["labels_err"], labels_err, rtol=1e-5)


def test_cli_errors_name_the_problem(store, tmp_path, capsys):
    common = ["--store", str(store.path), "--no-progress", "--device", "cpu", "--epochs", "1"]
    assert cli(["train", "transformer", *common, "--out", str(tmp_path / "a"),
                "--wave-range", "12000", "13000"]) != 0
    assert "no pixel" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["train", "transformer", *common, "--out", str(tmp_path / "b"), "--freeze", "wings"])
    assert "--freeze takes embedding, encoder, decoder" in capsys.readouterr().err
    other = tmp_path / "notf"
    models.save(tiny(), other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "vae"}))
    assert cli(["infer", "transformer", "--store", str(store.path), "--model", str(other)]) != 0
    assert "not a spectral transformer" in capsys.readouterr().err


def test_fine_tune_with_frozen_encoder_and_wave_range(store, tmp_path):
    base = tmp_path / "base"
    T.train(TransformerTask(_settings(store, base, epochs=1)))
    start = models.load(base)
    T.train(TransformerTask(_settings(store, tmp_path / "ft", epochs=2, init_from=str(base),
                                      freeze=["encoder"], wave_range=[15200.0, 15800.0])))
    tuned = models.load(tmp_path / "ft")
    for (k, a), b in zip(start.encoder.state_dict().items(), tuned.encoder.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    assert not torch.equal(start.head.weight, tuned.head.weight)
    # the tuned model reads its own range at inference
    pred = TransformerPredictor.load(tmp_path / "ft")
    s = SpectraStore.open(store.path)
    out = pred.predict_batch(SpectraBatch.from_store(s, s.read(np.array([0]))))
    wave = pred.grid.wavelength
    assert out.outputs["good"][0].any() and (wave[out.outputs["good"][0]] <= 15800).all()
    assert out.columns["TF_NPIX"][0] < 0.5 * len(wave)


# -- fine-tuning recipes: rehearsal, L2-SP, steadier validation ---------------------------------

def _relabelled_store(path, n, seed, teff_shift):
    """The synthetic spectra of (n, seed) under other star names, with TEFF moved by
    ``teff_shift``: the same spectra now 'mean' another Teff (a stand-in for a physics shift)."""
    arrays = synthetic_arrays(n, seed=seed)
    cat = arrays["catalog"].copy()
    cat["APOGEE_ID"] = [f"2MREL{seed:04d}{i:07d}" for i in range(n)]
    cat["TEFF"] = cat["TEFF"] + teff_shift
    with SpectraStore.create(path, kind="generic", title="relabelled") as w:
        w.append(arrays["flux"], arrays["error"], arrays["pixmask"], cat)
    return SpectraStore.open(path)


def _info():
    return type("Info", (), {"is_main": True, "device": torch.device("cpu"), "world": 1,
                             "rank": 0})()


def test_rehearsal_mixes_the_other_stores_stars_into_every_training_batch(store, tmp_path):
    other = _relabelled_store(tmp_path / "other", 40, 9, 0.0)
    task = TransformerTask(_settings(store, tmp_path / "r", batch_size=8,
                                     rehearse_store=str(other.path), rehearse_fraction=0.75,
                                     rehearse_rows=30))
    task.prepare(type("Info", (), {"world": 1})())
    assert task.rehearse_rows.size == 30 and (task.rehearse_rows < len(other)).all()
    train_src, val_src = task.sources(_info())
    steps = list(train_src.batches(0))
    assert len(steps) == train_src.n_steps() == len(task.split.train) // 8
    want = np.column_stack([other.catalog[n].to_numpy(np.float32) for n in task.settings.labels])
    seen = []
    for b in steps:
        assert b["flux"].shape[0] == 8 + 24                 # 0.75 of each batch rehearses
        rows = b["rows"][8:].numpy()
        assert set(rows) <= set(task.rehearse_rows.tolist())
        np.testing.assert_allclose(b["labels"][8:].numpy(), want[rows])
        seen += rows.tolist()
    assert len(set(seen)) == min(30, len(seen))             # dealt without repeats first
    again = [b["rows"][8:] for b in train_src.batches(0)]    # an epoch mixes the same rows
    assert all(torch.equal(a, b["rows"][8:]) for a, b in zip(again, steps, strict=True))
    assert not torch.equal(next(train_src.batches(1))["rows"][8:], steps[0]["rows"][8:])
    # validation stays on --store alone
    assert sum(b["flux"].shape[0] for b in val_src.batches(0, False, False)) == \
        len(task.split.validation)


def test_rehearsal_keeps_what_the_model_knew(tmp_path):
    """Fine-tuned on spectra whose Teff labels moved by +600 K, a model forgets the old
    labels of those spectra; rehearsing the old stars keeps its answers much nearer them."""
    old = synthetic_store(tmp_path / "old", n=96, seed=3)
    new = _relabelled_store(tmp_path / "new", 96, 3, 600.0)
    base = tmp_path / "base"
    T.train(TransformerTask(_settings(old, base, epochs=3)))
    common = {"epochs": 6, "lr": 3e-3, "warmup_steps": 2, "init_from": str(base)}
    T.train(TransformerTask(_settings(new, tmp_path / "plain", **common)))
    T.train(TransformerTask(_settings(new, tmp_path / "rehearsed", **common,
                                      rehearse_store=str(old.path), rehearse_fraction=0.75)))
    s = SpectraStore.open(old.path)
    batch = SpectraBatch.from_store(s, s.read(np.arange(48)))

    def mean_teff(run):
        return float(np.mean(TransformerPredictor.load(run).predict_batch(batch)
                             .columns["TF_TEFF"]))

    start, plain, rehearsed = mean_teff(base), mean_teff(tmp_path / "plain"), \
        mean_teff(tmp_path / "rehearsed")
    assert plain - start > 300, (start, plain)               # it moved to the new labels
    assert rehearsed - start < 0.6 * (plain - start), (start, plain, rehearsed)
    config = json.loads((tmp_path / "rehearsed" / "config.json").read_text())
    assert config["training"]["n_rehearse"] == 96
    assert config["training"]["rehearse_store"] == str(old.path)


def test_l2sp_holds_the_weights_near_the_starting_ones(store, tmp_path):
    base = tmp_path / "base"
    T.train(TransformerTask(_settings(store, base, epochs=1)))
    start = dict(models.load(base).named_parameters())

    def distance(run):
        return sum(float((p - start[k]).detach().pow(2).sum())
                   for k, p in models.load(run).named_parameters())

    common = {"epochs": 3, "lr": 3e-3, "warmup_steps": 1, "init_from": str(base)}
    T.train(TransformerTask(_settings(store, tmp_path / "free", **common)))
    T.train(TransformerTask(_settings(store, tmp_path / "held", **common, l2sp=300.0)))
    assert distance(tmp_path / "held") < 0.5 * distance(tmp_path / "free")
    log = pd.read_csv(tmp_path / "held" / T.LOG_FILE)
    assert "train_l2sp" in log and (log["train_l2sp"] > 0).all()
    # validation judges the fit alone: its total leaves the penalty out
    assert "train_l2sp" not in pd.read_csv(tmp_path / "free" / T.LOG_FILE)
    with pytest.raises(T.TrainingSetupError, match="--init-from"):
        _settings(store, tmp_path / "x", l2sp=1.0)


def test_validation_draws_average_several_contexts(store, tmp_path):
    task = TransformerTask(_settings(store, tmp_path / "r", val_draws=4))
    task.prepare(type("Info", (), {"world": 1})())
    model = task.new_model(_info()).eval()
    _, val_src = task.sources(_info())
    batch = next(val_src.batches(0, False, False))
    with torch.no_grad():
        torch.manual_seed(5)
        mean = task.loss(model, batch)["total"]
        torch.manual_seed(5)
        each = [task._nll(model, batch)["total"] for _ in range(4)]
    assert len({round(float(e), 6) for e in each}) == 4        # four different draws
    assert torch.isclose(mean, torch.stack(each).mean())
    model.train()  # training steps draw one context
    torch.manual_seed(5)
    one = task.loss(model, batch)["total"]
    assert torch.isfinite(one)


def test_cli_fine_tune_with_rehearsal_and_l2sp(store, tmp_path, capsys):
    other = synthetic_store(tmp_path / "other", n=40, seed=8)
    common = ["--store", str(store.path), "--no-progress", "--device", "cpu", "--epochs", "1",
              "--batch-size", "16", "--context", "48"]
    assert cli(["train", "transformer", *common, "--out", str(tmp_path / "base")]) == 0
    assert cli(["train", "transformer", *common, "--out", str(tmp_path / "ft"), "--init-from",
                str(tmp_path / "base"), "--rehearse-store", str(other.path),
                "--rehearse-fraction", "0.5", "--l2sp", "0.01", "--val-draws", "3"]) == 0
    assert "40 rehearsal stars" in capsys.readouterr().out
    settings = json.loads((tmp_path / "ft" / "config.json").read_text())["training"]["settings"]
    assert settings["rehearse_fraction"] == 0.5 and settings["l2sp"] == 0.01
    assert settings["val_draws"] == 3
    assert cli(["train", "transformer", *common, "--out", str(tmp_path / "bad"),
                "--l2sp", "0.01"]) != 0
    assert "--init-from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["train", "transformer", *common, "--out", str(tmp_path / "b2"),
             "--rehearse-store", str(other.path), "--rehearse-fraction", "1.5"])
    assert "strictly between 0 and 1" in capsys.readouterr().err
    arrays = synthetic_arrays(20, seed=1)
    with SpectraStore.create(tmp_path / "nologg", kind="generic", title="no logg") as w:
        w.append(arrays["flux"], arrays["error"], arrays["pixmask"],
                 arrays["catalog"].drop(columns=["LOGG", "LOGG_ERR"]))
    assert cli(["train", "transformer", *common, "--out", str(tmp_path / "b3"),
                "--rehearse-store", str(tmp_path / "nologg")]) != 0
    err = capsys.readouterr().err
    assert "nologg" in err and "LOGG" in err


def test_whole_spectrum_validation_scores_stars_as_inference_does(store, tmp_path):
    base = tmp_path / "base"
    T.train(TransformerTask(_settings(store, base, epochs=1)))
    task = TransformerTask(_settings(store, tmp_path / "ft", init_from=str(base), val_whole=True,
                                     batch_size=4))
    task.prepare(type("Info", (), {"world": 1})())
    model = task.adopt(T.load_init(str(base)), str(base)).eval()
    _, val_src = task.sources(_info())
    batch = next(val_src.batches(0, False, False))
    assert batch["flux"].shape[0] == len(task.split.validation)   # one batch: the whole split
    assert len(task.split.validation) > 4
    with torch.no_grad():
        terms = task.loss(model, batch)
        err2, present = task._whole_errors(model, batch)
    # the starting model is the unit of the validation total: log(1) = 0
    assert abs(float(terms["total"])) < 1e-5
    # each star's error is that of the predictor's whole-spectrum labels
    pred = TransformerPredictor.load(base)
    s = SpectraStore.open(store.path)
    rows = batch["rows"].numpy()
    out = pred.predict_batch(SpectraBatch.from_store(s, s.read(rows)))
    labels = np.column_stack([out.columns[f"TF_{n}"] for n in pred.label_names])
    std = model.label_std.numpy()
    want = ((labels - batch["labels"].numpy()) / std) ** 2
    assert present.all()
    np.testing.assert_allclose(err2.numpy(), want, rtol=2e-3, atol=1e-6)
    # a trained step away from the start changes it
    model.train()
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.05)
    model.eval()
    with torch.no_grad():
        assert abs(float(task.loss(model, batch)["total"])) > 1e-3


def test_interpolate_keeps_the_validation_best_mix_of_start_and_fine_tune(store, tmp_path):
    base = tmp_path / "base"
    T.train(TransformerTask(_settings(store, base, epochs=1)))
    run = tmp_path / "ft"
    T.train(TransformerTask(_settings(store, run, epochs=3, lr=3e-3, warmup_steps=1,
                                      init_from=str(base), val_whole=True, interpolate=True)))
    training = json.loads((run / "config.json").read_text())["training"]
    inter = training["interpolation"]
    curve = {float(k): v for k, v in inter["val_total_by_alpha"].items()}
    assert sorted(curve) == pytest.approx([i / 10 for i in range(11)])
    assert abs(curve[0.0]) < 1e-5                                   # the starting weights
    assert curve[1.0] == pytest.approx(training["best"]["val_total"], abs=1e-5)
    assert inter["alpha"] == min(curve, key=curve.get)
    # the saved weights are that mix: they score what the curve says
    task = TransformerTask(_settings(store, tmp_path / "x", init_from=str(base), val_whole=True))
    task.prepare(type("Info", (), {"world": 1})())
    saved = task.adopt(models.load(run), str(run)).eval()
    _, val_src = task.sources(_info())
    with torch.no_grad():
        total = task.loss(saved, next(val_src.batches(0, False, False)))["total"]
    assert float(total) == pytest.approx(inter["val_total"], abs=1e-5)
    with pytest.raises(T.TrainingSetupError, match="--val-whole"):
        _settings(store, tmp_path / "y", init_from=str(base), interpolate=True)
