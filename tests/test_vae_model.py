"""The VAE network, its loss terms and its files (no training here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core import models
from core.errors import BadFileError
from core.grid import PIXMASK_VALUE
from core.models.vae import PRESETS, SpectrumVAE, VAEConfig, n_parameters
from core.store import Batch
from core.train import data as D
from core.train.losses import (
    ERROR_FLOOR,
    gaussian_mutual_information,
    kl_per_spectrum,
    pixel_weights,
    vae_loss,
)

torch.set_num_threads(1)

N_PIX = 7514


def small_vae(seed: int = 0, **kw) -> SpectrumVAE:
    torch.manual_seed(seed)
    model = SpectrumVAE(VAEConfig(encoder_widths=(16, 8), **kw))
    rng = np.random.default_rng(seed)
    model.set_scaling(rng.uniform(0.8, 1.0, N_PIX), rng.uniform(0.01, 0.05, N_PIX),
                      [4700.0, 2.5, -0.2], [400.0, 0.8, 0.3])
    # move the output layer off its near-zero start so decoding depends on the latents
    torch.nn.init.normal_(model.decoder[-2].weight, std=0.3)
    return model


def batch_arrays(n: int = 6, seed: int = 0) -> tuple[Batch, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flux = rng.uniform(0.7, 1.05, (n, N_PIX)).astype(np.float32)
    error = rng.uniform(0.002, 0.02, (n, N_PIX)).astype(np.float32)
    pixmask = np.zeros((n, N_PIX), np.uint16)
    pixmask[:, 100:140] = PIXMASK_VALUE["BADPIX"]
    pixmask[2, 5000:5100] = PIXMASK_VALUE["SIG_SKYLINE"]  # in the astroNN bad set
    labels = np.column_stack([rng.uniform(4000, 5500, n), rng.uniform(0.5, 3.5, n),
                              rng.normal(-0.2, 0.3, n)]).astype(np.float32)
    errs = np.tile(np.float32([50.0, 0.1, 0.05]), (n, 1))
    return Batch(np.arange(n), flux, error, pixmask), labels, errs


def loss_of(model, arrays, seed=1, beta=1.0, gamma=1.0):
    t = {k: torch.as_tensor(v) for k, v in arrays.items()}
    torch.manual_seed(seed)
    out = model(t["flux"], t["weight"] > 0, t["labels"], t["label_err"], sample=True)
    return vae_loss(out, t["flux"], t["weight"], beta, gamma)


# -- loss terms ----------------------------------------------------------------------------------

def test_kl_is_zero_for_the_prior_and_positive_elsewhere():
    mu, logvar = torch.zeros(5, 28), torch.zeros(5, 28)
    assert torch.allclose(kl_per_spectrum(mu, logvar), torch.zeros(5))
    kl = kl_per_spectrum(torch.full((1, 28), 0.5), torch.full((1, 28), -1.0))
    expected = -0.5 * 28 * (1 - 1.0 - 0.25 - np.exp(-1.0))
    assert kl.item() == pytest.approx(expected, rel=1e-6)


def _correlated_latents(rho: float, b: int = 4000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 28, generator=g)
    u = torch.randn(b, 3, generator=g)
    u[:, 0] = rho * z[:, 0] + (1 - rho**2) ** 0.5 * u[:, 0]
    return torch.cat([z, u], dim=1)


def test_separability_is_near_zero_for_independent_latents_and_grows_with_correlation():
    mis = [gaussian_mutual_information(_correlated_latents(r), 28).item()
           for r in (0.0, 0.3, 0.6, 0.9)]
    assert gaussian_mutual_information(_correlated_latents(0.9, b=31), 28).item() == 0.0
    # sampling bias of the Gaussian MI estimate is about p·q/(2B) = 84/8000 nats
    assert abs(mis[0]) < 0.03
    assert mis == sorted(mis) and mis[1] > mis[0] + 0.02
    for rho, mi in zip((0.3, 0.6, 0.9), mis[1:], strict=True):
        assert mi == pytest.approx(-0.5 * np.log(1 - rho**2), abs=0.03)


def test_separability_term_scales_with_gamma_and_is_per_spectrum():
    model = small_vae()
    b, labels, errs = batch_arrays(n=40)
    arrays = D.prepare_arrays(b, labels, errs)
    t0, t1 = loss_of(model, arrays, gamma=0.0), loss_of(model, arrays, gamma=10.0)
    assert t1["mi"].item() == pytest.approx(t0["mi"].item(), rel=1e-6)
    assert t0["sep_term"].item() == 0.0
    assert t1["sep_term"].item() == pytest.approx(10.0 * t1["mi"].item(), rel=1e-6)
    parts = t1["recon"] + t1["kl_term"] + t1["sep_term"]
    assert t1["total"].item() == pytest.approx(parts.item(), rel=1e-6)


def test_pixel_weights_floor_errors_and_zero_bad_pixels():
    err = np.array([0.001, 0.01, np.nan, 0.02], np.float32)
    good = np.array([True, True, True, False])
    w = pixel_weights(err, good)
    # core.chi2's floor adds in quadrature: 1/(σ² + floor²)
    assert w[0] == pytest.approx(1 / (0.001**2 + ERROR_FLOOR**2))
    assert w[1] == pytest.approx(1 / (0.01**2 + ERROR_FLOOR**2))
    assert w[3] == 0.0
    wt = pixel_weights(torch.as_tensor(err), torch.as_tensor(good))
    assert np.allclose(wt.numpy(), w)


def test_masked_pixels_do_not_change_the_loss():
    model = small_vae()
    b, labels, errs = batch_arrays()
    before = loss_of(model, D.prepare_arrays(b, labels, errs))
    bad = (b.pixmask & PIXMASK_VALUE["BADPIX"]) != 0
    b.flux[bad] = np.nan  # anything may sit under a flagged pixel
    b.error[bad] = -3.0
    b.flux[2, 5000:5100] = 1e6
    after = loss_of(model, D.prepare_arrays(b, labels, errs))
    for k in ("total", "recon", "kl", "mi"):
        assert torch.isfinite(after[k])
        assert after[k].item() == before[k].item(), k
    b.flux[0, 2000] += 0.5  # a good pixel does count
    assert loss_of(model, D.prepare_arrays(b, labels, errs))["recon"].item() != before["recon"].item()


def test_recon_term_is_the_chi2_of_the_reconstruction():
    model = small_vae()
    b, labels, errs = batch_arrays(n=3)
    arrays = D.prepare_arrays(b, labels, errs)
    t = {k: torch.as_tensor(v) for k, v in arrays.items()}
    with torch.no_grad():
        out = model(t["flux"], t["weight"] > 0, t["labels"], sample=False)
        terms = vae_loss(out, t["flux"], t["weight"], 1.0, 0.0)
    good = arrays["weight"] > 0
    err = np.sqrt(b.error**2 + ERROR_FLOOR**2)
    chi2 = (((out["recon"].numpy() - b.flux) / err) ** 2 * good).sum(1)
    assert terms["recon"].item() == pytest.approx(chi2.mean(), rel=1e-4)
    assert terms["chi2_nu"].item() == pytest.approx((chi2 / good.sum(1)).mean(), rel=1e-4)


# -- the network ---------------------------------------------------------------------------------

def test_shapes_presets_and_injected_dims():
    model = small_vae()
    b, labels, errs = batch_arrays(n=4)
    t = {k: torch.as_tensor(v) for k, v in D.prepare_arrays(b, labels, errs).items()}
    out = model(t["flux"], t["weight"] > 0, t["labels"], t["label_err"])
    assert out["recon"].shape == (4, N_PIX) and out["mu"].shape == (4, 28)
    assert out["u"].shape == (4, 3)
    # u is the z-scored labels plus noise of the z-scored errors, drawn anew each pass
    y = model.scale_labels(t["labels"])
    assert not torch.equal(out["u"], y)
    assert (out["u"] - y).abs().max() < 6 * (t["label_err"] / model.label_std).max()
    seed = VAEConfig.preset("seed")
    assert seed.encoder_widths == PRESETS["seed"]["encoder_widths"]
    assert seed.encoder_widths[0] == 3757 and seed.decoder_shape[-1] == 3757
    assert n_parameters(SpectrumVAE(VAEConfig.preset("compact"))) < 5_000_000


def _central_differences(model, z, u, h=1e-5):
    model = model.double()
    z, u = z.double(), u.double()
    with torch.no_grad():
        rows = [(model.decode(z + h * e, u) - model.decode(z - h * e, u)) / (2 * h)
                for e in torch.eye(len(z), dtype=torch.float64)]
    return torch.stack(rows)


def test_decoder_jacobian_matches_finite_differences():
    for kw in ({"output_activation": "gelu", "residual_output": False}, {}):
        model = small_vae(**kw).double()
        model.absorb_label_trend(torch.randn(28, len(model.config.trend_terms)), torch.randn(28))
        z, u = torch.randn(28, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
        with torch.no_grad():
            mine = model.decoder_jacobian(z, u)
        assert mine.shape == (28, N_PIX)
        assert torch.allclose(mine, _central_differences(model, z, u), atol=1e-7)


# -- files ---------------------------------------------------------------------------------------

def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = small_vae().eval()
    b, labels, errs = batch_arrays(n=3)
    t = {k: torch.as_tensor(v) for k, v in D.prepare_arrays(b, labels, errs).items()}
    models.save(model, tmp_path / "m", {"label_names": ["TEFF", "LOGG", "FE_H"]})
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "vae" and config["architecture"]["encoder_widths"] == [16, 8]
    loaded = models.load(tmp_path / "m")
    assert isinstance(loaded, SpectrumVAE) and not loaded.training
    with torch.no_grad():
        a = model(t["flux"], t["weight"] > 0, t["labels"], sample=False)["recon"]
        c = loaded(t["flux"], t["weight"] > 0, t["labels"], sample=False)["recon"]
    assert torch.equal(a, c)
    # float16 storage halves the file and keeps the scalings exact
    models.save(model, tmp_path / "h", weights_dtype="float16")
    half = models.load(tmp_path / "h")
    assert torch.equal(half.flux_mean, model.flux_mean)
    assert (tmp_path / "h" / "model.safetensors").stat().st_size < \
        0.6 * (tmp_path / "m" / "model.safetensors").stat().st_size
    with torch.no_grad():
        h = half(t["flux"], t["weight"] > 0, t["labels"], sample=False)["recon"]
    assert (h - a).abs().max() < 2e-3


def test_load_reports_bad_files(tmp_path):
    with pytest.raises(BadFileError, match="config"):
        models.load(tmp_path)
    models.save(small_vae(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BadFileError, match="model.safetensors"):
        models.load(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["model_type"] = "no-such-model"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BadFileError, match="unknown model_type"):
        models.load(tmp_path / "m")


def test_absorbing_the_label_trend_keeps_reconstructions_and_decorrelates_the_means():
    from core.train.decorrelate import decorrelate_latents

    model = small_vae().eval()
    b, labels, errs = batch_arrays(n=64)
    t = {k: torch.as_tensor(v) for k, v in D.prepare_arrays(b, labels, errs).items()}
    with torch.no_grad():
        torch.nn.init.normal_(model.encoder[0].weight[:, -3:], std=3.0)  # μ follows the labels
        before = model(t["flux"], t["weight"] > 0, t["labels"], sample=False)
    stats = decorrelate_latents(model, [t], max_rows=64)
    with torch.no_grad():
        after = model(t["flux"], t["weight"] > 0, t["labels"], sample=False)
    assert torch.allclose(after["recon"], before["recon"], atol=1e-5)
    assert not torch.allclose(after["mu"], before["mu"])
    y = model.scale_labels(t["labels"]).numpy()
    corr = np.corrcoef(np.column_stack([after["mu"].numpy(), y]).T)[:28, 28:]
    assert stats["max_abs_corr_before"] > 0.3 and np.abs(corr).max() < 1e-4
    assert stats["max_abs_corr_after"] < 1e-4


# -- label-correction latents (opt-in) ----------------------------------------------------------

def test_label_offsets_decode_the_corrected_labels_and_keep_the_free_latent_interface(tmp_path):
    from core.train.losses import offset_kl

    model = small_vae(label_offsets=True).eval()
    plain = small_vae()
    assert "to_offset" not in dict(plain.named_children())  # off: no extra weights
    with pytest.raises(ValueError, match="no label-correction latents"):
        plain.encode_offsets(torch.zeros(1, N_PIX), torch.ones(1, N_PIX, dtype=torch.bool),
                             torch.zeros(1, 3))
    b, labels, errs = batch_arrays(n=4)
    t = {k: torch.as_tensor(v) for k, v in D.prepare_arrays(b, labels, errs).items()}
    good, y = t["weight"] > 0, model.scale_labels(t["labels"])
    torch.nn.init.normal_(model.to_offset.weight, std=0.01)  # a non-zero correction
    with torch.no_grad():
        mu, logvar = model.encode(t["flux"], good, y)
        d_mu, d_logvar = model.encode_offsets(t["flux"], good, y)
        out = model(t["flux"], good, t["labels"], sample=False)
    # the free latents keep their shape; δy are extra, one per label, in the forward dict
    assert mu.shape == (4, model.config.n_latent) and d_mu.shape == (4, 3)
    assert d_mu.abs().max() > 0
    assert torch.equal(out["mu"], mu) and torch.equal(out["offset_mu"], d_mu)
    assert torch.allclose(out["recon"], model.decode(mu, y + d_mu))  # decodes y + δy …
    assert not torch.allclose(out["recon"], model.decode(mu, y))  # … not the catalog y
    # the architecture records the option and a save/load round trip keeps the outputs
    models.save(model, tmp_path / "m", {"label_names": ["TEFF", "LOGG", "FE_H"]})
    assert json.loads((tmp_path / "m" / "config.json").read_text())[
        "architecture"]["label_offsets"] is True
    with torch.no_grad():
        again = models.load(tmp_path / "m")(t["flux"], good, t["labels"], sample=False)
    assert torch.equal(again["recon"], out["recon"])
    # the prior's KL: 0 at the prior, positive elsewhere, larger for a narrower prior
    sd = torch.full((4, 3), 0.1)
    assert float(offset_kl(torch.zeros(4, 3), (sd**2).log(), sd)) == pytest.approx(0, abs=1e-5)
    assert float(offset_kl(d_mu, d_logvar, sd)) > 0
    assert float(offset_kl(torch.ones(4, 3), (sd**2).log(), sd / 2)) > \
        float(offset_kl(torch.ones(4, 3), (sd**2).log(), sd))


def test_the_shipped_demo_vae_loads_without_label_offsets():
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "assets" / "models" / "vae-demo"
    if not (demo / "config.json").is_file():
        pytest.skip(f"no shipped demo VAE at {demo}")
    model = models.load(demo)
    assert isinstance(model, SpectrumVAE) and model.config.label_offsets is False
    assert not any(n.startswith("to_offset") for n, _ in model.named_parameters())
