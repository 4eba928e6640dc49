"""Attention maps, rollout, catalog mean, alignment scores, top-attended lines, own-pixel
apVisits and the attention / evaluate CLIs (tiny models, CPU)."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch

from core import models
from core.cli.main import main as cli
from core.errors import BadDataError
from core.evaluate import transformer as ev
from core.grid import get_grid
from core.inference import attention as A
from core.inference.predictor import SpectraBatch
from core.inference.transformer import TransformerPredictor
from core.models.transformer import SpectralTransformer, TransformerConfig
from core.store import SpectraStore
from core.train.synthetic import synthetic_store

TINY = {"context": 32, "width": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 2,
        "ffn": 32, "dropout": 0.0}
MG_LINE, FE_LINE = 15770.150, 15778.380      # line-list wavelengths (vacuum Å)
RANGE = (15762.0, 15786.0)


def tiny(**kw) -> SpectralTransformer:
    torch.manual_seed(0)
    m = SpectralTransformer(TransformerConfig(**{**TINY, **kw})).eval()
    m.set_scaling(1.0, 0.1, [4800.0, 2.5, -0.2][: len(m.label_names)],
                  [400.0, 0.9, 0.3][: len(m.label_names)])
    return m


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("att") / "store", n=40, seed=3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random transformer saved to disk (TEFF, LOGG, FE_H)."""
    d = tmp_path_factory.mktemp("att-model") / "tf"
    models.save(tiny(), d)
    return d


# -- one star's maps ---------------------------------------------------------------------------

def test_maps_sum_to_one_cover_the_pixels_read_and_match_the_predictor(store, saved):
    pred = TransformerPredictor.load(saved)
    batch = SpectraBatch.from_store(store, store.read(np.array([2])))
    att = A.star_attention(pred, batch)
    good = pred._good(batch)[0]
    assert att.decoder.shape == (3, 2, 2, pred.grid.n_pix) and np.array_equal(att.good, good)
    for j in range(3):
        for d in range(2):
            for h in range(2):
                m = att.decoder[j, d, h]
                assert np.isnan(m[~good]).all() and (m[good] >= 0).all()
                assert np.isclose(m[good].sum(), 1.0, atol=1e-4)
        assert np.isclose(np.nansum(att.rollout[j]), 1.0, atol=1e-4)
        # relative maps: 1 = uniform, so their mean over the pixels read is 1
        assert np.isclose(np.nanmean(att.map(j, "rollout")), 1.0, atol=1e-3)
    # the same pass gives the catalog row's labels
    out = pred.predict_batch(batch)
    assert np.allclose(att.labels, out.outputs["labels"][0], rtol=1e-5)
    # the old single-map entry point is one slice of it
    assert np.allclose(pred.attention(batch, "LOGG", head=1), att.map("LOGG", -1, 1, False),
                       equal_nan=True)
    with pytest.raises(ValueError, match="rollout averages the heads"):
        att.map("TEFF", "rollout", 0)
    with pytest.raises(ValueError, match="head 5"):
        att.map("TEFF", -1, 5)


def test_rollout_is_the_decoder_mean_carried_through_the_encoder():
    m = tiny(context=12)
    pred = TransformerPredictor(m)
    g = torch.Generator().manual_seed(0)
    flux = 1 - 0.3 * torch.rand(1, 12, generator=g)
    error = torch.full((1, 12), 0.01)
    wave = 15500 + 100 * torch.rand(1, 12, generator=g)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 9:] = False
    with torch.no_grad():
        _, _, enc, dec = m.attention_weights(flux, error, wave, mask)
    a = enc[0][0].mean(0).numpy()                                   # (12, 12)
    manual = np.mean([d[0].mean(0).numpy() for d in dec], axis=0) @ (0.5 * a + 0.5 * np.eye(12))
    got = A._rollout([e.numpy() for e in enc], [d.numpy() for d in dec])[0]
    assert np.allclose(got, manual, atol=1e-6)
    assert np.allclose(got[:, 9:], 0) and np.allclose(got.sum(-1), 1, atol=1e-5)
    # masked keys get nothing in the encoder either
    assert torch.all(enc[0][..., 9:] == 0)
    assert pred is not None


