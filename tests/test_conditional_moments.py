"""The conditional-moment penalty (``train vae --cond-moments λ``, core.train.conditional):
it sees latents whose relation to the controls bends with the labels, and not latents that hold
the controls (however correlated with the labels) or noise; its gradient removes what it sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.train.conditional import (
    ConditionalMoments,
    control_basis,
    full_basis,
    label_basis,
)

torch.set_num_threads(1)


def _population(n=6000, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, 3, generator=g)
    # controls correlate with the labels (as [X/Fe] with [Fe/H] through the populations)
    c = 0.6 * y[:, [2, 0]] + 0.8 * torch.randn(n, 2, generator=g)
    return y, c, g


def _score(mu, c, y, second=True):
    cm = ConditionalMoments(mu.shape[1], y.shape[1], c.shape[1], weight=1.0, warmup_steps=0,
                            second=second)
    for i in range(0, len(mu), 512):  # fill the bank as training would
        out = cm.penalty(mu[i:i + 512], c[i:i + 512], y[i:i + 512], training=True)
    return out, cm


def test_bases_have_the_documented_columns():
    y, c, _ = _population(10)
    assert label_basis(y).shape == (10, 3 + 3 + 3)
    assert control_basis(c).shape == (10, 1 + 2 + 2)
    assert full_basis(c, y).shape == (10, 5 + 9 + 9 * 2)
    assert torch.allclose(label_basis(y)[:, 6], y[:, 0] * y[:, 1])


def test_it_sees_label_warped_latents_and_not_controls_or_noise():
    y, c, g = _population()
    noise = 0.1 * torch.randn(len(y), 4, generator=g)
    honest = torch.cat([c, c[:, :1] ** 2], 1)  # functions of the controls only
    honest = torch.cat([honest, noise[:, :1]], 1)
    # the same information, with a scale and a shift that follow Teff (y[:, 0])
    warped = honest * (1.0 + 0.5 * torch.tanh(y[:, :1])) + 0.3 * y[:, :1]
    # the spread of a latent that follows the labels while its mean does not
    spread = torch.cat([c, noise[:, :1] * (1.0 + 2.0 * (y[:, :1] > 0)), noise[:, 1:3]], 1)
    leak = {name: _score(m, c, y)[0] for name, m in
            (("honest", honest), ("warped", warped), ("spread", spread),
             ("noise", noise))}
    assert leak["honest"]["cm_mean"] < 0.02 and leak["noise"]["cm_mean"] < 0.02, leak
    assert leak["warped"]["cm_mean"] > 0.06, leak  # ≈ 0.1 of its variance
    assert leak["spread"]["cm_mean"] < 0.02 and leak["spread"]["cm_spread"] > 0.04, leak
    assert leak["honest"]["cm_spread"] < 0.02, leak


def test_its_gradient_removes_the_label_dependence():
    y, c, _ = _population()
    warped = (c * (1.0 + 0.5 * torch.tanh(y[:, :1])) + 0.3 * y[:, :1]).clone()
    before, cm = _score(warped, c, y)
    mu = warped[-512:].clone().requires_grad_(True)
    for _ in range(60):  # a few descent steps on the last batch, the fits held fixed
        out = cm.penalty(mu, c[-512:], y[-512:], training=False)
        (grad,) = torch.autograd.grad(out["cm_term"], mu)
        with torch.no_grad():
            mu -= 200.0 * grad
    after = cm.penalty(mu.detach(), c[-512:], y[-512:], training=False)
    assert after["cm_mean"] < 0.25 * before["cm_mean"], (before, after)


def test_it_waits_for_a_full_enough_bank_and_ramps_up():
    y, c, g = _population(600)
    mu = torch.randn(600, 3, generator=g)
    cm = ConditionalMoments(3, 3, 2, weight=10.0, warmup_steps=100)
    out = cm.penalty(mu[:50], c[:50], y[:50], training=True)
    assert float(out["cm_term"]) == 0.0  # 50 rows: too few for the fits
    for i in range(50, 600, 50):
        out = cm.penalty(mu[i:i + 50], c[i:i + 50], y[i:i + 50], training=True)
    assert cm.ramp() == pytest.approx(12 / 100)
    # validation: the full weight, and the bank is left alone
    rows = len(cm.mu)
    val = cm.penalty(mu[:50], c[:50], y[:50], training=False)
    assert len(cm.mu) == rows
    total = float(val["cm_mean"] + val["cm_spread"])
    assert float(val["cm_term"]) == pytest.approx(10.0 * total, rel=1e-4)
    assert np.isfinite(total)
