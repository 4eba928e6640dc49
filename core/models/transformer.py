"""A spectral transformer (SpectraFM's idea): pixels are tokens placed by their wavelength.

Each good pixel becomes a token whose embedding is a learned function of its standardised
flux and error plus a sinusoidal encoding of its vacuum wavelength, so one model reads any
subset of pixels on any grid.  A small encoder mixes the pixel tokens; then one learned
query per label attends to them through decoder cross-attention and returns a value and a
log-variance (standardised label units).  Label queries carry no wavelength term.

Attention runs through ``scaled_dot_product_attention`` (fast path, key-padding mask for
masked pixels); ``forward(..., return_attention=True)`` takes the explicit path and also
returns the decoder's cross-attention weights per layer, (B, heads, labels, pixels).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadDataError


@dataclass
class TransformerConfig:
    """Architecture and scalings of a :class:`SpectralTransformer`."""

    label_names: tuple[str, ...] = ("TEFF", "LOGG", "FE_H")
    context: int = 128          # pixel tokens per forward pass (training draw, inference patch)
    width: int = 64
    heads: int = 4
    encoder_layers: int = 1
    decoder_layers: int = 2
    #: False: the encoder blocks are token-wise (FFN only, no self-attention), so the decoder's
    #: cross-attention is the only place where pixels are pooled and its maps show where the
    #: information comes from
    encoder_mixing: bool = True
    #: True: the decoder's values carry the pixel's flux and error only, not its wavelength
    #: (keys and queries still see it), so a label can learn *which* pixels matter only by
    #: where it attends: its attention weights are the whole of its wavelength selection.
    #: Needs a token-wise encoder (``encoder_mixing`` False).
    wave_blind_values: bool = False
    ffn: int = 128
    dropout: float = 0.05
    #: wavelength range (Å, vacuum) the encoding is declared for; others are refused
    wave_min: float = 15000.0
    wave_max: float = 17000.0
    #: the fastest sinusoid turns this many radians across the range (fine wavelength detail)
    wave_turns: float = 1000.0
    grid: str = "apogee7514"   # grid of the training store (the predictor's default grid)
    preset: str = "compact"
    #: error ratio (σ / flux scale) beyond which the error input saturates
    max_error_ratio: float = 10.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.label_names = tuple(self.label_names)
        if self.width % self.heads or self.width % 2:
            raise ValueError(f"width {self.width} must be even and divisible by heads {self.heads}")
        if not self.label_names:
            raise ValueError("a transformer needs at least one label")
        if self.wave_max <= self.wave_min:
            raise ValueError("wave_max must exceed wave_min")
        if self.context < 1 or self.encoder_layers < 0 or self.decoder_layers < 1:
            raise ValueError("need context ≥ 1, encoder_layers ≥ 0, decoder_layers ≥ 1")
        if self.wave_blind_values and self.encoder_mixing and self.encoder_layers:
            raise ValueError("wave_blind_values needs a token-wise encoder (encoder_mixing "
                             "False): self-attention would mix wavelength into the values")

    @classmethod
    def preset_config(cls, name: str, **overrides) -> TransformerConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown transformer preset {name!r} (known: {sorted(PRESETS)})")
        return cls(**{**PRESETS[name], "preset": name, **overrides})


#: compact trains on a laptop CPU in minutes; spectrafm has SpectraFM's sizes (context 512,
#: width 256, 2 encoder + 3 decoder blocks).
PRESETS: dict[str, dict] = {
    "compact": {"context": 128, "width": 64, "heads": 4, "encoder_layers": 1,
                "decoder_layers": 2, "ffn": 128, "dropout": 0.05},
    # token-wise encoder: only the label queries pool pixels (attention = provenance)
    "compact-local": {"context": 128, "width": 64, "heads": 4, "encoder_layers": 1,
                      "encoder_mixing": False, "decoder_layers": 2, "ffn": 128,
                      "dropout": 0.05},
    # ... and values blind to wavelength: the attention weights are the wavelength selection
    "compact-selector": {"context": 128, "width": 64, "heads": 8, "encoder_layers": 1,
                         "encoder_mixing": False, "wave_blind_values": True,
                         "decoder_layers": 2, "ffn": 128, "dropout": 0.05,
                         "wave_turns": 12000.0},
    "spectrafm": {"context": 512, "width": 256, "heads": 8, "encoder_layers": 2,
                  "decoder_layers": 3, "ffn": 1024, "dropout": 0.05},
}


class Attention(nn.Module):
    """Multi-head attention with a key-padding mask; fast (SDPA) or explicit (weights)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def _split(self, x):
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, query, keys, key_mask, need_weights: bool = False, values=None):
        """``key_mask`` (B, N) True where a key may be attended to (None: every key);
        ``values`` (B, N, width) the value tokens when they differ from ``keys``."""
        q = self._split(self.q(query))
        if values is None:
            k, v = (self._split(t) for t in self.kv(keys).chunk(2, dim=-1))
        else:
            (wk, wv), (bk, bv) = self.kv.weight.chunk(2), self.kv.bias.chunk(2)
            k, v = self._split(F.linear(keys, wk, bk)), self._split(F.linear(values, wv, bv))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            out = F.dropout(weights, p, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        b, h, n, dh = out.shape
        return self.out(out.transpose(1, 2).reshape(b, n, h * dh)), weights


class Block(nn.Module):
    """Pre-norm block: attention of ``query`` to ``keys`` (itself in the encoder), then FFN;
    with ``mixing=False`` the FFN alone (a token-wise block)."""

    def __init__(self, cfg: TransformerConfig, mixing: bool = True):
        super().__init__()
        self.mixing = mixing
        if mixing:
            self.norm_q = nn.LayerNorm(cfg.width)
            self.norm_k = nn.LayerNorm(cfg.width)
            self.attn = Attention(cfg.width, cfg.heads, cfg.dropout)
        self.norm_f = nn.LayerNorm(cfg.width)
        self.ffn = nn.Sequential(nn.Linear(cfg.width, cfg.ffn), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.ffn, cfg.width))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, keys, key_mask, need_weights: bool = False, values=None):
        if not self.mixing:
            return x + self.drop(self.ffn(self.norm_f(x))), None
        kv = self.norm_q(x) if keys is None else self.norm_k(keys)
        vv = None if values is None else self.norm_k(values)
        a, w = self.attn(self.norm_q(x), kv, key_mask, need_weights, vv)
        x = x + self.drop(a)
        return x + self.drop(self.ffn(self.norm_f(x))), w