@pytest.fixture()
def one_thread():
    """Small models train faster on one thread, above all on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_trained_model_attends_to_its_elements_line(one_thread):
    """Flat spectra with one Mg I line whose depth is MG_FE and one Fe I line whose depth is
    FE_H: the MG_FE query must find the Mg line, the FE_H query the Fe line; an untrained model
    of the same shape does not (the test can fail)."""
    grid = get_grid("apogee7514")
    wave = grid.wavelength
    use = (wave >= RANGE[0]) & (wave <= RANGE[1])
    lam = wave[use].astype(np.float32)
    p = lam.size
    rng = np.random.default_rng(1)
    n = 256
    mg, fe = rng.uniform(-0.2, 0.5, n), rng.uniform(-1.0, 0.4, n)
    d_mg, d_fe = 0.15 + 0.9 * (mg + 0.2), 0.1 + 0.45 * (fe + 1.0)

    def line(c):
        return np.exp(-0.5 * ((lam - c) / 0.35) ** 2)

    flux = (1 - d_mg[:, None] * line(MG_LINE) - d_fe[:, None] * line(FE_LINE)
            + 0.004 * rng.standard_normal((n, p))).astype(np.float32)
    torch.manual_seed(0)
    cfg = TransformerConfig(label_names=("FE_H", "MG_FE"), context=48, width=32, heads=2,
                            encoder_layers=0, decoder_layers=1, ffn=64, dropout=0.0)
    m = SpectralTransformer(cfg)
    m.set_scaling(1.0, 0.05, [fe.mean(), mg.mean()], [fe.std(), mg.std()])
    untrained = SpectralTransformer(cfg)
    untrained.load_state_dict(m.state_dict())
    f, e = torch.from_numpy(flux), torch.full((n, p), 0.005)
    w, mask = torch.from_numpy(lam).expand(n, p), torch.ones(n, p, dtype=torch.bool)
    y = m.scale_labels(torch.tensor(np.column_stack([fe, mg]), dtype=torch.float32))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(200):   # a random 48 of the pixels per star and step, as in training
        idx = torch.randint(0, n, (32,))
        pix = torch.rand(32, p).argsort(dim=1)[:, :48]
        mean, _ = m(f[idx].gather(1, pix), e[idx].gather(1, pix), w[idx].gather(1, pix),
                    mask[idx].gather(1, pix))
        loss = (mean - y[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def scores(model):
        pred = TransformerPredictor(model.eval())
        full = np.ones((1, grid.n_pix), np.float32)
        full[0, use] = flux[0]
        batch = SpectraBatch(np.array([0]), full, np.full_like(full, 0.005),
                             np.zeros(full.shape, np.uint16), pd.DataFrame({"A": [0]}),
                             grid.name, ~use)
        att = A.star_attention(pred, batch)
        return att, ev.alignment(att, ["FE_H", "MG_FE"])

    att, s = scores(m)
    assert s["MG_FE"]["last"] >= 3.0, s
    assert s["FE_H"]["last"] >= 1.5, s   # its windows also hold an Fe line left flat
    top_mg = A.top_attended(att.wavelength, att.map("MG_FE"), 1)
    top_fe = A.top_attended(att.wavelength, att.map("FE_H"), 1)
    assert abs(top_mg["wavelength"][0] - MG_LINE) < 1.0 and top_mg["element"][0] == "Mg"
    assert abs(top_fe["wavelength"][0] - FE_LINE) < 1.0 and top_fe["element"][0] == "Fe"
    _, s0 = scores(untrained)
    assert s0["MG_FE"]["last"] < 2.0, s0


# -- alignment and the line table --------------------------------------------------------------

def test_alignment_score_is_one_for_uniform_attention_and_counts_window_mass():
    wave = np.linspace(15700.0, 15800.0, 501)
    good = np.ones(wave.size, bool)
    good[:50] = False
    window = ev.near(wave, [15750.0])
    uniform = np.where(good, 1.0 / good.sum(), np.nan)
    assert ev.score(uniform, good, window) == pytest.approx(1.0)
    focused = np.where(window & good, 1.0, 0.0)
    frac = (window & good).sum() / good.sum()
    assert ev.score(focused, good, window) == pytest.approx(1 / frac)
    assert ev.informing_elements("MG_FE") == ("Mg",)
    assert ev.informing_elements("FE_H") == ("Fe",)
    assert np.isnan(ev.score(uniform, good, ev.near(wave, [16500.0])))


def test_top_attended_are_separated_peaks_with_their_nearest_line():
    wave = np.linspace(15700.0, 15800.0, 1001)
    w = np.full(wave.size, 0.1)
    for lam, h in ((15770.15, 9.0), (15770.25, 8.5), (15727.886, 5.0)):
        w[np.argmin(abs(wave - lam))] = h
    top = A.top_attended(wave, w, 2)
    assert list(top["element"]) == ["Mg", "Fe"]           # 15770.25 is too close to the first
    assert abs(top["distance"]).max() < 0.1
    assert top["attention"].iloc[0] == 9.0


# -- catalog mean and its cache ----------------------------------------------------------------

def test_catalog_mean_groups_and_is_cached_in_a_writable_model_dir(store, saved, monkeypatch):
    pred = TransformerPredictor.load(saved)
    mean = A.catalog_mean(pred, store, n_stars=12)
    assert mean.n_stars["all"] == 12
    assert mean.n_stars["dwarfs"] + mean.n_stars["giants"] == 12
    assert mean.path.startswith(str(saved)) and os.path.isfile(mean.path)
    m = mean.map("FE_H", "rollout")
    assert np.isclose(np.nanmean(m), 1.0, atol=0.05)
    # the second call reads the cache: no star is computed again
    monkeypatch.setattr(A, "star_attention", lambda *a, **k: pytest.fail("recomputed"))
    again = A.catalog_mean(pred, store, n_stars=12)
    assert np.allclose(again.map("FE_H", -1, 1, "giants"), mean.map("FE_H", -1, 1, "giants"),
                       equal_nan=True)


def test_catalog_mean_of_a_read_only_model_is_cached_under_the_home(store, saved, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    for f in saved.iterdir():
        if f.is_file():
            (ro / f.name).write_bytes(f.read_bytes())
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        pred = TransformerPredictor.load(ro)
        mean = A.catalog_mean(pred, store, n_stars=4)
        home = os.environ["STELLARSCOPE_HOME"]
        assert mean.path.startswith(os.path.join(home, "cache", "attention"))
        assert list(ro.iterdir()) and not (ro / "attention").exists()
    finally:
        ro.chmod(stat.S_IRWXU)


def test_shipped_models_are_never_written(monkeypatch, saved, tmp_path):
    from core import paths

    monkeypatch.setattr(paths, "SHIPPED_MODELS", saved.parent)
    where = A.cache_dir(saved)
    assert str(where).startswith(os.environ["STELLARSCOPE_HOME"])
    assert where.name == A.cache_dir(saved).name       # keyed by the weights' hash


# -- bad input ---------------------------------------------------------------------------------

def test_bad_input_gets_clear_errors(store, saved):
    pred = TransformerPredictor.load(saved)
    batch = SpectraBatch.from_store(store, store.read(np.array([0])))
    batch.pixmask[:] = 1 << 0 | 1 << 1 | 1 << 2 | 1 << 3   # every pixel flagged bad
    with pytest.raises(BadDataError, match="no good pixel"):
        A.star_attention(pred, batch)
    with pytest.raises(ValueError, match="not one of the model's"):
        A.label_index(pred.label_names, "MG_FE")
    # a spectrum on its own wavelengths outside the encoding's range
    from core.spectrum import Spectrum

    far = Spectrum(np.linspace(11000, 12000, 300), np.ones(300), np.full(300, 0.01),
                   np.zeros(300, np.uint16))
    with pytest.raises(BadDataError, match="no good pixel inside the model's"):
        A.star_attention(pred, far)
    with pytest.raises(BadDataError, match="no good pixel inside the model's"):
        pred.predict_pixels(far)
    m = tiny()
    t = [torch.ones(1, 4), torch.full((1, 4), 0.01), torch.full((1, 4), 18000.0),
         torch.ones(1, 4, dtype=torch.bool)]
    with pytest.raises(BadDataError, match="outside the encoding's declared range"):
        m.attention_weights(*t)


# -- apVisit on its own pixels -----------------------------------------------------------------

def _mock_apvisit(tmp_path, spec, vrad=-30.0):
    """An apVisit whose observed pixels carry a mock star's spectrum shifted by ``vrad``."""
    from fits_fixtures import apvisit_wavelength, write_apvisit

    from core.grid import doppler_factor

    obs = apvisit_wavelength(True)
    rest = obs / float(doppler_factor(vrad))
    good = spec.good()
    flux = np.interp(rest, spec.wavelength[good], spec.flux[good]) * 300.0
    error = np.interp(rest, spec.wavelength[good], spec.error[good]) * 300.0
    return write_apvisit(tmp_path / "apVisit-mock.fits", vrad=vrad, bc=0.0, flux=flux,
                         error=error, pixmask=np.zeros(obs.shape, np.int16), n_bad=0)


