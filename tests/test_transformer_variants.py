"""Transformer variants whose attention is the whole of their wavelength selection: a
token-wise encoder (``encoder_mixing=False``) and wavelength-blind values
(``wave_blind_values=True``, the ``compact-selector`` preset)."""

from __future__ import annotations

import pytest
import torch

from core.models.transformer import SpectralTransformer, TransformerConfig

TINY = {"context": 32, "width": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 2,
        "ffn": 32, "dropout": 0.0, "label_names": ("TEFF", "LOGG", "FE_H")}


def tiny(**kw) -> SpectralTransformer:
    torch.manual_seed(0)
    m = SpectralTransformer(TransformerConfig(**{**TINY, **kw})).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-trivial biases and norms, so a wrongly folded one shows
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(p + 0.3 * torch.randn(p.shape, generator=g))
    return m


def tokens(b=4, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    flux = 1 - 0.3 * torch.rand(b, n, generator=g)
    error = 0.01 + 0.01 * torch.rand(b, n, generator=g)
    wave = 15200 + 1500 * torch.rand(b, n, generator=g)
    return flux, error, wave, torch.ones(b, n, dtype=torch.bool)


VARIANTS = [{"encoder_mixing": False},
            {"encoder_mixing": False, "wave_blind_values": True},
            {"encoder_layers": 0, "wave_blind_values": True}]


@pytest.mark.parametrize("kw", VARIANTS)
def test_fast_explicit_and_inference_plan_agree(kw):
    m = tiny(**kw)
    flux, error, wave, mask = tokens()
    mask[1, 9:] = False
    with torch.inference_mode():
        ref = m(flux, error, wave, mask)
        mean, logvar, enc, dec = m.attention_weights(flux, error, wave, mask)
        plan = m.inference_plan()(flux, error, wave, mask)
    for a, b, c in zip(ref, (mean, logvar), plan, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)
    assert enc == []  # nothing moves between pixels before the decoder
    assert len(dec) == 2
    for w in dec:
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert float(w[1, ..., 9:].abs().max()) == 0.0


def test_a_token_wise_encoder_keeps_pixels_apart():
    """Changing one pixel changes only that pixel's token after the encoder."""
    m = tiny(encoder_mixing=False)
    flux, error, wave, _ = tokens(b=1)
    x0 = m.embed_pixels(flux, error, wave)
    flux2 = flux.clone()
    flux2[0, 4] -= 0.2
    x1 = m.embed_pixels(flux2, error, wave)
    with torch.no_grad():
        for block in m.encoder:
            x0, _ = block(x0, None, None)
            x1, _ = block(x1, None, None)
    changed = (x0 - x1).abs().amax(-1)[0] > 0
    assert changed.tolist() == [i == 4 for i in range(flux.shape[1])]


def test_wave_blind_values_see_wavelength_only_through_the_attention():
    """With the same flux everywhere, every value token is the same, so whatever the weights
    the answer cannot depend on the wavelengths; with ordinary values it does."""
    flux, error, wave, mask = tokens(b=2)
    flux[:] = 0.9
    error[:] = 0.01
    other = wave.flip(-1) + 37.0
    blind, plain = tiny(encoder_mixing=False, wave_blind_values=True), tiny(encoder_mixing=False)
    with torch.inference_mode():
        a, b = blind(flux, error, wave, mask)[0], blind(flux, error, other, mask)[0]
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(plain(flux, error, wave, mask)[0],
                                  plain(flux, error, other, mask)[0], atol=1e-4)
        # a deep pixel moves the answer by an amount that depends on where it is
        flux[:, 3] = 0.5
        assert not torch.allclose(blind(flux, error, wave, mask)[0],
                                  blind(flux, error, other, mask)[0], atol=1e-4)


def test_wave_blind_values_refuse_a_mixing_encoder():
    with pytest.raises(ValueError, match="token-wise encoder"):
        TransformerConfig(**{**TINY, "wave_blind_values": True})
    c = TransformerConfig.preset_config("compact-selector")
    assert c.wave_blind_values and not c.encoder_mixing


@pytest.mark.parametrize("kw", VARIANTS)
def test_inference_plan_weights_are_the_explicit_maps(kw):
    m = tiny(**kw)
    flux, error, wave, mask = tokens()
    mask[2, 20:] = False
    plan = m.inference_plan()
    assert plan.gives_weights
    with torch.inference_mode():
        mean, logvar, _, dec = m.attention_weights(flux, error, wave, mask)
        pm, pl, maps = plan(flux, error, wave, mask, weights=True)
    torch.testing.assert_close(pm, mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pl, logvar, atol=1e-5, rtol=1e-5)
    for a, b in zip(maps, dec, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_mixing_encoder_gives_no_weights_from_the_plan():
    plan = tiny().inference_plan()
    assert not plan.gives_weights
    with pytest.raises(ValueError, match="mixes pixels"):
        plan(*tokens(), weights=True)