class SpectralTransformer(nn.Module):
    """Pixel tokens (flux, error, wavelength) → per-label value and log-variance."""

    model_type = "transformer"

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.width
        self.value_embed = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        if cfg.wave_blind_values:
            self.value_only = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        self.label_queries = nn.Parameter(torch.randn(len(cfg.label_names), d) * 0.02)
        self.encoder = nn.ModuleList(Block(cfg, cfg.encoder_mixing)
                                     for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(Block(cfg) for _ in range(cfg.decoder_layers))
        self.head_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 2)
        # frequencies of the wavelength encoding, slowest last
        self.register_buffer("omega", torch.pow(10000.0, -torch.arange(0, d, 2) / d),
                             persistent=False)
        self.register_buffer("flux_center", torch.tensor(1.0))
        self.register_buffer("flux_scale", torch.tensor(0.1))
        self.register_buffer("label_mean", torch.zeros(len(cfg.label_names)))
        self.register_buffer("label_std", torch.ones(len(cfg.label_names)))

    # -- saving --------------------------------------------------------------------------------
    def architecture(self) -> dict:
        return asdict(self.config) | {"label_names": list(self.config.label_names)}

    @classmethod
    def from_architecture(cls, arch: dict) -> SpectralTransformer:
        known = {f.name for f in fields(TransformerConfig)}
        return cls(TransformerConfig(**{k: v for k, v in arch.items() if k in known}))

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.config.label_names

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def set_scaling(self, flux_center: float, flux_scale: float, label_mean, label_std) -> None:
        with torch.no_grad():
            self.flux_center.fill_(float(flux_center))
            self.flux_scale.fill_(max(float(flux_scale), 1e-4))
            self.label_mean.copy_(torch.as_tensor(np.asarray(label_mean), dtype=torch.float32))
            self.label_std.copy_(torch.as_tensor(np.asarray(label_std), dtype=torch.float32))

    def scale_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels - self.label_mean) / self.label_std

    def unscale(self, mean: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Physical values and σ from standardised means and log-variances."""
        return (mean * self.label_std + self.label_mean,
                torch.exp(0.5 * logvar) * self.label_std)

    # -- tokens --------------------------------------------------------------------------------
    def wave_encoding(self, wave: torch.Tensor) -> torch.Tensor:
        """(…, width) sinusoidal encoding of vacuum wavelengths (Å)."""
        c = self.config
        x = (wave.float() - c.wave_min) / (c.wave_max - c.wave_min) * c.wave_turns
        ang = x[..., None] * self.omega
        return torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)

    def _ze(self, flux, error) -> torch.Tensor:
        z = ((flux - self.flux_center) / self.flux_scale).clamp(-20.0, 20.0)
        e = (error / self.flux_scale).clamp(0.0, self.config.max_error_ratio)
        return torch.stack([z, e], dim=-1).to(self.head.weight.dtype)

    def embed_pixels(self, flux, error, wave) -> torch.Tensor:
        """(B, N, width) pixel tokens: value embedding + wavelength encoding."""
        value = self.value_embed(self._ze(flux, error))
        return value + self.wave_encoding(wave).to(value.dtype)

    def value_tokens(self, flux, error) -> torch.Tensor | None:
        """(B, N, width) wavelength-blind value tokens, or None when values are the pixel
        tokens themselves."""
        if not self.config.wave_blind_values:
            return None
        return self.value_only(self._ze(flux, error))

    def label_tokens(self, batch: int) -> torch.Tensor:
        """(B, L, width) label queries (no wavelength term)."""
        return self.label_queries.unsqueeze(0).expand(batch, -1, -1)

    def check_inputs(self, wave: torch.Tensor, mask: torch.Tensor) -> None:
        c = self.config
        if not mask.any(dim=-1).all():
            raise BadDataError("transformer input: a spectrum has every pixel masked (no good "
                               "pixel to read)")
        w = wave[mask]
        if w.numel() and (not torch.isfinite(w).all() or w.min() < c.wave_min
                          or w.max() > c.wave_max):
            raise BadDataError(f"transformer input: wavelengths {float(w.min()):.1f}–"
                               f"{float(w.max()):.1f} Å fall outside the encoding's declared "
                               f"range {c.wave_min:.0f}–{c.wave_max:.0f} Å")

    # -- running -------------------------------------------------------------------------------
    def inference_plan(self) -> InferencePlan:
        """The fast inference-only path over the current weights (see :class:`InferencePlan`)."""
        return InferencePlan(self)

    def forward(self, flux, error, wave, mask, return_attention: bool = False):
        """Standardised (mean, logvar), each (B, L), for pixel tokens (B, N) with ``mask``
        True on pixels to read; with ``return_attention`` also the decoder's cross-attention
        weights per layer, each (B, heads, L, N) (0 on masked pixels)."""
        mean, logvar, _, dec = self._run(flux, error, wave, mask, return_attention, False)
        if return_attention:
            return mean, logvar, dec
        return mean, logvar

    def attention_weights(self, flux, error, wave, mask):
        """(mean, logvar, encoder maps, decoder maps) on the explicit path: the encoder's
        self-attention per layer (B, heads, N, N) and the decoder's cross-attention per layer
        (B, heads, L, N), every row summing to 1 over the pixels read (attention rollout
        needs both)."""
        return self._run(flux, error, wave, mask, True, True)

    def _run(self, flux, error, wave, mask, dec_weights: bool, enc_weights: bool):
        mask = mask.bool()
        self.check_inputs(wave, mask)
        # masked pixels get harmless inputs so nothing NaN reaches a matmul
        flux = torch.where(mask, flux, self.flux_center)
        error = torch.where(mask, error, torch.zeros((), device=error.device))
        x = self.embed_pixels(flux, error, wave)
        values = self.value_tokens(flux, error)
        # a patch with every pixel read needs no mask: SDPA then takes its fused kernel
        key_mask = None if bool(mask.all()) else mask
        enc = []
        for block in self.encoder:
            x, w = block(x, None, key_mask, enc_weights)
            if w is not None:  # token-wise blocks move nothing between pixels
                enc.append(w)
        q = self.label_tokens(x.shape[0]).to(x.dtype)
        dec = []
        for block in self.decoder:
            q, w = block(q, x, key_mask, dec_weights, values)
            dec.append(w)
        out = self.head(self.head_norm(q)).float()
        mean, logvar = out[..., 0], out[..., 1].clamp(-20.0, 20.0)
        return mean, logvar, enc, dec


class InferencePlan:
    """The fast path for whole-spectrum inference: the same function as
    :meth:`SpectralTransformer.forward` (equal to float rounding, tested) with fewer operations.

    * the encoder's q, k and v come from one fused projection, attention through SDPA;
    * the decoder's cross-attention never projects the pixel tokens to keys and values: with
      few label queries it is cheaper to fold the key projection into the queries
      (score = x̂ · (γ ⊙ W_kᵀ q) / √d_h; the key bias adds a constant per query, which the
      softmax ignores) and to apply the value projection after the attention-weighted sum
      (Σ p_j (W_v x_j + b) = W_v Σ p_j x_j + b, since Σ p_j = 1); the layer norm of the
      pixel tokens (the same for every decoder block up to its gain and bias) runs once;
    * the wavelength encoding can be passed in, e.g. gathered from a table of a fixed grid.

    Built from the model's weights at construction: build a new one after changing them.
    The explicit path (:meth:`SpectralTransformer.attention_weights`) stays the one that
    returns attention maps.
    """

    def __init__(self, model: SpectralTransformer):
        self.model = m = model
        cfg = m.config
        d, h = cfg.width, cfg.heads
        dh = d // h
        self.heads, self.width = h, d
        with torch.no_grad():
            self.encoder = [(b, torch.cat([b.attn.q.weight, b.attn.kv.weight]),
                             torch.cat([b.attn.q.bias, b.attn.kv.bias])) if b.mixing
                            else (b, None, None) for b in m.encoder]
            self.decoder = []
            for b in m.decoder:
                gain, shift = b.norm_k.weight, b.norm_k.bias
                wk, wv = b.attn.kv.weight.split(d)
                bv = b.attn.kv.bias[d:]
                self.decoder.append((
                    b,
                    ((wk * gain) / math.sqrt(dh)).view(h, dh, d),   # folded into the queries
                    (wv * gain).view(h, dh, d),                      # applied after the sum
                    (wv @ shift + bv).view(h, dh),
                ))

    @property
    def gives_weights(self) -> bool:
        """Whether ``weights=True`` can return every map attention rollout needs: only when no
        encoder block mixes pixels (their self-attention runs fused, without weights)."""
        return all(w is None for _, w, _ in self.encoder)

    def __call__(self, flux, error, wave, mask, wave_code=None, weights: bool = False):
        """Standardised (mean, logvar), each (B, L), of pixel tokens (B, N); ``wave_code``
        (B, N, width) replaces the encoding of ``wave`` (which may then be None).  With
        ``weights`` (see :attr:`gives_weights`) also the decoder's cross-attention per layer,
        each (B, heads, L, N), as :meth:`SpectralTransformer.attention_weights` returns them.
        Inputs are not checked here (see :meth:`SpectralTransformer.check_inputs`)."""
        if weights and not self.gives_weights:
            raise ValueError("this model's encoder mixes pixels: take its attention maps from "
                             "SpectralTransformer.attention_weights")
        m, d, h = self.model, self.width, self.heads
        full = bool(mask.all())
        if not full:  # masked pixels get harmless inputs so nothing NaN reaches a matmul
            flux = torch.where(mask, flux, m.flux_center)
            error = torch.where(mask, error, torch.zeros((), device=error.device))
        z = ((flux - m.flux_center) / m.flux_scale).clamp(-20.0, 20.0)
        e = (error / m.flux_scale).clamp(0.0, m.config.max_error_ratio)
        ze = torch.stack([z, e], dim=-1).to(m.head.weight.dtype)
        x = m.value_embed(ze)
        x = x + (m.wave_encoding(wave) if wave_code is None else wave_code).to(x.dtype)
        b_n, n, _ = x.shape
        key_mask = None if full else mask[:, None, None, :]
        for block, w, bias in self.encoder:
            if w is None:
                x = x + block.ffn(block.norm_f(x))
                continue
            qkv = F.linear(block.norm_q(x), w, bias).view(b_n, n, 3, h, d // h)
            qkv = qkv.permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=key_mask)
            x = x + block.attn.out(a.transpose(1, 2).reshape(b_n, n, d))
            x = x + block.ffn(block.norm_f(x))
        xhat = F.layer_norm(x, (d,))
        vhat = xhat if not m.config.wave_blind_values else \
            F.layer_norm(m.value_only(ze), (d,))
        q = m.label_tokens(b_n).to(x.dtype)
        n_lab = q.shape[1]
        maps = []
        for block, wk, wv, bv in self.decoder:
            qh = block.attn.q(block.norm_q(q)).view(b_n, n_lab, h, d // h)
            u = torch.einsum("blhe,hed->blhd", qh, wk.to(qh.dtype)).reshape(b_n, n_lab * h, d)
            scores = torch.bmm(u, xhat.transpose(1, 2))                # (B, L·heads, N)
            if not full:
                scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
            p = torch.softmax(scores.float(), dim=-1).to(xhat.dtype)
            if weights:
                maps.append(p.view(b_n, n_lab, h, n).transpose(1, 2))
            pooled = torch.bmm(p, vhat).view(b_n, n_lab, h, d)
            a = torch.einsum("blhd,hed->blhe", pooled, wv.to(pooled.dtype)) + bv.to(pooled.dtype)
            q = q + block.attn.out(a.reshape(b_n, n_lab, d))
            q = q + block.ffn(block.norm_f(q))
        out = m.head(m.head_norm(q)).float()
        if weights:
            return out[..., 0], out[..., 1].clamp(-20.0, 20.0), maps
        return out[..., 0], out[..., 1].clamp(-20.0, 20.0)


def gaussian_nll(mean, logvar, target, target_err, present) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of ½[(y − μ)²/(e^s + σ_y²) + ln(e^s + σ_y²)] and of (y − μ)² over ``present``
    entries (standardised units: the label's own error widens the predicted variance)."""
    var = logvar.exp() + target_err.square() + 1e-8
    zero = torch.zeros((), device=mean.device)
    r2 = torch.where(present, (torch.nan_to_num(target) - mean).square(), zero)
    nll = torch.where(present, 0.5 * (r2 / var + var.log()), zero)
    return nll.sum(), r2.sum()