def test_apvisit_on_its_own_pixels_agrees_with_the_resampled_spectrum(tmp_path):
    """The same normalised visit read on its own rest-frame pixels and resampled onto the
    grid the reader's way: the labels agree within their σ (only the pixels differ)."""
    from core.mock import generate_mock_survey
    from core.paths import SHIPPED_MODELS

    demo = SHIPPED_MODELS / "transformer-demo"
    if not (demo / "config.json").is_file():
        pytest.skip(f"{demo} is absent (the shipped demo transformer)")
    pred = TransformerPredictor.load(demo)
    store = SpectraStore.open(generate_mock_survey(tmp_path / "mock", n_stars=6, seed=5,
                                                   progress=False))
    diffs = []
    for row in range(len(store)):
        path = _mock_apvisit(tmp_path, store.spectrum(row))
        own = A.apvisit_rest_pixels(path)
        assert own.grid is None and own.meta["RV_USED"] == pytest.approx(-30.0)
        resampled = A.resample_own_pixels(own)
        a = pred.predict_spectrum(own)          # own pixels: no resampling
        b = pred.predict_spectrum(resampled)
        diffs.append((a["labels"] - b["labels"]) / np.hypot(a["labels_err"], b["labels_err"]))
        # the own-pixel attention map lives on the visit's own wavelengths
        att = A.star_attention(pred, own)
        assert att.wavelength.size == own.wavelength.size and att.n_read > 5000
    diffs = np.array(diffs)
    assert np.all(np.abs(diffs) < 1.0), diffs          # well within the predicted σ


def test_real_apvisit_on_its_own_pixels(saved):
    from reference import shared_path

    from core.paths import SHIPPED_MODELS

    path = shared_path("data", "apogee_real", "apVisit-r13-5095-55844-128.fits")
    demo = SHIPPED_MODELS / "transformer-demo"
    pred = TransformerPredictor.load(demo if (demo / "config.json").is_file() else saved)
    own = A.apvisit_rest_pixels(path)
    a = pred.predict_spectrum(own)
    b = pred.predict_spectrum(A.resample_own_pixels(own))
    assert np.isfinite(a["labels"]).all() and a["n_good"] > 5000
    z = (a["labels"] - b["labels"]) / np.hypot(a["labels_err"], b["labels_err"])
    assert np.all(np.abs(z) < 1.0), z


# -- CLI ---------------------------------------------------------------------------------------

def test_cli_attention_star_and_file_with_csv_and_png(store, saved, tmp_path, capsys):
    star = str(store.catalog["APOGEE_ID"].iloc[4])
    assert cli(["attention", "--model", str(saved), "--store", str(store.path), "--star", star,
                "--label", "FE_H", "--json", "--csv", str(tmp_path / "a.csv"),
                "--png", str(tmp_path / "a.png"), "--top", "5"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["star"] == star and out["label"] == "FE_H" and len(out["top"]) == 5
    assert np.isfinite(out["value"]) and out["alignment_last"] > 0
    csv = pd.read_csv(tmp_path / "a.csv")
    assert {"wavelength", "layer1_mean", "layer1_head0", "rollout"} <= set(csv.columns)
    assert np.isclose(csv["rollout"].mean(skipna=True), 1.0, atol=1e-3)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    # a FITS file: read, normalised the one way files are, then the same maps
    from fits_fixtures import write_apstar

    apstar = write_apstar(tmp_path / "apStar-x.fits", n_visits=1)
    assert cli(["attention", "--model", str(saved), "--file", str(apstar), "--label", "LOGG",
                "--json"]) == 0
    out2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(out2["value"])
    # errors name the problem
    assert cli(["attention", "--model", str(saved), "--store", str(store.path), "--star", star,
                "--label", "MG_FE"]) == 1
    assert "the model predicts TEFF, LOGG, FE_H" in capsys.readouterr().err


def test_cli_evaluate_transformer(store, saved, capsys):
    assert cli(["evaluate", "transformer", "--model", str(saved), "--store", str(store.path),
                "--n-stars", "10", "--attention-stars", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_held_out_stars"] == 10 and out["n_attention_stars"] == 3
    for label in ("TEFF", "LOGG", "FE_H"):
        a = out["accuracy"][label]
        assert a["n"] == 10 and a["scatter"] > 0 and a["reference"] == "catalog"
        assert out["alignment"][label]["last"] > 0
    assert out["alignment"]["FE_H"]["elements"] == ["Fe"]
    if out["notable_lines"] is None:
        assert "absent" in out["notable_note"]
    else:
        assert len(out["notable_lines"]) == 14
    assert cli(["evaluate", "transformer", "--model", str(saved), "--store", str(store.path),
                "--n-stars", "5", "--attention-stars", "2"]) == 0
    text = capsys.readouterr().out
    assert "1.4826·MAD" in text and "alignment" in text


def test_evaluation_leaves_out_the_training_stars(store, tmp_path):
    from core.train import trainer as T
    from core.train.transformer import TransformerTask, TransformerTrainSettings

    run = tmp_path / "run"
    T.train(TransformerTask(TransformerTrainSettings(
        store=str(store.path), out=str(run), epochs=1, batch_size=8, context=32,
        progress=False, device="cpu", checkpoint_every=100, max_rows=30)))
    pred = TransformerPredictor.load(run)
    train = ev.training_rows(pred, store)
    assert 0 < train.size < 30 and train.max() < 30
    result = ev.evaluate(pred, store, n_stars=100, attention_stars=1)
    assert result["trained_on_this_store"] and result["n_held_out_stars"] == 40 - train.size
    # a copy of the training store elsewhere: the same stars are recognised by fingerprint
    import shutil

    copy = SpectraStore.open(shutil.copytree(store.path, tmp_path / "copy"))
    assert np.array_equal(ev.training_rows(pred, copy), train)
    # another store with other stars: every star is held out
    other = synthetic_store(tmp_path / "other", n=20, seed=9)
    assert ev.training_rows(pred, other).size == 0
